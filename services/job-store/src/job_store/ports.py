"""What the handlers need from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime
from typing import Protocol, runtime_checkable

from job_store.model import HistoryEntry, JobRow
from job_store.spend import Totals
from jobs_proto.api import JobChanged, JobSummary
from jobs_proto.events import AnyJobEvent, JobPurged
from jobs_proto.spend import BudgetDecision, ReserveBudget, TypeUsage


class JobTransaction(Protocol):
    """One database transaction over `jobs`; committed when its context exits cleanly."""

    async def lock(self, job_id: uuid.UUID) -> JobRow | None:
        """The job's row, locked until the transaction ends (`SELECT ... FOR UPDATE`)."""
        ...

    async def lock_many(self, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, JobRow]:
        """The rows of those jobs that exist, locked until the transaction ends, taken in id
        order (so two writers locking overlapping sets wait rather than deadlock)."""
        ...

    async def delete(self, job_id: uuid.UUID) -> None:
        """Delete a job and its history (a purge)."""
        ...

    async def insert(self, row: JobRow) -> bool:
        """Insert a new job; False (and nothing written) when the id exists already."""
        ...

    async def update(self, row: JobRow) -> None:
        """Write every column of a row this transaction holds locked."""
        ...

    async def append_history(self, entry: HistoryEntry) -> None:
        """Record one applied change (`job_history`), committed with the row's change."""
        ...

    async def append_history_many(self, entries: Sequence[HistoryEntry]) -> None:
        """Record several applied changes at once (one round trip)."""
        ...

    async def write(
        self, updates: Sequence[JobRow], inserts: Sequence[JobRow], entries: Sequence[HistoryEntry]
    ) -> bool:
        """`update` each of `updates`, `insert` each of `inserts` and append `entries`, in one
        round trip; False when one of `inserts` exists already (the caller rolls back)."""
        ...


class JobStore(Protocol):
    """The jobs table: transactions for writers, plain reads for the endpoints."""

    def transaction(self) -> AbstractAsyncContextManager[JobTransaction]:
        """A transaction; raises `jobs_runtime.errors.Unavailable` when the database cannot be
        reached (down, restarting, connection lost): nothing about the events in hand is wrong,
        so they are retried as they are rather than one by one."""
        ...

    async def get(self, job_id: uuid.UUID) -> JobRow | None: ...

    async def list_jobs(
        self,
        user_id: str,
        *,
        statuses: Sequence[str],
        types: Sequence[str],
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobSummary]:
        """The user's jobs newest first (ties by id), strictly after the `after` position;
        empty `statuses`/`types` mean no filter."""
        ...

    async def stuck_jobs(
        self, older_than_s: float, limit: int, *, pending_older_than_s: float | None = None
    ) -> list[JobRow]:
        """Jobs `processing` since longer than `older_than_s` (database clock), and with
        `pending_older_than_s` jobs `pending` since their creation longer than that; oldest
        first."""
        ...

    async def versions(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The committed version of each of those jobs that exists (the database, never a
        replica's memory: what another replica wrote counts)."""
        ...

    async def history(
        self, job_id: uuid.UUID, *, after_seq: int = 0, limit: int | None = None
    ) -> list[HistoryEntry]:
        """The job's history by `seq` from `after_seq + 1`, `recorded_at` filled in."""
        ...

    async def finished_before(self, age_s: float, limit: int) -> list[uuid.UUID]:
        """Jobs in a terminal status completed more than `age_s` ago (database clock), oldest
        first, at most `limit`: what retention purges next."""
        ...


@runtime_checkable
class OptimisticWrites(Protocol):
    """A store that can apply a batch in two round trips instead of a locking transaction:
    read the rows, then write only if none of them changed meanwhile."""

    async def read_many(self, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, JobRow]:
        """The rows of those jobs that exist, as last committed; nothing locked."""
        ...

    async def write_unless_changed(
        self,
        versions: Mapping[uuid.UUID, int | None],
        updates: Sequence[JobRow],
        inserts: Sequence[JobRow],
        entries: Sequence[HistoryEntry],
    ) -> bool:
        """As `JobTransaction.write`, all or nothing, only while each job of `versions` is
        still at that version (None: still absent); False, with nothing written, otherwise."""
        ...


class BudgetStore(Protocol):
    """Budgets and usage: reservations under row locks, their release, the sums per period.

    Settlement is not here: the store settles a job in the transaction that writes its end.
    Each method raises `jobs_runtime.errors.Unavailable` when the database cannot be reached.
    """

    async def reserve(self, request: ReserveBudget) -> BudgetDecision:
        """Reserve for a job, or refuse it, in one transaction: the user's month row locked,
        then (with a global limit) the day's; a job known or already reserved is admitted
        without a second reservation."""
        ...

    async def release(self, job_id: uuid.UUID, user_id: str) -> bool:
        """Free the user's reservation for a job unless the job is known (its end settles
        it); True when the job is known (so still admitted)."""
        ...

    async def release_stale(self, older_than_s: float, limit: int) -> list[uuid.UUID]:
        """Free up to `limit` reservations older than `older_than_s` (database clock) whose job
        is unknown; the jobs whose reservation was freed."""
        ...

    async def usage(
        self, user_id: str, first: date, last: date
    ) -> tuple[dict[str, TypeUsage], dict[date, TypeUsage]]:
        """The user's ended jobs admitted on days `first`..`last`: by type, and by day."""
        ...

    async def month(self, user_id: str, month: date) -> Totals:
        """The user's sums for the month starting `month`."""
        ...


class PurgePublisher(Protocol):
    """Puts a purge into the `JOBS` stream (the store applies it like any event)."""

    async def publish(self, event: JobPurged) -> object: ...


class ResultLoader(Protocol):
    """Outputs too large for an event, stored aside by webhook-ingest (the Object Store)."""

    async def load(self, ref: str) -> str | None:
        """The output `ref` names, or None when the object does not exist (yet, or any more)."""
        ...


class ChangeAnnouncer(Protocol):
    """Tells listeners (the gateway's push) about a committed change of a job."""

    async def announce(self, change: JobChanged) -> None: ...


class Parking(Protocol):
    """The dead-letter stream: where an event goes that can never be applied."""

    async def park(self, event: AnyJobEvent, reason: str, detail: str) -> None:
        """Store the event aside with its reason; raises when it could not be stored."""
        ...


class JobStoreObserver(Protocol):
    """Where the job-store reports what it did (the `/metrics` counters), kept out of handlers
    and adapters alike."""

    def applied(self, kind: str, outcome: str, seconds: float) -> None:
        """One event handled: `outcome` is `changed`, `unchanged`, `deferred` or `parked`."""
        ...

    def job_ended(self, job_type: str, status: str, seconds: float) -> None:
        """A job reached its terminal `status`, `seconds` after it was admitted."""
        ...

    def waited(self, reason: str) -> None:
        """An event handed back to come again (`job_not_yet_known`, `result_missing`)."""
        ...

    def committed(self, events: int, mode: str) -> None:
        """One transaction committed `events` events: `mode` `batch` for a whole batch, or
        `single` for one event of a batch that failed and was retried one by one."""
        ...

    def purges_published(self, jobs: int) -> None:
        """A retention pass published a purge for each of `jobs` finished jobs."""
        ...

    def parked(self, reason: str) -> None:
        """A message was put in the dead-letter stream instead of being applied."""
        ...

    def consumer_sampled(self, pending: int, ack_pending: int) -> None:
        """The consumer's lag as last sampled: events not yet handed over, and handed over but
        not yet acknowledged."""
        ...

    def spent(self, job_type: str, micros: int) -> None:
        """A committed change settled `micros` of spend for a job of `job_type`."""
        ...

    def reservations_released(self, count: int) -> None:
        """The sweep freed `count` reservations of jobs that never came."""
        ...


class NoObserver:
    """A `JobStoreObserver` that keeps nothing, for tests and tools."""

    def applied(self, kind: str, outcome: str, seconds: float) -> None:
        pass

    def job_ended(self, job_type: str, status: str, seconds: float) -> None:
        pass

    def waited(self, reason: str) -> None:
        pass

    def committed(self, events: int, mode: str) -> None:
        pass

    def purges_published(self, jobs: int) -> None:
        pass

    def parked(self, reason: str) -> None:
        pass

    def consumer_sampled(self, pending: int, ack_pending: int) -> None:
        pass

    def spent(self, job_type: str, micros: int) -> None:
        pass

    def reservations_released(self, count: int) -> None:
        pass
