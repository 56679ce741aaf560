"""The handlers over in-memory ports: ordering per job, unknown jobs, announcements, reads."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import msgspec
import pytest

from job_store.handlers import (
    EventApplier,
    JobNotYetKnown,
    RequestRejected,
    ResultMissing,
    apply_event,
    get_job,
    job_history,
    list_jobs,
)
from job_store.model import HistoryEntry, JobRow, job_summary
from jobs_proto.api import GetJob, GetJobHistory, JobChanged, JobSummary, ListJobs
from jobs_proto.events import AnyJobEvent, JobCompleted
from jobs_runtime.retry import RetryLater
from jobs_testkit.events import OWNER, T0, completed, requested, started, submitted


class MemoryTransaction:
    """Read-committed like Postgres: reads see committed rows, writes show at commit, and
    `lock` of a row that does not exist yet locks nothing."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.writes: dict[uuid.UUID, JobRow] = {}
        self.entries: list[HistoryEntry] = []
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

    async def append_history(self, entry: HistoryEntry) -> None:
        self.entries.append(replace(entry, recorded_at=entry.occurred_at))


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, JobRow] = {}
        self.entries: list[HistoryEntry] = []
        self.row_locks: defaultdict[uuid.UUID, asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        tx = MemoryTransaction(self)
        try:
            yield tx
            await asyncio.sleep(0)
            self.rows.update(tx.writes)
            self.entries.extend(tx.entries)
        finally:
            for lock in tx.held:
                lock.release()

    async def get(self, job_id: uuid.UUID) -> JobRow | None:
        return self.rows.get(job_id)

    async def list_jobs(
        self,
        user_id: str,
        *,
        statuses: Sequence[str],
        types: Sequence[str],
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobSummary]:
        # The same order as the Postgres query: newest first, ties by id ascending.
        rows = sorted(
            (r for r in self.rows.values() if r.user_id == user_id),
            key=lambda r: (-r.created_at.timestamp(), r.job_id),
        )
        rows = [r for r in rows if (not statuses or r.status in statuses)]
        rows = [r for r in rows if (not types or r.job_type in types)]
        if after is not None:
            key = (-after[0].timestamp(), after[1])
            rows = [r for r in rows if (-r.created_at.timestamp(), r.job_id) > key]
        return [job_summary(r) for r in rows[:limit]]

    async def stuck_jobs(self, older_than_s: float, limit: int) -> list[JobRow]:
        return []

    async def history(self, job_id: uuid.UUID) -> list[HistoryEntry]:
        return sorted((e for e in self.entries if e.job_id == job_id), key=lambda e: e.seq)


class MemoryResults:
    def __init__(self, objects: dict[str, str] | None = None) -> None:
        self.objects = objects or {}
        self.loads = 0

    async def load(self, ref: str) -> str | None:
        self.loads += 1
        return self.objects.get(ref)


class RecordingObserver:
    def __init__(self) -> None:
        self.applied_events: list[tuple[str, str]] = []
        self.waits: list[str] = []

    def applied(self, kind: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.applied_events.append((kind, outcome))

    def waited(self, reason: str) -> None:
        self.waits.append(reason)


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


async def test_a_change_and_its_history_entry_commit_together(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    for event in (requested(job), submitted(job), submitted(job), completed(job)):
        await apply_event(event, store, announcer)
    assert [(e.seq, e.kind) for e in store.entries] == [
        (1, "requested"),
        (2, "submitted"),
        (3, "completed"),
    ]


def _stored(job: uuid.UUID) -> tuple[JobCompleted, str]:
    ref = f"output/pred-{job}"
    return msgspec.structs.replace(completed(job), output=None, output_ref=ref), ref


async def test_a_stored_output_is_loaded_into_the_job(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    event, ref = _stored(job)
    results = MemoryResults({ref: "A long script. " * 1000})
    await apply_event(requested(job), store, announcer, results)
    row = await apply_event(event, store, announcer, results)
    assert row is not None
    assert (row.status, row.output) == ("succeeded", "A long script. " * 1000)
    assert store.entries[-1].summary["outputRef"] == ref
    # A duplicate of a completion already applied never touches the bucket again.
    assert await apply_event(event, store, announcer, results) is None
    assert results.loads == 1


async def test_a_missing_output_is_retried_then_the_job_fails_result_expired(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    event, _ = _stored(job)
    observer = RecordingObserver()
    applier = EventApplier(store, announcer, MemoryResults(), observer=observer, result_misses=3)
    await applier(requested(job))
    for _ in range(3):
        with pytest.raises(ResultMissing) as missing:
            await applier(event)
        assert isinstance(missing.value, RetryLater)
        assert store.rows[job].status == "pending"
    await applier(event)
    row = store.rows[job]
    assert (row.status, row.error_code, row.output) == ("failed", "result_expired", None)
    assert observer.waits == ["result_missing"] * 3
    assert observer.applied_events[-1] == ("completed", "changed")
    assert not applier._misses, "a settled completion must not stay counted"


async def test_the_applier_reports_what_it_did(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    observer = RecordingObserver()
    applier = EventApplier(store, announcer, observer=observer)
    with pytest.raises(JobNotYetKnown):
        await applier(submitted(job))
    await applier(requested(job))
    await applier(requested(job))
    assert observer.applied_events == [
        ("submitted", "deferred"),
        ("requested", "changed"),
        ("requested", "unchanged"),
    ]
    assert observer.waits == ["job_not_yet_known"]


async def _jobs(store: MemoryStore, count: int, *, user: str = OWNER) -> list[uuid.UUID]:
    jobs = [uuid.uuid4() for _ in range(count)]
    for i, job in enumerate(jobs):
        event = msgspec.structs.replace(requested(job, user=user), occurred_at=T0)
        if i % 2:
            event = msgspec.structs.replace(event, occurred_at=T0 + timedelta(seconds=i))
        await apply_event(event, store, RecordingAnnouncer())
    return jobs


async def test_pages_cover_every_job_once_newest_first(store: MemoryStore) -> None:
    await _jobs(store, 7)
    seen: list[JobSummary] = []
    query = ListJobs(user_id=OWNER, limit=3)
    while True:
        page = await list_jobs(query, store, max_bytes=1 << 20)
        assert len(page.items) <= 3
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        query = msgspec.structs.replace(query, cursor=page.next_cursor)
    assert len({s.job_id for s in seen}) == 7 == len(seen)
    assert seen == sorted(seen, key=lambda s: (-s.created_at.timestamp(), s.job_id))


async def test_a_page_is_cut_short_to_fit_the_message_limit(store: MemoryStore) -> None:
    await _jobs(store, 10)
    one = len(
        msgspec.json.encode(
            (await list_jobs(ListJobs(user_id=OWNER), store, max_bytes=1 << 20)).items[0]
        )
    )
    page = await list_jobs(ListJobs(user_id=OWNER), store, max_bytes=4096 + 3 * (one + 1))
    assert len(page.items) == 3
    assert page.next_cursor is not None


@pytest.mark.parametrize("cursor", ["", "not-a-cursor", "W10", "eyJ4IjoxfQ"])
async def test_a_bad_cursor_is_rejected_with_400(store: MemoryStore, cursor: str) -> None:
    with pytest.raises(RequestRejected) as rejected:
        await list_jobs(ListJobs(user_id=OWNER, cursor=cursor), store, max_bytes=1 << 20)
    assert rejected.value.code == "400"
    assert rejected.value.detail.startswith("bad_cursor")


async def test_a_cursor_only_works_with_its_own_filters_and_user(store: MemoryStore) -> None:
    await _jobs(store, 3)
    page = await list_jobs(ListJobs(user_id=OWNER, limit=1), store, max_bytes=1 << 20)
    assert page.next_cursor is not None
    for other in (
        ListJobs(user_id=OWNER, limit=1, cursor=page.next_cursor, statuses=["pending"]),
        ListJobs(user_id=OWNER, limit=1, cursor=page.next_cursor, types=["video_outline"]),
        ListJobs(user_id="someone-else", limit=1, cursor=page.next_cursor),
    ):
        with pytest.raises(RequestRejected):
            await list_jobs(other, store, max_bytes=1 << 20)
    # Same filters in another order are the same filters.
    query = ListJobs(user_id=OWNER, limit=1, statuses=["pending", "failed"])
    first = await list_jobs(query, store, max_bytes=1 << 20)
    assert first.next_cursor is not None
    swapped = ListJobs(
        user_id=OWNER, limit=1, statuses=["failed", "pending"], cursor=first.next_cursor
    )
    assert len((await list_jobs(swapped, store, max_bytes=1 << 20)).items) == 1


async def test_history_answers_only_the_owner(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    for event in (requested(job), submitted(job), started(job)):
        await apply_event(event, store, announcer)
    mine = await job_history(GetJobHistory(job_id=job, user_id=OWNER), store, max_bytes=1 << 20)
    assert mine.entries is not None
    assert [(e.seq, e.kind, e.source) for e in mine.entries] == [
        (1, "requested", "gateway"),
        (2, "submitted", "ai-runner"),
        (3, "started", "webhook-ingest"),
    ]
    other = GetJobHistory(job_id=job, user_id="someone-else")
    assert (await job_history(other, store, max_bytes=1 << 20)).entries is None


class RecordingParking:
    def __init__(self, *, broken: bool = False) -> None:
        self.parked: list[tuple[AnyJobEvent, str]] = []
        self.broken = broken

    async def park(self, event: AnyJobEvent, reason: str, detail: str) -> None:
        if self.broken:
            raise ConnectionError("nats is gone")
        self.parked.append((event, reason))


async def test_an_event_of_a_job_unknown_long_after_it_happened_is_parked(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    parking = RecordingParking()
    observer = RecordingObserver()
    applier = EventApplier(
        store,
        announcer,
        observer=observer,
        parking=parking,
        orphan_after=timedelta(hours=1),
        now=lambda: T0 + timedelta(hours=2),
    )
    recent = submitted(uuid.uuid4(), s=3600 + 1800)  # 30 min before "now": still on its way
    with pytest.raises(JobNotYetKnown):
        await applier(recent)
    orphan = started(uuid.uuid4())  # 2 h before "now"
    await applier(orphan)  # settled: no exception, so the consumer acks it
    assert parking.parked == [(orphan, "no_such_job")]
    assert observer.applied_events[-1] == ("started", "parked")
    assert orphan.job_id not in store.rows


async def test_a_park_that_fails_leaves_the_event_to_come_back(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    applier = EventApplier(
        store, announcer, parking=RecordingParking(broken=True), now=lambda: T0 + timedelta(days=1)
    )
    with pytest.raises(ConnectionError):
        await applier(started(uuid.uuid4()))
