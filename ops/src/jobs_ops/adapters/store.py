"""The job-store's Postgres read directly (when DATABASE_URL is set), through the job-store's
own adapter, so `jobsctl` answers while the job-store is down."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from job_store.adapters.database import create_pool
from job_store.adapters.postgres import PostgresJobStore
from job_store.model import job_view, stuck_job
from job_store.reads import history_view
from jobs_proto.api import JobHistoryEntry, StuckJob


class DatabaseReader:
    """A small pool over the job-store's database; close with `close`."""

    def __init__(self, store: PostgresJobStore, pool: Any) -> None:
        self._store = store
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, timeout_s: float) -> DatabaseReader:
        pool = await create_pool(dsn, max_size=2, timeout_s=timeout_s)
        return cls(PostgresJobStore(pool), pool)

    async def job(self, job_id: uuid.UUID) -> tuple[dict[str, Any], list[JobHistoryEntry]] | None:
        row = await self._store.get(job_id)
        if row is None:
            return None
        view: dict[str, Any] = msgspec.to_builtins(job_view(row))
        view["userId"] = row.user_id
        view["cancelRequested"] = row.cancel_requested
        view["attempts"] = row.attempts
        view["deadlineAt"] = None if row.deadline_at is None else row.deadline_at.isoformat()
        history = [history_view(e) for e in await self._store.history(job_id)]
        return view, history

    async def stuck(self, older_than_s: float, limit: int) -> tuple[list[StuckJob], bool]:
        rows = await self._store.stuck_jobs(
            older_than_s, limit + 1, pending_older_than_s=older_than_s
        )
        return [stuck_job(r) for r in rows[:limit]], len(rows) > limit

    async def close(self) -> None:
        await self._pool.close()
