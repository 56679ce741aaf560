"""Applying events to jobs: a batch in one transaction (or in one guarded statement), each
event judged by `transition` against its job as the earlier ones left it, then announced.

No I/O here: the store, the result loader and the announcer come in as arguments, so every
rule can be tested against fakes as well as against Postgres and NATS.
"""

from __future__ import annotations

import functools
import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, cast

import msgspec

from job_store.model import HistoryEntry, JobRow, job_view
from job_store.ports import ChangeAnnouncer, JobStore, OptimisticWrites, ResultLoader
from job_store.transitions import Change, Park, transition
from jobs_proto.api import JobChanged
from jobs_proto.events import AnyJobEvent, JobCompleted, JobPurged, JobRequested
from jobs_runtime.retry import RetryLater

log = logging.getLogger(__name__)


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
