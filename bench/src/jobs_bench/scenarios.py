"""The benchmark scenarios of issue 11; each returns rows of figures with the baseline measured in
the same run, the ratio, and the target from the issue (never lowered here)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs_bench.accounting import sample_cpu, sample_rss
from jobs_bench.systems import (
    Baseline,
    EventDrivenSystem,
    Finished,
    Servers,
    bare_endpoint,
    reset_simulator,
    set_simulator,
    simulator_size,
    wait_for_status,
)
from jobs_bench.wrk import run_wrk

Row = dict[str, Any]


@dataclass(frozen=True)
class Size:
    """How big each scenario runs: `full` is the issue's, `tiny` proves it works in `make test`.

    `shared`: the scenarios borrow one running system, baseline and bare endpoint instead of
    starting their own; start-ups are most of a tiny run, and a tiny run's figures are only
    proof that the scenario works, while a full run measures each system fresh."""

    name: str
    cpu_jobs: int
    cpu_rate: float
    e2e_rate: float
    e2e_duration_s: float
    http_s: float
    burst_jobs: int
    in_flight: tuple[int, ...]
    shared: bool = False


FULL = Size("full", 3000, 50.0, 300.0, 60.0, 15.0, 20_000, (1_000, 100_000))
TINY = Size("tiny", 30, 15.0, 20.0, 2.0, 2.0, 60, (10, 40), shared=True)
SIZES = {s.name: s for s in (FULL, TINY)}
# Scenarios that leave a system unfit to lend again (admission stops its consumers, and the
# jobs it queued would run during whatever came next): last when systems are shared.
SPOILS_SHARED = ("admission",)


@dataclass
class Context:
    servers: Servers
    work: Path
    size: Size
    _kept: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _lent: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self._kept.close()

    def _lend(self, name: str, start: Callable[[], Any]) -> Any:
        if name not in self._lent:
            self._lent[name] = self._kept.enter_context(start())
        return self._lent[name]

    @contextlib.contextmanager
    def event_driven(self) -> Iterator[EventDrivenSystem]:
        """The system under test: a fresh one, or the run's shared one with its simulator reset."""
        if not self.size.shared:
            with EventDrivenSystem(self.servers, self.work) as fresh:
                yield fresh
            return
        system = self._lend("event-driven", lambda: EventDrivenSystem(self.servers, self.work))
        reset_simulator(system.simulator_url)
        yield system

    @contextlib.contextmanager
    def baseline(self) -> Iterator[Baseline]:
        if not self.size.shared:
            with Baseline(self.servers, self.work) as fresh:
                yield fresh
            return
        system = self._lend("baseline", lambda: Baseline(self.servers, self.work))
        reset_simulator(system.simulator_url)
        yield system

    @contextlib.contextmanager
    def bare(self) -> Iterator[tuple[str, int]]:
        if not self.size.shared:
            with bare_endpoint(self.work) as fresh:
                yield fresh
            return
        yield self._lend("bare", lambda: bare_endpoint(self.work))


def row(
    scenario: str,
    figure: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> Row:
    ratio = None if not baseline else value / baseline
    return {
        "scenario": scenario,
        "figure": figure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
    }


def submit(url: str, token: str, count: int, rate: float) -> dict[str, Any]:
    """Jobs from the generator process; what it accepted and what it was answered."""
    out = subprocess.run(
        [sys.executable, "-m", "jobs_bench.load", url, token, str(count), str(rate)],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    ).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def _measure_cpu(
    system: EventDrivenSystem | Baseline, count: int, rate: float
) -> tuple[dict[str, float], dict[str, Any], Finished]:
    warm = submit(system.submit_url, system.token, 10, 0)
    wait_for_status(system.database_url, system.table, warm["accepted"], 120, warm["jobIds"])
    roots = system.roots()
    before = sample_cpu(roots)
    sent = submit(system.submit_url, system.token, count, rate)
    done = wait_for_status(system.database_url, system.table, count, 600, sent["jobIds"])
    spent = sample_cpu(roots).minus(before)
    return {k: v / max(1, sent["accepted"]) * 1e6 for k, v in spent.items()}, sent, done


def cpu_per_job(ctx: Context) -> list[Row]:
    size = ctx.size
    with ctx.event_driven() as system:
        ours, sent, done = _measure_cpu(system, size.cpu_jobs, size.cpu_rate)
    with ctx.baseline() as baseline:
        theirs, base_sent, _ = _measure_cpu(baseline, size.cpu_jobs, size.cpu_rate)
    total, base_total = sum(ours.values()), sum(theirs.values())
    rows = [row("cpu per job", f"{name} (system)", us, "CPU-us/job") for name, us in ours.items()]
    rows += [
        row("cpu per job", f"{name} (baseline)", us, "CPU-us/job") for name, us in theirs.items()
    ]
    rows.append(
        row(
            "cpu per job",
            "whole system",
            total,
            "CPU-us/job",
            baseline=base_total,
            target="<= 1.5x baseline",
            met=total <= 1.5 * base_total,
            note=f"{sent['accepted']} jobs at {size.cpu_rate}/s; {done.by_status};"
            f" baseline accepted {base_sent['accepted']}",
        )
    )
    return rows


def end_to_end(ctx: Context) -> list[Row]:
    size = ctx.size
    count = int(size.e2e_rate * size.e2e_duration_s)
    figures: dict[str, tuple[float, Finished, dict[str, Any]]] = {}
    arms: dict[str, Callable[[], contextlib.AbstractContextManager[EventDrivenSystem | Baseline]]]
    arms = {"system": ctx.event_driven, "baseline": ctx.baseline}
    for name, arm in arms.items():
        with arm() as system:
            started = time.monotonic()
            sent = submit(system.submit_url, system.token, count, size.e2e_rate)
            done = wait_for_status(
                system.database_url, system.table, sent["accepted"], 900, sent["jobIds"]
            )
            succeeded = done.by_status.get("succeeded", 0)
            figures[name] = (succeeded / (done.at - started), done, sent)
    ours, detail, sent = figures["system"]
    return [
        row(
            "end to end",
            "jobs/s submitted to succeeded",
            ours,
            "jobs/s",
            baseline=figures["baseline"][0],
            target=">= 300 jobs/s",
            met=ours >= 300,
            note=f"offered {size.e2e_rate}/s for {size.e2e_duration_s}s;"
            f" answers {sent['statuses']}; p50"
            f" {detail.latency_p50_s * 1000:.0f} ms, p99 {detail.latency_p99_s * 1000:.0f} ms"
            " (created to last update)",
        )
    ]


def status_reads(ctx: Context) -> list[Row]:
    with ctx.event_driven() as system:
        sent = submit(system.submit_url, system.token, 1, 0)
        wait_for_status(system.database_url, system.table, 1, 60, sent["jobIds"])
        url = f"{system.submit_url}/{sent['jobIds'][0]}"
        ours = run_wrk(url, duration_s=ctx.size.http_s, token=system.token)
    with ctx.bare() as (bare_url, _):
        bare = run_wrk(f"{bare_url}/api/jobs/x", duration_s=ctx.size.http_s)
    ratio = ours.per_s(200) / max(1e-9, bare.per_s(200))
    return [
        row(
            "status reads",
            "GET finished job, 64 connections",
            ours.per_s(200),
            "req/s",
            baseline=bare.per_s(200),
            target=">= 0.5x bare",
            met=ratio >= 0.5,
            note=f"statuses {ours.statuses}",
        ),
        row(
            "status reads",
            "p99",
            ours.p99_ms,
            "ms",
            baseline=bare.p99_ms,
            target="< 20 ms",
            met=ours.p99_ms < 20,
        ),
    ]


def admission(ctx: Context) -> list[Row]:
    body = json.dumps({"type": "title_generation", "input": {"topic": "admission"}})
    with ctx.event_driven() as system:
        # Consumers paused: only the gateway and NATS take part.
        system.stack.stop_service("ai-runner")
        system.stack.stop_service("job-store")
        ours = run_wrk(
            system.submit_url,
            duration_s=ctx.size.http_s,
            method="POST",
            body=body,
            token=system.token,
        )
    with ctx.bare() as (bare_url, _):
        bare = run_wrk(f"{bare_url}/api/jobs", duration_s=ctx.size.http_s, method="POST", body=body)
    accepted = ours.per_s(202)
    ratio = accepted / max(1e-9, bare.per_s(200))
    return [
        row(
            "admission",
            "POST /api/jobs accepted, consumers paused",
            accepted,
            "jobs/s",
            baseline=bare.per_s(200),
            target=">= 0.25x bare",
            met=ratio >= 0.25,
            note=f"statuses {ours.statuses} (429s counted apart); p99 {ours.p99_ms:.1f} ms",
        )
    ]


def burst(ctx: Context) -> list[Row]:
    count = ctx.size.burst_jobs
    with ctx.event_driven() as system:
        before = simulator_size(system.simulator_url)
        started = time.monotonic()
        sent = submit(system.submit_url, system.token, count, 0)
        admitted = time.monotonic() - started
        done = wait_for_status(
            system.database_url, system.table, sent["accepted"], 1800, sent["jobIds"]
        )
        drained = done.at - started
        predictions = simulator_size(system.simulator_url) - before
    succeeded = done.by_status.get("succeeded", 0)
    whole = succeeded == count == sent["accepted"] == predictions
    return [
        row(
            "burst",
            f"{count} jobs at once: time to admit",
            admitted,
            "s",
            note=f"answers {sent['statuses']}",
        ),
        row(
            "burst",
            "time to drain (all succeeded)",
            drained,
            "s",
            target="all succeeded, none lost or duplicated",
            met=whole,
            note=f"{done.by_status}; {predictions} predictions for {count} jobs",
        ),
    ]


# The services hold no per-job state in memory; the servers and the simulator do, by design.
_SERVERS = ("nats", "postgres", "replicate-sim")
FLAT = 1.25


def memory(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    sizes: dict[int, dict[str, int]] = {}
    for in_flight in ctx.size.in_flight:
        with ctx.event_driven() as system:
            # Predictions run and never report back: every job stays in flight.
            set_simulator(system.simulator_url, holdWebhooks=True, latencyS=0.0)
            before = simulator_size(system.simulator_url)
            sent = submit(system.submit_url, system.token, in_flight, 0)
            deadline = time.monotonic() + 1800
            while simulator_size(system.simulator_url) < before + sent["accepted"]:
                if time.monotonic() > deadline:
                    break
                time.sleep(1)
            time.sleep(2)
            sizes[in_flight] = sample_rss(system.roots())
    small, large = ctx.size.in_flight
    for name in sizes[small]:
        rows.append(
            row(
                "memory",
                f"{name} RSS, {large} vs {small} jobs in flight",
                sizes[large][name] / 2**20,
                "MiB",
                baseline=sizes[small][name] / 2**20,
                target="" if name in _SERVERS else f"flat (<= {FLAT}x)",
                met=None if name in _SERVERS else sizes[large][name] <= sizes[small][name] * FLAT,
            )
        )
    return rows


def push_latency(ctx: Context) -> list[Row]:
    # Imported here: the push scenarios build on this module's rows and context.
    from jobs_bench import push

    return push.push_latency(ctx)


def sse_memory(ctx: Context) -> list[Row]:
    from jobs_bench import push

    return push.sse_memory(ctx)


SCENARIOS: dict[str, Callable[[Context], list[Row]]] = {
    "cpu": cpu_per_job,
    "e2e": end_to_end,
    "reads": status_reads,
    "admission": admission,
    "burst": burst,
    "memory": memory,
    "push": push_latency,
    "streams": sse_memory,
}
