// A dependency-free client of the AI jobs gateway for browsers and Node 18+: create a job,
// cancel it, wait for its result with pushed updates (Server-Sent Events read over `fetch`, so
// the token travels in a header), falling back to polling when the stream cannot be had and
// going back to the stream once it can, read a job's output text as it is written (resuming by
// code-point offset), and watch all of the caller's jobs on one connection. Streams pause in a
// hidden tab and resume, losing nothing, when it is shown again. Every failure is an ApiError
// (`kind`: network, http, parse, aborted) or a JobEndedError. Types: jobs-client.d.ts.

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

function describeHttp(status, problem) {
  // A 422's reasons are what a person can act on; the title alone ("Unprocessable") is not.
  const reasons = (problem?.errors ?? []).map((e) => e.detail).filter(Boolean);
  if (reasons.length > 0) return reasons.join("; ");
  return problem?.detail || problem?.title || `the gateway answered ${status}`;
}

const MESSAGES = {
  network: (url) =>
    `could not reach ${url}: the network is down, the gateway is not running, or CORS refused ` +
    "this page's origin (the gateway's CORS_ORIGINS must list it exactly)",
  parse: (url, status, type) =>
    `${url} answered ${status} with ${type || "no content type"} where JSON was expected ` +
    "(a proxy's or dev server's page, not the gateway's)",
};

/**
 * Every failure of a request, told apart by `kind`: `network` (no answer: connection refused,
 * DNS, CORS), `http` (an answer other than the one expected: `status`, the RFC 9457 `problem`,
 * `retryAfterMs`), `parse` (an answer that is not the JSON expected, e.g. a proxy's HTML page),
 * `aborted` (the caller's signal; `cause` is its reason). `cause` keeps the original error.
 */
export class ApiError extends Error {
  constructor(kind, { status = null, problem = null, retryAfterMs = null, url = null, message, cause } = {}) {
    if (typeof kind === "number") {
      // The 0.2 form, `new ApiError(status, problem, message)`.
      return new ApiError("http", { status: kind, problem: status, message: problem ?? undefined });
    }
    super(message ?? (kind === "http" ? describeHttp(status, problem) : kind), { cause });
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.problem = problem;
    this.retryAfterMs = retryAfterMs;
    this.url = url;
  }
}

/** The job ended other than `succeeded`: `job` as it ended, `text` the output seen so far. */
export class JobEndedError extends Error {
  constructor(job, text = "") {
    const why = job.error ? `: ${job.error.code}: ${job.error.message}` : "";
    super(`job ${job.jobId} ${job.status}${why}`);
    this.name = "JobEndedError";
    this.job = job;
    this.text = text;
  }
}

/** The job `failed`; `job.error` says why. */
export class JobFailedError extends JobEndedError {
  constructor(job, text) {
    super(job, text);
    this.name = "JobFailedError";
  }
}

/** The job was `canceled`. */
export class JobCanceledError extends JobEndedError {
  constructor(job, text) {
    super(job, text);
    this.name = "JobCanceledError";
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

/** The output stream said something that cannot be true (a gap in the text). */
export class OutputProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = "OutputProtocolError";
  }
}

/** What a signal's abort becomes when it leaves the client. */
function abortedError(signal) {
  const reason = signal.reason;
  if (reason instanceof WaitTimeoutError || reason instanceof ApiError) return reason;
  const message = reason instanceof Error ? reason.message : String(reason ?? "aborted");
  return new ApiError("aborted", { message, cause: reason });
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

/** A controller aborted with its parent (and with the parent's reason). */
function linked(parent) {
  const controller = new AbortController();
  if (parent.aborted) controller.abort(parent.reason);
  else {
    const follow = () => controller.abort(parent.reason);
    parent.addEventListener("abort", follow, { once: true });
    controller.signal.addEventListener("abort", () => parent.removeEventListener("abort", follow), { once: true });
  }
  return controller;
}

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

// Answers to a stream that no retry can fix: they end it with an ApiError.
const FINAL_STATUSES = new Set([400, 401, 403, 404, 410, 422]);

function withQuery(path, query) {
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** Thrown inside a connection that was closed because the tab was hidden. */
const PAUSED = Symbol("paused");

/** Why a connection was closed because its work was done (not an error). */
const SETTLED = Symbol("settled");
/** Why a pause between attempts was cut short: the page came back online or changed visibility. */
const WOKEN = Symbol("woken");

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
    streamRetryMs = 15000,
    pauseWhenHidden = true,
    onConnectionChange,
    document: page = globalThis.document,
    window: events = typeof globalThis.addEventListener === "function" ? globalThis : undefined,
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
    this.streamRetryMs = streamRetryMs;
    this.pauseWhenHidden = pauseWhenHidden;
    this.onConnectionChange = onConnectionChange;
    this.document = page;
    this.window = events;
    // Every pause between attempts goes through here, so a caller (a test) can see the
    // waits the client chose; the default is a plain timer.
    this.sleep = sleepImpl;
    this._cached = null;
  }

  /**
   * A new token or token provider for the requests from now on (a session refreshed); streams
   * that are open keep theirs until they reconnect.
   */
  setToken(token) {
    this.token = token;
    this._cached = null;
  }

  /** The token to send: the string, or the provider's value (asked once, then kept). */
  async _currentToken() {
    const source = this.token;
    if (typeof source !== "function") return source || null;
    if (this._cached?.source !== source) {
      // Kept as a promise, so requests that start together ask the provider once.
      const value = Promise.resolve().then(() => source());
      this._cached = { source, value };
      value.catch(() => {
        if (this._cached?.value === value) this._cached = null;
      });
    }
    return (await this._cached.value) || null;
  }

  /** After a `401` with `used`: another token to try once, or null (give up). */
  async _freshToken(used) {
    const current = await this._currentToken();
    if (current !== used) return current; // set or refreshed since the request went out
    if (typeof this.token !== "function") return null;
    this._cached = null;
    const fresh = await this._currentToken();
    return fresh !== used ? fresh : null;
  }

  /**
   * One request with the token, sent once more with a fresh token after a `401`. Resolves
   * with the response, whatever its status; rejects with ApiError `network` or `aborted`.
   */
  async _request(path, { method = "GET", headers = {}, body, signal } = {}) {
    const url = `${this.baseUrl}${path}`;
    let token = await this._currentToken();
    for (let attempt = 1; ; attempt += 1) {
      const sent = { ...headers };
      if (token) sent.Authorization = `Bearer ${token}`;
      let response;
      try {
        response = await this.fetch(url, { method, headers: sent, body, signal });
      } catch (error) {
        if (signal?.aborted) throw abortedError(signal);
        throw new ApiError("network", { url, cause: error, message: MESSAGES.network(url) });
      }
      if (response.status === 401 && attempt === 1) {
        const fresh = await this._freshToken(token);
        if (fresh) {
          await response.body?.cancel().catch(() => {});
          token = fresh;
          continue;
        }
      }
      return response;
    }
  }

  /** An answer that was not the one expected, as ApiError `http` (its body read as a problem). */
  async _httpError(response, path) {
    const text = await response.text().catch(() => "");
    let problem = null;
    try {
      problem = text ? JSON.parse(text) : null;
    } catch {
      // A proxy's page: the status says enough.
    }
    return new ApiError("http", {
      status: response.status,
      problem,
      retryAfterMs: retryAfterMs(response),
      url: `${this.baseUrl}${path}`,
    });
  }

  async _json(method, path, { body, headers, signal, expect = [200] } = {}) {
    const response = await this._request(path, {
      method,
      headers: {
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    if (!expect.includes(response.status)) throw await this._httpError(response, path);
    const url = `${this.baseUrl}${path}`;
    let text;
    try {
      text = await response.text();
    } catch (error) {
      if (signal?.aborted) throw abortedError(signal);
      throw new ApiError("network", { url, cause: error, message: MESSAGES.network(url) });
    }
    try {
      return text ? JSON.parse(text) : null;
    } catch (error) {
      const type = response.headers.get("content-type");
      throw new ApiError("parse", {
        status: response.status,
        url,
        cause: error,
        message: MESSAGES.parse(url, response.status, type),
      });
    }
  }

  /** Reports a connection's status to `onConnection` and `onConnectionChange`, each change once. */
  _reporter(method, jobId, onConnection) {
    let last = null;
    return (status) => {
      if (status === last) return;
      last = status;
      onConnection?.(status);
      this.onConnectionChange?.(status, { method, jobId });
    };
  }

  _hidden() {
    return this.pauseWhenHidden && this.document?.visibilityState === "hidden";
  }

  /** Resolves once the page is visible (at once when it is); rejects with ApiError on abort. */
  async _untilVisible(signal) {
    if (!this._hidden()) return;
    await new Promise((resolve, reject) => {
      const check = () => {
        if (this._hidden()) return;
        cleanup();
        resolve();
      };
      const aborted = () => {
        cleanup();
        reject(abortedError(signal));
      };
      const cleanup = () => {
        this.document.removeEventListener("visibilitychange", check);
        signal.removeEventListener("abort", aborted);
      };
      this.document.addEventListener("visibilitychange", check);
      signal.addEventListener("abort", aborted, { once: true });
      if (signal.aborted) aborted();
    });
  }

  /** A controller for one connection: aborted with `signal`, and (PAUSED) when the page hides. */
  _connection(signal) {
    const controller = linked(signal);
    const page = this.document;
    if (this.pauseWhenHidden && typeof page?.addEventListener === "function") {
      const check = () => {
        if (this._hidden()) controller.abort(PAUSED);
      };
      page.addEventListener("visibilitychange", check);
      controller.signal.addEventListener("abort", () => page.removeEventListener("visibilitychange", check), {
        once: true,
      });
    }
    return controller;
  }

  /**
   * Waits `ms` between attempts; cut short (true) when the page comes back online or changes
   * visibility, so a stream is tried again at once. Rejects with ApiError on abort.
   */
  async _pause(ms, signal) {
    const wake = linked(signal);
    const detach = [];
    const listen = (target, name) => {
      if (typeof target?.addEventListener !== "function") return;
      const woken = () => wake.abort(WOKEN);
      target.addEventListener(name, woken);
      detach.push(() => target.removeEventListener(name, woken));
    };
    if (this.pauseWhenHidden) listen(this.document, "visibilitychange");
    listen(this.window, "online");
    try {
      await this.sleep(ms, wake.signal);
      return false;
    } catch (error) {
      if (signal.aborted) throw abortedError(signal);
      if (wake.signal.reason === WOKEN) return true;
      throw error;
    } finally {
      for (const undo of detach) undo();
      wake.abort(SETTLED);
    }
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
   * `POST /api/jobs/{jobId}/token` (the job's owner only): `{token, expiresAt}`, a short-lived
   * token that reads this one job (its GET, events and output), for a page to hold instead of
   * the user's session token.
   */
  createJobToken(jobId, { signal } = {}) {
    return this._json("POST", `/api/jobs/${encodeURIComponent(jobId)}/token`, { signal });
  }

  /**
   * Resolves with the job once it `succeeded`; rejects with JobFailedError / JobCanceledError
   * (`job`, `text`), WaitTimeoutError after `timeoutMs`, ApiError `aborted` when `signal`
   * aborts, ApiError `http` for `401`/`403`/`404`. With `onText`, the output text is read too,
   * from offset 0 (so a page reloaded mid-answer shows the text so far at once), and the wait
   * ends once all of it was read. Everything it opened is closed when it settles.
   */
  async waitForJob(jobId, { onUpdate, onProgress, onText, onConnection, signal, timeoutMs } = {}) {
    if (signal?.aborted) throw abortedError(signal);
    const inner = signal ? linked(signal) : new AbortController();
    let timer = null;
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => inner.abort(new WaitTimeoutError(jobId, timeoutMs)), timeoutMs);
    }
    const report = this._reporter("waitForJob", jobId, onConnection);
    const state = { version: 0, seq: -1, job: null, progressText: "", outputText: "" };
    const seen = (job) => {
      if (job.version > state.version) {
        state.version = job.version;
        state.job = job;
        onUpdate?.(job);
      }
      return TERMINAL.has(job.status);
    };
    const progressed = (progress) => {
      if (progress.seq <= state.seq) return;
      state.seq = progress.seq;
      if (typeof progress.output === "string") state.progressText = progress.output;
      onProgress?.(progress);
    };
    // The text is a second connection, best effort: what ends the wait is the job's state.
    // Once the job has ended, the text still on its way is waited for, unless its stream is
    // failing or paused: then the wait ends without it.
    const text = linked(inner.signal);
    let textStatus = null;
    let ended = false;
    const giveUp = () => {
      if (ended && (textStatus === "error" || textStatus === "paused")) text.abort(SETTLED);
    };
    const reading = onText
      ? this.streamOutput(jobId, {
          signal: text.signal,
          onConnection: (status) => {
            textStatus = status;
            giveUp();
          },
          onText: (piece, offset) => {
            state.outputText += piece;
            onText(piece, offset);
          },
        }).catch(() => {})
      : null;
    try {
      const job = await this._watch(jobId, state, seen, progressed, report, inner.signal);
      ended = true;
      giveUp();
      if (reading) await reading;
      const seenText = state.outputText.length >= state.progressText.length ? state.outputText : state.progressText;
      if (job.status === "succeeded") return job;
      throw job.status === "canceled" ? new JobCanceledError(job, seenText) : new JobFailedError(job, seenText);
    } catch (error) {
      if (inner.signal.aborted && !(error instanceof JobEndedError)) throw abortedError(inner.signal);
      if (!(error instanceof JobEndedError)) report("error");
      throw error;
    } finally {
      if (timer !== null) clearTimeout(timer);
      inner.abort(new Error("waitForJob settled")); // ends any request still open
      report("closed");
    }
  }

  /** The job's state until it is terminal: streams, falls back to polling, goes back to streams. */
  async _watch(jobId, state, seen, progressed, report, signal) {
    let streaming = this.streaming;
    let failures = 0;
    let delayMs = this.reconnectMs;
    while (true) {
      if (this._hidden()) {
        report("paused");
        await this._untilVisible(signal);
      }
      if (streaming) {
        report("connecting");
        const outcome = await this._stream(jobId, state, seen, progressed, report, signal);
        if (outcome.final) return state.job;
        if (outcome.paused) continue;
        if (outcome.retryMs !== null) delayMs = outcome.retryMs;
        failures = outcome.received ? 0 : failures + 1;
        if (failures >= this.maxStreamFailures) {
          streaming = false;
          continue;
        }
        report(outcome.received ? "connecting" : "error");
        await this._pause(delayMs, signal);
      } else {
        const outcome = await this._poll(jobId, seen, report, signal);
        if (outcome.final) return state.job;
        if (this.streaming) {
          // Back from polling (the stream's time came, the page came online or was shown
          // again): one stream attempt; if it fails too, polling takes over again.
          streaming = true;
          failures = this.maxStreamFailures - 1;
        }
      }
    }
  }

  /**
   * One connection to the job's event stream. `{final}` once the terminal state was seen;
   * otherwise whether anything arrived, the server's `retry:` hint, and whether the page hid.
   * Errors that polling cannot fix (`401`, `403`, `404`) are thrown; the others count as a
   * failed stream.
   */
  async _stream(jobId, state, seen, progressed, report, signal) {
    const outcome = { final: false, received: false, retryMs: null, paused: false };
    const path = `/api/jobs/${encodeURIComponent(jobId)}/events`;
    const connection = this._connection(signal);
    try {
      let response;
      try {
        const headers = { Accept: "text/event-stream" };
        if (state.version > 0) headers["Last-Event-ID"] = String(state.version);
        response = await this._request(path, { headers, signal: connection.signal });
      } catch (error) {
        if (signal.aborted) throw abortedError(signal);
        if (connection.signal.reason === PAUSED) outcome.paused = true;
        else if (!(error instanceof ApiError && error.kind === "network")) throw error;
        return outcome; // the network: try again, then poll
      }
      if (response.status === 204) {
        // The job is terminal at the version we have; read it if we somehow do not.
        outcome.final =
          (state.job !== null && TERMINAL.has(state.job.status)) ||
          seen(await this.getJob(jobId, { signal }));
        return outcome;
      }
      if (FINAL_STATUSES.has(response.status)) throw await this._httpError(response, path);
      const type = response.headers.get("content-type") ?? "";
      if (!response.ok || !type.startsWith("text/event-stream") || !response.body) {
        await response.body?.cancel().catch(() => {});
        outcome.retryMs = retryAfterMs(response);
        return outcome;
      }
      report("open");
      try {
        for await (const event of readEvents(response.body, connection.signal)) {
          if (event.retry !== null) outcome.retryMs = event.retry;
          if (event.event === "status") {
            outcome.received = true;
            if (seen(JSON.parse(event.data))) {
              outcome.final = true;
              return outcome;
            }
          } else if (event.event === "progress") {
            outcome.received = true;
            progressed(JSON.parse(event.data));
          }
        }
        // readEvents ends quietly when its signal aborts: the abort still decides.
        if (signal.aborted) throw abortedError(signal);
        if (connection.signal.reason === PAUSED) outcome.paused = true;
      } catch (error) {
        if (signal.aborted) throw abortedError(signal);
        if (connection.signal.reason === PAUSED) outcome.paused = true;
        // Otherwise the connection broke: reconnect with Last-Event-ID.
      }
      return outcome;
    } finally {
      connection.abort(SETTLED);
    }
  }

  /**
   * Polls until the job is terminal (`{final}`), backing off while nothing changes or on
   * errors; returns early (to try the stream again) after `streamRetryMs` of polling, when the
   * page comes back online, or when it is hidden.
   */
  async _poll(jobId, seen, report, signal) {
    const path = `/api/jobs/${encodeURIComponent(jobId)}`;
    let interval = this.pollIntervalMs;
    let etag = null;
    let polled = 0;
    report("polling");
    while (true) {
      if (this._hidden()) return { final: false };
      let wait = interval;
      try {
        const headers = { Accept: "application/json" };
        if (etag) headers["If-None-Match"] = etag;
        const response = await this._request(path, { headers, signal });
        if (response.status === 200) {
          etag = response.headers.get("etag");
          if (seen(await response.json())) return { final: true };
          interval = this.pollIntervalMs;
          wait = interval;
        } else if (response.status === 304) {
          await response.body?.cancel().catch(() => {});
          interval = Math.min(interval * 1.5, this.maxPollIntervalMs);
        } else if (FINAL_STATUSES.has(response.status)) {
          throw await this._httpError(response, path);
        } else {
          await response.body?.cancel().catch(() => {});
          interval = Math.min(interval * 2, this.maxPollIntervalMs);
          wait = retryAfterMs(response) ?? interval;
        }
      } catch (error) {
        if (signal.aborted) throw abortedError(signal);
        if (error instanceof ApiError && error.kind === "http") throw error;
        // The network, or a page that is not the job: back off and ask again.
        interval = Math.min(interval * 2, this.maxPollIntervalMs);
        wait = interval;
      }
      const woken = await this._pause(wait, signal);
      polled += wait;
      if (woken || (this.streaming && polled >= this.streamRetryMs)) return { final: false };
    }
  }

  /**
   * Reads the job's output text (`GET /api/jobs/{jobId}/output`) from `fromOffset` (code
   * points) until the `done` event, calling `onText(text, offset)` for each new piece.
   * Resolves with `{status, error, text, offset}` (`text`: all the text this call received);
   * rejects with ApiError (`aborted` on abort; `http` on 401/403/404/422).
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
   * while nothing arrives (the server's `retry:` and `Retry-After` are honoured); a hidden page
   * closes it and a shown one opens it again from the offset.
   */
  async *outputStream(jobId, { onConnection, signal, fromOffset = 0 } = {}) {
    if (!Number.isInteger(fromOffset) || fromOffset < 0) {
      throw new RangeError(`fromOffset must be a non-negative integer, not ${fromOffset}`);
    }
    if (signal?.aborted) throw abortedError(signal);
    const inner = signal ? linked(signal) : new AbortController();
    const report = this._reporter("outputStream", jobId, onConnection);
    const path = `/api/jobs/${encodeURIComponent(jobId)}/output`;
    let offset = fromOffset;
    const read = (event) => {
      if (event.event === "output") {
        const piece = outputPiece(event, offset);
        if (piece === null) return null;
        offset = piece.offset;
        return { received: true, items: [piece] };
      }
      if (event.event === "done") {
        const { status, error } = JSON.parse(event.data);
        return { items: [{ type: "done", status, error: error ?? null, offset }], done: true };
      }
      return null;
    };
    try {
      yield* this._resumable(path, { inner, report, resumeFrom: () => offset || null, read });
    } finally {
      inner.abort(new Error("output stream ended")); // ends any request still open
      report("closed");
    }
  }

  /**
   * Watches all of the caller's jobs on one connection (`GET /api/events`): `onJob(job)` for
   * each newer state of any job (the current state of each unfinished job first), `onProgress`
   * for partial output. Reconnects with `Last-Event-ID` (nothing missed), pauses in a hidden
   * page. Runs until `signal` aborts (then resolves); rejects with ApiError `http` on
   * 401/403 (after one token refresh).
   */
  async watchJobs({ onJob, onProgress, onConnection, signal, lastEventId = null } = {}) {
    if (signal?.aborted) return;
    const inner = signal ? linked(signal) : new AbortController();
    const report = this._reporter("watchJobs", null, onConnection);
    const versions = new Map();
    const seqs = new Map();
    let position = lastEventId;
    const read = (event) => {
      let got = null;
      if (event.event === "status") {
        got = { received: true };
        const job = JSON.parse(event.data);
        if (job.version > (versions.get(job.jobId) ?? 0)) {
          // A finished job is not sent again (resumes start after it): forget it.
          if (TERMINAL.has(job.status)) versions.delete(job.jobId);
          else versions.set(job.jobId, job.version);
          onJob?.(job);
        }
      } else if (event.event === "progress") {
        got = { received: true };
        const progress = JSON.parse(event.data);
        if (progress.seq > (seqs.get(progress.jobId) ?? -1)) {
          seqs.set(progress.jobId, progress.seq);
          onProgress?.(progress);
        }
      }
      if (event.id) position = event.id;
      return got;
    };
    try {
      // It never ends by itself: only an abort or a final answer stops it.
      for await (const _ of this._resumable("/api/events", { inner, report, resumeFrom: () => position, read }));
    } catch (error) {
      if (error instanceof ApiError && error.kind === "aborted" && signal?.aborted) return;
      report("error");
      throw error;
    } finally {
      inner.abort(new Error("watchJobs ended"));
      report("closed");
    }
  }

  /**
   * The items `read` makes of the events of the stream at `path`, opened again while it breaks
   * from `resumeFrom()` (sent as `Last-Event-ID`), after a wait that doubles from `reconnectMs`
   * up to `maxReconnectMs` while connections bring nothing (`received`; the server's `retry:`
   * and `Retry-After` are honoured); a hidden page closes it and a shown one opens it again.
   * `read(event)` gives null (nothing), or `{received, items, done}`: the items are yielded,
   * and `done` ends it. Throws ApiError on a final answer (401/403/404/422), a body that is not
   * events, or the abort of `inner`.
   */
  async *_resumable(path, { inner, report, resumeFrom, read }) {
    let delayMs = this.reconnectMs;
    let hintMs = null;
    while (true) {
      if (this._hidden()) {
        report("paused");
        await this._untilVisible(inner.signal);
      }
      report("connecting");
      const connection = this._connection(inner.signal);
      let received = false;
      let paused = false;
      let retryAfter = null;
      try {
        let response = null;
        try {
          const headers = { Accept: "text/event-stream" };
          const from = resumeFrom();
          if (from) headers["Last-Event-ID"] = String(from);
          response = await this._request(path, { headers, signal: connection.signal });
        } catch (error) {
          if (inner.signal.aborted) throw abortedError(inner.signal);
          if (connection.signal.reason === PAUSED) paused = true;
          else if (!(error instanceof ApiError && error.kind === "network")) throw error;
        }
        if (response !== null && FINAL_STATUSES.has(response.status)) {
          throw await this._httpError(response, path);
        }
        const type = response?.headers.get("content-type") ?? "";
        if (response !== null && response.ok && type.startsWith("text/event-stream")) {
          report("open");
          try {
            for await (const event of readEvents(response.body, connection.signal)) {
              if (event.retry !== null) hintMs = event.retry;
              const got = read(event);
              if (got === null) continue;
              if (got.received) received = true;
              for (const item of got.items ?? []) yield item;
              if (got.done) return;
            }
            // readEvents ends quietly when its signal aborts: the abort still decides.
            if (inner.signal.aborted) throw abortedError(inner.signal);
            if (connection.signal.reason === PAUSED) paused = true;
          } catch (error) {
            if (inner.signal.aborted) throw abortedError(inner.signal);
            if (error instanceof OutputProtocolError) throw error;
            if (error instanceof SyntaxError) {
              throw new ApiError("parse", { url: `${this.baseUrl}${path}`, cause: error, message: error.message });
            }
            if (connection.signal.reason === PAUSED) paused = true;
            // Otherwise the connection broke: open it again from where it got to.
          }
        }
        if (response !== null && !received && !response.bodyUsed) {
          await response.body?.cancel().catch(() => {});
          retryAfter = retryAfterMs(response); // for this answer only, unlike `retry:`
        }
      } finally {
        connection.abort(SETTLED);
      }
      if (paused) continue;
      // Back off while connections bring nothing; start over once one did.
      delayMs = received ? (hintMs ?? this.reconnectMs) : Math.max(delayMs, hintMs ?? 0);
      report(received ? "connecting" : "error");
      await this._pause(retryAfter ?? delayMs, inner.signal);
      delayMs = Math.min(delayMs * 2, this.maxReconnectMs);
    }
  }
}
