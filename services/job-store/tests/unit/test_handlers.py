"""The handlers over in-memory ports: ordering per job, unknown jobs, announcements, reads."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from job_store.handlers import (
    EventApplier,
    JobNotYetKnown,
    apply_event,
    get_job,
)
from job_store.model import JobRow
from jobs_proto.api import GetJob, JobChanged
from jobs_runtime.retry import RetryLater
from jobs_testkit.events import OWNER, completed, requested, started, submitted


class MemoryTransaction:
    """Read-committed like Postgres: reads see committed rows, writes show at commit, and
    `lock` of a row that does not exist yet locks nothing."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.writes: dict[uuid.UUID, JobRow] = {}
        self.held: list[asyncio.Lock] = []

    async def lock(self, job_id: uuid.UUID) -> JobRow | None:
        await asyncio.sleep(0)  # a round trip: other tasks run meanwhile
        if job_id in self.writes:
            return self.writes[job_id]
        if job_id not in self._store.rows:
            return None
        lock = self._store.row_locks[job_id]
        if lock not in self.held:
            await lock.acquire()
            self.held.append(lock)
        return self._store.rows[job_id]

    async def insert(self, row: JobRow) -> bool:
        await asyncio.sleep(0)
        if row.job_id in self._store.rows:
            return False
        self.writes[row.job_id] = row
        return True

    async def update(self, row: JobRow) -> None:
        await asyncio.sleep(0)
        self.writes[row.job_id] = row


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, JobRow] = {}
        self.row_locks: defaultdict[uuid.UUID, asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        tx = MemoryTransaction(self)
        try:
            yield tx
            await asyncio.sleep(0)
            self.rows.update(tx.writes)
        finally:
            for lock in tx.held:
                lock.release()

    async def get(self, job_id: uuid.UUID) -> JobRow | None:
        return self.rows.get(job_id)


class RecordingAnnouncer:
    def __init__(self, *, broken: bool = False) -> None:
        self.changes: list[JobChanged] = []
        self.broken = broken

    async def announce(self, change: JobChanged) -> None:
        if self.broken:
            raise ConnectionError("nats is gone")
        self.changes.append(change)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def announcer() -> RecordingAnnouncer:
    return RecordingAnnouncer()


async def test_events_of_one_job_in_one_batch_apply_in_stream_order(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    applier = EventApplier(store, announcer)
    # As the consumer loop runs a batch: all at once, in stream order.
    await asyncio.gather(
        applier(requested(job)),
        applier(submitted(job)),
        applier(started(job)),
        applier(completed(job)),
    )
    assert [c.job.version for c in announcer.changes] == [1, 2, 3, 4]
    assert store.rows[job].status == "succeeded"
    assert not applier._locks, "finished jobs must not stay in the lock map"


async def test_without_the_per_job_order_a_batch_races_for_the_row(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    # Why `EventApplier` exists: the fake store races like Postgres does.
    job = uuid.uuid4()
    results = await asyncio.gather(
        apply_event(requested(job), store, announcer),
        apply_event(submitted(job), store, announcer),
        return_exceptions=True,
    )
    assert isinstance(results[1], JobNotYetKnown)


async def test_an_event_before_its_request_asks_for_a_quick_retry(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    applier = EventApplier(store, announcer)
    with pytest.raises(JobNotYetKnown) as early:
        await applier(submitted(job))
    # A RetryLater: the consumer loop redelivers it within seconds, logged as a wait.
    assert isinstance(early.value, RetryLater)
    assert 0.5 <= early.value.delay_s <= 2.0
    assert early.value.quick_attempts == 5
    await applier(requested(job))
    await applier(submitted(job))
    assert [c.job.status for c in announcer.changes] == ["pending", "processing"]


async def test_an_announcement_that_fails_is_logged_and_the_change_stands(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    job = uuid.uuid4()
    with caplog.at_level(logging.ERROR):
        row = await apply_event(requested(job), store, RecordingAnnouncer(broken=True))
    assert row is not None
    assert store.rows[job] == row
    assert "could not announce" in caplog.text


async def test_a_duplicate_is_not_announced(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    assert await apply_event(requested(job), store, announcer) is not None
    assert await apply_event(requested(job), store, announcer) is None
    assert len(announcer.changes) == 1
    assert announcer.changes[0].user_id == OWNER


async def test_get_job_answers_only_the_owner(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    await apply_event(requested(job), store, announcer)
    mine = await get_job(GetJob(job_id=job, user_id=OWNER), store)
    assert mine.job is not None
    assert (mine.job.job_id, mine.job.status, mine.job.version) == (job, "pending", 1)
    assert (await get_job(GetJob(job_id=job, user_id="someone-else"), store)).job is None
    assert (await get_job(GetJob(job_id=uuid.uuid4(), user_id=OWNER), store)).job is None
