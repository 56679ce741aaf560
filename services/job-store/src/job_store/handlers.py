"""The job-store's work over its ports: apply events to jobs in batches, record and announce
them, purge finished jobs, answer the reads (one job, a user's list, stuck jobs, a history).

No I/O here: the store, the result loader and the announcer come in as arguments, so every
rule can be tested against fakes as well as against Postgres and NATS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple, TypeVar, cast

import msgspec

from job_store.model import HistoryEntry, JobRow, job_view, stuck_job
from job_store.ports import (
    ApplyObserver,
    ChangeAnnouncer,
    JobStore,
    OptimisticWrites,
    Parking,
    PurgePublisher,
    ResultLoader,
)
from job_store.transitions import Change, Park, transition
from jobs_proto.api import (
    FindStuckJobs,
    GetJob,
    GetJobHistory,
    JobChanged,
    JobHistory,
    JobHistoryEntry,
    JobPage,
    JobReply,
    JobSummary,
    ListJobs,
    StuckJobs,
)
from jobs_proto.events import AnyJobEvent, JobCompleted, JobPurged, JobRequested
from jobs_runtime.errors import Unavailable
from jobs_runtime.retry import RetryLater

log = logging.getLogger(__name__)

T = TypeVar("T", bound=msgspec.Struct)

# Room a reply keeps for its envelope (field names, the cursor, JSON punctuation).
_REPLY_OVERHEAD_BYTES: Final = 4096
_encoder: Final = msgspec.json.Encoder()


class JobNotYetKnown(RetryLater):
    """An event for a job whose `requested` has not been applied yet: retry it shortly.

    The gateway publishes `requested` before anything else can happen to a job, so this only
    means the request is still on its way (in the same batch, or being retried); after a few
    quick tries it backs off like any other failure.
    """

    def __init__(self, event: AnyJobEvent) -> None:
        super().__init__(
            f"job {event.job_id} not known yet for a {event.kind} event",
            delay_s=random.uniform(0.5, 2.0),
            quick_attempts=5,
        )
        self.job_id = event.job_id


class ResultMissing(RetryLater):
    """A completion names an output in the Object Store that is not there (yet): retry it.

    webhook-ingest stores the object before it publishes the event, so a miss is a replica
    lagging or a bucket being recreated; the applier gives up after a few misses and the job
    fails with `result_expired` (see `EventApplier`).
    """

    def __init__(self, event: JobCompleted, ref: str) -> None:
        super().__init__(
            f"output {ref} of job {event.job_id} not in the results bucket",
            delay_s=random.uniform(1.0, 3.0),
            quick_attempts=5,
        )
        self.job_id = event.job_id
        self.ref = ref


class RequestRejected(Exception):
    """A read request that cannot be answered as asked; `code` is the error reply's code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(slots=True)
class _JobInBatch:
    """One job's state while a batch is applied: as locked at the start, then as changed."""

    stored: bool  # a row exists in the database, to be updated (else inserted)
    row: JobRow | None
    changed: bool = False
    entries: list[HistoryEntry] = field(default_factory=list)
    delete: bool = False  # a purge deletes the stored row (and its history) at commit


class _InsertRaced(Exception):
    """Another writer inserted a job this batch was about to insert: start the batch again."""


class Purged(NamedTuple):
    """Outcome of a purge that deleted a job."""

    job_id: uuid.UUID


# What applying one event came to: its change, a purge, nothing (None), why it must be parked,
# or why it must wait.
Outcome = Change | Purged | Park | JobNotYetKnown | ResultMissing | None

_INSERT_RACE_ATTEMPTS: Final = 3
_OPTIMISTIC_ATTEMPTS: Final = 2


async def apply_events(
    events: Sequence[AnyJobEvent],
    store: JobStore,
    results: ResultLoader | None = None,
    *,
    expire_missing_result: Sequence[bool] | None = None,
) -> list[Outcome]:
    """Apply `events` in order in ONE transaction (rows and history together); one outcome each.

    Events of one job apply one after another against the row as the earlier ones left it, so
    the result is the same as applying them one by one. An event that must wait
    (`JobNotYetKnown`, `ResultMissing`) is left out and returned as its outcome; the others
    commit. Any other failure rolls the whole batch back and raises. `expire_missing_result`
    (per event) ends a job `result_expired` instead of waiting for its stored output.
    """
    expire = list(expire_missing_result or [False] * len(events))
    for attempt in range(1, _INSERT_RACE_ATTEMPTS + 1):
        try:
            return await _apply_once(events, store, results, expire)
        except _InsertRaced:
            # Another replica created a job of this batch meanwhile; rolled back, so the next
            # attempt locks that row like any other and judges the events against it.
            if attempt == _INSERT_RACE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _apply_once(
    events: Sequence[AnyJobEvent],
    store: JobStore,
    results: ResultLoader | None,
    expire: Sequence[bool],
) -> list[Outcome]:
    optimistic = _optimistic(type(store))
    if optimistic and not any(isinstance(e, JobPurged) for e in events):
        # A second try reads afresh what the first found changed (a store that keeps rows in
        # hand forgets them then), which costs less than the locking transaction.
        for attempt in range(_OPTIMISTIC_ATTEMPTS):
            applied = await _apply_unless_changed(
                events, cast(OptimisticWrites, store), results, expire, again=attempt > 0
            )
            if applied is not None:
                return applied
    async with store.transaction() as tx:
        locked = await tx.lock_many({e.job_id for e in events})
        jobs = _jobs_in_batch(events, locked)
        outcomes = await _judge_batch(events, jobs, results, expire)
        for job_id, job in jobs.items():
            if job.delete:
                await tx.delete(job_id)
        changed = _changed(jobs)
        # Rows and history in one statement: a round trip per batch, not three.
        if changed and not await tx.write(*changed):
            raise _InsertRaced()
    return outcomes


async def _apply_unless_changed(
    events: Sequence[AnyJobEvent],
    store: OptimisticWrites,
    results: ResultLoader | None,
    expire: Sequence[bool],
    *,
    again: bool = False,
) -> list[Outcome] | None:
    """The batch judged against the rows as read and written in one statement, unless one of
    its jobs changed meanwhile (another replica): then None, nothing written, and the caller
    tries `again` or takes the locking transaction. Two round trips where the transaction
    takes four."""
    job_ids = {e.job_id for e in events}
    # A batch of requests is for new jobs but for a redelivery, which the write's check
    # catches (the job is not absent): no read needed, unless that is what happened.
    fresh = not again and all(isinstance(e, JobRequested) for e in events)
    rows = {} if fresh else await store.read_many(job_ids)
    jobs = _jobs_in_batch(events, rows)
    outcomes = await _judge_batch(events, jobs, results, expire)
    changed = _changed(jobs)
    if changed is None:
        # Nothing to write: judged on a committed state, as if applied just before any writer
        # that came after the read.
        return outcomes
    versions = {job_id: rows[job_id].version if job_id in rows else None for job_id in job_ids}
    if not await store.write_unless_changed(versions, *changed):
        return None
    return outcomes


@functools.cache
def _optimistic(store_type: type) -> bool:
    # A runtime Protocol check walks the protocol's members on every call: once per type.
    return issubclass(store_type, OptimisticWrites)


def _jobs_in_batch(
    events: Sequence[AnyJobEvent], rows: dict[uuid.UUID, JobRow]
) -> dict[uuid.UUID, _JobInBatch]:
    return {
        job_id: _JobInBatch(stored=job_id in rows, row=rows.get(job_id))
        for job_id in {e.job_id for e in events}
    }


async def _judge_batch(
    events: Sequence[AnyJobEvent],
    jobs: dict[uuid.UUID, _JobInBatch],
    results: ResultLoader | None,
    expire: Sequence[bool],
) -> list[Outcome]:
    """Each event's outcome, in order, each judged against its job as the earlier ones left it
    (`jobs` is updated in place)."""
    outcomes: list[Outcome] = []
    for event, expire_result in zip(events, expire, strict=True):
        job = jobs[event.job_id]
        if isinstance(event, JobPurged):
            if job.row is None:
                outcomes.append(None)  # purging what is not there changes nothing
                continue
            job.delete = job.delete or job.stored
            job.stored, job.row, job.changed, job.entries = False, None, False, []
            outcomes.append(Purged(event.job_id))
            continue
        if job.row is None and not isinstance(event, JobRequested):
            outcomes.append(JobNotYetKnown(event))
            continue
        try:
            change = await _judge(job.row, event, results, expire_result)
        except ResultMissing as missing:
            outcomes.append(missing)
            continue
        if isinstance(change, Change):
            job.row = change.row
            job.changed = True
            job.entries.append(change.entry)
        outcomes.append(change)
    return outcomes


def _changed(
    jobs: dict[uuid.UUID, _JobInBatch],
) -> tuple[list[JobRow], list[JobRow], list[HistoryEntry]] | None:
    """What a batch writes: rows to update, rows to insert, history entries; None: nothing."""
    changed = [job for job in jobs.values() if job.changed and job.row is not None]
    if not changed:
        return None
    updates = [job.row for job in changed if job.stored and job.row is not None]
    inserts = [job.row for job in changed if not job.stored and job.row is not None]
    return updates, inserts, [entry for job in changed for entry in job.entries]


async def apply_event(
    event: AnyJobEvent,
    store: JobStore,
    announcer: ChangeAnnouncer,
    results: ResultLoader | None = None,
    *,
    expire_missing_result: bool = False,
) -> JobRow | None:
    """Apply one event in its own transaction (row and history together), then announce it.

    Returns the job's new row, or None when the event changed nothing (a duplicate, a late
    event, one from another prediction, which the live consumer parks, a purge); raises
    `JobNotYetKnown` for an event other than `requested` of an unknown job, and
    `ResultMissing` for a completion whose stored output cannot be loaded, unless
    `expire_missing_result` says to end the job `result_expired` instead.
    """
    (outcome,) = await apply_events(
        [event], store, results, expire_missing_result=[expire_missing_result]
    )
    if isinstance(outcome, Exception):
        raise outcome
    if not isinstance(outcome, Change):
        return None
    await announce(outcome.row, announcer)
    return outcome.row


async def _judge(
    current: JobRow | None,
    event: AnyJobEvent,
    results: ResultLoader | None,
    expire_missing_result: bool,
) -> Change | Park | None:
    change = transition(current, event)
    if (
        not isinstance(change, Change)
        or not isinstance(event, JobCompleted)
        or event.output_ref is None
        or event.output is not None
    ):
        return change
    # Loaded only when the completion will be applied: a duplicate or a replay of a finished
    # job never touches the bucket, whose objects may be long gone by then.
    text = None if results is None else await results.load(event.output_ref)
    if text is not None:
        return transition(current, msgspec.structs.replace(event, output=text))
    if not expire_missing_result:
        raise ResultMissing(event, event.output_ref)
    log.warning(
        "stored output missing, job fails result_expired",
        extra={"job_id": str(event.job_id), "output_ref": event.output_ref},
    )
    # Exactly the contract's "removed before it was recorded": `job_outcome` maps it.
    expired = msgspec.structs.replace(event, output=None, output_ref=None, data_removed=True)
    return transition(current, expired)


async def announce(row: JobRow, announcer: ChangeAnnouncer) -> None:
    """Publish the committed state; a failure is logged, never retried through the event.

    Redelivering the event would change nothing (the change is committed), so it could not
    announce again anyway; listeners that missed a change re-read the job.
    """
    try:
        await announcer.announce(JobChanged(user_id=row.user_id, job=job_view(row)))
    except Exception:
        log.exception(
            "could not announce a committed change",
            extra={"job_id": str(row.job_id), "version": row.version},
        )


async def get_job(query: GetJob, store: JobStore, *, max_bytes: int | None = None) -> JobReply:
    """One job for its owner; null alike for an unknown job and another user's job.

    A job whose reply would be over `max_bytes` (an output near the message size limit) comes
    without its output, marked `output_omitted`, rather than as an error.
    """
    row = await store.get(query.job_id)
    if row is None or row.user_id != query.user_id:
        return JobReply(job=None)
    reply = JobReply(job=job_view(row), input_truncated=row.input_truncated)
    if max_bytes is None or row.output is None or len(_encoder.encode(reply)) <= max_bytes:
        return reply
    return JobReply(
        job=job_view(replace(row, output=None)),
        output_omitted=True,
        output_bytes=len(row.output.encode()),
        input_truncated=row.input_truncated,
    )


def _filters_key(query: ListJobs) -> str:
    # A cursor is only valid for the user and filters it was made for; the key ties them.
    material = "\x1f".join(
        [query.user_id, ",".join(sorted(set(query.statuses))), ",".join(sorted(set(query.types)))]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


_cursor_decoder: Final = msgspec.json.Decoder(tuple[datetime, uuid.UUID, str])


def encode_cursor(query: ListJobs, last: JobSummary) -> str:
    """The opaque position after `last`: base64url of (created_at, job_id, filters key)."""
    raw = _encoder.encode((last.created_at, last.job_id, _filters_key(query)))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(query: ListJobs) -> tuple[datetime, uuid.UUID] | None:
    """The position `query.cursor` names; `RequestRejected("400")` if bad or foreign."""
    if query.cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(query.cursor + "=" * (-len(query.cursor) % 4))
        created_at, job_id, key = _cursor_decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise RequestRejected("400", "bad_cursor: not a cursor of this list") from None
    if key != _filters_key(query):
        raise RequestRejected("400", "bad_cursor: made for other filters") from None
    return created_at, job_id


async def list_jobs(query: ListJobs, store: JobStore, *, max_bytes: int) -> JobPage:
    """A page of the user's jobs, newest first, at most `limit` items and `max_bytes` encoded."""
    # Postgres refuses NUL in text: answer that as the caller's mistake, not as an outage.
    if "\x00" in query.user_id or any("\x00" in t for t in query.types):
        raise RequestRejected("400", "bad_filter: a filter holds a NUL character")
    after = decode_cursor(query)
    rows = await store.list_jobs(
        query.user_id,
        statuses=query.statuses,
        types=query.types,
        after=after,
        limit=query.limit + 1,  # one more than asked tells whether another page exists
    )
    budget = max_bytes - _REPLY_OVERHEAD_BYTES
    items: list[JobSummary] = []
    for summary in rows[: query.limit]:
        size = len(_encoder.encode(summary)) + 1
        if items and size > budget:
            break  # the rest comes on the next page
        budget -= size
        items.append(summary)
    more = len(rows) > len(items)
    return JobPage(items=items, next_cursor=encode_cursor(query, items[-1]) if more else None)


async def stuck_jobs(query: FindStuckJobs, store: JobStore, *, max_bytes: int) -> StuckJobs:
    """Jobs processing for longer than asked, oldest first, bounded by count and bytes."""
    rows = await store.stuck_jobs(
        query.older_than_s, query.limit + 1, pending_older_than_s=query.pending_older_than_s
    )
    items = _within_bytes([stuck_job(r) for r in rows[: query.limit]], max_bytes)
    return StuckJobs(items=items, truncated=len(rows) > len(items))


def history_view(entry: HistoryEntry) -> JobHistoryEntry:
    return JobHistoryEntry(
        seq=entry.seq,
        kind=entry.kind,
        occurred_at=entry.occurred_at,
        recorded_at=entry.recorded_at or entry.occurred_at,
        source=entry.source,
        message_id=entry.message_id,
        summary=entry.summary,
    )


def _history_after(cursor: str | None) -> int:
    # The cursor is the last `seq` a page held, so pages stay stable while entries are added.
    if cursor is None:
        return 0
    if not cursor.isdecimal() or len(cursor) > 9:
        raise RequestRejected("400", "bad_cursor: not a cursor of this history")
    return int(cursor)


async def job_history(query: GetJobHistory, store: JobStore, *, max_bytes: int) -> JobHistory:
    """A page of a job's history for its owner; null alike for an unknown job and another
    user's job. At most `limit` entries and `max_bytes` encoded; `next_cursor` for the rest."""
    after = _history_after(query.cursor)
    row = await store.get(query.job_id)
    if row is None or row.user_id != query.user_id:
        return JobHistory(entries=None)
    found = await store.history(query.job_id, after_seq=after, limit=query.limit + 1)
    entries = [history_view(e) for e in found]
    kept = _within_bytes(entries[: query.limit], max_bytes)
    more = len(kept) < len(entries)
    return JobHistory(
        entries=kept,
        truncated=more,
        next_cursor=str(kept[-1].seq if kept else after) if more else None,
    )


async def purge_finished(
    store: JobStore, publisher: PurgePublisher, *, retention_s: float, limit: int
) -> int:
    """One retention pass: a `purged` event for each of at most `limit` jobs finished more than
    `retention_s` ago; the consumer deletes them when it applies those events, so a replay of
    the stream deletes them too. Returns how many were published.

    Safe to run on every replica at once: a purge's `Nats-Msg-Id` is the job's, so the stream
    keeps one, and applying a second changes nothing.
    """
    job_ids = await store.finished_before(retention_s, limit)
    now = datetime.now(UTC)
    for job_id in job_ids:
        await publisher.publish(JobPurged(job_id=job_id, occurred_at=now))
    return len(job_ids)


def _within_bytes(items: list[T], max_bytes: int) -> list[T]:
    budget = max_bytes - _REPLY_OVERHEAD_BYTES
    kept: list[T] = []
    for item in items:
        size = len(_encoder.encode(item)) + 1
        if size > budget:
            break
        budget -= size
        kept.append(item)
    return kept


class _NoObserver:
    def applied(self, kind: str, outcome: str, seconds: float) -> None:
        pass

    def waited(self, reason: str) -> None:
        pass

    def committed(self, events: int, mode: str) -> None:
        pass


@dataclass(slots=True)
class _Waiting:
    """An event handed to the applier, and how its caller learns the outcome."""

    event: AnyJobEvent
    done: asyncio.Future[None]
    started: float


class EventApplier:
    """The consumer's handler: events in hand are applied in batches, one transaction each.

    The consumer loop calls this once per message of a fetched batch, all at once. The first
    call starts a flush as a task of its own, which runs once the loop has handed over every
    other message of the fetch (they are queued before it gets to run): so whatever is waiting
    goes into one transaction, and a lone event waits for nothing but that one turn of the
    event loop, never for a timer. Events arriving while a flush runs form the next batch.
    Each call returns (the consumer acks) only after its batch committed, or raises (the
    consumer naks it) when its event must wait or its batch could not be applied.

    A batch that fails as a whole because of one of its events (a poison event the store
    refuses) is rolled back and its events are applied again one transaction each, so only the
    events that fail on their own are handed back; the rest commit. A batch that fails because
    the database cannot be reached is retried as it is, in place, for up to about
    `unavailable_retry_s` (so a Postgres restart keeps the stream's order, which redelivery
    would scramble), then handed back whole.

    Within a batch the events apply in arrival order, which is stream order for events of one
    job. With `concurrent_batches` above 1, a batch of other jobs may start while one is being
    written (so a lone event need not wait for another job's commit, and Postgres flushes their
    commits together); an event whose job is in a batch being written waits for it, with any
    later events of that job, so per-job order holds across batches too. With 1 (the default),
    batches never overlap.

    A completion whose stored output is missing is handed back `result_misses` times; the next
    delivery ends the job `result_expired`. The count is per process: a restart starts it again,
    which only delays the verdict.

    An event for an unknown job that happened more than `orphan_after` ago can belong to no job:
    `requested` precedes every other event of its job in the stream, so it would have been
    applied long since. With `parking`, such an event is parked and settled instead of coming
    back forever.
    """

    def __init__(
        self,
        store: JobStore,
        announcer: ChangeAnnouncer,
        results: ResultLoader | None = None,
        *,
        observer: ApplyObserver | None = None,
        result_misses: int = 5,
        parking: Parking | None = None,
        orphan_after: timedelta = timedelta(hours=1),
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        unavailable_retry_s: float = 12.0,
        concurrent_batches: int = 1,
    ) -> None:
        self._store = store
        # Short enough that messages in hand are settled well within the consumer's ack_wait.
        self._unavailable_retry_s = unavailable_retry_s
        self._announcer = announcer
        self._results = results
        self._observer: ApplyObserver = observer or _NoObserver()
        self._result_misses = result_misses
        self._clock = clock
        self._parking = parking
        self._orphan_after = orphan_after
        self._now = now
        self._misses: dict[tuple[uuid.UUID, str], int] = {}
        self._queue: list[_Waiting] = []
        self._max_flushers = max(1, concurrent_batches)
        self._flushers: set[asyncio.Task[None]] = set()
        # A flusher created and not yet run: it takes what is queued once it runs, so the
        # events handed over meanwhile (the rest of a fetch) join its batch.
        self._starting = False
        # Jobs of the batches being written: their later events wait, in order.
        self._busy: set[uuid.UUID] = set()

    async def __call__(self, event: AnyJobEvent) -> None:
        waiting = _Waiting(event, asyncio.get_running_loop().create_future(), self._clock())
        self._queue.append(waiting)
        self._start_flusher()
        await waiting.done

    async def drain(self) -> None:
        """Wait for the flushes in progress, if any (tests, shutdown)."""
        while self._flushers:
            await asyncio.shield(asyncio.gather(*self._flushers, return_exceptions=True))

    def _start_flusher(self) -> None:
        if self._starting or len(self._flushers) >= self._max_flushers:
            return
        if not any(w.event.job_id not in self._busy for w in self._queue):
            return  # none, or only events held for their job: its flusher takes them
        self._starting = True
        flusher = asyncio.create_task(self._flush_all())
        self._flushers.add(flusher)
        flusher.add_done_callback(self._flusher_done)

    def _flusher_done(self, flusher: asyncio.Task[None]) -> None:
        self._flushers.discard(flusher)
        if flusher.cancelled():
            self._starting = False  # it may have been cancelled before it ran
        # Events held back for a job another flusher was writing may be free now.
        self._start_flusher()

    def _take(self) -> list[_Waiting]:
        """The queued events whose jobs no other batch is writing, in order; the rest stay."""
        if not self._busy:
            taken, self._queue = self._queue, []
            return taken
        batch: list[_Waiting] = []
        held: list[_Waiting] = []
        for waiting in self._queue:
            (held if waiting.event.job_id in self._busy else batch).append(waiting)
        self._queue = held
        return batch

    async def _flush_all(self) -> None:
        self._starting = False
        while batch := self._take():
            jobs = {w.event.job_id for w in batch}
            self._busy |= jobs
            # Events arriving while this batch is written may go to a flusher of their own.
            self._start_flusher()
            try:
                await self._flush(batch)
            except BaseException as exc:
                # Never leave a caller waiting forever, whatever happened.
                for waiting in batch:
                    if not waiting.done.done():
                        waiting.done.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
                        )
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._busy -= jobs

    def _expire(self, event: AnyJobEvent) -> bool:
        return self._misses.get(_miss_key(event), 0) >= self._result_misses

    async def _flush(self, batch: list[_Waiting]) -> None:
        events = [w.event for w in batch]
        outcomes: list[Outcome | Exception]
        try:
            outcomes = list(await self._apply_when_available(events))
            self._observer.committed(len(batch), "batch")
        except Unavailable as exc:
            log.warning("postgres unavailable, %d events handed back: %s", len(batch), exc)
            outcomes = [exc] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [exc]
            else:
                log.warning(
                    "batch of %d events failed, applying them one by one: %r", len(batch), exc
                )
                outcomes = [await self._apply_alone(e) for e in events]
        for waiting, outcome in zip(batch, outcomes, strict=True):
            await self._settle(waiting, outcome)

    async def _apply_when_available(self, events: list[AnyJobEvent]) -> list[Outcome]:
        """`apply_events`, retried in place while the store is unavailable, for a while."""
        deadline = self._clock() + self._unavailable_retry_s
        delay = 0.1
        while True:
            try:
                return await apply_events(
                    events,
                    self._store,
                    self._results,
                    expire_missing_result=[self._expire(e) for e in events],
                )
            except Unavailable as exc:
                if self._clock() + delay > deadline:
                    raise
                log.info("postgres unavailable, retrying the batch in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _apply_alone(self, event: AnyJobEvent) -> Outcome | Exception:
        try:
            (outcome,) = await apply_events(
                [event], self._store, self._results, expire_missing_result=[self._expire(event)]
            )
        except Exception as exc:
            log.error(
                "event failed on its own, handed back",
                exc_info=exc,
                extra={"kind": event.kind, "job_id": str(event.job_id)},
            )
            return exc
        self._observer.committed(1, "single")
        return outcome

    async def _settle(self, waiting: _Waiting, outcome: Outcome | Exception) -> None:
        event = waiting.event
        key = _miss_key(event)
        error: Exception | None = None
        if isinstance(outcome, Change):
            self._misses.pop(key, None)
            await announce(outcome.row, self._announcer)
            label = "changed"
        elif isinstance(outcome, Purged):
            label = "changed"
        elif outcome is None:
            self._misses.pop(key, None)
            label = "unchanged"
        elif isinstance(outcome, Park):
            self._misses.pop(key, None)
            label, error = await self._park(event, outcome)
        elif (
            isinstance(outcome, JobNotYetKnown)
            and self._parking is not None
            and self._is_orphan(event)
        ):
            label = "parked"  # settled: the consumer acks it, the parked copy remains
            try:
                await self._parking.park(
                    event, "no_such_job", f"job {event.job_id} unknown after {self._orphan_after}"
                )
            except Exception as exc:
                label, error = "failed", exc
        elif isinstance(outcome, JobNotYetKnown):
            self._observer.waited("job_not_yet_known")
            label, error = "deferred", outcome
        elif isinstance(outcome, ResultMissing):
            self._misses[key] = self._misses.get(key, 0) + 1
            self._observer.waited("result_missing")
            label, error = "deferred", outcome
        else:
            label, error = "failed", outcome
        self._observer.applied(event.kind, label, self._clock() - waiting.started)
        if waiting.done.done():
            return  # its caller gave up (shutdown): the consumer handed the message back
        if error is None:
            waiting.done.set_result(None)
        else:
            waiting.done.set_exception(error)

    async def _park(self, event: AnyJobEvent, park: Park) -> tuple[str, Exception | None]:
        """Keep an event that must never be applied aside, then settle it; a park that fails is
        handed back (the redelivery judges it again and parks it again)."""
        if self._parking is None:
            # No dead-letter stream wired (tests, tools): the log line is all an operator gets.
            log.warning(
                "event not applied: %s",
                park.detail,
                extra={"kind": event.kind, "job_id": str(event.job_id), "reason": park.reason},
            )
            return "parked", None
        try:
            await self._parking.park(event, park.reason, park.detail)
        except Exception as exc:
            return "failed", exc
        return "parked", None

    def _is_orphan(self, event: AnyJobEvent) -> bool:
        occurred = event.occurred_at
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=UTC)
        return self._now() - occurred > self._orphan_after


def _miss_key(event: AnyJobEvent) -> tuple[uuid.UUID, str]:
    ref = event.output_ref if isinstance(event, JobCompleted) else None
    return (event.job_id, ref or "")
