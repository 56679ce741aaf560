"""The push-latency scenario: the time from a webhook's arrival at webhook-ingest to the job's
event stream (against a client polling every 2 s) under a steady load of jobs at half the
sustainable rate; and what it shares with the SSE-memory scenario (streams.py): sizes, signed
webhooks, held jobs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from jobs_bench.context import Context, Row, row
from jobs_bench.systems import EventDrivenSystem, wait_for_status


@dataclass(frozen=True)
class PushSize:
    """How big the push scenarios run (the benchmark's `Size` has no fields for them)."""

    # How long the steady background load runs; its rate is half the sustainable one.
    load_duration_s: float
    # Jobs whose webhook-to-client time is measured, spread over the load.
    samples: int
    # `streams`: event streams one gateway holds, over how many jobs, and how many of those
    # jobs then finish to time the fan-out to all their listeners.
    streams: int
    stream_jobs: int
    fanout_jobs: int


FULL_PUSH = PushSize(
    load_duration_s=45.0,
    # Enough for a p99 that is not one unlucky sample: at least 1,000.
    samples=1000,
    streams=10_000,
    stream_jobs=100,
    fanout_jobs=10,
)
TINY_PUSH = PushSize(
    load_duration_s=4.0,
    samples=6,
    streams=200,
    stream_jobs=10,
    fanout_jobs=3,
)
PUSH_SIZES = {"full": FULL_PUSH, "tiny": TINY_PUSH}

# The original frontend polled `GET /api/jobs/{jobId}` this often.
POLL_INTERVAL_S = 2.0
# Samples that also time a polling client (spread evenly among all samples).
POLLED_SAMPLES = 100
# Predictions of the measured jobs run this long, so the only final webhook they get is the
# one the benchmark signs and times itself.
HELD_LATENCY_S = 600.0
PUSH_TARGET_MS = 25.0
TOPIC = {"type": "title_generation", "input": {"topic": "pushed updates"}}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` Replicate sends (Standard Webhooks: HMAC-SHA256 over
    `id.timestamp.body`, keyed with the secret after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


async def post_completed(
    webhooks: httpx.AsyncClient, system: EventDrivenSystem, job_id: str, prediction_id: str
) -> float:
    """Sign and send the final webhook as Replicate would; the monotonic time it was sent."""
    body = msgspec.json.encode(
        {
            "id": prediction_id,
            "model": "google/gemini-3-pro",
            "version": "hidden",
            "status": "succeeded",
            "input": {"prompt": "x"},
            "output": ["Measured ", "answer."],
            "error": None,
            "logs": "",
            "created_at": "2026-01-01T00:00:00.000Z",
            "started_at": "2026-01-01T00:00:01.000Z",
            "completed_at": "2026-01-01T00:00:02.000Z",
            "metrics": {"predict_time": 1.0},
            # Replicate echoes the URL the prediction was created with; webhook-ingest takes
            # the job from it (it is signed, the request's `?job=` is not).
            "webhook": f"{system.stack.webhook_url}?job={job_id}",
        }
    )
    webhook_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    secret = system.stack.dev_secrets.webhook_secret
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }
    sent = time.monotonic()
    response = await webhooks.post(
        f"{system.stack.webhook_url}?job={job_id}", content=body, headers=headers
    )
    if response.status_code != 200:
        raise RuntimeError(f"webhook refused: {response.status_code} {response.text}")
    return sent


async def create_held_jobs(
    api: httpx.AsyncClient, simulator: httpx.AsyncClient, count: int, job_s: float
) -> list[tuple[str, str]]:
    """`count` jobs whose predictions run past the benchmark; (jobId, predictionId) each, once
    the ai-runner has submitted them."""
    (await simulator.put("/_sim/config", json={"latencyS": HELD_LATENCY_S})).raise_for_status()
    gate = asyncio.Semaphore(50)

    async def one() -> tuple[str, str]:
        async with gate:
            created = await api.post("/api/jobs", json=TOPIC)
            created.raise_for_status()
            job_id: str = created.json()["jobId"]
            return job_id, await until_processing(api, job_id)

    held = await asyncio.gather(*(one() for _ in range(count)))
    # Jobs created from now on (the background load) stream for the usual `job_s` again.
    (await simulator.put("/_sim/config", json={"latencyS": job_s})).raise_for_status()
    return held


async def until_processing(api: httpx.AsyncClient, job_id: str) -> str:
    """The job's prediction id once it has one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        if job["status"] == "processing" and job["predictionId"]:
            return str(job["predictionId"])
        await asyncio.sleep(0.05)
    raise RuntimeError(f"job {job_id} never reached processing")


async def stream_until_final(api: httpx.AsyncClient, job_id: str, opened: asyncio.Event) -> float:
    """The monotonic time the `succeeded` state arrived on the job's event stream."""
    async with api.stream("GET", f"/api/jobs/{job_id}/events", timeout=60) as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream refused: {response.status_code}")
        async for line in response.aiter_lines():
            if line.startswith("event: status"):
                opened.set()
            if line.startswith("data: ") and '"status":"succeeded"' in line:
                return time.monotonic()
    raise RuntimeError(f"stream of job {job_id} ended without its result")


async def poll_until_final(api: httpx.AsyncClient, job_id: str) -> float:
    """A client polling every 2 s from a random phase: when it first saw the result."""
    await asyncio.sleep(random.uniform(0, POLL_INTERVAL_S))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        if job["status"] == "succeeded":
            return time.monotonic()
        await asyncio.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"job {job_id} never seen succeeded by polling")


async def one_sample(
    api: httpx.AsyncClient,
    webhooks: httpx.AsyncClient,
    system: EventDrivenSystem,
    held: tuple[str, str],
    poll: bool,
) -> tuple[float, float | None]:
    """Seconds from sending the job's final webhook to the result at an SSE client already
    connected, and (with `poll`) at a polling client."""
    job_id, prediction_id = held
    opened = asyncio.Event()
    pushed = asyncio.create_task(stream_until_final(api, job_id, opened))
    polled: asyncio.Task[float] | None = None
    try:
        await asyncio.wait_for(opened.wait(), 30)
        if poll:
            polled = asyncio.create_task(poll_until_final(api, job_id))
        # The webhook falls anywhere in the polling client's 2 s period.
        await asyncio.sleep(random.uniform(0, POLL_INTERVAL_S))
        sent = await post_completed(webhooks, system, job_id, prediction_id)
        return (await pushed) - sent, None if polled is None else (await polled) - sent
    finally:
        # A failed sample leaves no client behind to outlive the benchmark's connections.
        for task in (pushed, polled):
            if task is not None:
                task.cancel()


@dataclass(frozen=True)
class PushFigures:
    pushed_ms: list[float]
    polled_ms: list[float]
    failures: list[str]
    load: dict[str, Any]
    load_started: float
    sample_jobs: list[str]


async def _measure_push(
    system: EventDrivenSystem, size: PushSize, rate: float, job_s: float
) -> PushFigures:
    auth = {"Authorization": f"Bearer {system.token}"}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with (
        httpx.AsyncClient(base_url=system.stack.gateway_url, headers=auth, limits=limits) as api,
        httpx.AsyncClient(base_url=system.simulator_url) as simulator,
        httpx.AsyncClient() as webhooks,
    ):
        held = await create_held_jobs(api, simulator, size.samples, job_s)
        count = int(rate * size.load_duration_s)
        # The load comes from a process of its own, so its CPU is not the measuring client's.
        load_started = time.monotonic()
        generator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jobs_bench.load",
            system.submit_url,
            system.token,
            str(count),
            str(rate),
            stdout=asyncio.subprocess.PIPE,
        )
        # Samples spread over the load, each ending within it (a sample takes up to 2 polls).
        spread_s = max(0.0, size.load_duration_s - POLL_INTERVAL_S)
        samples: list[asyncio.Task[tuple[float, float | None]]] = []
        for n, job in enumerate(held):
            delay = load_started + spread_s * n / max(1, size.samples) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # Polling is only the comparison: a subset keeps this client light enough that its
            # own event loop does not add to the times it takes.
            poll = n % max(1, size.samples // POLLED_SAMPLES) == 0
            samples.append(asyncio.create_task(one_sample(api, webhooks, system, job, poll)))
        outcomes = await asyncio.gather(*samples, return_exceptions=True)
        out, _ = await generator.communicate()
    if generator.returncode != 0:
        raise RuntimeError(f"the load generator failed with {generator.returncode}")
    load: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    measured = [o for o in outcomes if isinstance(o, tuple)]
    return PushFigures(
        pushed_ms=[p * 1000 for p, _ in measured],
        polled_ms=[p * 1000 for _, p in measured if p is not None],
        failures=[repr(o) for o in outcomes if isinstance(o, BaseException)],
        load=load,
        load_started=load_started,
        sample_jobs=[job_id for job_id, _ in held],
    )


def push_latency(ctx: Context) -> list[Row]:
    size = PUSH_SIZES[ctx.size.name]
    # Half the capacity the end-to-end search found in this invocation, else a fixed guess.
    found = ctx.measured.get("sustainable") or 0.0
    rate = (found or ctx.size.fallback_rate) / 2
    source = "half the sustainable rate found" if found else "half the fallback rate"
    with ctx.event_driven() as system:
        figures = asyncio.run(_measure_push(system, size, rate, ctx.size.job_s))
        jobs = figures.load["jobIds"] + figures.sample_jobs
        done = wait_for_status(system.database_url, system.table, len(jobs), 300, jobs)
    if not figures.pushed_ms:
        raise RuntimeError(f"no sample measured: {figures.failures[:3]}")
    load, pushed, polled = figures.load, figures.pushed_ms, figures.polled_ms
    admitted_rate = load["accepted"] / max(1e-9, load["admitS"])
    finished_rate = done.by_status.get("succeeded", 0) / max(1e-9, done.at - figures.load_started)
    load_note = (
        f"background load offered {rate:g} jobs/s ({source}) for {size.load_duration_s:g} s:"
        f" {load['accepted']} admitted at {admitted_rate:.0f} jobs/s (answers {load['statuses']}),"
        f" all terminal {done.at - figures.load_started:.1f} s after the load began"
        f" ({finished_rate:.0f} jobs/s; {done.by_status}); {len(pushed)} jobs measured"
        + (f", {len(figures.failures)} failed: {figures.failures[:2]}" if figures.failures else "")
    )
    sse_p50, sse_p99 = statistics.median(pushed), percentile(pushed, 0.99)
    poll_p50, poll_p99 = statistics.median(polled), percentile(polled, 0.99)
    return [
        row(
            "push latency",
            "webhook to SSE event, p50",
            sse_p50,
            "ms",
            baseline=poll_p50,
            note="baseline: the same jobs seen by a client polling every 2 s",
        ),
        row(
            "push latency",
            "webhook to SSE event, p99",
            sse_p99,
            "ms",
            baseline=poll_p99,
            target=f"p99 < {PUSH_TARGET_MS:g} ms",
            met=sse_p99 < PUSH_TARGET_MS and not figures.failures,
            note=f"max {max(pushed):.1f} ms; {load_note}",
        ),
        row("push latency", "webhook to polling client (every 2 s), p50", poll_p50, "ms"),
        row("push latency", "webhook to polling client (every 2 s), p99", poll_p99, "ms"),
    ]
