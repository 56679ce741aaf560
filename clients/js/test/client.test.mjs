// The client against a running gateway and the Replicate simulator (started by
// tests/e2e/test_realtime_client.py, which passes GATEWAY_URL, TOKEN and SIMULATOR_URL).
// The simulator's settings are global, so the tests run one after another.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { after, before, beforeEach, test } from "node:test";

import { generate } from "../generate-types.mjs";
import {
  ApiError,
  JobCanceledError,
  JobEndedError,
  JobFailedError,
  JobsClient,
  WaitTimeoutError,
} from "../jobs-client.js";

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

/** A `fetch` that records every request, its answer's status and whether it is still open. */
function recordingFetch() {
  const requests = [];
  const wrapped = async (url, init = {}) => {
    const entry = { url: String(url), open: true };
    requests.push(entry);
    const signal = init.signal;
    signal?.addEventListener("abort", () => (entry.open = false), { once: true });
    try {
      const response = await fetch(url, init);
      entry.status = response.status;
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
  // Webhooks held until the first progress, so the job cannot end before it (the relay reads
  // the prediction's stream meanwhile): a loaded machine could end a 1.5 s prediction first.
  await simulate({ holdWebhooks: true });
  let released;
  const { jobId, status } = await jobs.createJob("script_generation", { topic: "tides" });
  assert.equal(status, "pending");
  const updates = [];
  const progress = [];
  const job = await jobs.waitForJob(jobId, {
    onUpdate: (j) => updates.push(j),
    onProgress: (p) => {
      progress.push(p);
      released ??= simulate({ holdWebhooks: false });
    },
    timeoutMs: 20_000,
  });
  await released;
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
    assert.ok(error instanceof JobFailedError);
    assert.ok(error instanceof JobEndedError);
    assert.equal(error.name, "JobFailedError");
    assert.equal(typeof error.text, "string");
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
  // Watched before the cancel: a pending job ends at once, so the wait may reject before the
  // cancel's answer arrives, and an unwatched rejection fails the run.
  const rejected = assert.rejects(waiting, (error) => {
    assert.ok(error instanceof JobCanceledError);
    assert.equal(error.name, "JobCanceledError");
    assert.equal(error.job.status, "canceled");
    return true;
  });
  const asked = await jobs.cancelJob(jobId);
  assert.equal(asked.jobId, jobId);
  await rejected;
});

test("waitForJob gives up after timeoutMs and closes its stream", async () => {
  await simulate({ latencyS: 30 });
  const { fetch: recorded, requests } = recordingFetch();
  const jobs = client({ fetch: recorded });
  const { jobId } = await jobs.createJob("title_generation", { topic: "slow" });
  await assert.rejects(jobs.waitForJob(jobId, { timeoutMs: 400 }), (error) => {
    assert.ok(error instanceof WaitTimeoutError);
    assert.match(error.message, /after 400 ms/);
    return true;
  });
  // Gave up on its own timer, not when the job ended: by order, not by a clock (the job takes
  // 30 s; a wait that ignored `timeoutMs` would resolve with it, and fail the line above).
  const still = await jobs.getJob(jobId);
  assert.ok(!["succeeded", "failed", "canceled"].includes(still.status), still.status);
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

test("a token provider whose token is refused is asked again, and the wait shows the text from offset 0", async () => {
  const handed = [];
  const jobs = client({
    token: async () => {
      handed.push(handed.length === 0 ? "expired-or-wrong" : TOKEN);
      return handed.at(-1);
    },
  });
  const { jobId } = await jobs.createJob("script_generation", { topic: "refresh" });
  assert.deepEqual(handed, ["expired-or-wrong", TOKEN]);
  let text = "";
  const connection = [];
  const job = await jobs.waitForJob(jobId, {
    onText: (piece) => (text += piece),
    onConnection: (c) => connection.push(c),
    timeoutMs: 20_000,
  });
  assert.equal(job.status, "succeeded");
  assert.equal(text, job.output);
  assert.deepEqual(connection.slice(0, 2), ["connecting", "open"]);
  assert.equal(connection.at(-1), "closed");
  // A wrong token with no provider: the ApiError http 401, told apart by kind.
  await assert.rejects(new JobsClient({ baseUrl: GATEWAY_URL, token: "wrong" }).getJob(jobId), (error) => {
    return error instanceof ApiError && error.kind === "http" && error.status === 401;
  });
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
      // `If-None-Match` too: the gateway's 304 is what tells a polling client nothing changed.
      headers: {
        authorization: request.headers.authorization ?? "",
        ...(request.headers["if-none-match"]
          ? { "if-none-match": request.headers["if-none-match"] }
          : {}),
      },
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
  // The webhooks are held, so the job stays `processing` (unchanged: 304s) for as long as
  // the test wants; after four waits in a row that followed a 304 they are let go.
  await simulate({ holdWebhooks: true });
  const { fetch: recorded, requests } = recordingFetch();
  const direct = client();
  const { jobId } = await direct.createJob("title_generation", { topic: "polling" });
  // Each wait the client chose, with the request it followed: counted, not timed.
  const waits = [];
  let released = false;
  const observed = async (ms, signal) => {
    const after = requests.at(-1);
    waits.push({ ms, after: after.url.endsWith("/events") ? "stream" : after.status });
    const unchanged = waits.slice(-4).filter((w) => w.after === 304).length;
    if (!released && unchanged === 4) {
      released = true;
      await simulate({ holdWebhooks: false });
    }
    await new Promise((resolve) => setTimeout(resolve, ms));
    if (signal.aborted) throw signal.reason;
  };
  const jobs = new JobsClient({
    baseUrl: proxyUrl,
    token: TOKEN,
    fetch: recorded,
    pollIntervalMs: 100,
    maxPollIntervalMs: 300,
    reconnectMs: 50,
    sleep: observed,
  });
  const updates = [];
  const job = await jobs.waitForJob(jobId, { onUpdate: (j) => updates.push(j), timeoutMs: 20_000 });
  assert.equal(job.status, "succeeded");
  const streams = requests.filter((r) => r.url.endsWith("/events"));
  const polls = requests.filter((r) => r.url.endsWith(jobId));
  assert.equal(streams.length, 2, "two refused streams, then polling");
  assert.ok(released, "the job stayed unchanged for four polls in a row");
  // One reconnect wait between the refused streams, then one wait per poll but the last.
  assert.deepEqual(waits[0], { ms: 50, after: "stream" });
  assert.equal(waits.length, 1 + polls.length - 1);
  // The backoff, modelled here on its own: a poll that saw the job change (200) waits the
  // first interval and starts over; each unchanged one (304) waits the current interval and
  // makes the next 1.5 times longer, up to the maximum.
  let interval = 100;
  for (const { ms, after } of waits.slice(1)) {
    if (after === 200) {
      interval = 100;
      assert.equal(ms, 100, JSON.stringify(waits));
    } else {
      assert.equal(after, 304, JSON.stringify(waits));
      assert.equal(ms, interval, JSON.stringify(waits));
      interval = Math.min(interval * 1.5, 300);
    }
  }
  // The run of unchanged polls that released the job: growing, then held at the maximum.
  const run = waits.map((w) => w.ms).join(",");
  assert.ok(run.includes("100,150,225,300"), `the waits grew: ${run}`);
  assert.ok(updates.length >= 2);
  assert.equal(updates.at(-1).status, "succeeded");
  assert.ok(requests.every((r) => !r.open));
});

test("a page reads the types' prices, a finished job's cost, history and place in the list, and the month's spend", async () => {
  const jobs = client();
  const { items: types } = await new JobsClient({ baseUrl: GATEWAY_URL }).listJobTypes();
  const titles = types.find((t) => t.type === "title_generation");
  assert.ok(titles, "the types include title_generation");
  assert.ok(titles.maxCostUsd > 0);
  assert.ok("perOutputTokenUsd" in titles.price);
  assert.deepEqual(titles.inputSchema.required, ["topic"]);

  const { jobId } = await jobs.createJob("title_generation", { topic: "spend" });
  const job = await jobs.waitForJob(jobId, { timeoutMs: 20_000 });
  // The job-store settles the cost with the job's end; the pushed end may come first.
  let usage = job.usage;
  for (let i = 0; !usage && i < 50; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    usage = (await jobs.getJob(jobId)).usage;
  }
  assert.ok(usage, "the finished job has its usage");
  const expected =
    usage.inputTokens * (titles.price.perInputTokenUsd ?? 0) +
    usage.outputTokens * (titles.price.perOutputTokenUsd ?? 0);
  assert.ok(Math.abs(usage.costUsd - expected) < 0.000001, `${usage.costUsd} vs ${expected}`);
  assert.ok(usage.costUsd <= titles.maxCostUsd);

  const history = await jobs.getJobHistory(jobId);
  assert.equal(history.entries[0].kind, "requested");
  assert.equal(history.entries.at(-1).kind, "completed");
  const firstPage = await jobs.getJobHistory(jobId, { limit: 1 });
  assert.equal(firstPage.entries.length, 1);
  const second = await jobs.getJobHistory(jobId, { limit: 1, cursor: firstPage.nextCursor });
  assert.equal(second.entries[0].seq, history.entries[1].seq);

  const page = await jobs.listJobs({ type: "title_generation", status: ["succeeded"], limit: 5 });
  assert.ok(page.items.some((item) => item.jobId === jobId));
  assert.ok(page.items.every((item) => item.type === "title_generation"));

  const day = job.createdAt.slice(0, 10);
  const spend = await jobs.getUsage({ from: day, to: day });
  assert.equal(spend.from, day);
  assert.ok(spend.byType.title_generation.jobs >= 1);
  assert.ok(spend.byDay[day].costUsd >= usage.costUsd);
  await assert.rejects(jobs.getUsage({ from: "2026-02-30" }), (error) => error.status === 422);
});
