"""The job-store's work over its ports: apply an event to a job and announce it, answer a read.

No I/O here: the store and the announcer come in as arguments, so every rule can be tested
against fakes as well as against Postgres and NATS.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from job_store.model import JobRow, job_view
from job_store.ports import ChangeAnnouncer, JobStore
from job_store.transitions import transition
from jobs_proto.api import GetJob, JobChanged, JobReply
from jobs_proto.events import AnyJobEvent, JobRequested
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


async def apply_event(
    event: AnyJobEvent, store: JobStore, announcer: ChangeAnnouncer
) -> JobRow | None:
    """Apply one event in one transaction and announce the change once committed.

    Returns the job's new row, or None when the event changed nothing (a duplicate, a late or
    foreign event); raises `JobNotYetKnown` for an event other than `requested` of an unknown job.
    """
    async with store.transaction() as tx:
        current = await tx.lock(event.job_id)
        if current is None and not isinstance(event, JobRequested):
            raise JobNotYetKnown(event)
        changed = transition(current, event)
        if changed is not None:
            if current is not None:
                await tx.update(changed)
            elif not await tx.insert(changed):
                # Another consumer inserted the job meanwhile (the insert waited for it to
                # commit): judge the event against that row like any other.
                current = await tx.lock(event.job_id)
                changed = None if current is None else transition(current, event)
                if changed is not None:
                    await tx.update(changed)
    if changed is not None:
        await announce(changed, announcer)
    return changed


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


@dataclass(slots=True)
class _JobLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: int = 0


class EventApplier:
    """The consumer's handler: `apply_event`, one event at a time per job, in arrival order.

    The consumer loop runs a batch concurrently; events of one job in the same batch (a request
    and its submission, say) would otherwise race for the row lock, and the later one could
    commit or announce first. `asyncio.Lock` wakes waiters in order, so they apply in stream
    order; events of different jobs still run side by side.
    """

    def __init__(self, store: JobStore, announcer: ChangeAnnouncer) -> None:
        self._store = store
        self._announcer = announcer
        self._locks: dict[uuid.UUID, _JobLock] = {}

    async def __call__(self, event: AnyJobEvent) -> None:
        async with self._one_at_a_time(event.job_id):
            await apply_event(event, self._store, self._announcer)

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
