"""End to end as the highest rate each arm sustains: stepped offered load from wrk (paced, one
process apart), each step judged by what was admitted, what finished and whether the jobs not
yet terminal stayed within what that rate keeps in flight; then, for the system, one more step at
the found rate while py-spy profiles every service."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from jobs_bench import profile
from jobs_bench.context import Context, Row, row
from jobs_bench.systems import Baseline, EventDrivenSystem
from jobs_bench.wrk import WrkResult, run_wrk

BODY = json.dumps({"type": "title_generation", "input": {"topic": "capacity %N"}})
# A step is sustained when wrk got at least this share of the offered rate admitted, the jobs
# that finished kept up as closely, and the backlog stayed within SLACK times what the rate
# keeps in flight (rate x (job length + a second for the pipeline around it)).
KEPT_UP = 0.9
SLACK = 1.5
TERMINAL_SQL = "status NOT IN ('pending', 'processing')"


@dataclass(frozen=True)
class Step:
    offered: float
    admitted_per_s: float
    finished_per_s: float
    backlog: int
    bound: float
    load: WrkResult
    sustained: bool

    def describe(self) -> str:
        verdict = "ok" if self.sustained else "NO"
        return (
            f"{self.offered:g}/s {verdict} (admitted {self.admitted_per_s:.1f}/s, finished"
            f" {self.finished_per_s:.1f}/s, backlog {self.backlog} of {self.bound:.0f})"
        )


async def _fetch(dsn: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def _now(arm: EventDrivenSystem | Baseline) -> datetime:
    """The database's clock: the jobs' timestamps are on it."""
    now = asyncio.run(_fetch(arm.database_url, "SELECT now()"))
    assert isinstance(now, datetime)
    return now


def _count(arm: EventDrivenSystem | Baseline, where: str, *args: object) -> int:
    found = asyncio.run(
        _fetch(arm.database_url, f"SELECT count(*) FROM {arm.table} WHERE {where}", *args)
    )
    assert isinstance(found, int)
    return found


def _backlog(arm: EventDrivenSystem | Baseline, since: datetime) -> int:
    """Jobs of the search not yet terminal."""
    return _count(arm, f"created_at >= $1 AND NOT ({TERMINAL_SQL})", since)


def run_step(
    arm: EventDrivenSystem | Baseline, rate: float, previous: float, since: datetime, ctx: Context
) -> Step:
    size = ctx.size
    began = _now(arm)
    load = run_wrk(
        arm.submit_url,
        duration_s=size.step_s,
        method="POST",
        body=BODY,
        token=arm.token,
        rate=rate,
    )
    ended = _now(arm)
    backlog = _backlog(arm, since)
    finished = _count(
        arm,
        f"created_at >= $1 AND {TERMINAL_SQL} AND updated_at >= $2 AND updated_at < $3",
        since,
        began,
        ended,
    )
    admitted_per_s = load.per_s(202)
    # Jobs finishing in a step began a job's length (and the pipeline's second) earlier, some
    # at the previous step's rate.
    in_flight_s = size.job_s + 1.0
    expected = rate * load.duration_s - (rate - previous) * in_flight_s
    bound = rate * in_flight_s * SLACK
    sustained = (
        admitted_per_s >= KEPT_UP * rate
        and finished >= KEPT_UP * expected
        and backlog <= bound
        and load.other == 0
    )
    return Step(
        offered=rate,
        admitted_per_s=admitted_per_s,
        finished_per_s=finished / load.duration_s,
        backlog=backlog,
        bound=bound,
        load=load,
        sustained=sustained,
    )


def drain(arm: EventDrivenSystem | Baseline, since: datetime, timeout_s: float) -> int:
    """Wait for the search's jobs to finish, so what comes next runs on a quiet system."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = _backlog(arm, since)
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def search(arm: EventDrivenSystem | Baseline, ctx: Context) -> tuple[float, list[Step], datetime]:
    """The highest offered rate sustained before the first step that was not."""
    since = _now(arm)
    steps: list[Step] = []
    best, previous = 0.0, 0.0
    for rate in ctx.size.steps:
        step = run_step(arm, rate, previous, since, ctx)
        steps.append(step)
        if not step.sustained:
            break
        best, previous = rate, rate
    return best, steps, since


def _profile_at(system: EventDrivenSystem, rate: float, since: datetime, ctx: Context) -> None:
    pids = {name: p.process.pid for name, p in system.stack.processes.items()}
    pids.pop("replicate-sim", None)
    running = profile.start(pids, ctx.size.profile_s, ctx.work)
    # Drained just before: the step starts from an empty pipeline, as the first one did.
    step = run_step(system, rate, 0.0, since, ctx)
    profiles = profile.finish(running, timeout_s=ctx.size.profile_s + 30)
    ctx.extras["profiles"] = {"rate": rate, "step": step.describe(), "services": profiles}


def end_to_end(ctx: Context) -> list[Row]:
    found: dict[str, tuple[float, list[Step]]] = {}
    with ctx.event_driven() as system:
        best, steps, since = search(system, ctx)
        # The step that was not sustained left a backlog: profile the found rate, not it.
        drain(system, since, 120)
        _profile_at(system, best or ctx.size.steps[0], since, ctx)
        drain(system, since, 120)
        found["system"] = (best, steps)
    with ctx.baseline() as baseline:
        best, steps, since = search(baseline, ctx)
        drain(baseline, since, 120)
        found["baseline"] = (best, steps)
    ours, theirs = found["system"][0], found["baseline"][0]
    ctx.measured["sustainable"] = ours
    rows = [
        row(
            "end to end",
            "highest sustainable rate",
            ours,
            "jobs/s",
            baseline=theirs or None,
            target=">= 1.0x baseline",
            met=ours > 0 and ours >= theirs,
            note=f"steps of {ctx.size.step_s:g} s, jobs streaming {ctx.size.job_s:g} s;"
            f" system: {'; '.join(s.describe() for s in found['system'][1])};"
            f" baseline: {'; '.join(s.describe() for s in found['baseline'][1])}",
        )
    ]
    for arm, (_, steps) in found.items():
        top = steps[-1]
        rows.append(
            row(
                "end to end",
                f"load generator (wrk) at the last step, {arm}",
                top.load.per_s(),
                "req/s",
                note=f"offered {top.offered:g}/s; its own CPU"
                f" {top.load.cpu_s / top.load.duration_s * 1000:.0f} ms/s;"
                f" answers {top.load.statuses}",
            )
        )
    return rows
