"""Postgres behind the `JobStore` port: transactions for the applier, the guarded one-statement
batch write, the reads, with the rows of running jobs this process wrote last in hand
(`RowCache`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import cast

import asyncpg

from job_store.adapters.columns import (
    SELECT_JOB,
    history_from_record,
    pg_text,
    row_from_record,
    summary_from_record,
)
from job_store.adapters.database import UNAVAILABLE, Connection, Pool, unavailable
from job_store.adapters.queries import (
    FINISHED_BEFORE,
    LIST,
    PAST_DEADLINE,
    SELECT_HISTORY,
    SELECT_MANY,
    SELECT_VERSIONS,
    STUCK,
    STUCK_OR_PENDING,
)
from job_store.adapters.row_cache import RowCache, as_read_back
from job_store.adapters.transaction import PostgresTransaction
from job_store.adapters.writes import (
    UPDATE_UNLESS_CHANGED,
    WRITE_UNLESS_CHANGED,
    without_inserts,
    write_arguments,
)
from job_store.model import HistoryEntry, JobRow
from jobs_proto.api import JobSummary


class PostgresJobStore:
    """The `JobStore` port over an asyncpg pool.

    With `cached_rows`, `read_many` answers from a `RowCache` of running jobs where it can, so
    the events after a job's first update need no read before their write.
    """

    def __init__(self, pool: Pool, *, cached_rows: int = 0) -> None:
        self._pool = pool
        self._cache = RowCache(cached_rows) if cached_rows > 0 else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield PostgresTransaction(cast(Connection, conn), self._cache)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def read_many(self, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, JobRow]:
        rows: dict[uuid.UUID, JobRow] = {}
        missing = list(job_ids)
        if self._cache is not None:
            missing = []
            for job_id in job_ids:
                row = self._cache.get(job_id)
                if row is None:
                    missing.append(job_id)
                else:
                    rows[job_id] = row
            if not missing:
                return rows
        try:
            records = await self._pool.fetch(SELECT_MANY, missing)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        for record in records:
            row = row_from_record(record)
            rows[row.job_id] = row
            if self._cache is not None:
                self._cache.keep(row)
        return rows

    async def write_unless_changed(
        self,
        versions: Mapping[uuid.UUID, int | None],
        updates: Sequence[JobRow],
        inserts: Sequence[JobRow],
        entries: Sequence[HistoryEntry],
    ) -> bool:
        arguments = write_arguments(updates, inserts, entries)
        if inserts:
            statement = WRITE_UNLESS_CHANGED
        else:
            statement = UPDATE_UNLESS_CHANGED
            arguments = without_inserts(arguments)
        try:
            record = await self._pool.fetchrow(
                statement, *arguments, list(versions), list(versions.values())
            )
        except asyncpg.DivisionByZeroError:
            # An insert lost its race: nothing was written.
            self._forget(versions)
            return False
        except UNAVAILABLE as exc:
            # Whether it committed is unknown: read those rows again next time.
            self._forget(versions)
            raise unavailable(exc) from exc
        except BaseException:
            self._forget(versions)
            raise
        assert record is not None
        if record["stale"] != 0:
            # A job moved on since it was read (or cached): its row is read afresh next time.
            self._forget(versions)
            return False
        if self._cache is not None:
            for row in updates:
                self._cache.keep(as_read_back(row))
            # Inserted rows are not kept (see `RowCache`): forget any older incarnation.
            self._cache.forget([row.job_id for row in inserts])
        return True

    def kept(self, job_id: uuid.UUID) -> JobRow | None:
        """The row of `job_id` in hand, if any (tests, diagnostics)."""
        return None if self._cache is None else self._cache.get(job_id)

    def _forget(self, job_ids: Collection[uuid.UUID]) -> None:
        if self._cache is not None:
            self._cache.forget(job_ids)

    async def get(self, job_id: uuid.UUID) -> JobRow | None:
        record = await self._pool.fetchrow(SELECT_JOB, job_id)
        return None if record is None else row_from_record(record)

    async def list_jobs(
        self,
        user_id: str,
        *,
        statuses: Sequence[str],
        types: Sequence[str],
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobSummary]:
        created_at, job_id = after if after is not None else (None, None)
        records = await self._pool.fetch(
            LIST, pg_text(user_id), list(statuses), list(types), created_at, job_id, limit
        )
        return [summary_from_record(r) for r in records]

    async def stuck_jobs(
        self, older_than_s: float, limit: int, *, pending_older_than_s: float | None = None
    ) -> list[JobRow]:
        if pending_older_than_s is None:
            records = await self._pool.fetch(STUCK, older_than_s, limit)
        else:
            records = await self._pool.fetch(
                STUCK_OR_PENDING, older_than_s, limit, pending_older_than_s
            )
        return [row_from_record(r) for r in records]

    async def versions(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        records = await self._pool.fetch(SELECT_VERSIONS, list(job_ids))
        return {r["id"]: int(r["version"]) for r in records}

    async def history(
        self, job_id: uuid.UUID, *, after_seq: int = 0, limit: int | None = None
    ) -> list[HistoryEntry]:
        records = await self._pool.fetch(SELECT_HISTORY, job_id, after_seq, limit)
        return [history_from_record(r) for r in records]

    async def finished_before(self, age_s: float, limit: int) -> list[uuid.UUID]:
        try:
            records = await self._pool.fetch(FINISHED_BEFORE, age_s, limit)
        except UNAVAILABLE as exc:
            # The retention pass skips a round, with a warning rather than a traceback.
            raise unavailable(exc) from exc
        return [r["id"] for r in records]

    async def past_deadline(self) -> tuple[int, int]:
        """How many jobs are still pending, and processing, after their deadline."""
        try:
            (record,) = await self._pool.fetch(PAST_DEADLINE)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        return int(record["pending"]), int(record["processing"])

    async def count_jobs(self) -> int:
        """How many jobs the database holds (replay refuses a non-empty target)."""
        return int(await self._pool.fetchval("SELECT count(*) FROM jobs"))

    async def truncate(self) -> None:
        """Empty `jobs`, `job_history` and what is summed from them, budgets and usage
        (replay's `--truncate`): the replay rebuilds them all."""
        await self._pool.execute(
            "TRUNCATE jobs, job_history, budget_reservations, budget_months, budget_days,"
            " usage_days"
        )

    async def ping(self) -> None:
        """Readiness: the pool hands out a connection and Postgres answers."""
        await self._pool.fetchval("SELECT 1")
