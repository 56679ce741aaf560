"""The scenarios: each one fault, injected while the steady load runs and undone before the
wait for quiet, then the audit of the scenario's own jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import httpx

from jobs_chaos.audit import Exit, Row, Watched, audit, audit_exits, audit_watchers
from jobs_chaos.load import Load, Watching, run_load
from jobs_chaos.records import (
    collect,
    evidence,
    history,
    jobs_by_topic,
    unaccounted,
    wait_quiet,
)
from jobs_chaos.system import FAMILIES, SERVICES, ChaosSystem, Timing
from jobs_proto.stream import job_store_consumer
from jobs_proto.subjects import Subjects
from jobs_testkit.front import RoundRobinFront


@dataclass(frozen=True)
class Size:
    """How long each part lasts: `short` for the test suite, `full` for `make chaos`."""

    name: str
    rate_per_s: float
    load_s: float
    pause_s: float
    hold_s: float
    quiet_timeout_s: float
    # Whether a scenario that mostly waits (the rate limit's minute) is audited while the
    # next ones run, to keep the short run short; its faults then overlap theirs.
    overlap_slow: bool = False
    # Share of the load sent before the fault strikes.
    fault_at: float = 0.4
    # Each prediction's length, drawn per job (None: `BASE_KNOBS`' latency for all).
    latency_s: tuple[float, float] | None = None
    # The preStop pause of a rollout's stopped replica (None: the manifest's).
    pre_stop_s: float | None = None


SIZES = {
    # 12 jobs a scenario, 2 of them canceled by their user.
    "short": Size(
        "short",
        rate_per_s=4.0,
        load_s=3.0,
        pause_s=5.0,
        hold_s=10.0,
        quiet_timeout_s=90,
        overlap_slow=True,
        pre_stop_s=1.0,
    ),
    # 1,000 jobs a scenario, 200 of them canceled, predictions of 5 to 30 s.
    "full": Size(
        "full",
        rate_per_s=10.0,
        load_s=100.0,
        pause_s=30.0,
        hold_s=120.0,
        quiet_timeout_s=300,
        latency_s=(5.0, 30.0),
    ),
}
# Every scenario runs with these, so a failed prediction's path is audited too.
BASE_LATENCY_S = 2.0
BASE_KNOBS: dict[str, object] = {"latencyS": BASE_LATENCY_S, "predictionFailRate": 0.1}
# Replicate's rate-limit window, which the simulator copies: a throttled create waits for it.
RATE_WINDOW_S = 60.0
# The ai-runner's default MAX_ATTEMPTS, which the system here keeps.
MAX_ATTEMPTS = 5


@dataclass
class Context:
    system: ChaosSystem
    size: Size
    loop_started: float = field(default_factory=time.monotonic)
    # The one address the clients use, where the scenario puts the gateways behind one.
    front: RoundRobinFront | None = None
    # Replicas the fault stopped as Kubernetes stops a pod, for the audit.
    exits: list[Exit] = field(default_factory=list)

    async def until_load_ends(self) -> None:
        await asyncio.sleep(max(0.0, self.loop_started + self.size.load_s - time.monotonic()))

    async def until_fault(self) -> None:
        at = self.loop_started + self.size.load_s * self.size.fault_at
        await asyncio.sleep(max(0.0, at - time.monotonic()))


Fault = Callable[[Context], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Fault
    # Seconds a job may wait on a limit the scenario declares (a paused process, a rate
    # limit, a server down), on top of the system's own threshold for "stuck".
    allowance_s: Callable[[Size, Timing], float] = lambda _size, _timing: 0.0
    # Mostly waiting once its load is in (see `Size.overlap_slow`).
    slow: bool = False
    # NATS nodes of the system it runs on (jobs_chaos.cluster's scenarios: 3).
    nodes: int = 1
    # The size it runs at, from the run's (its load's length, its jobs').
    sized: Callable[[Size], Size] = lambda size: size
    # Whether the clients reach the gateways through one address, a round-robin front (as
    # behind a Service) rather than each gateway's own, and watch each job's events too.
    through_front: bool = False


def _kill_and_restart(service: str) -> Fault:
    async def fault(ctx: Context) -> None:
        await ctx.until_fault()
        replica = ctx.system.replicas[service][0]
        replica.kill()
        await asyncio.to_thread(replica.start)

    return fault


async def _kill_one_of_each(ctx: Context) -> None:
    await ctx.until_fault()
    victims = [ctx.system.replicas[s][0] for s in SERVICES]
    for replica in victims:
        replica.kill()
    for replica in victims:
        await asyncio.to_thread(replica.start)


def _pause(service: str) -> Fault:
    async def fault(ctx: Context) -> None:
        await ctx.until_fault()
        replica = ctx.system.replicas[service][0]
        replica.pause()
        try:
            await asyncio.sleep(ctx.size.pause_s)
        finally:
            replica.resume()

    return fault


async def _restart_nats(ctx: Context) -> None:
    await ctx.until_fault()
    await asyncio.to_thread(ctx.system.nats.restart)


async def _restart_postgres(ctx: Context) -> None:
    await ctx.until_fault()
    await asyncio.to_thread(ctx.system.postgres.restart)


def _knobs_during_load(**knobs: object) -> Fault:
    """Simulator faults for the whole load, then back to normal so retries can succeed."""

    async def fault(ctx: Context) -> None:
        await asyncio.to_thread(ctx.system.set_knobs, **knobs)
        await ctx.until_load_ends()
        await asyncio.to_thread(ctx.system.set_knobs, **_defaults_of(knobs))

    return fault


def _defaults_of(knobs: dict[str, object]) -> dict[str, object]:
    defaults: dict[str, object] = {
        "apiErrorRate": 0.0,
        "apiErrorAfterCreate": False,
        "createRateLimitPerMinute": None,
        "dropWebhookRate": 0.0,
        "duplicateWebhookRate": 0.0,
        "reorderWebhooks": False,
        "holdWebhooks": False,
        "streamDropRate": 0.0,
    }
    return {k: defaults[k] for k in knobs}


async def _rate_limit(ctx: Context) -> None:
    # Half the load's creates fit in the window; the rest are throttled until it passes.
    limit = max(1, round(ctx.size.rate_per_s * ctx.size.load_s / 2))
    await _knobs_during_load(createRateLimitPerMinute=limit)(ctx)


async def _hold(ctx: Context) -> None:
    await asyncio.to_thread(ctx.system.set_knobs, holdWebhooks=True)
    try:
        await asyncio.sleep(ctx.size.hold_s)
    finally:
        await asyncio.to_thread(ctx.system.set_knobs, holdWebhooks=False)


def _binding_waits(_size: Size, timing: Timing) -> float:
    # A 500 from a create is ambiguous (it may have created), so the runner waits
    # BINDING_WAIT_S for the prediction to show before each new create: a job whose creates
    # keep failing stays `pending` through up to MAX_ATTEMPTS - 1 such declared waits.
    return timing.binding_wait_s * (MAX_ATTEMPTS - 1)


def _job_store_redelivery(_size: Size, timing: Timing) -> float:
    # A job-store replica killed with a fetched batch not yet acked: another replica gets those
    # events after the job-store consumer's ack wait (30 s, longer than the ai-runner's the
    # chaos timing shrinks), the recovery the design promises; seen once in a short run.
    redelivery = job_store_consumer(Subjects()).ack_wait_s
    return max(0.0, redelivery - max(timing.binding_wait_s, timing.ack_wait_s))


def _kill_scenario(service: str) -> Scenario:
    name = f"SIGKILL {service} (one replica), restart"
    if service == "job-store":
        return Scenario(name, _kill_and_restart(service), allowance_s=_job_store_redelivery)
    return Scenario(name, _kill_and_restart(service))


def _pause_scenario(service: str) -> Scenario:
    # Whatever the stopped replica holds (a fetched message, a request, a webhook) waits for it.
    return Scenario(
        f"SIGSTOP {service} (one replica), SIGCONT",
        _pause(service),
        allowance_s=lambda size, _timing: size.pause_s,
    )


SCENARIOS: tuple[Scenario, ...] = (
    *(_kill_scenario(s) for s in SERVICES),
    _pause_scenario("ai-runner"),
    _pause_scenario("job-store"),
    _pause_scenario("gateway"),
    _pause_scenario("webhook-ingest"),
    Scenario(
        "SIGKILL one replica of every service",
        _kill_one_of_each,
        allowance_s=_job_store_redelivery,
    ),
    Scenario("restart NATS", _restart_nats, allowance_s=lambda _size, _timing: 10.0),
    Scenario("restart Postgres", _restart_postgres, allowance_s=lambda _size, _timing: 10.0),
    Scenario(
        "simulator rate limit (429)",
        _rate_limit,
        allowance_s=lambda _size, _timing: RATE_WINDOW_S,
        slow=True,
    ),
    Scenario(
        "simulator 500 before create (30%)",
        _knobs_during_load(apiErrorRate=0.3),
        allowance_s=_binding_waits,
    ),
    Scenario(
        "simulator 500 after create (30%)",
        _knobs_during_load(apiErrorRate=0.3, apiErrorAfterCreate=True),
        allowance_s=_binding_waits,
    ),
    Scenario("drop 20% of webhooks", _knobs_during_load(dropWebhookRate=0.2)),
    Scenario("duplicate webhooks (50%)", _knobs_during_load(duplicateWebhookRate=0.5)),
    Scenario("reorder webhooks", _knobs_during_load(reorderWebhooks=True)),
    # The relay reconnects to each cut stream; Replicate's stream replays from the start.
    Scenario("cut 30% of output streams", _knobs_during_load(streamDropRate=0.3)),
    Scenario("hold webhooks", _hold),
)


Metrics = dict[str, dict[str, dict[str, float]]]


def _delta(before: float, after: float) -> float:
    # A counter that went down belongs to a replica that restarted, whose count since then
    # is all we can know.
    return after - before if after >= before else after


def _shares(before: Metrics, after: Metrics) -> dict[str, dict[str, float]]:
    """Per service and replica, the work (first family) counted during the scenario."""
    return {
        service: {
            name: _delta(
                before.get(service, {}).get(name, {}).get(FAMILIES[service][0], 0.0),
                families[FAMILIES[service][0]],
            )
            for name, families in by_replica.items()
        }
        for service, by_replica in after.items()
    }


def _signals(before: Metrics, after: Metrics) -> dict[str, float]:
    """Every other counter family, summed over replicas: what the system did about the fault."""
    signals: dict[str, float] = {}
    for service, by_replica in after.items():
        for name, families in by_replica.items():
            for family, value in families.items():
                start = before.get(service, {}).get(name, {}).get(family, 0.0)
                signals[family] = signals.get(family, 0.0) + _delta(start, value)
    return signals


def _metrics(system: ChaosSystem) -> Metrics:
    return {service: system.metrics(service) for service in SERVICES}


@dataclass
class Injected:
    """A scenario after its load and fault: what the load saw, and the metrics before it."""

    load: Load
    before: Metrics
    revived: list[str]
    started: float
    front: RoundRobinFront | None = None
    exits: list[Exit] = field(default_factory=list)


def label_of(scenario: Scenario) -> str:
    """The scenario's mark in its jobs' topics, one of its own (for the search for jobs the
    client was never told of)."""
    return re.sub(r"[^a-z0-9]+", "-", scenario.name.lower()).strip("-")


def topic_prefix(scenario: Scenario) -> str:
    return f"chaos {label_of(scenario)} job "


async def inject(system: ChaosSystem, scenario: Scenario, size: Size, token: str) -> Injected:
    """Normal knobs, then the load with the fault during it; every replica running after."""
    started = time.monotonic()
    size = scenario.sized(size)
    await asyncio.to_thread(system.reset_knobs)
    await asyncio.to_thread(system.set_knobs, **BASE_KNOBS)
    before = await asyncio.to_thread(_metrics, system)
    front = None
    gateways = system.gateway_urls
    if scenario.through_front:
        backends = [("127.0.0.1", r.http_port or 0) for r in system.replicas["gateway"]]
        front = await RoundRobinFront(backends).start()
        gateways = [front.url]
    ctx = Context(system, size, front=front)
    load_task = asyncio.create_task(
        run_load(
            gateways,
            token,
            rate_per_s=size.rate_per_s,
            duration_s=size.load_s,
            label=label_of(scenario),
            latency_s=size.latency_s,
            base_latency_s=BASE_LATENCY_S,
            simulator_url=system.simulator_url,
            seed=zlib.crc32(scenario.name.encode()),
            watch_events=scenario.through_front,
            keep_alive=not scenario.through_front,
        )
    )
    try:
        await scenario.fault(ctx)
    finally:
        load = await load_task
    revived = await asyncio.to_thread(system.revive)
    return Injected(load, before, revived, started, front, ctx.exits)


async def _retrying(read: Callable[[], Awaitable[T]], attempts: int = 10) -> T:
    # An audit that overlaps a later scenario may meet Postgres restarting.
    for _ in range(attempts - 1):
        try:
            return await read()
        except (OSError, asyncpg.PostgresError, httpx.HTTPError):
            await asyncio.sleep(2.0)
    return await read()


async def settle(
    system: ChaosSystem, scenario: Scenario, size: Size, token: str, injected: Injected
) -> tuple[Row, dict[str, Any]]:
    """Quiet, then the audit: the row and the evidence for each job that broke a rule."""
    size = scenario.sized(size)
    load = injected.load
    quiet = await wait_quiet(
        system.database_url, system.simulator_url, load.accepted, size.quiet_timeout_s
    )
    # Late webhooks (held, retried) reach the system before the audit, so it sees their effect.
    await asyncio.to_thread(system.wait_webhooks_sent, 15.0)
    await asyncio.sleep(0.5)
    # Every job is over: each reader has its `done`, or gets it within a few reconnects; each
    # cancel has its answer.
    await load.read_all(timeout_s=30.0)
    await load.cancels_done(timeout_s=30.0)
    if injected.front is not None:
        await injected.front.close()
    logs = (system.nats.url, Subjects(), f"{system.stack.jobs_stream}_OUTPUT")
    records, raw = await _retrying(
        lambda: collect(
            system.database_url,
            system.simulator_url,
            load.accepted,
            logs,
            load.readings,
            load.cancels,
        )
    )
    by_topic = await _retrying(lambda: jobs_by_topic(system.database_url, topic_prefix(scenario)))
    duplicates, unanswered = unaccounted(load.accepted, by_topic)
    allowance = scenario.allowance_s(size, system.timing)
    stuck_after = system.timing.stuck_after_s + allowance
    row = audit(
        scenario.name,
        records,
        refused=load.refused_total,
        now=time.time(),
        stuck_after_s=stuck_after,
        # A cancel on its way to Replicate may wait for a redelivery, and for what the
        # scenario declares; a prediction ending on its own meanwhile wins the race.
        cancel_window_s=system.timing.ack_wait_s + allowance,
        unanswered_jobs=len(unanswered),
        duplicate_jobs=tuple(duplicates),
    )
    if load.watch_events:
        watched = {
            job_id: Watched(w.status, w.error, round(w.longest_disconnected_s, 2))
            for job_id, w in load.watchings.items()
        }
        stored = {r.accepted.job_id: r.stored.status if r.stored else None for r in records}
        audit_watchers(row, stored, watched)
    audit_exits(row, injected.exits)
    after = await asyncio.to_thread(_metrics, system)
    row.shares = _shares(injected.before, after)
    details: dict[str, Any] = {
        "quiet": quiet,
        "signals": _signals(injected.before, after),
        "refused": load.refused,
        "resent": load.resent,
        "unanswered_jobs": unanswered[:20],
        "cancel_answers": row.cancel_answers,
        "cancels_raced": row.cancels_raced,
        "revived": injected.revived,
        "elapsed_s": round(time.monotonic() - injected.started, 1),
        "violations": [],
    }
    if load.watch_events:
        details["sse"] = _sse_details(row, list(load.watchings.values()))
    if injected.exits:
        details["exits"] = [dataclasses.asdict(e) for e in injected.exits]
    for v in row.violations[:20]:
        if v.kind == "bad_exit":
            # A replica's stop, not a job: its evidence is the exit itself, and its log.
            details["violations"].append({"job_id": v.job_id, "kind": v.kind, "detail": v.detail})
            continue
        details["violations"].append(
            {
                "job_id": v.job_id,
                "kind": v.kind,
                "detail": v.detail,
                "job": await _retrying(
                    functools.partial(evidence, system.gateway_urls[1], token, v.job_id)
                ),
                "history": await _retrying(
                    functools.partial(history, system.database_url, v.job_id)
                ),
                "predictions": raw.get(v.job_id, []),
            }
        )
    return row, details


def _sse_details(row: Row, watchings: list[Watching]) -> dict[str, Any]:
    """The watchers in numbers: connections, those that had to reconnect and how long they
    were without a stream (median, 95th percentile, longest), and why attempts failed."""
    gaps = sorted(w.longest_disconnected_s for w in watchings if w.connections > 1)
    failures: dict[str, int] = {}
    for w in watchings:
        for why, n in w.failures.items():
            failures[why] = failures.get(why, 0) + n

    def at(share: float) -> float:
        return round(gaps[min(len(gaps) - 1, int(share * len(gaps)))], 2) if gaps else 0.0

    return {
        "watched": row.watched,
        "missed_end": row.missed_end,
        "connections": sum(w.connections for w in watchings),
        "reconnected": len(gaps),
        "disconnected_s": {"p50": at(0.5), "p95": at(0.95), "max": at(1.0)},
        "failed_attempts": failures,
    }


async def run_scenario(
    system: ChaosSystem, scenario: Scenario, size: Size, token: str
) -> tuple[Row, dict[str, Any]]:
    """Load, fault, quiet, audit, one after the other."""
    injected = await inject(system, scenario, size, token)
    return await settle(system, scenario, size, token, injected)
