// A dependency-free client of the AI jobs gateway for browsers and Node 18+: create a job,
// cancel it, wait for its result with pushed updates (Server-Sent Events read over `fetch`, so
// the token travels in a header), falling back to polling with backoff when the stream cannot
// be had, and read a job's output text as it is written, resuming by code-point offset across
// reconnects. Types: jobs-client.d.ts (bodies generated from /openapi.json).

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

/** An answer other than the one expected: `status` and the RFC 9457 `problem`, if any. */
export class ApiError extends Error {
  constructor(status, problem, message) {
    super(message ?? problem?.detail ?? `the gateway answered ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem ?? null;
  }
}

/** The job ended `failed` (`job.error` says why) or `canceled`. */
export class JobEndedError extends Error {
  constructor(job) {
    const why = job.error ? `: ${job.error.code}: ${job.error.message}` : "";
    super(`job ${job.jobId} ${job.status}${why}`);
    this.name = job.status === "canceled" ? "JobCanceledError" : "JobFailedError";
    this.job = job;
  }
}

/** `waitForJob` gave up after `timeoutMs`; the job goes on. */
export class WaitTimeoutError extends Error {
  constructor(jobId, timeoutMs) {
    super(`job ${jobId} not finished after ${timeoutMs} ms`);
    this.name = "WaitTimeoutError";
    this.jobId = jobId;
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }
    function aborted() {
      clearTimeout(timer);
      reject(signal.reason);
    }
    signal?.addEventListener("abort", aborted, { once: true });
  });

/** Seconds of a `Retry-After` header as milliseconds, or `null`. */
function retryAfterMs(response) {
  const seconds = Number(response.headers.get("retry-after"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : null;
}

/** Parses a Server-Sent Events body into `{event, id, data, retry}` objects. */
export async function* readEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { event: "message", id: null, data: "", retry: null };
  let seen = false;
  try {
    while (true) {
      if (signal?.aborted) return;
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (seen) yield event;
          event = { event: "message", id: null, data: "", retry: null };
          seen = false;
          continue;
        }
        const colon = line.indexOf(":");
        if (colon === 0) continue; // a comment (keepalive)
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        seen = true;
        if (field === "event") event.event = value;
        else if (field === "id") event.id = value;
        else if (field === "data") event.data = event.data ? `${event.data}\n${value}` : value;
        else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** The number of Unicode code points of `text` (JS strings count UTF-16 units). */
export function codePointLength(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/** `text` without its first `count` code points. */
export function dropCodePoints(text, count) {
  if (count <= 0) return text;
  let index = 0;
  for (const character of text) {
    if (count === 0) break;
    index += character.length;
    count -= 1;
  }
  return text.slice(index);
}

/** The output stream said something that cannot be true (a gap in the text). */
export class OutputProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = "OutputProtocolError";
  }
}

// Answers to an output stream that no retry can fix: they end it with an ApiError.
const FINAL_STATUSES = new Set([400, 401, 403, 404, 410, 422]);

function withQuery(path, query) {
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export class JobsClient {
  /**
   * @param {import("./jobs-client").JobsClientOptions} options
   */
  constructor({
    baseUrl = "",
    token,
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
    streaming = true,
    pollIntervalMs = 2000,
    maxPollIntervalMs = 15000,
    reconnectMs = 1000,
    maxStreamFailures = 2,
    maxReconnectMs = 15000,
    sleep: sleepImpl = sleep,
  } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.token = token;
    this.fetch = fetchImpl;
    this.streaming = streaming;
    this.pollIntervalMs = pollIntervalMs;
    this.maxPollIntervalMs = maxPollIntervalMs;
    this.reconnectMs = reconnectMs;
    this.maxStreamFailures = maxStreamFailures;
    this.maxReconnectMs = maxReconnectMs;
    // Every pause between attempts goes through here, so a caller (a test) can see the
    // waits the client chose; the default is a plain timer.
    this.sleep = sleepImpl;
  }

  _headers(extra = {}) {
    const headers = { ...extra };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  async _json(method, path, { body, headers, signal, expect = [200] } = {}) {
    const response = await this.fetch(`${this.baseUrl}${path}`, {
      method,
      headers: this._headers({
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    const text = await response.text();
    const parsed = text ? JSON.parse(text) : null;
    if (!expect.includes(response.status)) {
      const error = new ApiError(response.status, parsed);
      error.retryAfterMs = retryAfterMs(response);
      throw error;
    }
    return parsed;
  }

  /** `POST /api/jobs`: the new job's id (`202`). */
  createJob(type, input, { idempotencyKey, signal } = {}) {
    const headers = idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {};
    return this._json("POST", "/api/jobs", {
      body: { type, input },
      headers,
      signal,
      expect: [202],
    });
  }

  /** `GET /api/jobs/{jobId}`. */
  getJob(jobId, { signal } = {}) {
    return this._json("GET", `/api/jobs/${encodeURIComponent(jobId)}`, { signal });
  }

  /**
   * `GET /api/jobs`: one page of the caller's jobs, newest first; `status` and `type` each a
   * value or a list; pass the answer's `nextCursor` as `cursor` for the next page.
   */
  listJobs({ status, type, limit, cursor, signal } = {}) {
    const query = new URLSearchParams();
    for (const value of [status ?? []].flat()) query.append("status", value);
    for (const value of [type ?? []].flat()) query.append("type", value);
    if (limit !== undefined) query.set("limit", String(limit));
    if (cursor) query.set("cursor", cursor);
    return this._json("GET", withQuery("/api/jobs", query), { signal });
  }

  /** `GET /api/jobs/{jobId}/history`: the changes the job went through, oldest first. */
  getJobHistory(jobId, { limit, cursor, signal } = {}) {
    const query = new URLSearchParams();
    if (limit !== undefined) query.set("limit", String(limit));
    if (cursor) query.set("cursor", cursor);
    const path = `/api/jobs/${encodeURIComponent(jobId)}/history`;
    return this._json("GET", withQuery(path, query), { signal });
  }

  /** `GET /api/job-types`: every type with its input schema, price and `maxCostUsd`. */
  listJobTypes({ signal } = {}) {
    return this._json("GET", "/api/job-types", { signal });
  }

  /**
   * `GET /api/usage`: the caller's spend from `from` to `to` (UTC days, `YYYY-MM-DD`,
   * inclusive; both omitted: the current month) and the month's budget.
   */
  getUsage({ from, to, signal } = {}) {
    const query = new URLSearchParams();
    if (from) query.set("from", from);
    if (to) query.set("to", to);
    return this._json("GET", withQuery("/api/usage", query), { signal });
  }

  /** `POST /api/jobs/{jobId}/cancel`: the job as it was when asked (`202`). */
  cancelJob(jobId, { signal } = {}) {
    return this._json("POST", `/api/jobs/${encodeURIComponent(jobId)}/cancel`, {
      signal,
      expect: [202],
    });
  }

  /**
   * Resolves with the job once it `succeeded`; rejects with `JobEndedError` when it `failed`
   * or was `canceled`, `WaitTimeoutError` after `timeoutMs`, the signal's reason when
   * `signal` aborts, `ApiError` for `401`/`404`. Everything it opened is closed when it
   * settles.
   */
  async waitForJob(jobId, { onUpdate, onProgress, signal, timeoutMs } = {}) {
    const inner = new AbortController();
    const stop = () => inner.abort(signal.reason);
    if (signal?.aborted) throw signal.reason;
    signal?.addEventListener("abort", stop, { once: true });
    let timer = null;
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => inner.abort(new WaitTimeoutError(jobId, timeoutMs)), timeoutMs);
    }
    const state = { version: 0, seq: -1, job: null };
    const seen = (job) => {
      if (job.version > state.version) {
        state.version = job.version;
        state.job = job;
        onUpdate?.(job);
      }
      return TERMINAL.has(job.status);
    };
    try {
      let failures = 0;
      let delayMs = this.reconnectMs;
      while (this.streaming && failures < this.maxStreamFailures) {
        const outcome = await this._stream(jobId, state, seen, onProgress, inner.signal);
        if (outcome.final) return settle(state.job);
        if (outcome.retryMs !== null) delayMs = outcome.retryMs;
        failures = outcome.received ? 0 : failures + 1;
        if (failures < this.maxStreamFailures) await this.sleep(delayMs, inner.signal);
      }
      return settle(await this._poll(jobId, seen, inner.signal));
    } catch (error) {
      if (inner.signal.aborted) throw inner.signal.reason;
      throw error;
    } finally {
      if (timer !== null) clearTimeout(timer);
      signal?.removeEventListener("abort", stop);
      inner.abort(new Error("waitForJob settled")); // ends any request still open
    }
  }

  /**
   * One connection to the job's event stream. `{final}` once the terminal state was seen;
   * otherwise whether anything arrived and the server's `retry:` hint. Errors that polling
   * cannot fix (`401`, `404`) are thrown; the others count as a failed stream.
   */
  async _stream(jobId, state, seen, onProgress, signal) {
    const outcome = { final: false, received: false, retryMs: null };
    let response;
    try {
      const headers = this._headers({ Accept: "text/event-stream" });
      if (state.version > 0) headers["Last-Event-ID"] = String(state.version);
      response = await this.fetch(
        `${this.baseUrl}/api/jobs/${encodeURIComponent(jobId)}/events`,
        { headers, signal },
      );
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      return outcome; // the network: try again, then poll
    }
    if (response.status === 204) {
      // The job is terminal at the version we have; read it if we somehow do not.
      outcome.final =
        (state.job !== null && TERMINAL.has(state.job.status)) ||
        seen(await this.getJob(jobId, { signal }));
      return outcome;
    }
    if (response.status === 401 || response.status === 404) {
      const problem = await response.json().catch(() => null);
      throw new ApiError(response.status, problem);
    }
    const type = response.headers.get("content-type") ?? "";
    if (!response.ok || !type.startsWith("text/event-stream") || !response.body) {
      await response.body?.cancel().catch(() => {});
      outcome.retryMs = retryAfterMs(response);
      return outcome;
    }
    try {
      for await (const event of readEvents(response.body, signal)) {
        if (event.retry !== null) outcome.retryMs = event.retry;
        if (event.event === "status") {
          outcome.received = true;
          if (seen(JSON.parse(event.data))) {
            outcome.final = true;
            return outcome;
          }
        } else if (event.event === "progress") {
          outcome.received = true;
          const progress = JSON.parse(event.data);
          if (progress.seq > state.seq) {
            state.seq = progress.seq;
            onProgress?.(progress);
          }
        }
      }
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      // The connection broke: reconnect with Last-Event-ID.
    }
    return outcome;
  }

  /**
   * Reads the job's output text (`GET /api/jobs/{jobId}/output`) from `fromOffset` (code
   * points) until the `done` event, calling `onText(text, offset)` for each new piece.
   * Resolves with `{status, error, text, offset}` (`text`: all the text this call received);
   * rejects with the signal's reason on abort and `ApiError` on 401/403/404/422.
   */
  async streamOutput(jobId, { onText, onConnection, signal, fromOffset = 0 } = {}) {
    let text = "";
    for await (const piece of this.outputStream(jobId, { onConnection, signal, fromOffset })) {
      if (piece.type === "output") {
        text += piece.text;
        onText?.(piece.text, piece.offset);
      } else {
        return { status: piece.status, error: piece.error, text, offset: piece.offset };
      }
    }
    // Only an abort ends the stream without `done`, and that throws; this is for safety.
    throw new OutputProtocolError("the output stream ended without done");
  }

  /**
   * The job's output as an async iterator: `{type: "output", text, offset}` for each piece
   * (`offset`: code points delivered up to and including it), then one `{type: "done",
   * status, error, offset}`. A connection that drops is opened again from the last offset
   * (`Last-Event-ID`), after a wait that doubles from `reconnectMs` up to `maxReconnectMs`
   * while nothing arrives (the server's `retry:` and `Retry-After` are honoured).
   * `onConnection` hears "connecting", "open", "reconnecting" and, at the end, "closed".
   */
  async *outputStream(jobId, { onConnection, signal, fromOffset = 0 } = {}) {
    if (!Number.isInteger(fromOffset) || fromOffset < 0) {
      throw new RangeError(`fromOffset must be a non-negative integer, not ${fromOffset}`);
    }
    const inner = new AbortController();
    const stop = () => inner.abort(signal.reason);
    if (signal?.aborted) throw signal.reason;
    signal?.addEventListener("abort", stop, { once: true });
    const url = `${this.baseUrl}/api/jobs/${encodeURIComponent(jobId)}/output`;
    let offset = fromOffset;
    let delayMs = this.reconnectMs;
    let hintMs = null;
    try {
      onConnection?.("connecting");
      while (true) {
        let response = null;
        try {
          const headers = this._headers({ Accept: "text/event-stream" });
          if (offset > 0) headers["Last-Event-ID"] = String(offset);
          response = await this.fetch(url, { headers, signal: inner.signal });
        } catch (error) {
          if (inner.signal.aborted) throw inner.signal.reason;
        }
        let received = false;
        if (response !== null && FINAL_STATUSES.has(response.status)) {
          throw new ApiError(response.status, await response.json().catch(() => null));
        }
        const type = response?.headers.get("content-type") ?? "";
        if (response !== null && response.ok && type.startsWith("text/event-stream")) {
          onConnection?.("open");
          try {
            for await (const event of readEvents(response.body, inner.signal)) {
              if (event.retry !== null) hintMs = event.retry;
              if (event.event === "output") {
                const piece = outputPiece(event, offset);
                if (piece === null) continue;
                received = true;
                offset = piece.offset;
                yield piece;
              } else if (event.event === "done") {
                const { status, error } = JSON.parse(event.data);
                yield { type: "done", status, error: error ?? null, offset };
                return;
              }
            }
          } catch (error) {
            if (inner.signal.aborted) throw inner.signal.reason;
            if (error instanceof OutputProtocolError || error instanceof SyntaxError) throw error;
            // The connection broke: open it again from the offset reached.
          }
        }
        let retryAfter = null;
        if (response !== null && !received && !response.bodyUsed) {
          await response.body?.cancel().catch(() => {});
          retryAfter = retryAfterMs(response); // for this answer only, unlike `retry:`
        }
        // Back off while connections bring nothing; start over once one did.
        delayMs = received ? (hintMs ?? this.reconnectMs) : Math.max(delayMs, hintMs ?? 0);
        onConnection?.("reconnecting");
        await this.sleep(retryAfter ?? delayMs, inner.signal);
        delayMs = Math.min(delayMs * 2, this.maxReconnectMs);
      }
    } finally {
      signal?.removeEventListener("abort", stop);
      inner.abort(new Error("output stream ended")); // ends any request still open
      onConnection?.("closed");
    }
  }

  /** Polls until the job is terminal, backing off while nothing changes or on errors. */
  async _poll(jobId, seen, signal) {
    let interval = this.pollIntervalMs;
    let etag = null;
    while (true) {
      let wait = interval;
      try {
        const headers = this._headers({ Accept: "application/json" });
        if (etag) headers["If-None-Match"] = etag;
        const response = await this.fetch(
          `${this.baseUrl}/api/jobs/${encodeURIComponent(jobId)}`,
          { headers, signal },
        );
        if (response.status === 200) {
          etag = response.headers.get("etag");
          const job = await response.json();
          if (seen(job)) return job;
          interval = this.pollIntervalMs;
          wait = interval;
        } else if (response.status === 304) {
          await response.body?.cancel().catch(() => {});
          interval = Math.min(interval * 1.5, this.maxPollIntervalMs);
        } else if (response.status === 401 || response.status === 404) {
          throw new ApiError(response.status, await response.json().catch(() => null));
        } else {
          await response.body?.cancel().catch(() => {});
          interval = Math.min(interval * 2, this.maxPollIntervalMs);
          wait = retryAfterMs(response) ?? interval;
        }
      } catch (error) {
        if (signal.aborted || error instanceof ApiError) throw error;
        interval = Math.min(interval * 2, this.maxPollIntervalMs);
        wait = interval;
      }
      await this.sleep(wait, signal);
    }
  }
}

function settle(job) {
  if (job.status === "succeeded") return job;
  throw new JobEndedError(job);
}

/**
 * An `output` event as a piece after `offset`, or `null` when it brings nothing new. The `id:`
 * counts code points up to the event's end: text that overlaps what is already here is cut
 * off; a gap (text beyond the offset asked from) is an OutputProtocolError.
 */
export function outputPiece(event, offset) {
  const { text } = JSON.parse(event.data);
  if (typeof text !== "string") throw new OutputProtocolError(`output without text: ${event.data}`);
  const length = codePointLength(text);
  const end = event.id === null || event.id === "" ? offset + length : Number(event.id);
  if (!Number.isInteger(end) || end < 0) {
    throw new OutputProtocolError(`output id is not an offset: ${event.id}`);
  }
  const start = end - length;
  if (start > offset) {
    throw new OutputProtocolError(`output from ${start} after offset ${offset}: text missing`);
  }
  if (end <= offset) return null;
  return { type: "output", text: dropCodePoints(text, offset - start), offset: end };
}
