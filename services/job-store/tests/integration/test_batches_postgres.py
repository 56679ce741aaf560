"""`EventApplier` against real Postgres: a batch is one transaction and ends as one-by-one
would, a poison event fails alone, purges delete, and the stuck query finds pending jobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from msgspec.structs import replace
from nats.aio.client import Client as NATS

from job_store.adapters.database import Pool, create_pool
from job_store.adapters.nats import NatsChangeAnnouncer
from job_store.adapters.postgres import PostgresJobStore
from job_store.applier import EventApplier
from job_store.batches import apply_event
from jobs_proto.api import JobChanged
from jobs_proto.events import AnyJobEvent, JobPurged, JobSubmitted
from jobs_testkit.events import cancel, completed, failed, requested, started, submitted
from jobs_testkit.waiting import eventually

from ..fakes import RecordingAnnouncer, RecordingObserver


def _stream_of(jobs: list[uuid.UUID]) -> list[AnyJobEvent]:
    """Interleaved as a stream holds them, with duplicates, every kind of ending."""
    events: list[AnyJobEvent] = []
    endings: list[Callable[[uuid.UUID], AnyJobEvent]] = [
        lambda j: completed(j, output=f"Story of {j}"),
        lambda j: completed(j, "failed", error="boom"),
        failed,
        lambda j: completed(j, "canceled"),
    ]
    events.extend(requested(j) for j in jobs)
    events.extend(submitted(j) for j in jobs)
    events.extend(cancel(j) for j in jobs[3::4])
    events.extend(started(j) for j in jobs)
    events.extend(requested(j) for j in jobs[::5])  # redelivered
    events.extend(endings[i % 4](j) for i, j in enumerate(jobs))
    return events


async def _history(pool: Pool, jobs: list[uuid.UUID]) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        records = await conn.fetch(
            "SELECT job_id, seq, kind, occurred_at, source, message_id, summary"
            " FROM job_history WHERE job_id = ANY($1::uuid[]) ORDER BY job_id, seq",
            jobs,
        )
    return [dict(r) for r in records]


async def test_a_batch_of_many_jobs_is_one_transaction_and_ends_as_one_by_one(
    pool: Pool,
    other_database_url: str,
    announcer: NatsChangeAnnouncer,
    announced: list[JobChanged],
) -> None:
    jobs = [uuid.uuid4() for _ in range(20)]
    stream = _stream_of(jobs)
    observer = RecordingObserver()
    applier = EventApplier(PostgresJobStore(pool), announcer, observer=observer)
    # As the consumer loop hands over a fetched batch: every message at once.
    await asyncio.gather(*(applier(e) for e in stream))
    assert observer.commits == [(len(stream), "batch")]
    async with pool.acquire() as conn:
        # Rows written by one transaction share its id (`xmin`).
        transactions = await conn.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM ("
            " SELECT xmin FROM jobs WHERE id = ANY($1::uuid[])"
            " UNION ALL SELECT xmin FROM job_history WHERE job_id = ANY($1::uuid[])) AS written",
            jobs,
        )
    assert transactions == 1

    one_by_one = await create_pool(other_database_url, max_size=2)
    try:
        alone = PostgresJobStore(one_by_one)
        for event in stream:
            await apply_event(event, alone, announcer)
        batched = PostgresJobStore(pool)
        for job in jobs:
            assert await batched.get(job) == await alone.get(job)
        assert await _history(pool, jobs) == await _history(one_by_one, jobs)
    finally:
        await one_by_one.close()
    rows = [await PostgresJobStore(pool).get(j) for j in jobs]
    assert {r.status for r in rows if r is not None} == {"succeeded", "failed", "canceled"}


async def test_a_poison_event_fails_alone_and_never_blocks_its_batch(pool: Pool) -> None:
    store = PostgresJobStore(pool)
    good, bad = uuid.uuid4(), uuid.uuid4()
    await apply_event(requested(bad), store, RecordingAnnouncer())
    # Postgres refuses this one (an `attempts` beyond its integer column) on every try.
    poison = JobSubmitted(
        job_id=bad, occurred_at=submitted(bad).occurred_at, prediction_id="p", attempt=2**40
    )
    observer = RecordingObserver()
    applier = EventApplier(store, RecordingAnnouncer(), observer=observer)
    for _ in range(2):  # as redelivered, again and again, with other events each time
        other = uuid.uuid4()
        results = await asyncio.gather(
            applier(requested(good)),
            applier(poison),
            applier(submitted(good)),
            applier(requested(other)),
            return_exceptions=True,
        )
        assert [isinstance(r, Exception) for r in results] == [False, True, False, False]
        assert await store.get(other) is not None
    row = await store.get(good)
    assert row is not None
    assert row.status == "processing"
    bad_row = await store.get(bad)
    assert bad_row is not None
    assert (bad_row.status, bad_row.version) == ("pending", 1)
    # Each time: the batch failed, then one transaction per event (the poison's rolled back).
    assert observer.commits == [(1, "single")] * 6
    assert observer.applied_events.count(("submitted", "failed")) == 2


async def test_a_purge_deletes_the_job_and_its_history_and_only_it(pool: Pool) -> None:
    store = PostgresJobStore(pool)
    gone, kept = uuid.uuid4(), uuid.uuid4()
    applier = EventApplier(store, RecordingAnnouncer())
    purge = JobPurged(job_id=gone, occurred_at=datetime.now(UTC))
    await asyncio.gather(
        *(applier(e) for e in (requested(gone), completed(gone), requested(kept), purge))
    )
    await applier(purge)  # again: nothing to do
    assert await store.get(gone) is None
    assert await store.history(gone) == []
    assert [e.seq for e in await store.history(kept)] == [1]
    # Finished jobs past their retention: oldest first; running jobs never.
    await apply_event(requested(gone), store, RecordingAnnouncer())
    await apply_event(completed(gone), store, RecordingAnnouncer())
    assert await store.finished_before(3600, 10) == [gone]
    assert await store.finished_before(10 * 365 * 86_400, 10) == []


async def test_stuck_jobs_can_include_jobs_left_pending(pool: Pool) -> None:
    store = PostgresJobStore(pool)
    now = datetime.now(UTC)
    old_pending, new_pending, processing = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    for event, ago in (
        (requested(old_pending), timedelta(hours=3)),
        (requested(new_pending), timedelta(seconds=5)),
        (requested(processing), timedelta(hours=2)),
        (submitted(processing), timedelta(hours=2)),
    ):
        await apply_event(replace(event, occurred_at=now - ago), store, RecordingAnnouncer())
    assert [r.job_id for r in await store.stuck_jobs(600, 10)] == [processing]
    both = await store.stuck_jobs(600, 10, pending_older_than_s=60)
    assert [(r.job_id, r.status) for r in both] == [
        (old_pending, "pending"),
        (processing, "processing"),
    ]
    assert [r.job_id for r in await store.stuck_jobs(600, 1, pending_older_than_s=60)] == [
        old_pending
    ]


async def test_open_jobs_past_their_deadline_are_counted_by_status(pool: Pool) -> None:
    # What the `job_store_jobs_past_deadline` gauge samples: open jobs only, and only once
    # their type's deadline (minutes) has passed.
    store = PostgresJobStore(pool)
    now = datetime.now(UTC)
    old_pending, new_pending, processing, finished = (uuid.uuid4() for _ in range(4))
    for event, ago in (
        (requested(old_pending), timedelta(days=1)),
        (requested(new_pending), timedelta(seconds=5)),
        (requested(processing), timedelta(days=1)),
        (submitted(processing), timedelta(days=1)),
        (requested(finished), timedelta(days=1)),
        (completed(finished), timedelta(days=1)),
    ):
        await apply_event(replace(event, occurred_at=now - ago), store, RecordingAnnouncer())
    assert await store.past_deadline() == (1, 1)


async def test_an_announcement_too_large_for_one_message_goes_out_without_its_output(
    store: PostgresJobStore,
    announcer: NatsChangeAnnouncer,
    announced: list[JobChanged],
    nats_client: NATS,
) -> None:
    job = uuid.uuid4()
    huge = "x" * (nats_client.max_payload + 1)
    await apply_event(requested(job), store, announcer)
    await apply_event(completed(job, output=huge), store, announcer)
    await eventually(lambda: len(announced) == 2)
    last = announced[-1]
    assert (last.job.status, last.job.output, last.output_omitted) == ("succeeded", None, True)
    assert announced[0].output_omitted is False
    row = await store.get(job)
    assert row is not None
    assert row.output == huge
