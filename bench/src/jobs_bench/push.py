"""The benchmark's pushed-update scenarios: the time from a webhook's arrival at webhook-ingest to
the job's event stream (against a client polling every 2 s) under a steady load of jobs, and the
memory of one gateway holding many open event streams."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import resource
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from jobs_bench.accounting import tree_rss_bytes
from jobs_bench.scenarios import Context, Row, row
from jobs_bench.systems import EventDrivenSystem, wait_for_status


@dataclass(frozen=True)
class PushSize:
    """How big the push scenarios run (the benchmark's `Size` has no fields for them)."""

    # The steady background load: jobs per second offered, and for how long.
    load_rate: float
    load_duration_s: float
    # Jobs whose webhook-to-client time is measured, spread over the load.
    samples: int
    # `streams`: event streams one gateway holds, over how many jobs, and how many of those
    # jobs then finish to time the fan-out to all their listeners.
    streams: int
    stream_jobs: int
    fanout_jobs: int


FULL_PUSH = PushSize(
    load_rate=200.0,
    load_duration_s=30.0,
    samples=200,
    streams=10_000,
    stream_jobs=100,
    fanout_jobs=10,
)
TINY_PUSH = PushSize(
    load_rate=10.0,
    load_duration_s=4.0,
    samples=6,
    streams=200,
    stream_jobs=10,
    fanout_jobs=3,
)
PUSH_SIZES = {"full": FULL_PUSH, "tiny": TINY_PUSH}

# The original frontend polled `GET /api/jobs/{jobId}` this often.
POLL_INTERVAL_S = 2.0
# Predictions of the measured jobs run this long, so the only final webhook they get is the
# one the benchmark signs and times itself.
HELD_LATENCY_S = 600.0
PUSH_TARGET_MS = 25.0
STREAMS_TARGET_MB = 300.0
# Raw stream connections opened at once, so the gateway is not flooded with handshakes.
OPENING_AT_ONCE = 200
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
    api: httpx.AsyncClient, simulator: httpx.AsyncClient, count: int
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
    # Jobs created from now on (the background load) finish at once again.
    (await simulator.put("/_sim/config", json={"latencyS": 0.0})).raise_for_status()
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
) -> tuple[float, float]:
    """Seconds from sending the job's final webhook to the result at an SSE client already
    connected, and at a polling client."""
    job_id, prediction_id = held
    opened = asyncio.Event()
    pushed = asyncio.create_task(stream_until_final(api, job_id, opened))
    polled: asyncio.Task[float] | None = None
    try:
        await asyncio.wait_for(opened.wait(), 30)
        polled = asyncio.create_task(poll_until_final(api, job_id))
        # The webhook falls anywhere in the polling client's 2 s period.
        await asyncio.sleep(random.uniform(0, POLL_INTERVAL_S))
        sent = await post_completed(webhooks, system, job_id, prediction_id)
        return (await pushed) - sent, (await polled) - sent
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


async def _measure_push(system: EventDrivenSystem, size: PushSize) -> PushFigures:
    auth = {"Authorization": f"Bearer {system.token}"}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with (
        httpx.AsyncClient(base_url=system.stack.gateway_url, headers=auth, limits=limits) as api,
        httpx.AsyncClient(base_url=system.simulator_url) as simulator,
        httpx.AsyncClient() as webhooks,
    ):
        held = await create_held_jobs(api, simulator, size.samples)
        count = int(size.load_rate * size.load_duration_s)
        # The load comes from a process of its own, so its CPU is not the measuring client's.
        load_started = time.monotonic()
        generator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jobs_bench.load",
            system.submit_url,
            system.token,
            str(count),
            str(size.load_rate),
            stdout=asyncio.subprocess.PIPE,
        )
        # Samples spread over the load, each ending within it (a sample takes up to 2 polls).
        spread_s = max(0.0, size.load_duration_s - POLL_INTERVAL_S)
        samples: list[asyncio.Task[tuple[float, float]]] = []
        for n, job in enumerate(held):
            delay = load_started + spread_s * n / max(1, size.samples) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            samples.append(asyncio.create_task(one_sample(api, webhooks, system, job)))
        outcomes = await asyncio.gather(*samples, return_exceptions=True)
        out, _ = await generator.communicate()
    if generator.returncode != 0:
        raise RuntimeError(f"the load generator failed with {generator.returncode}")
    load: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    measured = [o for o in outcomes if isinstance(o, tuple)]
    return PushFigures(
        pushed_ms=[p * 1000 for p, _ in measured],
        polled_ms=[p * 1000 for _, p in measured],
        failures=[repr(o) for o in outcomes if isinstance(o, BaseException)],
        load=load,
        load_started=load_started,
        sample_jobs=[job_id for job_id, _ in held],
    )


def push_latency(ctx: Context) -> list[Row]:
    size = PUSH_SIZES[ctx.size.name]
    with ctx.event_driven() as system:
        figures = asyncio.run(_measure_push(system, size))
        jobs = figures.load["jobIds"] + figures.sample_jobs
        done = wait_for_status(system.database_url, system.table, len(jobs), 300, jobs)
    if not figures.pushed_ms:
        raise RuntimeError(f"no sample measured: {figures.failures[:3]}")
    load, pushed, polled = figures.load, figures.pushed_ms, figures.polled_ms
    admitted_rate = load["accepted"] / max(1e-9, load["admitS"])
    finished_rate = done.by_status.get("succeeded", 0) / max(1e-9, done.at - figures.load_started)
    load_note = (
        f"background load offered {size.load_rate:g} jobs/s for {size.load_duration_s:g} s:"
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


def raise_open_files(wanted: int) -> int:
    """Lift the soft limit on open files towards `wanted` (the hard limit caps it); the services
    started afterwards inherit it. The limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


async def open_stream(
    port: int, path: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """One raw event-stream connection (far lighter than an HTTP client's), returned once its
    first event arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream refused: {status!r}")
        await reader.readuntil(b"event: status")
    except BaseException:
        writer.close()
        raise
    return reader, writer


@dataclass
class OpenStreams:
    """The raw event streams held open, by the job they listen to."""

    writers: list[asyncio.StreamWriter]
    readers: dict[str, list[asyncio.StreamReader]]

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self.writers), return_exceptions=True)


async def open_streams(
    system: EventDrivenSystem, job_ids: list[str], count: int
) -> tuple[OpenStreams, str]:
    """Up to `count` streams spread evenly over the jobs; why it stopped short, if it did."""
    held = OpenStreams([], {})
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    port = system.stack.ports.gateway

    async def one(n: int) -> None:
        job_id = job_ids[n % len(job_ids)]
        async with gate:
            reader, writer = await open_stream(port, f"/api/jobs/{job_id}/events", system.token)
        held.writers.append(writer)
        held.readers.setdefault(job_id, []).append(reader)

    for start in range(0, count, 1000):
        outcomes = await asyncio.gather(
            *(one(n) for n in range(start, min(count, start + 1000))), return_exceptions=True
        )
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            return held, f"stopped opening streams at {len(held.writers)}: {failed[0]!r}"
    return held, ""


async def time_fanout(
    system: EventDrivenSystem,
    webhooks: httpx.AsyncClient,
    listeners: list[asyncio.StreamReader],
    held: tuple[str, str],
) -> float:
    """Milliseconds from sending a job's final webhook until all its listeners had the result."""
    waiting = [asyncio.create_task(r.readuntil(b'"status":"succeeded"')) for r in listeners]
    sent = await post_completed(webhooks, system, *held)
    await asyncio.wait_for(asyncio.gather(*waiting), 60)
    return (time.monotonic() - sent) * 1000


@dataclass(frozen=True)
class StreamFigures:
    idle_bytes: int
    holding_bytes: int
    reached: int
    opened_s: float
    gateway_counts: str
    fanout_ms: list[float]
    listeners: int
    stopped: str


async def _measure_streams(system: EventDrivenSystem, size: PushSize) -> StreamFigures:
    gateway = system.stack.processes["gateway"].process.pid
    auth = {"Authorization": f"Bearer {system.token}"}
    async with (
        httpx.AsyncClient(base_url=system.stack.gateway_url, headers=auth) as api,
        httpx.AsyncClient(base_url=system.simulator_url) as simulator,
        httpx.AsyncClient() as webhooks,
    ):
        held = await create_held_jobs(api, simulator, size.stream_jobs)
        idle = tree_rss_bytes(gateway)
        started = time.monotonic()
        streams, stopped = await open_streams(system, [job for job, _ in held], size.streams)
        opened_s = time.monotonic() - started
        try:
            # Let the gateway settle (buffers, garbage) before reading its size.
            await asyncio.sleep(2)
            holding = tree_rss_bytes(gateway)
            admin = f"http://127.0.0.1:{system.stack.ports.gateway_admin}/metrics"
            metrics = (await webhooks.get(admin)).text
            counted = next(
                (
                    f"{float(line.split()[1]):.0f}"
                    for line in metrics.splitlines()
                    if line.startswith("gateway_event_streams_open ")
                ),
                "?",
            )
            # Push under load: one job's result to each of its listeners, all streams open.
            fanout = []
            for job in held[: size.fanout_jobs]:
                listeners = streams.readers.get(job[0], [])
                fanout.append(await time_fanout(system, webhooks, listeners, job))
        finally:
            await streams.close()
    return StreamFigures(
        idle_bytes=idle,
        holding_bytes=holding,
        reached=len(streams.writers),
        opened_s=opened_s,
        gateway_counts=counted,
        fanout_ms=fanout,
        listeners=len(streams.readers.get(held[0][0], [])),
        stopped=stopped,
    )


def sse_memory(ctx: Context) -> list[Row]:
    size = PUSH_SIZES[ctx.size.name]
    # Every stream is a socket here and one in the gateway, which inherits the limit.
    fd_limit = raise_open_files(size.streams + 1000)
    with ctx.event_driven() as system:
        figures = asyncio.run(_measure_streams(system, size))
    idle_mb, holding_mb = figures.idle_bytes / 1e6, figures.holding_bytes / 1e6
    per_stream_kib = (figures.holding_bytes - figures.idle_bytes) / 1024 / max(1, figures.reached)
    whole = figures.reached == size.streams
    return [
        row("sse memory", "gateway RSS, no stream open", idle_mb, "MB"),
        row(
            "sse memory",
            f"gateway RSS holding {figures.reached} streams",
            holding_mb,
            "MB",
            baseline=idle_mb,
            target=f"< {STREAMS_TARGET_MB:g} MB",
            met=whole and holding_mb < STREAMS_TARGET_MB,
            note=f"{per_stream_kib:.1f} KiB per stream; opened in {figures.opened_s:.1f} s over"
            f" {size.stream_jobs} jobs; the gateway counts {figures.gateway_counts} open;"
            f" open-file limit {fd_limit}" + (f"; {figures.stopped}" if figures.stopped else ""),
        ),
        row(
            "sse memory",
            f"a result to all {figures.listeners} listeners of its job, median",
            statistics.median(figures.fanout_ms),
            "ms",
            note=f"{len(figures.fanout_ms)} jobs, max {max(figures.fanout_ms):.1f} ms,"
            f" with {figures.reached} streams open",
        ),
    ]
