"""What the handlers need from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from job_store.model import HistoryEntry, JobRow
from jobs_proto.api import JobChanged, JobSummary
from jobs_proto.events import AnyJobEvent


class JobTransaction(Protocol):
    """One database transaction over `jobs`; committed when its context exits cleanly."""

    async def lock(self, job_id: uuid.UUID) -> JobRow | None:
        """The job's row, locked until the transaction ends (`SELECT ... FOR UPDATE`)."""
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


class JobStore(Protocol):
    """The jobs table: transactions for writers, plain reads for the endpoints."""

    def transaction(self) -> AbstractAsyncContextManager[JobTransaction]: ...

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

    async def stuck_jobs(self, older_than_s: float, limit: int) -> list[JobRow]:
        """Jobs `processing` since longer than `older_than_s` (database clock), oldest first."""
        ...

    async def history(self, job_id: uuid.UUID) -> list[HistoryEntry]:
        """The job's history by `seq`, `recorded_at` filled in."""
        ...


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


class ApplyObserver(Protocol):
    """Where the applier reports what it did (the `/metrics` counters), kept out of handlers."""

    def applied(self, kind: str, outcome: str, seconds: float) -> None:
        """One event handled: `outcome` is `changed`, `unchanged`, `deferred` or `parked`."""
        ...

    def waited(self, reason: str) -> None:
        """An event handed back to come again (`job_not_yet_known`, `result_missing`)."""
        ...
