"""The token-latency scenario: from the simulator writing a token to a client of
`GET /api/jobs/{jobId}/output` receiving it, with many streaming jobs open at once; and what
relaying costs the ai-runner (CPU per 1,000 tokens, memory per open upstream stream).

The simulator's audit names each prediction's text clock (when its first token was due, its
rate, where each token ends), so a received `id:` (characters so far) tells which token it
completes and when that token was written, on the same machine's clock.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx

from jobs_bench import profile
from jobs_bench.accounting import sample_cpu, tree_rss_bytes
from jobs_bench.context import Context, Row, row
from jobs_bench.profile import describe
from jobs_bench.push import percentile
from jobs_bench.streams import raise_open_files
from jobs_bench.systems import EventDrivenSystem, set_simulator

TOKEN_TARGET_MS = 50.0
TOPIC = {"type": "video_outline", "input": {"topic": "the tides of the moon"}}
# The simulator writes about 130 tokens an answer (a heading and 120 words).
ANSWER_TOKENS = 130


@dataclass(frozen=True)
class TokenSize:
    jobs: int
    # Slow enough that every answer is still being written when the last job is created, so
    # all `jobs` stream at once for a while; their sum is the simulator's and relay's load.
    tokens_per_s: float
    # How long CPU is sampled once every job streams (shorter than the answers' overlap).
    window_s: float


TOKEN_SIZES = {
    "full": TokenSize(jobs=1000, tokens_per_s=2.0, window_s=20.0),
    "tiny": TokenSize(jobs=4, tokens_per_s=40.0, window_s=1.0),
}
# Whose CPU the relaying costs: the relay itself, the log (NATS), the reader of the log.
RELAY_PATH = ("ai-runner", "nats", "gateway")


@dataclass
class Reading:
    """One client's `/output`: (received at, characters so far) per `output` event."""

    job_id: str
    connected_at: float = 0.0
    events: list[tuple[float, int]] = field(default_factory=list)
    text: str = ""
    done: str = ""
    error: str = ""


async def read_output(http: aiohttp.ClientSession, base: str, token: str, reading: Reading) -> None:
    """Follows one job's `/output` to its `done`, as a browser's `EventSource` would."""
    url = f"{base}/api/jobs/{reading.job_id}/output"
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    try:
        async with http.get(url, headers=headers) as response:
            if response.status != 200:
                reading.error = f"HTTP {response.status}"
                return
            reading.connected_at = time.time()
            event, data, event_id = "", [], ""
            async for raw in response.content:
                now = time.time()
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
                elif not line:
                    if event == "output":
                        reading.text += json.loads("\n".join(data))["text"]
                        reading.events.append((now, int(event_id)))
                    elif event == "done":
                        reading.done = "\n".join(data)
                        return
                    event, data, event_id = "", [], ""
    except (aiohttp.ClientError, TimeoutError) as exc:
        reading.error = repr(exc)


def tokens_between(clock: dict[str, Any], began: float, ended: float) -> int:
    """Tokens of one answer the simulator wrote between `began` and `ended`."""
    start, rate = float(clock["start_at"]), float(clock["tokens_per_s"])
    count = len(clock["token_ends"])
    # Token k is written at start + (k + 1) / rate.
    first = max(0, math.ceil((began - start) * rate - 1 - 1e-6))
    last = min(count - 1, math.floor((ended - start) * rate - 1 + 1e-6))
    return max(0, last - first + 1)


def token_latencies_ms(reading: Reading, clock: dict[str, Any]) -> list[float]:
    """Per event that completes a token written while the client was connected: received at
    minus written at. Events ending mid-token (an answer's last text from the stored output)
    and the catch-up of text written before the client connected are left out."""
    ends: list[int] = clock["token_ends"]
    start, rate = float(clock["start_at"]), float(clock["tokens_per_s"])
    latencies = []
    for received_at, offset in reading.events:
        k = bisect.bisect_left(ends, offset)
        if k == len(ends) or ends[k] != offset:
            continue
        written_at = start + (k + 1) / rate
        if written_at >= reading.connected_at:
            latencies.append((received_at - written_at) * 1000)
    return latencies


async def _count(dsn: str, job_ids: list[str], statuses: tuple[str, ...]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[])",
            job_ids,
            list(statuses),
        )
        return int(n)
    finally:
        await conn.close()


@dataclass
class TokenFigures:
    readings: list[Reading]
    clocks: dict[str, dict[str, Any]]
    outputs: dict[str, str | None]
    window: tuple[float, float]
    cpu_s: dict[str, float]
    idle_rss: int
    streaming_rss: int
    all_streaming: bool
    profiles: dict[str, dict[str, Any]]


async def _measure(
    system: EventDrivenSystem, size: TokenSize, work: Path, latency_s: float
) -> TokenFigures:
    base = system.stack.gateway_url
    runner = system.stack.processes["ai-runner"].process.pid
    auth = {"Authorization": f"Bearer {system.token}"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with (
        httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as api,
        httpx.AsyncClient(base_url=system.simulator_url, timeout=30) as simulator,
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
    ):
        idle_rss = tree_rss_bytes(runner)
        gate = asyncio.Semaphore(50)
        readings: list[Reading] = []
        readers: list[asyncio.Task[None]] = []

        async def submit() -> None:
            async with gate:
                created = await api.post("/api/jobs", json=TOPIC)
                created.raise_for_status()
            reading = Reading(created.json()["jobId"])
            readings.append(reading)
            readers.append(asyncio.create_task(read_output(http, base, system.token, reading)))

        await asyncio.gather(*(submit() for _ in range(size.jobs)))
        job_ids = [r.job_id for r in readings]
        # The window in which every answer is being written and every job was created: the
        # ai-runner does nothing but relay then (its reconciling aside).
        deadline = time.monotonic() + 300
        while await _count(system.database_url, job_ids, ("processing",)) < size.jobs:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        all_streaming = await _count(system.database_url, job_ids, ("processing",)) == size.jobs
        # A prediction starts writing a tenth of its `latencyS` after its creation: the last
        # one created has begun by then.
        await asyncio.sleep(latency_s * 0.1)
        roots = {name: pid for name, pid in system.roots().items() if name in RELAY_PATH}
        services = {n: p for n, p in roots.items() if n != "nats"}
        sampling = profile.start(services, size.window_s, work)
        began, cpu_before = time.time(), sample_cpu(roots)
        await asyncio.sleep(size.window_s / 2)
        streaming_rss = tree_rss_bytes(runner)
        await asyncio.sleep(size.window_s / 2)
        ended, cpu_s = time.time(), sample_cpu(roots).minus(cpu_before)
        profiles = await asyncio.to_thread(profile.finish, sampling, size.window_s + 30)
        # Each answer is written well within its `latencyS`: the readers end with it.
        await asyncio.wait_for(asyncio.gather(*readers), 900)
        clocks: dict[str, dict[str, Any]] = {}
        outputs: dict[str, str | None] = {}
        for reading in readings:
            params = {"job": reading.job_id}
            audit = (await simulator.get("/_sim/predictions", params=params)).json()
            if audit["results"]:
                clocks[reading.job_id] = audit["results"][-1].get("sim_stream", {})
            outputs[reading.job_id] = (await api.get(f"/api/jobs/{reading.job_id}")).json()[
                "output"
            ]
    return TokenFigures(
        readings=readings,
        clocks=clocks,
        outputs=outputs,
        window=(began, ended),
        cpu_s=cpu_s,
        idle_rss=idle_rss,
        streaming_rss=streaming_rss,
        all_streaming=all_streaming,
        profiles=profiles,
    )


def token_latency(ctx: Context) -> list[Row]:
    size = TOKEN_SIZES[ctx.size.name]
    raise_open_files(4 * size.jobs + 1000)
    seconds = ANSWER_TOKENS / size.tokens_per_s
    # The final state comes after the whole answer is written (it starts at a tenth).
    latency_s = seconds / 0.9 + 2
    with ctx.event_driven() as system:
        set_simulator(system.simulator_url, tokensPerS=size.tokens_per_s, latencyS=latency_s)
        try:
            figures = asyncio.run(_measure(system, size, ctx.work, latency_s))
        finally:
            with contextlib.suppress(httpx.HTTPError):
                set_simulator(system.simulator_url, tokensPerS=50, latencyS=ctx.size.job_s)
    ctx.extras["tokenProfiles"] = figures.profiles
    print(describe(figures.profiles).replace("end-to-end load", "token streams"), file=sys.stderr)
    latencies = [
        ms
        for reading in figures.readings
        if reading.job_id in figures.clocks and "token_ends" in figures.clocks[reading.job_id]
        for ms in token_latencies_ms(reading, figures.clocks[reading.job_id])
    ]
    exact = sum(
        1 for r in figures.readings if r.done and r.text == (figures.outputs.get(r.job_id) or "")
    )
    failed = [r.error for r in figures.readings if r.error]
    # Exactly the tokens the simulator wrote in the window, from each answer's clock.
    tokens_in_window = sum(
        tokens_between(clock, *figures.window)
        for clock in figures.clocks.values()
        if "token_ends" in clock
    )
    window_s = figures.window[1] - figures.window[0]

    def per_1000(name: str) -> float:
        return figures.cpu_s.get(name, 0.0) / max(1, tokens_in_window) * 1e6

    per_stream_kib = (figures.streaming_rss - figures.idle_rss) / 1024 / size.jobs
    p50 = percentile(latencies, 0.5) if latencies else float("nan")
    p99 = percentile(latencies, 0.99) if latencies else float("nan")
    note = (
        f"{size.jobs} jobs at {size.tokens_per_s:g} tokens/s each"
        f" ({size.jobs * size.tokens_per_s:g} tokens/s in all),"
        f" {'all' if figures.all_streaming else 'NOT all'} streaming at once;"
        f" {len(latencies)} tokens timed; {exact}/{size.jobs} clients' text equal to the"
        f" job's output" + (f"; {len(failed)} clients failed: {failed[0]}" if failed else "")
    )
    return [
        row("token latency", "simulator writes a token -> /output client, p50", p50, "ms"),
        row(
            "token latency",
            "simulator writes a token -> /output client, p99",
            p99,
            "ms",
            target=f"< {TOKEN_TARGET_MS:g} ms",
            met=bool(latencies) and p99 < TOKEN_TARGET_MS and exact == size.jobs,
            note=note,
        ),
        *(
            row(
                "token latency",
                f"{name} CPU per 1,000 tokens relayed",
                per_1000(name),
                "CPU-ms",
                note=f"over {window_s:.1f} s with every answer being written"
                f" ({tokens_in_window} tokens)",
            )
            for name in RELAY_PATH
        ),
        row(
            "token latency",
            "ai-runner memory per open upstream stream",
            per_stream_kib,
            "KiB",
            note=f"RSS {figures.idle_rss / 2**20:.0f} MiB idle,"
            f" {figures.streaming_rss / 2**20:.0f} MiB with {size.jobs} streams",
        ),
    ]
