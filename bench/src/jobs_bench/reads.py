"""Status reads three ways, each against the bare endpoint at 64 connections, over many jobs of
many users (wrk rotating over their paths and tokens): a finished job, a job still running, and
a revalidation with the job's current `ETag` answered `304`."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx

from jobs_bench.context import Context, Row, row
from jobs_bench.systems import EventDrivenSystem, set_simulator, wait_for_status
from jobs_bench.wrk import WrkResult, run_wrk

# Predictions of the running jobs outlast the scenario: they stay `processing` while read.
HELD_S = 600.0
TOPIC = {"type": "title_generation", "input": {"topic": "status reads"}}
# (path, token) of one job; with its `ETag` for the revalidations.
Read = tuple[str, str]


def tokens(system: EventDrivenSystem, users: int) -> list[str]:
    """One token a user (each from `gateway dev-token`, a process: a few at once)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(system.stack.dev_token, (f"reader-{n}" for n in range(users))))


async def _create(system: EventDrivenSystem, users: list[str], per_user: int) -> list[Read]:
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=system.stack.gateway_url, timeout=60) as api:

        async def one(token: str) -> Read:
            async with gate:
                answer = await api.post(
                    "/api/jobs", json=TOPIC, headers={"Authorization": f"Bearer {token}"}
                )
            answer.raise_for_status()
            return f"/api/jobs/{answer.json()['jobId']}", token

        return await asyncio.gather(*(one(t) for t in users for _ in range(per_user)))


async def _etags(system: EventDrivenSystem, reads: list[Read]) -> list[str]:
    """Each job's current `ETag`, read as its owner would (this also fills the gateway's cache of
    finished answers, as any first read does)."""
    async with httpx.AsyncClient(base_url=system.stack.gateway_url, timeout=60) as api:

        async def one(read: Read) -> str:
            path, token = read
            answer = await api.get(path, headers={"Authorization": f"Bearer {token}"})
            answer.raise_for_status()
            return answer.headers["etag"]

        return list(await asyncio.gather(*(one(r) for r in reads)))


def _until_processing(system: EventDrivenSystem, ids: list[str], timeout_s: float) -> int:
    """Wait until every job has its prediction and is `processing`; how many are."""

    async def poll() -> int:
        conn = await asyncpg.connect(system.database_url)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                n = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[])"
                    " AND status = 'processing'",
                    ids,
                )
                if n >= len(ids) or time.monotonic() > deadline:
                    return int(n)
                await asyncio.sleep(0.5)
        finally:
            await conn.close()

    return asyncio.run(poll())


def _write(path: Path, reads: list[Read], tags: list[str] | None = None) -> Path:
    lines = [f"{p}\t{t}\t{'' if tags is None else tags[n]}" for n, (p, t) in enumerate(reads)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ids(reads: list[Read]) -> list[str]:
    return [path.rsplit("/", 1)[1] for path, _ in reads]


def status_reads(ctx: Context) -> list[Row]:
    size, work = ctx.size, ctx.work
    http_s = size.http_s
    with ctx.event_driven() as system:
        users = tokens(system, size.read_users)
        finished = asyncio.run(_create(system, users, size.read_jobs_per_user))
        done = wait_for_status(
            system.database_url, system.table, len(finished), 300, _ids(finished)
        )
        tags = asyncio.run(_etags(system, finished))
        set_simulator(system.simulator_url, latencyS=HELD_S)
        running = asyncio.run(_create(system, users, size.read_jobs_per_user))
        processing = _until_processing(system, _ids(running), 120)
        url = system.stack.gateway_url + finished[0][0]
        ours = {
            "finished": run_wrk(url, duration_s=http_s, requests=_write(work / "f.tsv", finished)),
            "304": run_wrk(url, duration_s=http_s, requests=_write(work / "e.tsv", finished, tags)),
            "running": run_wrk(url, duration_s=http_s, requests=_write(work / "r.tsv", running)),
        }
        set_simulator(system.simulator_url, latencyS=size.job_s)
    with ctx.bare() as (bare_url, _):
        anonymous = [(path, "") for path, _ in finished]
        bare = run_wrk(
            bare_url + finished[0][0], duration_s=http_s, requests=_write(work / "b.tsv", anonymous)
        )
    jobs = f"{len(finished)} jobs of {len(users)} users"
    fin, rev, run = ours["finished"], ours["304"], ours["running"]
    return [
        _versus(
            "GET finished job, 64 connections",
            fin,
            200,
            bare,
            0.5,
            f"{jobs}; {done.by_status}; statuses {fin.statuses}",
        ),
        row(
            "status reads",
            "GET finished job, p99",
            fin.p99_ms,
            "ms",
            baseline=bare.p99_ms,
            target="< 20 ms",
            met=fin.p99_ms < 20,
        ),
        _versus(
            "GET running job, 64 connections",
            run,
            200,
            bare,
            0.3,
            f"{jobs}, {processing} processing; statuses {run.statuses}; p99 {run.p99_ms:.1f} ms",
        ),
        _versus(
            "revalidation answered 304, 64 connections",
            rev,
            304,
            bare,
            0.5,
            f"If-None-Match with each finished job's ETag; statuses {rev.statuses};"
            f" p99 {rev.p99_ms:.1f} ms",
        ),
    ]


def _versus(
    figure: str, ours: WrkResult, status: int, bare: WrkResult, share: float, note: str
) -> Row:
    """`status` answers a second against the bare endpoint's, met at `share` of it with no
    other answer than that status (a `304` row counts revalidations, nothing else)."""
    value, ceiling = ours.per_s(status), bare.per_s(200)
    return row(
        "status reads",
        figure,
        value,
        "req/s",
        baseline=ceiling,
        target=f">= {share:g}x bare",
        met=value >= share * ceiling and set(ours.statuses) == {status},
        note=note,
    )
