"""`apply_event` against real Postgres, announcing on real NATS: rows, duplicates, outcomes."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from job_store.adapters.database import Pool
from job_store.adapters.nats import NatsChangeAnnouncer
from job_store.adapters.postgres import PostgresJobStore
from job_store.batches import JobNotYetKnown, apply_event
from job_store.reads import get_job
from jobs_proto.api import GetJob, JobChanged
from jobs_proto.events import AnyJobEvent
from jobs_proto.pending import as_utc
from jobs_proto.status import JobStatus
from jobs_testkit.events import (
    OWNER,
    PREDICTION,
    T0,
    at,
    cancel,
    completed,
    requested,
    started,
    submitted,
)
from jobs_testkit.waiting import eventually


async def test_a_full_run_is_recorded_and_announced_once_per_change(
    store: PostgresJobStore, announcer: NatsChangeAnnouncer, announced: list[JobChanged]
) -> None:
    job = uuid.uuid4()
    run: list[AnyJobEvent] = [
        requested(job),
        submitted(job),
        started(job),
        completed(job, output="Waves rise. Waves fall."),
    ]
    for event in run:
        assert await apply_event(event, store, announcer) is not None

    row = await store.get(job)
    assert row is not None
    assert (row.status, row.version, row.output, row.error) == (
        "succeeded",
        4,
        "Waves rise. Waves fall.",
        None,
    )
    assert (row.user_id, row.job_type, row.input, row.prediction_id) == (
        OWNER,
        "script_generation",
        {"topic": "tides"},
        PREDICTION,
    )
    assert (row.created_at, row.submitted_at, row.started_at, row.completed_at) == (
        T0,
        at(1),
        at(2),
        at(3),
    )
    assert row.updated_at == at(3)
    assert row.cancel_requested is False

    await eventually(lambda: len(announced) == 4)
    assert [(c.job.version, c.job.status) for c in announced] == [
        (1, "pending"),
        (2, "processing"),
        (3, "processing"),
        (4, "succeeded"),
    ]
    assert all(c.user_id == OWNER for c in announced)
    assert announced[-1].job.output == "Waves rise. Waves fall."


async def test_duplicates_change_nothing_and_announce_nothing(
    store: PostgresJobStore, announcer: NatsChangeAnnouncer, announced: list[JobChanged]
) -> None:
    job = uuid.uuid4()
    run: list[AnyJobEvent] = [requested(job), submitted(job), started(job), completed(job)]
    for event in run:
        await apply_event(event, store, announcer)
    before = await store.get(job)
    for event in [*run, cancel(job), run[1]]:
        assert await apply_event(event, store, announcer) is None
    assert await store.get(job) == before
    # Nothing more to come, by a barrier rather than a pause: another job's announcement, sent
    # after them on the same connection, arrives behind any the duplicates would have made.
    marker = uuid.uuid4()
    await apply_event(requested(marker), store, announcer)
    await eventually(lambda: bool(announced) and announced[-1].job.job_id == marker)
    assert [c.job.job_id for c in announced] == [job] * 4 + [marker]


async def test_an_event_before_its_request_waits_for_it(
    store: PostgresJobStore, announcer: NatsChangeAnnouncer
) -> None:
    job = uuid.uuid4()
    with pytest.raises(JobNotYetKnown):
        await apply_event(submitted(job), store, announcer)
    assert await store.get(job) is None

    await apply_event(requested(job), store, announcer)
    row = await apply_event(submitted(job), store, announcer)
    assert row is not None
    assert (row.status, row.version, row.prediction_id) == ("processing", 2, PREDICTION)


@pytest.mark.parametrize(
    ("ending", "status", "code", "message"),
    [
        (
            completed(uuid.UUID(int=0), "failed", error="CUDA out of memory"),
            "failed",
            "prediction_failed",
            "CUDA out of memory",
        ),
        (
            completed(uuid.UUID(int=0), "aborted"),
            "failed",
            "deadline_exceeded",
            "The prediction was aborted: the job's deadline passed before it started.",
        ),
        (
            # After the deadline (script_generation's 600 s): a cancel before it is the user's.
            completed(uuid.UUID(int=0), "canceled", s=700),
            "failed",
            "deadline_exceeded",
            "The prediction was canceled because the job's deadline passed.",
        ),
    ],
)
async def test_a_prediction_that_did_not_succeed_fails_the_job(
    store: PostgresJobStore,
    announcer: NatsChangeAnnouncer,
    ending: AnyJobEvent,
    status: JobStatus,
    code: str,
    message: str,
) -> None:
    job = uuid.uuid4()
    await apply_event(requested(job), store, announcer)
    await apply_event(submitted(job), store, announcer)
    row = await apply_event(_for_job(ending, job), store, announcer)
    assert row is not None
    assert (row.status, row.error_code, row.error_message, row.output) == (
        status,
        code,
        message,
        None,
    )
    assert (row.version, row.completed_at) == (3, as_utc(ending.occurred_at))


async def test_a_cancel_then_a_canceled_prediction_cancels_the_job(
    store: PostgresJobStore, announcer: NatsChangeAnnouncer
) -> None:
    job = uuid.uuid4()
    for event in (requested(job), submitted(job), cancel(job)):
        await apply_event(event, store, announcer)
    row = await apply_event(completed(job, "canceled"), store, announcer)
    assert row is not None
    assert (row.status, row.error, row.cancel_requested, row.version) == (
        "canceled",
        None,
        True,
        4,
    )


async def test_a_cancel_of_a_pending_job_ends_it_at_once(
    store: PostgresJobStore, announcer: NatsChangeAnnouncer
) -> None:
    job = uuid.uuid4()
    await apply_event(requested(job), store, announcer)
    row = await apply_event(cancel(job), store, announcer)
    assert row is not None
    assert (row.status, row.prediction_id, row.completed_at) == ("canceled", None, at(2.5))
    # The ai-runner's submission raced the cancel: the job stays canceled.
    assert await apply_event(submitted(job), store, announcer) is None


async def test_racing_requests_create_one_job_and_neither_fails(
    pool: Pool, announcer: NatsChangeAnnouncer, announced: list[JobChanged]
) -> None:
    job = uuid.uuid4()
    # Two replicas, each with its own store, handed the same event at once.
    results = await asyncio.gather(
        *(apply_event(requested(job), PostgresJobStore(pool), announcer) for _ in range(4))
    )
    assert sum(r is not None for r in results) == 1
    await eventually(lambda: len(announced) == 1)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job) == 1


async def test_text_postgres_cannot_hold_is_stored_instead_of_failing_forever(
    store: PostgresJobStore, announcer: NatsChangeAnnouncer
) -> None:
    job = uuid.uuid4()
    nested = {"topic": "nul\x00here", "extra": {"list": ["a\x00", 1, None, 2.5]}}
    await apply_event(requested(job, input=nested), store, announcer)
    await apply_event(completed(job, output="out\x00put"), store, announcer)
    row = await store.get(job)
    assert row is not None
    assert row.input == {"topic": "nul\ufffdhere", "extra": {"list": ["a\ufffd", 1, None, 2.5]}}
    assert row.output == "out\ufffdput"


async def test_get_job_reads_the_row_for_its_owner_only(
    store: PostgresJobStore, announcer: NatsChangeAnnouncer
) -> None:
    job = uuid.uuid4()
    await apply_event(requested(job), store, announcer)
    await apply_event(failed_event := completed(job, "failed", error="boom"), store, announcer)
    reply = await get_job(GetJob(job_id=job, user_id=OWNER), store)
    assert reply.job is not None
    assert reply.job.error is not None
    assert (reply.job.status, reply.job.error.code, reply.job.error.message) == (
        "failed",
        "prediction_failed",
        "boom",
    )
    assert reply.job.completed_at == failed_event.occurred_at
    assert (await get_job(GetJob(job_id=job, user_id="other"), store)).job is None


def _for_job(event: AnyJobEvent, job_id: uuid.UUID) -> AnyJobEvent:
    return msgspec.structs.replace(event, job_id=job_id)
