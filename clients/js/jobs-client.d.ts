// Types of jobs-client.js. The bodies come from api-types.d.ts, generated from the gateway's
// /openapi.json (the tests check it is current).

import type {
  JobAccepted,
  JobError,
  JobHistory,
  JobPage,
  JobProgress,
  JobStatus,
  JobTypeList,
  JobView,
  OutputDone as OutputDoneEvent,
  OutputText,
  Problem,
  UsageView,
} from "./api-types.js";

export type * from "./api-types.js";

export interface JobsClientOptions {
  /** The gateway's origin, e.g. `http://127.0.0.1:8000`; empty: same origin. */
  baseUrl?: string;
  /** The JWT sent as `Authorization: Bearer`. */
  token?: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
  /** Use the event stream (default true); false: poll only. */
  streaming?: boolean;
  /** First polling interval (2000 ms), growing while nothing changes up to `maxPollIntervalMs` (15000). */
  pollIntervalMs?: number;
  maxPollIntervalMs?: number;
  /** Wait before reconnecting a stream when the server gave no `retry:` (1000 ms). */
  reconnectMs?: number;
  /** Consecutive streams that deliver nothing before polling takes over (2). */
  maxStreamFailures?: number;
  /** The longest wait between output stream reconnects; waits double up to it (15000 ms). */
  maxReconnectMs?: number;
  /** How the client pauses between attempts (default: a timer that the signal cuts short). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export interface WaitOptions {
  /** Each newer state of the job, the current one first. */
  onUpdate?: (job: JobView) => void;
  /** Partial output: `output` is all the text so far. */
  onProgress?: (progress: JobProgress) => void;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export class ApiError extends Error {
  readonly status: number;
  readonly problem: Problem | null;
  retryAfterMs?: number | null;
}

/** `name` is `JobFailedError` or `JobCanceledError`. */
export class JobEndedError extends Error {
  readonly job: JobView;
}

export class WaitTimeoutError extends Error {
  readonly jobId: string;
}

export interface ServerSentEvent {
  event: string;
  id: string | null;
  data: string;
  retry: number | null;
}

export function readEvents(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<ServerSentEvent>;

/** The output stream's connection, apart from the job's status. */
export type OutputConnection = "connecting" | "open" | "reconnecting" | "closed";

/** New text of `GET /api/jobs/{jobId}/output`; `offset`: code points delivered up to and including it. */
export interface OutputPiece extends OutputText {
  type: "output";
  offset: number;
}

/** The output's end: the job's terminal status; `offset`: the output's length in code points. */
export interface OutputDone extends OutputDoneEvent {
  type: "done";
  offset: number;
}

export interface OutputStreamOptions {
  /** Code points already had (0): the stream resumes after them. */
  fromOffset?: number;
  signal?: AbortSignal;
  onConnection?: (connection: OutputConnection) => void;
}

export interface StreamOutputOptions extends OutputStreamOptions {
  /** Each new piece of text and the offset after it. */
  onText?: (text: string, offset: number) => void;
}

export interface OutputResult {
  status: JobStatus;
  error: JobError | null;
  /** All the text this call received (from `fromOffset`). */
  text: string;
  /** The output's length in code points. */
  offset: number;
}

/** The output stream said something that cannot be true (a gap in the text). */
export class OutputProtocolError extends Error {}

/** The number of Unicode code points of `text`. */
export function codePointLength(text: string): number;
/** `text` without its first `count` code points. */
export function dropCodePoints(text: string, count: number): string;
/** An `output` event as the piece after `offset`, or null when it brings nothing new. */
export function outputPiece(event: ServerSentEvent, offset: number): OutputPiece | null;

export class JobsClient {
  constructor(options?: JobsClientOptions);
  createJob(
    type: string,
    input: Record<string, unknown>,
    options?: { idempotencyKey?: string; signal?: AbortSignal },
  ): Promise<JobAccepted>;
  getJob(jobId: string, options?: { signal?: AbortSignal }): Promise<JobView>;
  /** One page of the caller's jobs, newest first; `nextCursor` asks for the next. */
  listJobs(options?: {
    status?: JobStatus | JobStatus[];
    type?: string | string[];
    limit?: number;
    cursor?: string | null;
    signal?: AbortSignal;
  }): Promise<JobPage>;
  /** The changes the job went through, oldest first. */
  getJobHistory(
    jobId: string,
    options?: { limit?: number; cursor?: string | null; signal?: AbortSignal },
  ): Promise<JobHistory>;
  /** Every job type with its input schema, price and `maxCostUsd` (no token needed). */
  listJobTypes(options?: { signal?: AbortSignal }): Promise<JobTypeList>;
  /** The caller's spend over UTC days (`YYYY-MM-DD`; default the current month) and budget. */
  getUsage(options?: { from?: string; to?: string; signal?: AbortSignal }): Promise<UsageView>;
  cancelJob(jobId: string, options?: { signal?: AbortSignal }): Promise<JobView>;
  /** Resolves on `succeeded`; rejects on `failed`/`canceled` (JobEndedError), timeout (WaitTimeoutError), abort, 401/404 (ApiError). */
  waitForJob(jobId: string, options?: WaitOptions): Promise<JobView>;
  /** Resolves at the `done` event; rejects on abort (the signal's reason), 401/403/404/422 (ApiError). */
  streamOutput(jobId: string, options?: StreamOutputOptions): Promise<OutputResult>;
  /** Pieces of output then one `done`, resuming from the last offset across reconnects. */
  outputStream(
    jobId: string,
    options?: OutputStreamOptions,
  ): AsyncGenerator<OutputPiece | OutputDone, void, undefined>;
}
