"""The rows of running jobs a job-store keeps in hand (`RowCache`) against real Postgres: what
it keeps is exactly what Postgres gives back, and a row another replica changed since is never
what an event is judged against."""

from __future__ import annotations

import uuid
from datetime import timedelta, timezone

import msgspec

from job_store.adapters.database import Pool
from job_store.adapters.postgres import PostgresJobStore
from job_store.batches import JobNotYetKnown, apply_events
from jobs_testkit.events import cancel, completed, requested, started, submitted


async def test_a_kept_row_is_the_row_postgres_gives_back(pool: Pool) -> None:
    store = PostgresJobStore(pool, cached_rows=16)
    job = uuid.uuid4()
    await apply_events([requested(job)], store)
    assert store.kept(job) is None  # an inserted row is not kept
    moved = submitted(job, prediction="p\x00nul")
    away = moved.occurred_at.astimezone(timezone(timedelta(hours=2)))
    # Read once, then written: the new row is kept, as Postgres would give it back.
    await apply_events([msgspec.structs.replace(moved, occurred_at=away)], store)
    kept = store.kept(job)
    assert kept is not None
    assert kept == (await PostgresJobStore(pool).read_many([job]))[job]
    assert kept.prediction_id == "p\ufffdnul"
    assert kept.updated_at.utcoffset() == timedelta(0)


async def test_a_row_another_replica_changed_is_read_again_before_judging(pool: Pool) -> None:
    mine, other = PostgresJobStore(pool, cached_rows=16), PostgresJobStore(pool)
    job = uuid.uuid4()
    await apply_events([requested(job), submitted(job)], mine)
    await apply_events([started(job)], mine)
    assert mine.kept(job) is not None
    await apply_events([cancel(job)], other)  # the kept row is now one version behind

    # Judged against the kept row, the prediction's cancellation would fail the job for its
    # deadline; against the row as it is, the user asked for it: canceled.
    await apply_events([completed(job, status="canceled")], mine)

    row = (await other.read_many([job]))[job]
    assert row.status == "canceled"
    assert row.version == 5
    assert mine.kept(job) is None  # terminal: not kept


async def test_a_purged_job_is_not_judged_from_its_kept_row(pool: Pool) -> None:
    mine, other = PostgresJobStore(pool, cached_rows=16), PostgresJobStore(pool)
    job = uuid.uuid4()
    await apply_events([requested(job), submitted(job)], mine)
    await apply_events([started(job)], mine)
    async with other.transaction() as tx:
        await tx.delete(job)
    # The job is gone: the completion waits for a request, and nothing is written.
    (outcome,) = await apply_events([completed(job)], mine)
    assert isinstance(outcome, JobNotYetKnown)
    assert await other.read_many([job]) == {}
