"""What the handlers need from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from job_store.model import JobRow
from jobs_proto.api import JobChanged


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


class JobStore(Protocol):
    """The jobs table: transactions for writers, plain reads for the get endpoint."""

    def transaction(self) -> AbstractAsyncContextManager[JobTransaction]: ...

    async def get(self, job_id: uuid.UUID) -> JobRow | None: ...


class ChangeAnnouncer(Protocol):
    """Tells listeners (the gateway's push) about a committed change of a job."""

    async def announce(self, change: JobChanged) -> None: ...
