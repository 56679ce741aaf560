// Types of jobs-client.js. The bodies come from api-types.d.ts, generated from the gateway's
// /openapi.json (the tests check it is current), including `JobType` and `JobInputs` where the
// document describes each job type's input.

import type {
  JobAccepted,
  JobError,
  JobHistory,
  JobInputs,
  JobPage,
  JobProgress,
  JobStatus,
  JobType,
  JobTypeList,
  JobToken,
  JobView,
  OutputDone as OutputDoneEvent,
  OutputText,
  Problem,
  UsageView,
} from "./api-types.js";

export type * from "./api-types.js";

/** A job as the gateway shows it (`cancelRequested`: asked to cancel, not ended yet). */
export type Job = JobView;

/**
 * The token sent as `Authorization: Bearer`: a string, or a function giving one (asked before
 * the first request, kept, and asked again once after a `401`).
 */
export type TokenSource = string | null | undefined | (() => string | null | undefined | Promise<string | null | undefined>);

/**
 * A connection's state, apart from the job's status: `connecting` (opening, or reopening after
 * a drop), `open` (events arrive), `polling` (streams failed; asking `GET` now and then, trying
 * the stream again later), `paused` (the page is hidden), `error` (the last attempt failed;
 * waiting to try again), `closed` (ended).
 */
export type ConnectionStatus = "connecting" | "open" | "polling" | "paused" | "error" | "closed";

/** Where a connection status comes from, for `onConnectionChange`. */
export interface ConnectionSource {
  method: "waitForJob" | "outputStream" | "watchJobs";
  /** null for `watchJobs`. */
  jobId: string | null;
}

/** The part of a page's `document` the client reads: `visibilityState` and its change event. */
export interface VisibilitySource {
  visibilityState: string;
  addEventListener(type: "visibilitychange", listener: () => void): void;
  removeEventListener(type: "visibilitychange", listener: () => void): void;
}

export interface JobsClientOptions {
  /** The gateway's origin, e.g. `http://127.0.0.1:8000`; empty: same origin. */
  baseUrl?: string;
  /** The user's JWT or a job token, or a function giving one (see TokenSource). */
  token?: TokenSource;
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
  /** The longest wait between stream reconnects; waits double up to it (15000 ms). */
  maxReconnectMs?: number;
  /** Polling this long (sum of its waits) tries the stream again (15000 ms); so does the `online` event. */
  streamRetryMs?: number;
  /** Close streams and stop polling while the page is hidden, resuming when shown (true). */
  pauseWhenHidden?: boolean;
  /** Every connection status change of every wait, stream and watch of this client. */
  onConnectionChange?: (status: ConnectionStatus, source: ConnectionSource) => void;
  /** The page whose visibility pauses streams (default `globalThis.document`). */
  document?: VisibilitySource;
  /** Where the `online` event is heard (default `globalThis` where it has `addEventListener`). */
  window?: { addEventListener(type: "online", listener: () => void): void; removeEventListener(type: "online", listener: () => void): void };
  /** How the client pauses between attempts (default: a timer that the signal cuts short). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export interface WaitOptions {
  /** Each newer state of the job, the current one first. */
  onUpdate?: (job: Job) => void;
  /** Partial output: `output` is all the text so far. */
  onProgress?: (progress: JobProgress) => void;
  /**
   * The output text, read from offset 0 on a second connection: the text so far at once (after
   * a reload too), then each new piece; the wait ends once all of it was read.
   */
  onText?: (text: string, offset: number) => void;
  onConnection?: (status: ConnectionStatus) => void;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export type ApiErrorKind = "network" | "http" | "parse" | "aborted";

/**
 * Every failure of a request: `network` (no answer: refused, DNS, CORS), `http` (`status`,
 * `problem`, `retryAfterMs`), `parse` (not the JSON expected, e.g. a proxy's HTML page),
 * `aborted` (the caller's signal; `cause` is its reason). `cause` keeps the original error.
 */
export class ApiError extends Error {
  constructor(
    kind: ApiErrorKind,
    details?: {
      status?: number | null;
      problem?: Problem | null;
      retryAfterMs?: number | null;
      url?: string | null;
      message?: string;
      cause?: unknown;
    },
  );
  readonly kind: ApiErrorKind;
  /** The answer's status (`http`, `parse`), else null. */
  readonly status: number | null;
  /** The RFC 9457 body of an `http` error, when it had one. */
  readonly problem: Problem | null;
  /** `Retry-After` of the answer, in ms, or null. */
  readonly retryAfterMs: number | null;
  readonly url: string | null;
  readonly cause?: unknown;
}

/** The job ended other than `succeeded`: `job` as it ended, `text` the output seen. */
export class JobEndedError extends Error {
  constructor(job: Job, text?: string);
  readonly job: Job;
  /** The output text the client had received when the job ended. */
  readonly text: string;
}
/** The job `failed`; `job.error` says why. */
export class JobFailedError extends JobEndedError {}
/** The job was `canceled`. */
export class JobCanceledError extends JobEndedError {}

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

/** The output stream's connection (the same states as every connection). */
export type OutputConnection = ConnectionStatus;

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
  onConnection?: (status: ConnectionStatus) => void;
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

export interface WatchJobsOptions {
  /** Each newer state of any of the caller's jobs (the unfinished ones' current state first). */
  onJob?: (job: Job) => void;
  /** Partial output of any of them (`output`: all the text so far). */
  onProgress?: (progress: JobProgress) => void;
  onConnection?: (status: ConnectionStatus) => void;
  /** Stops the watch (the promise then resolves). */
  signal?: AbortSignal;
  /** Resume after this position (an event's `id:` of an earlier watch). */
  lastEventId?: string | null;
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
  /** The token or provider in use; prefer `setToken` to change it. */
  token: TokenSource;
  /** A new token or provider for the requests from now on (open streams keep theirs until they reconnect). */
  setToken(token: TokenSource): void;
  /** `202`: the new job's id. `input` is checked against `type` where the OpenAPI describes it. */
  createJob<T extends JobType>(
    type: T,
    input: JobInputs[T],
    options?: { idempotencyKey?: string; signal?: AbortSignal },
  ): Promise<JobAccepted>;
  getJob(jobId: string, options?: { signal?: AbortSignal }): Promise<Job>;
  /** One page of the caller's jobs, newest first; `nextCursor` asks for the next. */
  listJobs(options?: {
    status?: JobStatus | JobStatus[];
    type?: JobType | JobType[];
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
  cancelJob(jobId: string, options?: { signal?: AbortSignal }): Promise<Job>;
  /** A short-lived token that reads only this job (the owner only). */
  createJobToken(jobId: string, options?: { signal?: AbortSignal }): Promise<JobToken>;
  /**
   * Resolves on `succeeded`; rejects with JobFailedError / JobCanceledError, WaitTimeoutError,
   * or ApiError (`aborted`; `http` for 401/403/404).
   */
  waitForJob(jobId: string, options?: WaitOptions): Promise<Job>;
  /** Resolves at the `done` event; rejects with ApiError (`aborted`; `http` for 401/403/404/422). */
  streamOutput(jobId: string, options?: StreamOutputOptions): Promise<OutputResult>;
  /** Pieces of output then one `done`, resuming from the last offset across reconnects and pauses. */
  outputStream(
    jobId: string,
    options?: OutputStreamOptions,
  ): AsyncGenerator<OutputPiece | OutputDone, void, undefined>;
  /** Watches all of the caller's jobs until `signal` aborts; rejects with ApiError `http` on 401/403. */
  watchJobs(options?: WatchJobsOptions): Promise<void>;
}
