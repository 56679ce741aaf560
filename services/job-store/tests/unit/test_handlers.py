"""The handlers over in-memory ports: ordering per job, unknown jobs, announcements, reads."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import replace
from datetime import timedelta

import msgspec
import pytest

from job_store.applier import EventApplier
from job_store.batches import JobNotYetKnown, ResultMissing, apply_event
from job_store.model import JobRow
from job_store.reads import RequestRejected, get_job, history_view, job_history, list_jobs
from job_store.replay import replay
from job_store.retention import purge_finished
from job_store.transitions import Change, transition
from jobs_proto.api import GetJob, GetJobHistory, JobSummary, ListJobs
from jobs_proto.events import AnyJobEvent, JobCompleted, JobPurged
from jobs_runtime.errors import Unavailable
from jobs_runtime.retry import RetryLater
from jobs_testkit.events import OWNER, T0, cancel, completed, requested, started, submitted

from ..fakes import (
    GatedStore,
    MemoryResults,
    MemoryStore,
    OptimisticMemoryStore,
    RecordingAnnouncer,
    RecordingObserver,
    RecordingParking,
    RecordingPublisher,
)


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
    assert store.commits == [4], "one transaction for the whole batch"


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
    created, refused = results
    assert isinstance(refused, JobNotYetKnown)
    # It names the job and asks for a retry soon; the request alone went in, as version 1.
    assert refused.job_id == job
    assert refused.quick_attempts == 5
    assert 0.5 <= refused.delay_s <= 2.0
    assert isinstance(created, JobRow)
    assert (created.job_id, created.status, created.version) == (job, "pending", 1)
    assert store.rows[job] == created
    assert [(c.job.status, c.job.version) for c in announcer.changes] == [("pending", 1)]


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


@pytest.mark.parametrize(
    "query",
    [ListJobs(user_id=OWNER, types=["a\x00b"]), ListJobs(user_id="al\x00ice")],
)
async def test_a_nul_in_a_filter_is_the_callers_mistake(
    store: MemoryStore, query: ListJobs
) -> None:
    with pytest.raises(RequestRejected) as rejected:
        await list_jobs(query, store, max_bytes=1 << 20)
    assert rejected.value.code == "400"
    assert rejected.value.detail.startswith("bad_filter")


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


async def test_news_of_another_prediction_is_parked_and_the_job_left_alone(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    parking = RecordingParking()
    observer = RecordingObserver()
    applier = EventApplier(store, announcer, observer=observer, parking=parking)
    job = uuid.uuid4()
    for first in (requested(job), submitted(job)):
        await applier(first)
    before = store.rows[job]
    announced = len(announcer.changes)
    foreign: list[AnyJobEvent] = [
        started(job, s=3, prediction="p-other"),
        completed(job, s=4, prediction="p-other", output="INJECTED"),
    ]
    for event in foreign:
        await applier(event)  # settled: the consumer acks it, the parked copy remains
    assert parking.parked == [(e, "other_prediction") for e in foreign]
    assert [o for _, o in observer.applied_events[-2:]] == ["parked", "parked"]
    assert store.rows[job] == before
    assert len(announcer.changes) == announced
    assert [e.kind for e in store.entries if e.job_id == job] == ["requested", "submitted"]


async def test_a_park_of_another_predictions_news_that_fails_comes_back(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    applier = EventApplier(store, announcer, parking=RecordingParking(broken=True))
    for first in (requested(job), submitted(job)):
        await applier(first)
    with pytest.raises(ConnectionError):
        await applier(completed(job, prediction="p-other"))
    assert store.rows[job].status == "processing"


async def test_a_park_that_fails_leaves_the_event_to_come_back(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    applier = EventApplier(
        store, announcer, parking=RecordingParking(broken=True), now=lambda: T0 + timedelta(days=1)
    )
    with pytest.raises(ConnectionError):
        await applier(started(uuid.uuid4()))


async def test_a_batch_of_many_jobs_commits_once_and_ends_as_one_by_one(
    announcer: RecordingAnnouncer,
) -> None:
    jobs = [uuid.uuid4() for _ in range(6)]
    # Interleaved as a stream holds them: each job's events in order, the jobs mixed.
    stream: list[AnyJobEvent] = []
    for step in (requested, submitted, started, completed):
        stream.extend(step(job) for job in jobs)
    stream.append(requested(jobs[0]))  # a duplicate in the same batch
    batched, alone = MemoryStore(), MemoryStore()
    observer = RecordingObserver()
    applier = EventApplier(batched, announcer, observer=observer)
    await asyncio.gather(*(applier(event) for event in stream))
    for event in stream:
        await apply_event(event, alone, RecordingAnnouncer())

    assert batched.commits == [24]
    assert observer.commits == [(25, "batch")]
    assert len(alone.commits) == 25
    assert batched.rows == alone.rows
    assert sorted(batched.entries, key=lambda e: (e.job_id, e.seq)) == sorted(
        alone.entries, key=lambda e: (e.job_id, e.seq)
    )
    # Every change announced, each job's in order.
    for job in jobs:
        assert [c.job.version for c in announcer.changes if c.job.job_id == job] == [1, 2, 3, 4]


async def test_a_lone_event_is_applied_without_waiting_for_company(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    applier = EventApplier(store, announcer)
    job = uuid.uuid4()
    # No timer: the event is committed within a few turns of the event loop.
    await asyncio.wait_for(applier(requested(job)), timeout=1.0)
    assert store.commits == [1]


async def test_a_poison_event_fails_alone_and_the_rest_of_its_batch_commits(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    good, bad = uuid.uuid4(), uuid.uuid4()
    store.poison = bad
    observer = RecordingObserver()
    applier = EventApplier(store, announcer, observer=observer)
    results = await asyncio.gather(
        applier(requested(good)),
        applier(requested(bad)),
        applier(submitted(good)),
        return_exceptions=True,
    )
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], ValueError)  # handed back: the consumer naks it
    assert store.rows[good].status == "processing"
    assert bad not in store.rows
    # The batch failed as a whole, then its events went one transaction each.
    assert observer.commits == [(1, "single"), (1, "single")]
    assert ("requested", "failed") in observer.applied_events
    # The next batch is a batch again.
    await asyncio.gather(applier(started(good)), applier(completed(good)))
    assert observer.commits[-1] == (2, "batch")


async def test_a_purge_deletes_the_job_and_its_history_and_twice_is_harmless(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job, other = uuid.uuid4(), uuid.uuid4()
    for event in (requested(job), submitted(job), completed(job), requested(other)):
        await apply_event(event, store, announcer)
    purge = JobPurged(job_id=job, occurred_at=T0 + timedelta(days=31))
    applier = EventApplier(store, announcer)
    await applier(purge)
    assert job not in store.rows
    assert [e.job_id for e in store.entries] == [other]
    await applier(purge)  # redelivered
    await applier(JobPurged(job_id=uuid.uuid4(), occurred_at=T0))  # never existed
    assert set(store.rows) == {other}
    # A straggler of the purged job is a job not (any more) known: it waits, then is parked.
    with pytest.raises(JobNotYetKnown):
        await apply_event(started(job), store, announcer)


async def test_a_job_created_and_purged_in_one_batch_leaves_nothing(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    applier = EventApplier(store, announcer)
    await asyncio.gather(
        applier(requested(job)),
        applier(completed(job)),
        applier(JobPurged(job_id=job, occurred_at=T0)),
    )
    assert job not in store.rows
    assert store.entries == []


async def test_a_retention_pass_publishes_a_purge_per_finished_job_up_to_its_limit(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    old = [uuid.uuid4() for _ in range(3)]
    for i, job in enumerate(old):
        await apply_event(requested(job), store, announcer)
        await apply_event(completed(job, s=10 + i), store, announcer)
    running = uuid.uuid4()
    await apply_event(requested(running), store, announcer)
    publisher = RecordingPublisher()
    # "Now" is T0 + 1 day: a retention of 2 hours covers every job finished at T0 + seconds.
    observer = RecordingObserver()
    assert await purge_finished(store, publisher, retention_s=7200, limit=2, observer=observer) == 2
    assert [e.job_id for e in publisher.events] == old[:2]
    assert await purge_finished(store, publisher, retention_s=2 * 86_400, limit=10) == 0
    assert observer.purges == [2], "the metric counts what was published, once a pass"


async def test_a_reply_too_large_comes_without_its_output_and_says_so(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    await apply_event(requested(job), store, announcer)
    await apply_event(completed(job, output="é" * 5000), store, announcer)
    query = GetJob(job_id=job, user_id=OWNER)
    whole = await get_job(query, store, max_bytes=1 << 20)
    assert whole.job is not None
    assert (whole.job.output, whole.output_omitted) == ("é" * 5000, False)
    cut = await get_job(query, store, max_bytes=4096)
    assert cut.job is not None
    assert (cut.job.status, cut.job.output, cut.output_omitted, cut.output_bytes) == (
        "succeeded",
        None,
        True,
        10_000,
    )
    assert len(msgspec.json.encode(cut)) <= 4096


async def test_history_comes_page_by_page(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    for event in (requested(job), submitted(job), started(job), completed(job)):
        await apply_event(event, store, announcer)
    seqs: list[int] = []
    query = GetJobHistory(job_id=job, user_id=OWNER, limit=3)
    pages = 0
    while True:
        page = await job_history(query, store, max_bytes=1 << 20)
        assert page.entries is not None
        seqs.extend(e.seq for e in page.entries)
        pages += 1
        if page.next_cursor is None:
            assert not page.truncated
            break
        assert page.truncated
        query = msgspec.structs.replace(query, cursor=page.next_cursor)
    assert (seqs, pages) == ([1, 2, 3, 4], 2)
    # The message size limit cuts a page short too, and the cursor picks up after it.
    one = len(msgspec.json.encode(history_view(store.entries[0])))
    small = await job_history(
        GetJobHistory(job_id=job, user_id=OWNER), store, max_bytes=4096 + 2 * (one + 40)
    )
    assert small.entries is not None
    assert small.next_cursor == str(small.entries[-1].seq)
    with pytest.raises(RequestRejected) as bad:
        await job_history(
            GetJobHistory(job_id=job, user_id=OWNER, cursor="x1"), store, max_bytes=1 << 20
        )
    assert bad.value.code == "400"


async def test_replay_applies_waiting_events_once_their_job_appears_and_skips_orphans(
    store: MemoryStore,
) -> None:
    job, lost = uuid.uuid4(), uuid.uuid4()

    async def batches() -> AsyncIterator[list[AnyJobEvent]]:
        yield [submitted(job), started(lost)]
        yield [requested(job)]
        yield [completed(job), JobPurged(job_id=uuid.uuid4(), occurred_at=T0)]

    report = await replay(batches(), store)
    row = store.rows[job]
    assert (row.status, row.version, row.prediction_id) == ("succeeded", 3, "pred-1")
    assert (report.events, report.changed, report.unchanged, report.orphans) == (5, 3, 1, 1)
    assert lost not in store.rows


async def test_a_batch_waits_in_place_while_the_store_is_unavailable(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    job = uuid.uuid4()
    store.unavailable = 3
    observer = RecordingObserver()
    applier = EventApplier(store, announcer, observer=observer)
    await asyncio.gather(applier(requested(job)), applier(submitted(job)), applier(started(job)))
    # Nothing handed back, nothing reordered: one batch, committed once the store answered.
    assert observer.commits == [(3, "batch")]
    assert [c.job.version for c in announcer.changes] == [1, 2, 3]
    assert store.unavailable == 0


async def test_a_store_unavailable_for_long_hands_the_whole_batch_back(
    store: MemoryStore, announcer: RecordingAnnouncer
) -> None:
    store.unavailable = 1000
    observer = RecordingObserver()
    applier = EventApplier(store, announcer, observer=observer, unavailable_retry_s=0.3)
    results = await asyncio.gather(
        applier(requested(uuid.uuid4())), applier(requested(uuid.uuid4())), return_exceptions=True
    )
    assert all(isinstance(r, Unavailable) for r in results)
    # Not retried one by one: nothing about the events was wrong.
    assert observer.commits == []
    assert observer.applied_events == [("requested", "failed")] * 2


async def test_a_batch_is_written_in_one_go_when_its_jobs_did_not_change_meanwhile(
    announcer: RecordingAnnouncer,
) -> None:
    store = OptimisticMemoryStore()
    job = uuid.uuid4()
    await apply_event(requested(job), store, announcer)
    await apply_event(submitted(job), store, announcer)
    assert store.optimistic_writes == [True, True]
    assert store.rows[job].status == "processing"
    assert [e.seq for e in store.entries] == [1, 2]


async def test_a_batch_whose_job_changed_meanwhile_is_judged_again_against_it(
    announcer: RecordingAnnouncer,
) -> None:
    store = OptimisticMemoryStore()
    job = uuid.uuid4()
    await apply_event(requested(job), store, announcer)

    def cancel_meanwhile() -> None:
        row = store.rows[job]
        change = transition(row, cancel(job))
        assert isinstance(change, Change)
        store.rows[job] = change.row
        store.entries.append(change.entry)

    store.rival = cancel_meanwhile
    # Judged against the pending row it read, `submitted` would move the job on; the write
    # sees the version moved and writes nothing; read again, it is judged against the
    # canceled job, where it changes nothing.
    assert await apply_event(submitted(job), store, announcer) is None
    assert store.optimistic_writes == [True, False]
    assert store.rows[job].status == "canceled"
    assert [e.kind for e in store.entries] == ["requested", "cancel_requested"]


async def test_a_redelivered_request_is_written_by_nobody(announcer: RecordingAnnouncer) -> None:
    store = OptimisticMemoryStore()
    job = uuid.uuid4()
    assert await apply_event(requested(job), store, announcer) is not None
    # A batch of requests is not read first: the write finds the job there and writes
    # nothing, and the second try reads the job and judges the request a duplicate.
    assert await apply_event(requested(job), store, announcer) is None
    assert store.optimistic_writes == [True, False]
    assert [e.kind for e in store.entries] == ["requested"]
    assert len(announcer.changes) == 1


async def test_a_batch_whose_job_keeps_changing_is_applied_in_a_locking_transaction(
    announcer: RecordingAnnouncer,
) -> None:
    job = uuid.uuid4()

    class Contended(OptimisticMemoryStore):
        async def read_many(self, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, JobRow]:
            found = await super().read_many(job_ids)
            if job in self.rows:
                # Another replica changes the job between every read and write.
                self.rows[job] = replace(self.rows[job], version=self.rows[job].version + 1)
            return found

    store = Contended()
    await apply_event(requested(job), store, announcer)
    applied = await apply_event(submitted(job), store, announcer)
    assert applied is not None
    # Two optimistic tries, both beaten; then the transaction, which locks, applies it.
    assert store.optimistic_writes == [True, False, False]
    assert store.rows[job].status == "processing"


async def test_with_concurrent_batches_another_job_need_not_wait_for_a_slow_commit(
    announcer: RecordingAnnouncer,
) -> None:
    slow, quick = uuid.uuid4(), uuid.uuid4()
    store = GatedStore(slow)
    applier = EventApplier(store, announcer, concurrent_batches=2)
    first = asyncio.create_task(applier(requested(slow)))
    await store.held.wait()  # its batch is being written, held at the gate
    then = asyncio.create_task(applier(submitted(slow)))  # its job's batch is in hand: waits
    await asyncio.wait_for(applier(requested(quick)), 5)  # another job: committed meanwhile
    assert not first.done()
    assert not then.done()
    store.gate.set()
    await asyncio.gather(first, then)
    await applier.drain()
    assert [(c.job.job_id, c.job.version) for c in announcer.changes] == [
        (quick, 1),
        (slow, 1),
        (slow, 2),
    ]
    assert store.rows[slow].status == "processing"


async def test_with_one_batch_at_a_time_another_job_waits_for_the_commit(
    announcer: RecordingAnnouncer,
) -> None:
    slow, quick = uuid.uuid4(), uuid.uuid4()
    store = GatedStore(slow)
    applier = EventApplier(store, announcer)
    first = asyncio.create_task(applier(requested(slow)))
    await store.held.wait()
    other = asyncio.create_task(applier(requested(quick)))
    # Nothing to wait on: a write of `quick` that did not wait would be done within a few
    # turns of the event loop (the store is in memory), far fewer than this pause allows.
    await asyncio.sleep(0.01)
    assert not other.done()
    store.gate.set()
    await asyncio.gather(first, other)
    assert [c.job.job_id for c in announcer.changes] == [slow, quick]
