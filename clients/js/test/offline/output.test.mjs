// The output stream's client side without a gateway: the SSE parser, code-point offsets, and
// resuming across dropped connections, against a tiny local server that speaks the contract's
// format for `GET /api/jobs/{jobId}/output` (`event: output`, `id:` = code points delivered,
// `Last-Event-ID` / `?offset=` resume, `event: done` then close). Run by
// tests/e2e/test_client_js_offline.py; needs no environment.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";

import {
  ApiError,
  JobsClient,
  OutputProtocolError,
  codePointLength,
  dropCodePoints,
  outputPiece,
  readEvents,
} from "../../jobs-client.js";

// Astral characters (two UTF-16 units, four UTF-8 bytes), a combining mark and a line break:
// everything that makes UTF-16 length, code points and bytes disagree.
const PIECES = ["Hé", "llo 🐙", " wörld\n", "𝄞 e\u0301 ", "🎉🎉", " end."];
const TEXT = PIECES.join("");

function bodyOf(stream) {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const part of stream) controller.enqueue(typeof part === "string" ? encoder.encode(part) : part);
      controller.close();
    },
  });
}

async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

test("code points, not UTF-16 units, count the offset", () => {
  assert.equal("🐙".length, 2);
  assert.equal(codePointLength("🐙"), 1);
  assert.equal(codePointLength("e\u0301"), 2); // a combining mark is a code point of its own
  assert.equal(codePointLength(TEXT), [...TEXT].length);
  assert.equal(dropCodePoints("a🐙b𝄞c", 2), "b𝄞c");
  assert.equal(dropCodePoints("a🐙b", 0), "a🐙b");
  assert.equal(dropCodePoints("a🐙", 5), "");
});

test("readEvents parses fields, multi-line data, comments and CRLF, across split bytes", async () => {
  const octopus = new TextEncoder().encode("🐙");
  const body = bodyOf([
    ": keepalive\n\n",
    "event: output\r\nid: 3\r\ndata: {\"text\": \"ab",
    octopus.slice(0, 2), // a code point cut in the middle of its bytes
    octopus.slice(2),
    "\"}\r\n\r\n",
    "retry: 250\nevent: done\ndata: line one\ndata: line two\n\n",
    "event: output\ndata: unterminated", // no blank line: never dispatched
  ]);
  const events = await collect(readEvents(body));
  assert.deepEqual(events, [
    { event: "output", id: "3", data: '{"text": "ab🐙"}', retry: null },
    { event: "done", id: null, data: "line one\nline two", retry: 250 },
  ]);
});

test("outputPiece trusts the id: overlap is cut, a gap is an error", () => {
  const event = (text, id) => ({ event: "output", id, data: JSON.stringify({ text }), retry: null });
  assert.deepEqual(outputPiece(event("🐙ab", "3"), 0), { type: "output", text: "🐙ab", offset: 3 });
  // The client has 2 code points; the event covers 0..3: only the last one is new.
  assert.deepEqual(outputPiece(event("🐙ab", "3"), 2), { type: "output", text: "b", offset: 3 });
  assert.equal(outputPiece(event("🐙ab", "3"), 3), null);
  assert.deepEqual(outputPiece(event("x🐙", null), 5), { type: "output", text: "x🐙", offset: 7 });
  assert.throws(() => outputPiece(event("cd", "9"), 3), OutputProtocolError);
  assert.throws(() => outputPiece(event("cd", "two"), 0), OutputProtocolError);
});

// The server: each request takes the next behaviour of `script` (then serves normally).
// Behaviours: `{dropAfter: n}` sends n events then cuts the connection; `{status, retryAfter}`
// answers an error; `{destroy: true}` cuts the socket before any answer; `{stall: true}`
// answers 200 and never writes (for abort).
let server;
let baseUrl;
const state = { script: [], requests: [], pieces: PIECES, final: { status: "succeeded", error: null } };
before(async () => {
  server = http.createServer((request, response) => {
    const url = new URL(request.url, "http://x");
    const behaviour = state.script.shift() ?? {};
    const record = { url: request.url, headers: request.headers, closed: false };
    state.requests.push(record);
    request.on("close", () => (record.closed = true));
    if (behaviour.destroy) return request.socket.destroy();
    if (request.headers.authorization !== "Bearer t0ken") {
      return response.writeHead(401, { "content-type": "application/problem+json" }).end('{"title":"Unauthorized"}');
    }
    const match = url.pathname.match(/^\/api\/jobs\/([^/]+)\/output$/);
    if (!match || match[1] !== "job-1") {
      return response.writeHead(404, { "content-type": "application/problem+json" }).end('{"title":"Not Found"}');
    }
    if (behaviour.status) {
      const headers = { "content-type": "text/plain" };
      if (behaviour.retryAfter) headers["retry-after"] = String(behaviour.retryAfter);
      return response.writeHead(behaviour.status, headers).end("not now");
    }
    const asked = request.headers["last-event-id"] ?? url.searchParams.get("offset") ?? "0";
    if (!/^\d+$/.test(asked)) {
      return response.writeHead(422, { "content-type": "application/problem+json" }).end('{"title":"offset"}');
    }
    response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    if (behaviour.stall) return response.write(": hello\n\n");
    let offset = Number(asked);
    let end = 0;
    let sent = 0;
    for (const piece of state.pieces) {
      const start = end;
      end += codePointLength(piece);
      if (end <= offset) continue;
      if (behaviour.dropAfter !== undefined && sent === behaviour.dropAfter) {
        // Cut once what was written has gone out (a destroy at once could discard it).
        return response.write(": cut\n\n", () => response.socket.destroy());
      }
      const text = dropCodePoints(piece, offset - start);
      response.write(`event: output\nid: ${end}\ndata: ${JSON.stringify({ text })}\n\n`);
      offset = end;
      sent += 1;
    }
    response.end(`event: done\ndata: ${JSON.stringify(state.final)}\n\n`);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

function reset(script = []) {
  state.script = script;
  state.requests = [];
  state.pieces = PIECES;
  state.final = { status: "succeeded", error: null };
}

/** A client whose waits are recorded and short, so backoff is counted, not timed. */
function client(options = {}) {
  const waits = [];
  const jobs = new JobsClient({
    baseUrl,
    token: "t0ken",
    reconnectMs: 100,
    maxReconnectMs: 400,
    sleep: async (ms, signal) => {
      waits.push(ms);
      if (signal.aborted) throw signal.reason;
    },
    ...options,
  });
  return { jobs, waits };
}

test("streamOutput reads every piece, then done, on one connection", async () => {
  reset();
  const { jobs, waits } = client();
  const pieces = [];
  const connection = [];
  const result = await jobs.streamOutput("job-1", {
    onText: (text, offset) => pieces.push([text, offset]),
    onConnection: (c) => connection.push(c),
  });
  assert.deepEqual(result, { status: "succeeded", error: null, text: TEXT, offset: codePointLength(TEXT) });
  assert.deepEqual(pieces.map(([t]) => t), PIECES);
  assert.deepEqual(pieces.map(([, o]) => o), [2, 7, 14, 19, 21, 26]);
  assert.deepEqual(connection, ["connecting", "open", "closed"]);
  assert.equal(state.requests.length, 1);
  assert.equal(state.requests[0].headers["last-event-id"], undefined);
  assert.equal(state.requests[0].headers.accept, "text/event-stream");
  assert.deepEqual(waits, []);
});

test("dropped connections resume from the last code-point offset, nothing repeated or lost", async () => {
  reset([{ dropAfter: 2 }, { dropAfter: 1 }, { dropAfter: 0 }, {}]);
  const { jobs, waits } = client();
  const connection = [];
  const result = await jobs.streamOutput("job-1", { onConnection: (c) => connection.push(c) });
  assert.equal(result.text, TEXT);
  assert.equal(result.offset, 26);
  const resumedFrom = state.requests.map((r) => r.headers["last-event-id"] ?? "0");
  assert.deepEqual(resumedFrom, ["0", "7", "14", "14"]);
  // A connection that brought text waits the base time; one that brought nothing, twice that.
  assert.deepEqual(waits, [100, 100, 200]);
  // A drop after text: straight back to connecting; a connection that brought nothing: error.
  assert.deepEqual(connection, ["connecting", "open", "connecting", "open", "connecting", "open", "error", "connecting", "open", "closed"]);
});

test("fromOffset resumes after text already had, even inside a piece", async () => {
  reset();
  const { jobs } = client();
  const result = await jobs.streamOutput("job-1", { fromOffset: 5 });
  assert.equal(result.text, dropCodePoints(TEXT, 5));
  assert.equal(state.requests[0].headers["last-event-id"], "5");
  // Past the end: done at once, with the output's length.
  reset();
  const past = await jobs.streamOutput("job-1", { fromOffset: 26 });
  assert.deepEqual(past, { status: "succeeded", error: null, text: "", offset: 26 });
});

test("network errors and 5xx back off exponentially, honouring Retry-After", async () => {
  reset([{ destroy: true }, { status: 503 }, { destroy: true }, { status: 429, retryAfter: 1 }, { destroy: true }, {}]);
  const { jobs, waits } = client();
  const result = await jobs.streamOutput("job-1");
  assert.equal(result.text, TEXT);
  assert.equal(state.requests.length, 6);
  assert.deepEqual(waits, [100, 200, 400, 1000, 400]);
});

test("the async iterator yields pieces then done; a failed job's done carries its error", async () => {
  reset();
  state.pieces = ["par", "tial"];
  state.final = { status: "failed", error: { code: "prediction_failed", message: "boom" } };
  const { jobs } = client();
  const items = await collect(jobs.outputStream("job-1"));
  assert.deepEqual(items, [
    { type: "output", text: "par", offset: 3 },
    { type: "output", text: "tial", offset: 7 },
    { type: "done", status: "failed", error: { code: "prediction_failed", message: "boom" }, offset: 7 },
  ]);
});

test("breaking out of the iterator closes the connection", async () => {
  reset();
  const { jobs } = client();
  const connection = [];
  for await (const piece of jobs.outputStream("job-1", { onConnection: (c) => connection.push(c) })) {
    assert.equal(piece.text, "Hé");
    break;
  }
  assert.equal(connection.at(-1), "closed");
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(state.requests[0].closed);
});

test("401, 404 and 422 end the stream with an ApiError, without retrying", async () => {
  for (const [options, jobId, status] of [
    [{ token: "wrong" }, "job-1", 401],
    [{}, "job-404", 404],
    [{}, "job-1", 422],
  ]) {
    reset(status === 422 ? [{ status: 422 }] : []);
    const { jobs, waits } = client(options);
    await assert.rejects(jobs.streamOutput(jobId), (error) => error instanceof ApiError && error.status === status);
    assert.equal(state.requests.length, 1);
    assert.deepEqual(waits, []);
  }
  reset();
  const { jobs } = client();
  await assert.rejects(jobs.streamOutput("job-1", { fromOffset: -1 }), RangeError);
});

test("an abort ends a waiting stream with the signal's reason and closes the request", async () => {
  reset([{ stall: true }]);
  const { jobs } = client();
  const controller = new AbortController();
  const reading = jobs.streamOutput("job-1", { signal: controller.signal });
  while (state.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  controller.abort(new Error("the user left"));
  await assert.rejects(reading, /the user left/);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(state.requests[0].closed);
});
