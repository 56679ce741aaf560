// The client's behaviour around the streams, without a gateway: token refresh on 401, the error
// kinds, going back to streaming after polling, pausing in a hidden page, the job-ended errors
// with the text seen, watchJobs and job tokens. Each test gives a tiny local HTTP server (real
// sockets, the real `fetch`) the answers the contract describes. Run by
// tests/e2e/test_client_js_offline.py; needs no environment.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, beforeEach, test } from "node:test";

import {
  ApiError,
  JobCanceledError,
  JobEndedError,
  JobFailedError,
  JobsClient,
  WaitTimeoutError,
} from "../../jobs-client.js";

let server;
let baseUrl;
// Each test sets `handle(request, response, url)`; every request is recorded.
let handle;
let requests;

before(async () => {
  server = http.createServer((request, response) => {
    const url = new URL(request.url, "http://x");
    const record = { method: request.method, path: url.pathname, headers: request.headers, closed: false };
    requests.push(record);
    response.on("close", () => (record.closed = true));
    handle(request, response, url);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});
beforeEach(() => {
  requests = [];
  handle = (request, response) => response.writeHead(404).end();
});

const JOB = "00000000-0000-4000-8000-000000000001";

function job(status, version, extra = {}) {
  return { jobId: JOB, type: "title_generation", status, version, input: {}, output: null, error: null, ...extra };
}

function sse(response) {
  response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
  return (event, data, id) => {
    const idLine = id === undefined ? "" : `id: ${id}\n`;
    response.write(`event: ${event}\n${idLine}data: ${JSON.stringify(data)}\n\n`);
  };
}

function problem(response, status, body, headers = {}) {
  response.writeHead(status, { "content-type": "application/problem+json", ...headers });
  response.end(JSON.stringify({ type: "about:blank", title: "x", status, detail: `answered ${status}`, ...body }));
}

/** Resolves once `condition()` holds, checking after each turn of the event loop. */
async function until(condition) {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

/** A client whose waits are recorded, not slept (each yields one turn of the event loop). */
function client(options = {}) {
  const waits = [];
  const jobs = new JobsClient({
    baseUrl,
    token: "good",
    reconnectMs: 100,
    maxReconnectMs: 400,
    pollIntervalMs: 100,
    maxPollIntervalMs: 300,
    sleep: async (ms, signal) => {
      waits.push(ms);
      await new Promise((resolve) => setImmediate(resolve));
      if (signal.aborted) throw signal.reason;
    },
    ...options,
  });
  return { jobs, waits };
}

/** A page's `document`, enough for the client: visibilityState and its change event. */
class FakeDocument extends EventTarget {
  visibilityState = "visible";
  show(state) {
    this.visibilityState = state;
    this.dispatchEvent(new Event("visibilitychange"));
  }
}

function acceptOnly(token, then) {
  return (request, response, url) => {
    if (request.headers.authorization !== `Bearer ${token}`) return problem(response, 401, { detail: "token expired" });
    return then(request, response, url);
  };
}

test("a token provider is asked once, again after a 401, and the request is sent once more", async () => {
  handle = acceptOnly("fresh", (request, response) => {
    response.writeHead(202, { "content-type": "application/json" }).end(JSON.stringify({ jobId: JOB, status: "pending" }));
  });
  const handed = ["stale", "fresh"];
  const asked = [];
  const { jobs } = client({
    token: async () => {
      asked.push(handed[0]);
      return handed.length > 1 ? handed.shift() : handed[0];
    },
  });
  assert.deepEqual(await jobs.createJob("title_generation", { topic: "x" }), { jobId: JOB, status: "pending" });
  assert.deepEqual(asked, ["stale", "fresh"]);
  assert.deepEqual(requests.map((r) => r.headers.authorization), ["Bearer stale", "Bearer fresh"]);
  // The fresh token is kept: the next request does not ask again.
  await jobs.createJob("title_generation", { topic: "y" });
  assert.equal(asked.length, 2);
  assert.equal(requests.length, 3);
});

test("a second 401 gives up with the ApiError; a plain string is not retried; setToken replaces it", async () => {
  handle = acceptOnly("fresh", (request, response) => {
    response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(job("pending", 1)));
  });
  let calls = 0;
  const { jobs } = client({ token: () => (calls += 1, `stale-${calls}`) });
  await assert.rejects(jobs.getJob(JOB), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.kind, "http");
    assert.equal(error.status, 401);
    assert.equal(error.message, "token expired");
    return true;
  });
  assert.equal(calls, 2);
  assert.equal(requests.length, 2);

  requests = [];
  const plain = client({ token: "stale" }).jobs;
  await assert.rejects(plain.getJob(JOB), (error) => error.status === 401);
  assert.equal(requests.length, 1);
  plain.setToken("fresh");
  assert.equal((await plain.getJob(JOB)).status, "pending");
});

test("concurrent requests share one provider call; a stream refreshes its token too", async () => {
  handle = acceptOnly("fresh", (request, response, url) => {
    if (url.pathname.endsWith("/output")) {
      const send = sse(response);
      send("output", { text: "hi" }, 2);
      send("done", { status: "succeeded", error: null });
      return response.end();
    }
    response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(job("pending", 1)));
  });
  let calls = 0;
  const { jobs } = client({ token: async () => (++calls === 1 ? "stale" : "fresh") });
  const [result] = await Promise.all([jobs.streamOutput(JOB), jobs.getJob(JOB)]);
  assert.equal(result.text, "hi");
  // One call for both first requests; one more for the first 401 (the second sees it fresh).
  assert.equal(calls, 2);
});

test("no answer at all is ApiError network, with the cause, never a bare TypeError", async () => {
  const closed = http.createServer();
  await new Promise((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const port = closed.address().port;
  await new Promise((resolve) => closed.close(resolve));
  const { jobs } = client({ baseUrl: `http://127.0.0.1:${port}` });
  await assert.rejects(jobs.getJob(JOB), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.kind, "network");
    assert.equal(error.status, null);
    assert.ok(error.cause instanceof TypeError, String(error.cause));
    assert.match(error.message, /CORS_ORIGINS/);
    return true;
  });
});

test("an HTML page where JSON was expected is ApiError parse; an error page is http", async () => {
  handle = (request, response, url) => {
    const status = url.pathname === "/api/jobs" ? 502 : 200;
    response.writeHead(status, { "content-type": "text/html" }).end("<!doctype html><p>index</p>");
  };
  const { jobs } = client();
  await assert.rejects(jobs.getJob(JOB), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.kind, "parse");
    assert.equal(error.status, 200);
    assert.ok(error.cause instanceof SyntaxError);
    assert.match(error.message, /text\/html/);
    return true;
  });
  await assert.rejects(jobs.listJobs(), (error) => {
    assert.equal(error.kind, "http");
    assert.equal(error.status, 502);
    assert.equal(error.problem, null);
    return true;
  });
});

test("http errors carry the problem, a readable message and Retry-After", async () => {
  handle = (request, response, url) => {
    if (request.method === "POST") {
      return problem(response, 422, {
        title: "Unprocessable Content",
        errors: [{ pointer: "/input/topic", detail: "topic must not be empty" }],
      });
    }
    return problem(response, 503, {}, { "retry-after": "2" });
  };
  const { jobs } = client();
  await assert.rejects(jobs.createJob("title_generation", { topic: "" }), (error) => {
    assert.equal(error.kind, "http");
    assert.equal(error.status, 422);
    assert.equal(error.message, "topic must not be empty");
    assert.equal(error.problem.errors[0].pointer, "/input/topic");
    return true;
  });
  await assert.rejects(jobs.getUsage(), (error) => error.status === 503 && error.retryAfterMs === 2000);
});

test("an abort is ApiError aborted with the signal's reason as cause; a timeout stays WaitTimeoutError", async () => {
  handle = (request, response) => response.writeHead(200, { "content-type": "text/event-stream" }).write(": hi\n\n");
  const { jobs } = client();
  const controller = new AbortController();
  const reason = new Error("the user left");
  const waiting = jobs.waitForJob(JOB, { signal: controller.signal });
  await until(() => requests.length === 1);
  controller.abort(reason);
  await assert.rejects(waiting, (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.kind, "aborted");
    assert.equal(error.cause, reason);
    assert.equal(error.message, "the user left");
    return true;
  });
  await until(() => requests[0].closed);
  // Aborted before it started, and the default reason (a DOMException) wrapped too.
  const gone = new AbortController();
  gone.abort();
  await assert.rejects(jobs.getJob(JOB, { signal: gone.signal }), (error) => {
    return error instanceof ApiError && error.kind === "aborted" && error.cause?.name === "AbortError";
  });
  await assert.rejects(jobs.waitForJob(JOB, { timeoutMs: 1 }), WaitTimeoutError);
});

test("a failed job rejects with JobFailedError carrying the job and the text seen", async () => {
  handle = (request, response) => {
    const send = sse(response);
    send("status", job("processing", 2), 2);
    send("progress", { jobId: JOB, output: "half an ans", seq: 0 });
    send("progress", { jobId: JOB, output: "half an answer", seq: 1 });
    send("status", job("failed", 3, { error: { code: "prediction_failed", message: "boom" } }), 3);
    response.end();
  };
  const { jobs } = client();
  const connection = [];
  await assert.rejects(jobs.waitForJob(JOB, { onConnection: (c) => connection.push(c) }), (error) => {
    assert.ok(error instanceof JobFailedError);
    assert.ok(error instanceof JobEndedError);
    assert.equal(error.name, "JobFailedError");
    assert.equal(error.job.status, "failed");
    assert.equal(error.job.error.code, "prediction_failed");
    assert.equal(error.text, "half an answer");
    return true;
  });
  assert.deepEqual(connection, ["connecting", "open", "closed"]);
});

test("with onText a reloaded page gets the text so far at once; a cancel is JobCanceledError", async () => {
  let releaseCancel;
  const canceled = new Promise((resolve) => (releaseCancel = resolve));
  handle = (request, response, url) => {
    if (url.pathname.endsWith("/output")) {
      // The text written before the reload comes first, from offset 0.
      const send = sse(response);
      send("output", { text: "written before " }, 15);
      send("output", { text: "the reload" }, 25);
      canceled.then(() => {
        send("done", { status: "canceled", error: null });
        response.end();
      });
      return;
    }
    const send = sse(response);
    send("status", job("processing", 4, { cancelRequested: true }), 4);
    canceled.then(() => {
      send("status", job("canceled", 5), 5);
      response.end();
    });
  };
  const { jobs } = client();
  const pieces = [];
  const updates = [];
  const waiting = jobs.waitForJob(JOB, {
    onText: (text, offset) => {
      pieces.push([text, offset]);
      if (offset === 25) releaseCancel();
    },
    onUpdate: (j) => updates.push(j),
  });
  await assert.rejects(waiting, (error) => {
    assert.ok(error instanceof JobCanceledError);
    assert.ok(error instanceof JobEndedError);
    assert.equal(error.text, "written before the reload");
    return true;
  });
  assert.deepEqual(pieces, [["written before ", 15], ["the reload", 25]]);
  assert.equal(updates[0].cancelRequested, true);
  await until(() => requests.every((r) => r.closed));
});

test("a job that ended while its text stream fails ends the wait without the text", async () => {
  let ended;
  const sent = new Promise((resolve) => (ended = resolve));
  handle = (request, response, url) => {
    if (url.pathname.endsWith("/output")) {
      // Refused, once the job's end has gone out: the wait has the end and not the text.
      return sent.then(() => response.writeHead(503, { "content-type": "text/plain" }).end("busy"));
    }
    const send = sse(response);
    send("status", job("succeeded", 2, { output: "all of it" }), 2);
    response.end();
    ended();
  };
  const { jobs } = client();
  const finished = await jobs.waitForJob(JOB, { onText: () => assert.fail("no text came") });
  assert.equal(finished.output, "all of it");
  assert.equal(requests.filter((r) => r.path.endsWith("/output")).length, 1);
  await until(() => requests.every((r) => r.closed));
});

test("after falling back to polling, the stream is tried again after streamRetryMs and taken back", async () => {
  let streamsRefused = 2;
  let pollsAnswered = 0;
  handle = (request, response, url) => {
    if (url.pathname.endsWith("/events")) {
      if (streamsRefused > 0) {
        streamsRefused -= 1;
        return response.writeHead(502, { "content-type": "text/plain" }).end("no streams");
      }
      const send = sse(response);
      send("status", job("processing", 2), 2);
      send("progress", { jobId: JOB, output: "live again", seq: 0 });
      send("status", job("succeeded", 3, { output: "live again" }), 3);
      return response.end();
    }
    pollsAnswered += 1;
    if (request.headers["if-none-match"] === '"v1"') return response.writeHead(304).end();
    response.writeHead(200, { "content-type": "application/json", etag: '"v1"' }).end(JSON.stringify(job("processing", 1)));
  };
  const { jobs, waits } = client({ streamRetryMs: 500 });
  const connection = [];
  const progress = [];
  const done = await jobs.waitForJob(JOB, {
    onConnection: (c) => connection.push(c),
    onProgress: (p) => progress.push(p.output),
  });
  assert.equal(done.status, "succeeded");
  assert.deepEqual(progress, ["live again"]);
  assert.deepEqual(
    requests.map((r) => (r.path.endsWith("/events") ? "stream" : "poll")),
    ["stream", "stream", "poll", "poll", "poll", "poll", "stream"],
  );
  // One reconnect wait, then the polls' waits: after the 200 the first interval, after each
  // 304 the current one (growing 1.5 times), until they add up to streamRetryMs (575 >= 500).
  assert.deepEqual(waits, [100, 100, 100, 150, 225]);
  assert.equal(requests.at(-1).headers["last-event-id"], "1");
  assert.deepEqual(connection, ["connecting", "error", "connecting", "polling", "connecting", "open", "closed"]);
  assert.equal(pollsAnswered, 4);
});

test("while polling, the browser's online event tries the stream again at once", async () => {
  let refused = 1;
  handle = (request, response, url) => {
    if (url.pathname.endsWith("/events")) {
      if (refused-- > 0) return response.writeHead(503, { "content-type": "text/plain" }).end("busy");
      const send = sse(response);
      send("status", job("succeeded", 2, { output: "ok" }), 2);
      return response.end();
    }
    response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(job("processing", 1)));
  };
  const events = new EventTarget();
  // Waits that end only when cut short: nothing but the online event can move the poll on.
  let waiting = 0;
  const forever = (ms, signal) => {
    waiting += 1;
    return new Promise((resolve, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
  };
  const { jobs } = client({ window: events, maxStreamFailures: 1, sleep: forever });
  const connection = [];
  const watching = jobs.waitForJob(JOB, { onConnection: (c) => connection.push(c) });
  await until(() => waiting === 1); // the poll is done and waits for its next turn
  events.dispatchEvent(new Event("online"));
  assert.equal((await watching).status, "succeeded");
  assert.deepEqual(requests.map((r) => (r.path.endsWith("/events") ? "stream" : "poll")), ["stream", "poll", "stream"]);
  assert.deepEqual(connection, ["connecting", "polling", "connecting", "open", "closed"]);
});

test("a hidden page closes the output stream (paused) and a shown one resumes from its offset", async () => {
  handle = (request, response) => {
    const send = sse(response);
    const from = Number(request.headers["last-event-id"] ?? 0);
    if (from === 0) return send("output", { text: "first " }, 6); // and stays open
    send("output", { text: "second" }, 12);
    send("done", { status: "succeeded", error: null });
    response.end();
  };
  const page = new FakeDocument();
  const changes = [];
  const { jobs } = client({ document: page, onConnectionChange: (status, source) => changes.push([status, source.method]) });
  const connection = [];
  const reading = jobs.streamOutput(JOB, {
    onConnection: (c) => connection.push(c),
    onText: (text) => {
      if (text === "first ") page.show("hidden");
    },
  });
  await until(() => connection.at(-1) === "paused");
  await until(() => requests[0].closed);
  assert.equal(requests.length, 1, "nothing is asked while hidden");
  page.show("visible");
  const result = await reading;
  assert.equal(result.text, "first second");
  assert.equal(requests[1].headers["last-event-id"], "6");
  assert.deepEqual(connection, ["connecting", "open", "paused", "connecting", "open", "closed"]);
  assert.deepEqual(changes.map(([status]) => status), connection);
  assert.ok(changes.every(([, method]) => method === "outputStream"));
});

test("a wait that starts in a hidden page asks nothing until it is shown; pauseWhenHidden false ignores it", async () => {
  handle = (request, response) => {
    const send = sse(response);
    send("status", job("succeeded", 2, { output: "ok" }), 2);
    response.end();
  };
  const page = new FakeDocument();
  page.visibilityState = "hidden";
  const { jobs } = client({ document: page });
  const connection = [];
  const waiting = jobs.waitForJob(JOB, { onConnection: (c) => connection.push(c) });
  await until(() => connection.includes("paused"));
  assert.equal(requests.length, 0);
  page.show("visible");
  assert.equal((await waiting).status, "succeeded");
  assert.deepEqual(connection, ["paused", "connecting", "open", "closed"]);

  const eager = client({ document: page, pauseWhenHidden: false }).jobs;
  page.visibilityState = "hidden";
  assert.equal((await eager.waitForJob(JOB)).status, "succeeded");
});

test("watchJobs reads status and progress of many jobs, skips what it has, and resumes with Last-Event-ID", async () => {
  const other = "00000000-0000-4000-8000-000000000002";
  handle = (request, response, url) => {
    assert.equal(url.pathname, "/api/events");
    const send = sse(response);
    if (!request.headers["last-event-id"]) {
      send("status", job("processing", 2), "p1");
      send("progress", { jobId: JOB, output: "a", seq: 0 });
      send("status", { ...job("pending", 1), jobId: other }, "p2");
      // The connection drops.
      return response.write(": cut\n\n", () => response.socket.destroy());
    }
    send("status", job("processing", 2), "p3"); // already had: skipped
    send("progress", { jobId: JOB, output: "a", seq: 0 }); // already had: skipped
    send("progress", { jobId: JOB, output: "ab", seq: 1 });
    send("status", job("succeeded", 3, { output: "ab" }), "p4");
  };
  const { jobs, waits } = client();
  const seen = [];
  const connection = [];
  const controller = new AbortController();
  const watching = jobs.watchJobs({
    signal: controller.signal,
    onJob: (j) => {
      seen.push(`${j.jobId.slice(-1)}:${j.status}`);
      if (j.status === "succeeded") controller.abort(new Error("enough"));
    },
    onProgress: (p) => seen.push(`${p.jobId.slice(-1)}:${p.output}`),
    onConnection: (c) => connection.push(c),
  });
  assert.equal(await watching, undefined);
  assert.deepEqual(seen, ["1:processing", "1:a", "2:pending", "1:ab", "1:succeeded"]);
  assert.deepEqual(requests.map((r) => r.headers["last-event-id"]), [undefined, "p2"]);
  assert.deepEqual(waits, [100]);
  assert.deepEqual(connection, ["connecting", "open", "connecting", "open", "closed"]);
  await until(() => requests.every((r) => r.closed));
});

test("watchJobs ends with ApiError http on 403; createJobToken answers a token for one job", async () => {
  handle = (request, response, url) => {
    if (url.pathname === "/api/events") return problem(response, 403, { detail: "a job token reads one job" });
    if (request.method === "POST" && url.pathname === `/api/jobs/${JOB}/token`) {
      response.writeHead(200, { "content-type": "application/json" });
      return response.end(JSON.stringify({ token: "job-token", expiresAt: "2026-12-07T14:00:00Z" }));
    }
    return problem(response, 404, {});
  };
  const { jobs } = client();
  const connection = [];
  await assert.rejects(jobs.watchJobs({ onConnection: (c) => connection.push(c) }), (error) => {
    return error instanceof ApiError && error.kind === "http" && error.status === 403;
  });
  assert.deepEqual(connection, ["connecting", "error", "closed"]);
  assert.deepEqual(await jobs.createJobToken(JOB), { token: "job-token", expiresAt: "2026-12-07T14:00:00Z" });
  assert.equal(requests.at(-1).headers.authorization, "Bearer good");
});
