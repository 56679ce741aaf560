"""The benchmark's scenarios by name, and those measured here: CPU per job, the idle system,
admission, the burst and memory; each returns rows of figures with the baseline measured in the
same run, the ratio, and the target from the issue (never lowered here)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from jobs_bench.accounting import sample_cpu, sample_rss
from jobs_bench.capacity import end_to_end
from jobs_bench.context import Context, Row, row, submit
from jobs_bench.push import push_latency
from jobs_bench.reads import status_reads
from jobs_bench.streams import sse_memory
from jobs_bench.systems import (
    Baseline,
    EventDrivenSystem,
    Finished,
    set_simulator,
    simulator_size,
    wait_for_status,
)
from jobs_bench.tokens import token_latency
from jobs_bench.wrk import run_wrk

# Scenarios that leave a system unfit to lend again (admission stops its consumers, and the
# jobs it queued would run during whatever came next): last when systems are shared.
SPOILS_SHARED = ("admission",)
# Not the system's own CPU: the simulator stands in for Replicate, the generator for users.
OUTSIDE = ("replicate-sim", "load generator")


def _measure_cpu(
    system: EventDrivenSystem | Baseline, count: int, rate: float
) -> tuple[dict[str, float], dict[str, Any], Finished]:
    """CPU-µs per job of each process tree, and of the load generator, over `count` jobs."""
    warm = submit(system.submit_url, system.token, 10, 0)
    wait_for_status(system.database_url, system.table, warm["accepted"], 120, warm["jobIds"])
    roots = system.roots()
    before = sample_cpu(roots)
    sent = submit(system.submit_url, system.token, count, rate)
    done = wait_for_status(system.database_url, system.table, sent["accepted"], 600, sent["jobIds"])
    spent = sample_cpu(roots).minus(before) | {"load generator": sent["cpuS"]}
    return {k: v / max(1, sent["accepted"]) * 1e6 for k, v in spent.items()}, sent, done


def cpu_per_job(ctx: Context) -> list[Row]:
    size = ctx.size
    with ctx.event_driven() as system:
        ours, sent, done = _measure_cpu(system, size.cpu_jobs, size.cpu_rate)
    with ctx.baseline() as baseline:
        theirs, base_sent, base_done = _measure_cpu(baseline, size.cpu_jobs, size.cpu_rate)
    rows = [row("cpu per job", f"{name} (system)", us, "CPU-us/job") for name, us in ours.items()]
    rows += [
        row("cpu per job", f"{name} (baseline)", us, "CPU-us/job") for name, us in theirs.items()
    ]

    def without(spent: dict[str, float], *left_out: str) -> float:
        return sum(us for name, us in spent.items() if name not in left_out)

    rows.append(
        row(
            "cpu per job",
            "services + NATS + Postgres (baseline: its process + Postgres)",
            without(ours, *OUTSIDE),
            "CPU-us/job",
            baseline=without(theirs, *OUTSIDE),
            target="<= 1.5x baseline",
            met=without(ours, *OUTSIDE) <= 1.5 * without(theirs, *OUTSIDE),
            note=f"{sent['accepted']} jobs at {size.cpu_rate:g}/s, each streaming"
            f" {size.job_s:g} s; {done.by_status} (answers {sent['statuses']}); baseline"
            f" accepted {base_sent['accepted']}, {base_done.by_status}"
            f" (answers {base_sent['statuses']})",
        )
    )
    rows.append(
        row(
            "cpu per job",
            "with the simulator",
            without(ours, "load generator"),
            "CPU-us/job",
            baseline=without(theirs, "load generator"),
        )
    )
    rows.append(
        row(
            "cpu per job",
            "with the simulator and the load generator",
            without(ours),
            "CPU-us/job",
            baseline=without(theirs),
        )
    )
    return rows


def idle(ctx: Context) -> list[Row]:
    """The whole system with nothing to do, once start-up has settled."""
    with ctx.event_driven() as system:
        time.sleep(max(1.0, ctx.size.idle_s / 2))
        roots = system.roots()
        before, started = sample_cpu(roots), time.monotonic()
        time.sleep(ctx.size.idle_s)
        spent = sample_cpu(roots).minus(before)
        elapsed = time.monotonic() - started
    per_s = {name: s / elapsed * 1000 for name, s in spent.items()}
    system_ms = sum(ms for name, ms in per_s.items() if name not in OUTSIDE)
    return [
        row(
            "idle",
            "services + NATS + Postgres, no jobs",
            system_ms,
            "CPU-ms/s",
            target="< 10 ms/s",
            met=system_ms < 10,
            note=f"over {elapsed:.0f} s: "
            + ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(per_s.items())),
        )
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


SCENARIOS: dict[str, Callable[[Context], list[Row]]] = {
    "idle": idle,
    "cpu": cpu_per_job,
    "e2e": end_to_end,
    "reads": status_reads,
    "admission": admission,
    "burst": burst,
    "memory": memory,
    # After `e2e`: push latency runs at half the sustainable rate it found.
    "push": push_latency,
    "streams": sse_memory,
    "tokens": token_latency,
}


def _replicas(ctx: Context) -> list[Row]:
    # Imported here: jobs_bench.replicas builds on this module's CPU measure.
    from jobs_bench.replicas import replicas

    return replicas(ctx)


SCENARIOS["replicas"] = _replicas
