"""The SSE-memory scenario: the memory of one gateway holding many open event streams (raw
sockets, far lighter than an HTTP client's), and a result's fan-out to all its listeners."""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
from dataclasses import dataclass

import httpx

from jobs_bench.accounting import tree_rss_bytes
from jobs_bench.context import Context, Row, row
from jobs_bench.push import PUSH_SIZES, PushSize, create_held_jobs, post_completed
from jobs_bench.systems import EventDrivenSystem

STREAMS_TARGET_MIB = 250.0
# Raw stream connections opened at once, so the gateway is not flooded with handshakes.
OPENING_AT_ONCE = 200


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
        held = await create_held_jobs(api, simulator, size.stream_jobs, 0.0)
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
    idle_mb, holding_mb = figures.idle_bytes / 2**20, figures.holding_bytes / 2**20
    per_stream_kib = (figures.holding_bytes - figures.idle_bytes) / 1024 / max(1, figures.reached)
    whole = figures.reached == size.streams
    return [
        row("sse memory", "gateway RSS, no stream open", idle_mb, "MiB"),
        row(
            "sse memory",
            f"gateway RSS holding {figures.reached} streams",
            holding_mb,
            "MiB",
            baseline=idle_mb,
            target=f"< {STREAMS_TARGET_MIB:g} MiB",
            met=whole and holding_mb < STREAMS_TARGET_MIB,
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
