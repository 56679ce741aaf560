// The client against a running gateway and the Replicate simulator (started by
// tests/e2e/test_realtime_client.py, which passes GATEWAY_URL, TOKEN and SIMULATOR_URL).
// The simulator's settings are global, so the tests run one after another.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { after, before, beforeEach, test } from "node:test";

import { generate } from "../generate-types.mjs";
import { ApiError, JobEndedError, JobsClient, WaitTimeoutError } from "../jobs-client.js";

const { GATEWAY_URL, TOKEN, SIMULATOR_URL } = process.env;
if (!GATEWAY_URL || !TOKEN || !SIMULATOR_URL) {
  throw new Error("GATEWAY_URL, TOKEN and SIMULATOR_URL must be set");
}

async function simulate(config) {
  const response = await fetch(`${SIMULATOR_URL}/_sim/config`, {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(config),
  });
  assert.equal(response.status, 200, await response.text());
}

/** A `fetch` that records every request and whether it is still open, for cleanup checks. */
function recordingFetch() {
  const requests = [];
  const wrapped = async (url, init = {}) => {
    const entry = { url: String(url), open: true };
    requests.push(entry);
    const signal = init.signal;
    signal?.addEventListener("abort", () => (entry.open = false), { once: true });
    try {
      const response = await fetch(url, init);
      if (!String(url).endsWith("/events")) entry.open = false; // read at once by the client
      return response;
    } catch (error) {
      entry.open = false;
      throw error;
    }
  };
  return { fetch: wrapped, requests };
}

const client = (options = {}) =>
  new JobsClient({ baseUrl: GATEWAY_URL, token: TOKEN, pollIntervalMs: 200, ...options });

beforeEach(async () => {
  await fetch(`${SIMULATOR_URL}/_sim/reset`, { method: "POST" });
  await simulate({ latencyS: 1.5 });
});

after(async () => {
  await fetch(`${SIMULATOR_URL}/_sim/reset`, { method: "POST" });
});

test("the generated types match the gateway's OpenAPI document", async () => {
  const document = await (await fetch(`${GATEWAY_URL}/openapi.json`)).json();
  const committed = await readFile(new URL("../api-types.d.ts", import.meta.url), "utf8");
  assert.equal(committed, generate(document), "run: node generate-types.mjs $GATEWAY_URL/openapi.json");
});

test("waitForJob resolves on succeeded, with updates and partial output on the way", async () => {
  const { fetch: recorded, requests } = recordingFetch();
  const jobs = client({ fetch: recorded });
  const { jobId, status } = await jobs.createJob("script_generation", { topic: "tides" });
  assert.equal(status, "pending");
  const updates = [];
  const progress = [];
  const job = await jobs.waitForJob(jobId, {
    onUpdate: (j) => updates.push(j),
    onProgress: (p) => progress.push(p),
    timeoutMs: 20_000,
  });
  assert.equal(job.status, "succeeded");
  assert.ok(job.output && job.output.length > 0);
  assert.equal(updates.at(-1), job);
  const versions = updates.map((u) => u.version);
  assert.deepEqual(versions, [...versions].sort((a, b) => a - b));
  assert.equal(new Set(versions).size, versions.length);
  assert.ok(progress.length >= 1, "partial output arrived before the result");
  for (const p of progress) assert.ok(job.output.startsWith(p.output), p.output);
  assert.ok(requests.some((r) => r.url.endsWith("/events")), "it streamed");
  assert.ok(!requests.some((r) => /\/api\/jobs\/[^/]+$/.test(r.url)), "it did not poll");
  assert.ok(requests.every((r) => !r.open), "every request is closed");
});

test("waitForJob rejects when the job fails", async () => {
  await simulate({ predictionFailRate: 1 });
  const jobs = client();
  const { jobId } = await jobs.createJob("title_generation", { topic: "fail" });
  await assert.rejects(jobs.waitForJob(jobId, { timeoutMs: 20_000 }), (error) => {
    assert.ok(error instanceof JobEndedError);
    assert.equal(error.name, "JobFailedError");
    assert.equal(error.job.status, "failed");
    assert.ok(error.job.error.code);
    return true;
  });
});

test("a canceled job rejects the wait", async () => {
  await simulate({ latencyS: 30 });
  const jobs = client();
  const { jobId } = await jobs.createJob("video_outline", { topic: "cancel me" });
  const waiting = jobs.waitForJob(jobId, { timeoutMs: 20_000 });
  const asked = await jobs.cancelJob(jobId);
  assert.equal(asked.jobId, jobId);
  await assert.rejects(waiting, (error) => {
    assert.equal(error.name, "JobCanceledError");
    assert.equal(error.job.status, "canceled");
    return true;
  });
});

test("waitForJob gives up after timeoutMs and closes its stream", async () => {
  await simulate({ latencyS: 30 });
  const { fetch: recorded, requests } = recordingFetch();
  const jobs = client({ fetch: recorded });
  const { jobId } = await jobs.createJob("title_generation", { topic: "slow" });
  const started = Date.now();
  await assert.rejects(jobs.waitForJob(jobId, { timeoutMs: 400 }), WaitTimeoutError);
  assert.ok(Date.now() - started < 5000);
  assert.ok(requests.length >= 1);
  assert.ok(requests.every((r) => !r.open), "the stream was closed");
  await jobs.cancelJob(jobId);
});

test("an aborted signal rejects with its reason", async () => {
  await simulate({ latencyS: 30 });
  const jobs = client();
  const { jobId } = await jobs.createJob("title_generation", { topic: "abort" });
  const controller = new AbortController();
  const waiting = jobs.waitForJob(jobId, { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("the user left")), 200);
  await assert.rejects(waiting, /the user left/);
  await jobs.cancelJob(jobId);
});

test("an unknown job is an ApiError 404, not an endless wait", async () => {
  const jobs = client();
  await assert.rejects(
    jobs.waitForJob("00000000-0000-4000-8000-000000000000", { timeoutMs: 5000 }),
    (error) => error instanceof ApiError && error.status === 404,
  );
});

// A proxy in front of the gateway that refuses event streams (as some corporate proxies do):
// the client must fall back to polling.
let proxy;
let proxyUrl;
before(async () => {
  proxy = http.createServer(async (request, response) => {
    if (request.url.includes("/events")) {
      response.writeHead(502, { "Content-Type": "text/plain" }).end("no streams here");
      return;
    }
    const upstream = await fetch(`${GATEWAY_URL}${request.url}`, {
      method: request.method,
      headers: { authorization: request.headers.authorization ?? "" },
    });
    const headers = {};
    for (const name of ["content-type", "etag", "retry-after"]) {
      const value = upstream.headers.get(name);
      if (value) headers[name] = value;
    }
    response.writeHead(upstream.status, headers).end(Buffer.from(await upstream.arrayBuffer()));
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
});
after(() => proxy.close());

test("without streams it polls, with backoff, until the job is done", async () => {
  const { fetch: recorded, requests } = recordingFetch();
  const direct = client();
  const { jobId } = await direct.createJob("title_generation", { topic: "polling" });
  const jobs = new JobsClient({
    baseUrl: proxyUrl,
    token: TOKEN,
    fetch: recorded,
    pollIntervalMs: 100,
    reconnectMs: 50,
  });
  const updates = [];
  const job = await jobs.waitForJob(jobId, { onUpdate: (j) => updates.push(j), timeoutMs: 20_000 });
  assert.equal(job.status, "succeeded");
  const streams = requests.filter((r) => r.url.endsWith("/events"));
  const polls = requests.filter((r) => r.url.endsWith(jobId));
  assert.equal(streams.length, 2, "two refused streams, then polling");
  assert.ok(polls.length >= 2, `polled ${polls.length} times`);
  assert.ok(updates.length >= 2);
  assert.ok(requests.every((r) => !r.open));
});
