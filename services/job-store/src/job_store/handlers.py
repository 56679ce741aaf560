"""The job-store's work over its ports: apply an event to a job, record and announce it, answer
the reads (one job, a user's list, stuck jobs, a job's history).

No I/O here: the store, the result loader and the announcer come in as arguments, so every
rule can be tested against fakes as well as against Postgres and NATS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

import msgspec

from job_store.model import HistoryEntry, JobRow, job_view, stuck_job
from job_store.ports import ApplyObserver, ChangeAnnouncer, JobStore, Parking, ResultLoader
from job_store.transitions import Change, transition
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
from jobs_proto.events import AnyJobEvent, JobCompleted, JobRequested
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


async def apply_event(
    event: AnyJobEvent,
    store: JobStore,
    announcer: ChangeAnnouncer,
    results: ResultLoader | None = None,
    *,
    expire_missing_result: bool = False,
) -> JobRow | None:
    """Apply one event in one transaction (row and history together), then announce it.

    Returns the job's new row, or None when the event changed nothing (a duplicate, a late or
    foreign event); raises `JobNotYetKnown` for an event other than `requested` of an unknown
    job, and `ResultMissing` for a completion whose stored output cannot be loaded, unless
    `expire_missing_result` says to end the job `result_expired` instead.
    """
    async with store.transaction() as tx:
        current = await tx.lock(event.job_id)
        if current is None and not isinstance(event, JobRequested):
            raise JobNotYetKnown(event)
        change = await _judge(current, event, results, expire_missing_result)
        if change is not None:
            if current is not None:
                await tx.update(change.row)
            elif not await tx.insert(change.row):
                # Another consumer inserted the job meanwhile (the insert waited for it to
                # commit): judge the event against that row like any other.
                current = await tx.lock(event.job_id)
                change = (
                    None
                    if current is None
                    else await _judge(current, event, results, expire_missing_result)
                )
                if change is not None:
                    await tx.update(change.row)
            if change is not None:
                await tx.append_history(change.entry)
    if change is None:
        return None
    await announce(change.row, announcer)
    return change.row


async def _judge(
    current: JobRow | None,
    event: AnyJobEvent,
    results: ResultLoader | None,
    expire_missing_result: bool,
) -> Change | None:
    change = transition(current, event)
    if (
        change is None
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


async def get_job(query: GetJob, store: JobStore) -> JobReply:
    """One job for its owner; null alike for an unknown job and another user's job."""
    row = await store.get(query.job_id)
    if row is None or row.user_id != query.user_id:
        return JobReply(job=None)
    return JobReply(job=job_view(row))


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
    rows = await store.stuck_jobs(query.older_than_s, query.limit + 1)
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


async def job_history(query: GetJobHistory, store: JobStore, *, max_bytes: int) -> JobHistory:
    """A job's history for its owner; null alike for an unknown job and another user's job."""
    row = await store.get(query.job_id)
    if row is None or row.user_id != query.user_id:
        return JobHistory(entries=None)
    entries = [history_view(e) for e in await store.history(query.job_id)]
    kept = _within_bytes(entries, max_bytes)
    return JobHistory(entries=kept, truncated=len(kept) < len(entries))


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


@dataclass(slots=True)
class _JobLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: int = 0


class _NoObserver:
    def applied(self, kind: str, outcome: str, seconds: float) -> None:
        pass

    def waited(self, reason: str) -> None:
        pass


class EventApplier:
    """The consumer's handler: `apply_event`, one event at a time per job, in arrival order.

    The consumer loop runs a batch concurrently; events of one job in the same batch (a request
    and its submission, say) would otherwise race for the row lock, and the later one could
    commit or announce first. `asyncio.Lock` wakes waiters in order, so they apply in stream
    order; events of different jobs still run side by side.

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
    ) -> None:
        self._store = store
        self._announcer = announcer
        self._results = results
        self._observer: ApplyObserver = observer or _NoObserver()
        self._result_misses = result_misses
        self._clock = clock
        self._parking = parking
        self._orphan_after = orphan_after
        self._now = now
        self._locks: dict[uuid.UUID, _JobLock] = {}
        self._misses: dict[tuple[uuid.UUID, str], int] = {}

    async def __call__(self, event: AnyJobEvent) -> None:
        async with self._one_at_a_time(event.job_id):
            started = self._clock()
            ref = event.output_ref if isinstance(event, JobCompleted) else None
            key = (event.job_id, ref or "")
            try:
                row = await apply_event(
                    event,
                    self._store,
                    self._announcer,
                    self._results,
                    expire_missing_result=self._misses.get(key, 0) >= self._result_misses,
                )
            except JobNotYetKnown:
                if self._parking is not None and self._is_orphan(event):
                    await self._parking.park(
                        event,
                        "no_such_job",
                        f"job {event.job_id} unknown after {self._orphan_after}",
                    )
                    self._observer.applied(event.kind, "parked", self._clock() - started)
                    return  # settled: the consumer acks it, the parked copy remains
                self._observer.waited("job_not_yet_known")
                self._observer.applied(event.kind, "deferred", self._clock() - started)
                raise
            except ResultMissing:
                self._misses[key] = self._misses.get(key, 0) + 1
                self._observer.waited("result_missing")
                self._observer.applied(event.kind, "deferred", self._clock() - started)
                raise
            self._misses.pop(key, None)
            outcome = "unchanged" if row is None else "changed"
            self._observer.applied(event.kind, outcome, self._clock() - started)

    def _is_orphan(self, event: AnyJobEvent) -> bool:
        occurred = event.occurred_at
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=UTC)
        return self._now() - occurred > self._orphan_after

    @asynccontextmanager
    async def _one_at_a_time(self, job_id: uuid.UUID) -> AsyncIterator[None]:
        entry = self._locks.setdefault(job_id, _JobLock())
        entry.holders += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.holders -= 1
            if entry.holders == 0:
                del self._locks[job_id]  # the map holds only jobs with events in hand
