"""Budgets and usage against real Postgres: reservations, settlement at each kind of end in
the same transaction as the end (through both write paths), release, the sweep, retries, and a
replay that rebuilds the same sums to the micro-dollar."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from job_store.adapters.budgets import BUDGETS_LOCK_KEY, PostgresBudgets
from job_store.adapters.database import Pool, create_pool
from job_store.adapters.migrations import load_migrations
from job_store.adapters.postgres import PostgresJobStore
from job_store.batches import apply_events
from job_store.budgets import release_budget, release_stale_reservations, usage_report
from job_store.model import JobRow
from job_store.ports import JobTransaction
from job_store.reads import RequestRejected, get_job
from job_store.replay import replay
from job_store.spend import Totals
from jobs_proto.api import GetJob, JobUsage
from jobs_proto.events import AnyJobEvent, JobCompleted
from jobs_proto.spend import (
    BudgetDecision,
    GetUsage,
    Price,
    ReleaseBudget,
    ReserveBudget,
    TypeUsage,
)
from jobs_proto.status import FinalPredictionStatus
from jobs_testkit.events import OWNER, T0, at, cancel, completed, failed, requested, submitted

from ..fakes import RecordingObserver

PRICE = Price(
    per_input_token_usd=Decimal("0.000001"),
    per_output_token_usd=Decimal("0.000004"),
    per_predict_second_usd=Decimal("0.0001"),
)
COST = 100 + 1000 + 250  # 100 in, 250 out, 2.5 s at PRICE, in micro-dollars
AMOUNT = 5000
MONTH = date(2025, 3, 1)
DAY = date(2025, 3, 1)


class LockingOnly:
    """The store without its guarded one-statement write: batches take the locking
    transaction, the other path a job's end can be written by."""

    def __init__(self, store: PostgresJobStore) -> None:
        self._store = store

    def transaction(self) -> AbstractAsyncContextManager[JobTransaction]:
        return self._store.transaction()

    async def get(self, job_id: uuid.UUID) -> JobRow | None:
        return await self._store.get(job_id)

    def __getattr__(self, name: str) -> Any:
        if name in ("read_many", "write_unless_changed"):
            raise AttributeError(name)
        return getattr(self._store, name)


@pytest.fixture(params=["guarded", "locking"])
def jobs(request: pytest.FixtureRequest, store: PostgresJobStore) -> Any:
    return store if request.param == "guarded" else LockingOnly(store)


@pytest.fixture
def budgets(pool: Pool) -> PostgresBudgets:
    return PostgresBudgets(pool)


def _requested(job: uuid.UUID, *, user: str = OWNER, s: float = 0) -> AnyJobEvent:
    return msgspec.structs.replace(
        requested(job, user=user, s=s), price=PRICE, reserved_micros=AMOUNT
    )


def _ran(
    job: uuid.UUID, status: FinalPredictionStatus = "succeeded", *, s: float = 3
) -> JobCompleted:
    return msgspec.structs.replace(
        completed(job, status, s=s), predict_time_s=2.5, input_tokens=100, output_tokens=250
    )


def _reserve(
    job: uuid.UUID,
    *,
    user: str = OWNER,
    amount: int = AMOUNT,
    limit: int | None = 10**6,
    global_limit: int | None = None,
    at_: datetime = T0,
) -> ReserveBudget:
    return ReserveBudget(
        job_id=job,
        user_id=user,
        job_type="script_generation",
        amount_micros=amount,
        at=at_,
        user_limit_micros=limit,
        global_limit_micros=global_limit,
    )


async def _apply(jobs: Any, *events: AnyJobEvent) -> None:
    for event in events:
        (outcome,) = await apply_events([event], jobs)
        assert not isinstance(outcome, Exception), outcome


async def _reservations(pool: Pool) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        "SELECT job_id, user_id, month, day, amount_micros FROM budget_reservations ORDER BY job_id"
    )
    return [tuple(r) for r in rows]


async def sums(pool: Pool) -> dict[str, list[tuple[Any, ...]]]:
    """Every sum the budgets and usage keep, and each job's usage, in a comparable form."""
    queries = {
        "months": "SELECT * FROM budget_months ORDER BY user_id, month",
        "days": "SELECT * FROM budget_days ORDER BY day",
        "usage": "SELECT * FROM usage_days ORDER BY user_id, day, job_type",
        "reservations": "SELECT job_id, user_id, month, day, amount_micros"
        " FROM budget_reservations ORDER BY job_id",
        "jobs": "SELECT id, reserved_micros, predict_time_s, input_tokens, output_tokens,"
        " cost_micros FROM jobs ORDER BY id",
    }
    return {name: [tuple(r) for r in await pool.fetch(q)] for name, q in queries.items()}


# Each way a job ends: its events after the request, what its prediction reported, its cost.
ENDS: dict[str, tuple[list[Any], tuple[Any, ...], int]] = {
    "succeeded": ([submitted, _ran], (2.5, 100, 250), COST),
    "failed_prediction": (
        [submitted, lambda j: _ran(j, "failed")],
        (2.5, 100, 250),
        0,
    ),
    "canceled_with_metrics": (
        [submitted, lambda j: cancel(j, s=2), lambda j: _ran(j, "canceled")],
        (2.5, 100, 250),
        COST,
    ),
    "job_failed": ([submitted, failed], (None, None, None), 0),
    "canceled_before_a_prediction": ([cancel], (None, None, None), 0),
}


@pytest.mark.parametrize("end", list(ENDS))
async def test_a_jobs_end_settles_its_reservation_to_its_cost_once(
    jobs: Any, budgets: PostgresBudgets, pool: Pool, end: str
) -> None:
    job = uuid.uuid4()
    assert await budgets.reserve(_reserve(job)) == BudgetDecision(admitted=True)
    await _apply(jobs, _requested(job))
    assert await budgets.month(OWNER, MONTH) == Totals(0, AMOUNT)
    assert await budgets.day(DAY) == Totals(0, AMOUNT)

    after, metrics, cost = ENDS[end]
    events = [make(job) for make in after]
    await _apply(jobs, *events)
    # Redelivered, the end settles nothing twice.
    await _apply(jobs, *events)

    row = await jobs.get(job)
    assert row is not None
    assert (row.predict_time_s, row.input_tokens, row.output_tokens) == metrics
    assert row.cost_micros == cost
    assert await budgets.month(OWNER, MONTH) == Totals(cost, 0)
    assert await budgets.day(DAY) == Totals(cost, 0)
    assert await _reservations(pool) == []
    by_type, by_day = await budgets.usage(OWNER, DAY, DAY)
    assert by_type == {"script_generation": TypeUsage(jobs=1, cost_micros=cost)}
    assert by_day == {DAY: TypeUsage(jobs=1, cost_micros=cost)}


async def test_the_jobs_view_carries_its_usage(jobs: Any, store: PostgresJobStore) -> None:
    job = uuid.uuid4()
    await _apply(jobs, _requested(job), submitted(job))
    reply = await get_job(GetJob(job_id=job, user_id=OWNER), store)
    assert reply.job is not None
    assert reply.job.usage is None
    await _apply(jobs, _ran(job))
    reply = await get_job(GetJob(job_id=job, user_id=OWNER), store)
    assert reply.job is not None
    assert reply.job.usage == JobUsage(
        predict_time_s=2.5, input_tokens=100, output_tokens=250, cost_usd=0.00135
    )


async def test_metrics_after_a_cancel_while_pending_are_spend_that_happened(
    jobs: Any, budgets: PostgresBudgets
) -> None:
    job = uuid.uuid4()
    await budgets.reserve(_reserve(job))
    await _apply(jobs, _requested(job), cancel(job))
    assert await budgets.month(OWNER, MONTH) == Totals(0, 0)
    # The prediction the runner had just created is canceled, and reports what it ran.
    await _apply(jobs, _ran(job, "canceled", s=9), _ran(job, "canceled", s=10))
    row = await jobs.get(job)
    assert row is not None
    assert (row.status, row.cost_micros) == ("canceled", COST)
    assert await budgets.month(OWNER, MONTH) == Totals(COST, 0)
    by_type, _ = await budgets.usage(OWNER, DAY, DAY)
    assert by_type == {"script_generation": TypeUsage(jobs=1, cost_micros=COST)}


async def test_a_request_and_its_end_in_one_batch_settle_like_one_by_one(
    jobs: Any, budgets: PostgresBudgets, pool: Pool
) -> None:
    reserved, unreserved = uuid.uuid4(), uuid.uuid4()
    await budgets.reserve(_reserve(reserved))
    batch = [
        _requested(reserved),
        submitted(reserved),
        _ran(reserved),
        _requested(unreserved),
        failed(unreserved),
    ]
    assert all(o is not None for o in await apply_events(batch, jobs))
    assert await budgets.month(OWNER, MONTH) == Totals(COST, 0)
    assert await budgets.day(DAY) == Totals(COST, 0)
    assert await _reservations(pool) == []
    by_type, _ = await budgets.usage(OWNER, DAY, DAY)
    assert by_type == {"script_generation": TypeUsage(jobs=2, cost_micros=COST)}


async def test_a_request_nobody_reserved_for_reserves_itself(
    jobs: Any, budgets: PostgresBudgets, pool: Pool
) -> None:
    # Budgets off at the gateway (or a replay): the event is a fact, no limit applies.
    job = uuid.uuid4()
    await _apply(jobs, _requested(job, user="user-2"))
    assert await _reservations(pool) == [(job, "user-2", MONTH, DAY, AMOUNT)]
    assert await budgets.month("user-2", MONTH) == Totals(0, AMOUNT)
    await _apply(jobs, submitted(job), _ran(job))
    assert await budgets.month("user-2", MONTH) == Totals(COST, 0)


async def test_reserving_is_idempotent_per_job_and_refuses_past_either_limit(
    budgets: PostgresBudgets, jobs: Any, pool: Pool
) -> None:
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert (await budgets.reserve(_reserve(first, amount=600, limit=1000))).admitted
    # A retried request (an idempotent resubmission, a lost reply) adds nothing.
    assert (await budgets.reserve(_reserve(first, amount=600, limit=1000))).admitted
    assert await budgets.month(OWNER, MONTH) == Totals(0, 600)
    assert await budgets.reserve(_reserve(second, amount=500, limit=1000)) == BudgetDecision(
        admitted=False, exceeded="user", limit_micros=1000, remaining_micros=400
    )
    assert (await budgets.reserve(_reserve(second, amount=400, limit=1000))).admitted
    # Everyone's day: another user, within their own month, past the day's limit.
    refused = await budgets.reserve(
        _reserve(third, user="user-2", amount=200, limit=None, global_limit=1100)
    )
    assert refused == BudgetDecision(
        admitted=False, exceeded="global", limit_micros=1100, remaining_micros=100
    )
    assert await budgets.month("user-2", MONTH) == Totals(0, 0)  # a refusal leaves nothing
    assert (await budgets.reserve(_reserve(third, user="user-2", amount=100, limit=None))).admitted
    assert await budgets.day(DAY) == Totals(0, 1100)
    # A known job is admitted without a second reservation (its reservation was released).
    known = uuid.uuid4()
    await _apply(jobs, msgspec.structs.replace(_requested(known), reserved_micros=0))
    assert (await budgets.reserve(_reserve(known, amount=10**9, limit=1))).admitted
    assert {r[0] for r in await _reservations(pool)} == {first, second, third, known}
    assert await budgets.month(OWNER, MONTH) == Totals(0, 1000)


async def test_a_release_frees_only_a_reservation_whose_job_never_came(
    budgets: PostgresBudgets, jobs: Any
) -> None:
    unpublished, published = uuid.uuid4(), uuid.uuid4()
    await budgets.reserve(_reserve(unpublished))
    await budgets.reserve(_reserve(published))
    await _apply(jobs, _requested(published))
    assert await release_budget(
        ReleaseBudget(job_id=unpublished, user_id=OWNER), budgets
    ) == BudgetDecision(admitted=False)
    assert await release_budget(
        ReleaseBudget(job_id=published, user_id=OWNER), budgets
    ) == BudgetDecision(admitted=True)
    # Another user's release, or a second one, frees nothing.
    assert not await budgets.release(unpublished, OWNER)
    assert await budgets.month(OWNER, MONTH) == Totals(0, AMOUNT)
    assert await budgets.day(DAY) == Totals(0, AMOUNT)


async def test_the_sweep_releases_stale_reservations_and_a_late_request_reserves_again(
    budgets: PostgresBudgets, jobs: Any, pool: Pool
) -> None:
    stale, fresh, running = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for job in (stale, fresh, running):
        await budgets.reserve(_reserve(job))
    await _apply(jobs, _requested(running))
    await pool.execute(
        "UPDATE budget_reservations SET created_at = now() - interval '10 minutes'"
        " WHERE job_id = ANY($1::uuid[])",
        [stale, running],
    )
    observer = RecordingObserver()
    released = await release_stale_reservations(budgets, grace_s=300, limit=10, observer=observer)
    assert released == 1
    assert observer.released == [1]
    assert {r[0] for r in await _reservations(pool)} == {fresh, running}
    assert await budgets.month(OWNER, MONTH) == Totals(0, 2 * AMOUNT)
    assert await release_stale_reservations(budgets, grace_s=300, limit=10) == 0
    # Its gateway published after all: applying the request reserves again.
    await _apply(jobs, _requested(stale))
    assert await budgets.month(OWNER, MONTH) == Totals(0, 3 * AMOUNT)


async def test_usage_sums_days_and_types_and_tells_the_months_budget(
    budgets: PostgresBudgets, jobs: Any
) -> None:
    one, two, other_month = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await _apply(jobs, _requested(one), submitted(one), _ran(one))
    await _apply(jobs, _requested(two, s=86_400), cancel(two, s=86_401))
    await _apply(jobs, _requested(other_month, s=-86_400), failed(other_month))
    running = uuid.uuid4()
    await _apply(jobs, _requested(running, s=10))
    query = GetUsage(
        user_id=OWNER,
        first=DAY,
        last=DAY + timedelta(days=30),
        today=DAY + timedelta(days=3),
        limit_micros=10**6,
    )
    report = await usage_report(query, budgets)
    assert report.by_type == {"script_generation": TypeUsage(jobs=2, cost_micros=COST)}
    assert report.by_day == {
        DAY: TypeUsage(jobs=1, cost_micros=COST),
        DAY + timedelta(days=1): TypeUsage(jobs=1, cost_micros=0),
    }
    assert report.budget is not None
    assert (report.budget.period_start, report.budget.spent_micros) == (MONTH, COST)
    assert report.budget.reserved_micros == AMOUNT
    assert report.budget.remaining_micros == 10**6 - COST - AMOUNT
    no_limit = await usage_report(msgspec.structs.replace(query, limit_micros=None), budgets)
    assert no_limit.budget is None
    for first, last in [(DAY, DAY - timedelta(days=1)), (DAY, DAY + timedelta(days=366))]:
        with pytest.raises(RequestRejected) as rejected:
            await usage_report(msgspec.structs.replace(query, first=first, last=last), budgets)
        assert rejected.value.code == "422"


async def _batches(events: Sequence[AnyJobEvent], size: int) -> AsyncIterator[list[AnyJobEvent]]:
    for i in range(0, len(events), size):
        yield list(events[i : i + size])


async def test_a_replay_rebuilds_budgets_and_usage_to_the_micro_dollar(
    store: PostgresJobStore, budgets: PostgresBudgets, pool: Pool, other_database_url: str
) -> None:
    jobs = [uuid.uuid4() for _ in range(8)]
    users = ["user-1", "user-2"]
    log: list[AnyJobEvent] = []
    for i, job in enumerate(jobs):
        user = users[i % 2]
        s = i * 40_000.0  # across days, and around midnight
        request = _requested(job, user=user, s=s)
        # The gateway reserves first (all but one: budgets off for it), then publishes.
        if i != 3:
            assert (await budgets.reserve(_reserve(job, user=user, at_=at(s)))).admitted
        stories: list[list[AnyJobEvent]] = [
            [submitted(job, s=s + 1), _ran(job, s=s + 5)],
            [submitted(job, s=s + 1), _ran(job, "failed", s=s + 5)],
            [cancel(job, s=s + 1), _ran(job, "canceled", s=s + 9)],
            [failed(job, s=s + 2)],
            [submitted(job, s=s + 1)],  # still running: its reservation stays
        ]
        ends = stories[i % 5]
        log += [request, *ends]
    # Live: one event at a time, some twice (redelivery).
    for event in log:
        (outcome,) = await apply_events([event], store)
        assert not isinstance(outcome, Exception)
    await apply_events(log[::3], store)
    live = await sums(pool)
    assert all(live[name] for name in ("months", "days", "usage", "reservations"))

    target = await create_pool(other_database_url, max_size=2)
    try:
        report = await replay(_batches(log, 4), PostgresJobStore(target))
        assert report.failed == 0
        assert await sums(target) == live
    finally:
        await target.close()


async def test_concurrent_reservations_and_settlements_queue_without_deadlocks(
    store: PostgresJobStore, budgets: PostgresBudgets, pool: Pool
) -> None:
    # Batches that end jobs of several users in opposite orders, beside reservations for those
    # users and a global limit: all take reservation, month and day rows in one order.
    users = [f"user-{i}" for i in range(4)]
    jobs = {uuid.uuid4(): users[i % 4] for i in range(24)}
    for job, user in jobs.items():
        await _apply(store, _requested(job, user=user), submitted(job))
    ids = list(jobs)
    ends = [[_ran(j) for j in ids[k::3]] for k in range(3)]
    ends[1].reverse()
    newcomers = [uuid.uuid4() for _ in range(12)]
    results = await asyncio.gather(
        *(apply_events(batch, store) for batch in ends),
        *(apply_events(batch, LockingOnly(store)) for batch in ([*reversed(ends[0])],)),
        *(
            budgets.reserve(_reserve(j, user=users[i % 4], global_limit=10**9))
            for i, j in enumerate(newcomers)
        ),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)]
    for user in users:
        assert await budgets.month(user, MONTH) == Totals(6 * COST, 3 * AMOUNT)
    assert await budgets.day(DAY) == Totals(24 * COST, 12 * AMOUNT)


async def test_mixed_batches_of_requests_and_ends_run_side_by_side_without_deadlocks(
    store: PostgresJobStore, budgets: PostgresBudgets
) -> None:
    # Budgets off at the gateway: each request reserves in the statement that inserts it, the
    # same statement that settles the batch's ends (two trigger firings, one transaction).
    users = [f"user-{i}" for i in range(6)]
    rounds = 8
    for _ in range(rounds):
        running = {uuid.uuid4(): users[i % 6] for i in range(36)}
        for job, user in running.items():
            await _apply(store, _requested(job, user=user), submitted(job))
        ids = list(running)
        batches: list[list[AnyJobEvent]] = []
        for k in range(6):
            ends: list[AnyJobEvent] = [_ran(j) for j in ids[k::6]]
            new: list[AnyJobEvent] = [
                _requested(uuid.uuid4(), user=users[(k + 3 + i) % 6]) for i in range(3)
            ]
            batches.append(new + ends if k % 2 else list(reversed(ends)) + new)
        results = await asyncio.gather(
            *(apply_events(batch, store) for batch in batches), return_exceptions=True
        )
        assert not [r for r in results if isinstance(r, BaseException)]
    assert await budgets.day(DAY) == Totals(rounds * 36 * COST, rounds * 18 * AMOUNT)


def test_the_reservation_and_the_triggers_take_the_same_advisory_lock() -> None:
    spend = next(m for m in load_migrations() if m.name == "spend")
    assert f"pg_advisory_xact_lock({BUDGETS_LOCK_KEY})" in spend.sql
