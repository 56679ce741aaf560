// Types of jobs-client.js. The bodies come from api-types.d.ts, generated from the gateway's
// /openapi.json (the tests check it is current).

import type { JobAccepted, JobProgress, JobView, Problem } from "./api-types";

export type * from "./api-types";

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

export class JobsClient {
  constructor(options?: JobsClientOptions);
  createJob(
    type: string,
    input: Record<string, unknown>,
    options?: { idempotencyKey?: string; signal?: AbortSignal },
  ): Promise<JobAccepted>;
  getJob(jobId: string, options?: { signal?: AbortSignal }): Promise<JobView>;
  cancelJob(jobId: string, options?: { signal?: AbortSignal }): Promise<JobView>;
  /** Resolves on `succeeded`; rejects on `failed`/`canceled` (JobEndedError), timeout (WaitTimeoutError), abort, 401/404 (ApiError). */
  waitForJob(jobId: string, options?: WaitOptions): Promise<JobView>;
}
