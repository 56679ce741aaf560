"""The budget requests over real NATS request/reply against real Postgres: concurrent
reservations never pass a budget, usage answers, bad requests get the endpoints' codes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date

import msgspec
import pytest
from nats.aio.client import Client as NATS

from job_store.adapters.budgets import PostgresBudgets
from job_store.adapters.database import Pool
from job_store.adapters.nats import JobStoreEndpoints
from job_store.adapters.postgres import PostgresJobStore
from job_store.batches import apply_events
from job_store.spend import Totals
from jobs_proto.spend import BudgetDecision, GetUsage, ReleaseBudget, ReserveBudget, UsageReport
from jobs_proto.subjects import Subjects
from jobs_testkit.events import T0, failed, requested

USER = "user-100"
AMOUNT = 110_000  # script_generation's maxCostUsd
_encoder = msgspec.json.Encoder()


@pytest.fixture
async def endpoints(
    nats_client: NATS, subjects: Subjects, store: PostgresJobStore, pool: Pool
) -> AsyncIterator[JobStoreEndpoints]:
    served = JobStoreEndpoints(nats_client, subjects, store, budgets=PostgresBudgets(pool))
    await served.start()
    yield served
    await served.stop()


def _reserve(job: uuid.UUID) -> ReserveBudget:
    return ReserveBudget(
        job_id=job,
        user_id=USER,
        job_type="script_generation",
        amount_micros=AMOUNT,
        at=T0,
        user_limit_micros=10 * AMOUNT,
    )


async def _ask(nc: NATS, subject: str, body: msgspec.Struct) -> BudgetDecision:
    reply = await nc.request(subject, _encoder.encode(body), timeout=10)
    return msgspec.json.decode(reply.data, type=BudgetDecision)


@pytest.mark.usefixtures("endpoints")
async def test_100_concurrent_reservations_admit_exactly_the_10_the_budget_fits(
    nats_client: NATS, subjects: Subjects, store: PostgresJobStore, pool: Pool
) -> None:
    jobs = [uuid.uuid4() for _ in range(100)]
    decisions = await asyncio.gather(
        *(_ask(nats_client, subjects.reserve_budget, _reserve(job)) for job in jobs)
    )
    admitted = [job for job, d in zip(jobs, decisions, strict=True) if d.admitted]
    assert len(admitted) == 10
    refused = {d for d in decisions if not d.admitted}
    assert refused == {
        BudgetDecision(
            admitted=False, exceeded="user", limit_micros=10 * AMOUNT, remaining_micros=0
        )
    }
    budgets = PostgresBudgets(pool)
    assert await budgets.month(USER, date(2025, 3, 1)) == Totals(0, 10 * AMOUNT)

    # The 10 run and end (never ran: cost 0), and the freed budget admits more.
    for job in admitted:
        await apply_events([requested(job, user=USER), failed(job)], store)
    assert await budgets.month(USER, date(2025, 3, 1)) == Totals(0, 0)
    fresh = [uuid.uuid4() for _ in range(11)]
    again = await asyncio.gather(
        *(_ask(nats_client, subjects.reserve_budget, _reserve(j)) for j in admitted + fresh)
    )
    # The 10 known jobs are admitted again without a reservation (a retried request); of the
    # 11 new ones, exactly 10 fit the freed budget.
    assert all(d.admitted for d in again[:10])
    assert sum(d.admitted for d in again[10:]) == 10
    assert await budgets.month(USER, date(2025, 3, 1)) == Totals(0, 10 * AMOUNT)


@pytest.mark.usefixtures("endpoints")
async def test_release_and_usage_answer_and_bad_requests_get_422(
    nats_client: NATS, subjects: Subjects
) -> None:
    job = uuid.uuid4()
    assert (await _ask(nats_client, subjects.reserve_budget, _reserve(job))).admitted
    released = await _ask(
        nats_client, subjects.release_budget, ReleaseBudget(job_id=job, user_id=USER)
    )
    assert released == BudgetDecision(admitted=False)
    query = GetUsage(
        user_id=USER,
        first=date(2025, 3, 1),
        last=date(2025, 3, 31),
        today=date(2025, 3, 2),
        limit_micros=AMOUNT,
    )
    reply = await nats_client.request(subjects.usage, _encoder.encode(query), timeout=10)
    report = msgspec.json.decode(reply.data, type=UsageReport)
    assert (report.by_type, report.by_day) == ({}, {})
    assert report.budget is not None
    assert report.budget.remaining_micros == AMOUNT
    for subject, body in [
        (subjects.reserve_budget, b'{"jobId": "not-a-uuid"}'),
        (subjects.usage, _encoder.encode(msgspec.structs.replace(query, last=date(2025, 2, 1)))),
    ]:
        reply = await nats_client.request(subject, body, timeout=10)
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "422"
