// Types of react.js: React hooks over the jobs client (`@ai-jobs/client/react`).

import type { ReactNode } from "react";

import type {
  ApiError,
  JobAccepted,
  JobError,
  JobStatus,
  JobView,
  JobsClient,
  OutputConnection,
} from "./jobs-client.js";

export function JobsClientProvider(props: { client: JobsClient; children?: ReactNode }): ReactNode;

/** The client given, or the JobsClientProvider's; throws when there is neither. */
export function useJobsClient(client?: JobsClient): JobsClient;

export interface JobState {
  job: JobView | null;
  status: JobStatus | null;
  /** The job's error once it failed, or what stopped the watch (e.g. an ApiError 404). */
  error: JobError | ApiError | Error | null;
  isLoading: boolean;
}

export interface UseJobOptions {
  client?: JobsClient;
  /** Once, when the job reaches `succeeded`, `failed` or `canceled`. */
  onComplete?: (job: JobView) => void;
}

export function useJob(jobId: string | null | undefined, options?: UseJobOptions): JobState;

export interface JobOutputState {
  /** All the text so far (with `initialText`). */
  text: string;
  /** Code points of output had so far. */
  offset: number;
  /** The output stream's connection, apart from the job's status. */
  connection: OutputConnection;
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
  onComplete?: (job: JobView) => void;
  /** Stream the output too (true). */
  output?: boolean;
}

export interface SubmitJobState extends JobState {
  /** Resolves with the gateway's answer, or null when the create failed (`submitError`). */
  submit(
    input: Record<string, unknown>,
    options?: { idempotencyKey?: string },
  ): Promise<JobAccepted | null>;
  /** Forgets the job (and ignores a submit still on its way). */
  reset(): void;
  jobId: string | null;
  isSubmitting: boolean;
  submitError: ApiError | Error | null;
  output: JobOutputState;
}

export function useSubmitJob(type: string, options?: UseSubmitJobOptions): SubmitJobState;
