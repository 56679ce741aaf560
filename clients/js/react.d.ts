// Types of react.js: React hooks over the jobs client (`@ai-jobs/client/react`).

import type { ReactNode } from "react";

import type {
  ApiError,
  ConnectionStatus,
  Job,
  JobAccepted,
  JobError,
  JobInputs,
  JobStatus,
  JobType,
  JobsClient,
} from "./jobs-client.js";

export function JobsClientProvider(props: { client: JobsClient; children?: ReactNode }): ReactNode;

/** The client given, or the JobsClientProvider's; throws when there is neither. */
export function useJobsClient(client?: JobsClient): JobsClient;

export interface JobState {
  /** The job's latest state (`cancelRequested`: a cancel is on its way). */
  job: Job | null;
  status: JobStatus | null;
  /** The job's error once it failed, or what stopped the watch (e.g. an ApiError 404). */
  error: JobError | ApiError | Error | null;
  isLoading: boolean;
  /** The watch's connection, apart from the job's status. */
  connection: ConnectionStatus;
}

export interface UseJobOptions {
  client?: JobsClient;
  /** Once, when the job reaches `succeeded`, `failed` or `canceled`. */
  onComplete?: (job: Job) => void;
}

export function useJob(jobId: string | null | undefined, options?: UseJobOptions): JobState;

export interface JobOutputState {
  /** All the text so far (with `initialText`). */
  text: string;
  /** Code points of output had so far. */
  offset: number;
  /** The output stream's connection, apart from the job's status. */
  connection: ConnectionStatus;
  /** The output ended (`event: done`). */
  done: boolean;
  /** The job's terminal status once done. */
  status: JobStatus | null;
  /** The job's error from `done`, or what stopped the stream (e.g. an ApiError 404). */
  error: JobError | ApiError | Error | null;
}

export interface UseJobOutputOptions {
  client?: JobsClient;
  /** Resume after this many code points (read when `jobId` is set). */
  fromOffset?: number;
  /** The text already had up to `fromOffset`, shown before the rest. */
  initialText?: string;
  /** At most one render per this many ms while text arrives (50). */
  throttleMs?: number;
}

export function useJobOutput(
  jobId: string | null | undefined,
  options?: UseJobOutputOptions,
): JobOutputState;

export interface UseSubmitJobOptions {
  client?: JobsClient;
  onComplete?: (job: Job) => void;
  /** Stream the output too (true). */
  output?: boolean;
}

export interface SubmitJobState<T extends JobType = JobType> extends JobState {
  /** Resolves with the gateway's answer, or null when the create failed (`submitError`). */
  submit(
    input: JobInputs[T],
    options?: { idempotencyKey?: string },
  ): Promise<JobAccepted | null>;
  /** Forgets the job (and ignores a submit still on its way). */
  reset(): void;
  jobId: string | null;
  isSubmitting: boolean;
  submitError: ApiError | Error | null;
  output: JobOutputState;
}

export function useSubmitJob<T extends JobType>(type: T, options?: UseSubmitJobOptions): SubmitJobState<T>;
