"""Measures pushed updates on this machine (figures for the README, never asserted):

1. webhook to browser: the time from posting a signed `completed` webhook to webhook-ingest
   until the job's event stream delivers the `succeeded` state, against a client polling
   `GET /api/jobs/{jobId}` every 2 s (random phase), p50 and p99 over `--jobs` jobs;
2. the resident memory (RSS) of one gateway process holding `--streams` open event streams.

Starts its own NATS, Postgres and the whole system as processes (as `make run` does, on free
ports), so nothing else is touched (defaults: 60 jobs, 10,000 streams):

    uv run --no-sync python services/gateway/scripts/measure_realtime.py --jobs 100 --streams 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from jobs_testkit.servers import NatsServer, PostgresServer, free_port
from jobs_testkit.stack import Ports, Stack
from replicate_sim.webhooks import sign

POLL_INTERVAL_S = 2.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def until_processing(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(300):
        job: dict[str, Any] = (await api.get(f"/api/jobs/{job_id}")).json()
        if job["status"] == "processing" and job["predictionId"]:
            return job
        await asyncio.sleep(0.05)
    raise RuntimeError(f"job {job_id} never processing")


async def stream_until_final(api: httpx.AsyncClient, job_id: str, opened: asyncio.Event) -> float:
    """The monotonic time the `succeeded` state arrived on the job's stream."""
    async with api.stream("GET", f"/api/jobs/{job_id}/events", timeout=60) as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if line.startswith("event: status"):
                opened.set()
            if line.startswith("data: ") and '"status":"succeeded"' in line:
                return time.monotonic()
    raise RuntimeError("stream ended without the result")


async def poll_until_final(api: httpx.AsyncClient, job_id: str) -> float:
    """A client polling every 2 s from a random phase: when it first sees the result."""
    await asyncio.sleep(random.uniform(0, POLL_INTERVAL_S))
    while True:
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        if job["status"] == "succeeded":
            return time.monotonic()
        await asyncio.sleep(POLL_INTERVAL_S)


async def post_completed(
    webhooks: httpx.AsyncClient, stack: Stack, job_id: str, prediction_id: str
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
        }
    )
    webhook_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(stack.dev_secrets.webhook_secret, webhook_id, timestamp, body),
    }
    sent = time.monotonic()
    response = await webhooks.post(
        f"{stack.webhook_url}?job={job_id}", content=body, headers=headers
    )
    assert response.status_code == 200, response.text
    return sent


async def one_job(
    api: httpx.AsyncClient, webhooks: httpx.AsyncClient, stack: Stack
) -> tuple[float, float]:
    created = await api.post(
        "/api/jobs", json={"type": "title_generation", "input": {"topic": "m"}}
    )
    job_id = created.json()["jobId"]
    job = await until_processing(api, job_id)
    opened = asyncio.Event()
    pushed = asyncio.create_task(stream_until_final(api, job_id, opened))
    await opened.wait()
    polled = asyncio.create_task(poll_until_final(api, job_id))
    await asyncio.sleep(random.uniform(0, POLL_INTERVAL_S))
    sent = await post_completed(webhooks, stack, job_id, job["predictionId"])
    return (await pushed) - sent, (await polled) - sent


async def measure_latency(stack: Stack, token: str, jobs: int) -> None:
    simulator = httpx.AsyncClient(base_url=stack.simulator_url)
    # Webhooks held: the only final webhook is the one this script sends and times.
    await simulator.put("/_sim/config", json={"holdWebhooks": True, "latencyS": 600})
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=200)
    async with (
        httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, limits=limits) as api,
        httpx.AsyncClient() as webhooks,
    ):
        results: list[tuple[float, float]] = []
        for start in range(0, jobs, 10):
            batch = [one_job(api, webhooks, stack) for _ in range(min(10, jobs - start))]
            results += await asyncio.gather(*batch)
    await simulator.post("/_sim/reset")
    await simulator.aclose()
    pushed = [p * 1000 for p, _ in results]
    polled = [p * 1000 for _, p in results]
    print(f"webhook -> client, {len(results)} jobs (ms)")
    print(f"  {'':22}{'p50':>8}{'p99':>8}{'max':>8}")
    for name, values in (("SSE push", pushed), ("polling every 2 s", polled)):
        print(
            f"  {name:22}{statistics.median(values):8.1f}{percentile(values, 0.99):8.1f}"
            f"{max(values):8.1f}"
        )


async def open_stream(
    host: str, port: int, path: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """One raw event-stream connection, returned once its first event arrived."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream refused: {status!r}")
    await reader.readuntil(b"event: status")
    return reader, writer


async def measure_memory(stack: Stack, token: str, streams: int) -> None:
    gateway = stack.processes["gateway"].process.pid
    headers = {"Authorization": f"Bearer {token}"}
    simulator = httpx.AsyncClient(base_url=stack.simulator_url)
    await simulator.put("/_sim/config", json={"holdWebhooks": True, "latencyS": 600})
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers) as api:
        job_ids = []
        for _ in range(100):
            created = await api.post(
                "/api/jobs", json={"type": "title_generation", "input": {"topic": "m"}}
            )
            job_ids.append(created.json()["jobId"])
        predictions = [(await until_processing(api, j))["predictionId"] for j in job_ids]
    baseline = rss_mib(gateway)
    port = stack.ports.gateway
    writers: list[asyncio.StreamWriter] = []
    readers: dict[int, list[asyncio.StreamReader]] = {}
    started = time.monotonic()
    gate = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        async with gate:
            path = f"/api/jobs/{job_ids[i % 100]}/events"
            reader, writer = await open_stream("127.0.0.1", port, path, token)
            writers.append(writer)
            readers.setdefault(i % 100, []).append(reader)

    reached = 0
    try:
        for start in range(0, streams, 1000):
            await asyncio.gather(*(one(i) for i in range(start, min(streams, start + 1000))))
            reached = len(writers)
    except OSError as exc:
        print(f"  stopped opening streams at {len(writers)}: {exc!r}")
        reached = len(writers)
    opened_s = time.monotonic() - started
    await asyncio.sleep(2)
    holding = rss_mib(gateway)
    async with httpx.AsyncClient() as admin:
        metrics = (await admin.get(f"http://127.0.0.1:{stack.ports.gateway_admin}/metrics")).text
    open_now = next(
        (
            line.split()[1]
            for line in metrics.splitlines()
            if line.startswith("gateway_event_streams_open ")
        ),
        "?",
    )
    print(f"gateway RSS: {baseline:.1f} MiB idle, {holding:.1f} MiB holding {reached} streams")
    print(
        f"  = {(holding - baseline) * 1024 / max(reached, 1):.1f} KiB per stream; "
        f"opened in {opened_s:.1f} s; the gateway counts {open_now} open"
    )
    # Push under load: one job's result to each of its listeners while all streams are open.
    spreads: list[float] = []
    async with httpx.AsyncClient() as webhooks:
        for index in range(10):
            listeners = readers.get(index, [])
            waiting = [asyncio.create_task(r.readuntil(b'"status":"succeeded"')) for r in listeners]
            sent = await post_completed(webhooks, stack, job_ids[index], predictions[index])
            arrivals = []
            for task in asyncio.as_completed(waiting):
                await task
                arrivals.append(time.monotonic() - sent)
            spreads.append(max(arrivals) * 1000)
    print(
        f"  with {reached} streams open: a result reaches all {len(readers.get(0, []))} "
        f"listeners of its job in {statistics.median(spreads):.1f} ms (median of 10 jobs, "
        f"max {max(spreads):.1f} ms)"
    )
    for writer in writers:
        writer.close()
    await simulator.post("/_sim/reset")
    await simulator.aclose()


@contextlib.asynccontextmanager
async def system(workdir: Path) -> AsyncIterator[tuple[Stack, str]]:
    with NatsServer(workdir / "nats") as nats, PostgresServer(workdir / "postgres") as postgres:
        conn = await asyncpg.connect(postgres.dsn())
        await conn.execute('CREATE DATABASE "measure"')
        await conn.close()
        stack = Stack(
            nats_url=nats.url,
            database_url=postgres.dsn("measure"),
            ports=Ports(*(free_port() for _ in range(7))),
            log_dir=workdir,
            # Keepalives off the figures; no per-user limits in the way.
            overrides={"SSE_KEEPALIVE_S": "15", "LOG_LEVEL": "WARNING"},
        )
        stack.start()
        try:
            yield stack, stack.dev_token("measure")
        finally:
            stack.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--streams", type=int, default=10_000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Every stream is a socket here and one in the gateway (which inherits the limit).
    wanted = min(hard, max(soft, args.streams * 2 + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    print(f"file descriptor limit: {wanted}")
    with tempfile.TemporaryDirectory(prefix="measure-realtime-") as tmp:
        workdir = Path(tmp)
        (workdir / "nats").mkdir()
        (workdir / "postgres").mkdir()
        async with system(workdir) as (stack, token):
            await measure_latency(stack, token, args.jobs)
            await measure_memory(stack, token, args.streams)


if __name__ == "__main__":
    asyncio.run(main())
