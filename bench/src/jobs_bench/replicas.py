"""R3 against R1 in one run: the system on a three-node JetStream cluster with every stream
replicated three times, and on one NATS server with one replica, each measured for the highest
rate it sustains end to end and for CPU per job (services, every NATS node and Postgres)."""

from __future__ import annotations

from jobs_bench.capacity import drain, search
from jobs_bench.context import Context, Row, row
from jobs_bench.scenarios import OUTSIDE, _measure_cpu
from jobs_bench.systems import EventDrivenSystem, Servers, set_simulator

NODES = 3


def _arm(system: EventDrivenSystem, ctx: Context) -> tuple[float, str, dict[str, float], str]:
    """The arm's CPU per job by process tree (after its warm-up jobs), then its sustainable
    rate and the steps of the search."""
    cpu, sent, done = _measure_cpu(system, ctx.size.cpu_jobs, ctx.size.cpu_rate)
    best, steps, since = search(system, ctx)
    drain(system, since, 120)
    return (
        best,
        "; ".join(s.describe() for s in steps),
        cpu,
        f"{sent['accepted']} jobs at {ctx.size.cpu_rate:g}/s, {done.by_status}",
    )


def _nats(cpu: dict[str, float]) -> float:
    return sum(us for name, us in cpu.items() if name == "nats" or name.startswith("nats-"))


def replicas(ctx: Context) -> list[Row]:
    with ctx.event_driven() as r1:
        r1_rate, r1_steps, r1_cpu, r1_note = _arm(r1, ctx)
    with (
        Servers(ctx.work / "cluster", nodes=NODES) as servers,
        EventDrivenSystem(servers, ctx.work, overrides={"STREAM_REPLICAS": str(NODES)}) as r3,
    ):
        set_simulator(r3.simulator_url, latencyS=ctx.size.job_s)
        r3_rate, r3_steps, r3_cpu, r3_note = _arm(r3, ctx)

    def system(cpu: dict[str, float]) -> float:
        return sum(us for name, us in cpu.items() if name not in OUTSIDE)

    return [
        row(
            "replicas",
            "highest sustainable rate, R3 on 3 nodes (baseline: R1 on 1)",
            r3_rate,
            "jobs/s",
            baseline=r1_rate or None,
            note=f"R3: {r3_steps}; R1: {r1_steps}",
        ),
        row(
            "replicas",
            "CPU per job, services + NATS + Postgres, R3 (baseline: R1)",
            system(r3_cpu),
            "CPU-us/job",
            baseline=system(r1_cpu),
            note=f"R3: {r3_note}; R1: {r1_note}",
        ),
        row(
            "replicas",
            "CPU per job, NATS alone (3 nodes vs 1)",
            _nats(r3_cpu),
            "CPU-us/job",
            baseline=_nats(r1_cpu),
        ),
    ]
