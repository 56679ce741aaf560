"""The `JobTransaction` port: one connection inside an open transaction, locking, writing and
deleting the rows of a batch."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from job_store.adapters.columns import (
    SELECT_JOB,
    pg_optional_text,
    pg_text,
    row_from_record,
)
from job_store.adapters.database import Connection
from job_store.adapters.row_cache import RowCache
from job_store.adapters.writes import (
    DELETE,
    DELETE_HISTORY,
    INSERT,
    INSERT_HISTORY,
    LOCK_MANY,
    UPDATE,
    WRITE,
    updated_values,
    write_arguments,
)
from job_store.model import HistoryEntry, JobRow


class PostgresTransaction:
    """The `JobTransaction` port over one connection inside an open transaction."""

    def __init__(self, conn: Connection, cache: RowCache | None = None) -> None:
        self._conn = conn
        self._cache = cache

    async def lock(self, job_id: uuid.UUID) -> JobRow | None:
        if self._cache is not None:
            self._cache.forget([job_id])  # written here without the cache
        record = await self._conn.fetchrow(SELECT_JOB + " FOR UPDATE", job_id)
        return None if record is None else row_from_record(record)

    async def lock_many(self, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, JobRow]:
        if self._cache is not None:
            # Whatever this transaction writes or deletes is not kept: read again next time.
            self._cache.forget(job_ids)
        records = await self._conn.fetch(LOCK_MANY, list(job_ids))
        return {r["id"]: row_from_record(r) for r in records}

    async def delete(self, job_id: uuid.UUID) -> None:
        await self._conn.execute(DELETE_HISTORY, job_id)
        await self._conn.execute(DELETE, job_id)

    async def insert(self, row: JobRow) -> bool:
        inserted = await self._conn.fetchval(
            INSERT,
            row.job_id,
            pg_text(row.user_id),
            pg_text(row.job_type),
            row.status,
            row.version,
            row.input,
            pg_optional_text(row.output),
            pg_optional_text(row.error_code),
            pg_optional_text(row.error_message),
            pg_optional_text(row.prediction_id),
            row.cancel_requested,
            row.created_at,
            row.updated_at,
            row.submitted_at,
            row.started_at,
            row.completed_at,
            row.deadline_at,
            row.attempts,
            row.input_truncated,
            row.price_input_token_usd,
            row.price_output_token_usd,
            row.price_predict_second_usd,
            row.reserved_micros,
            row.predict_time_s,
            row.input_tokens,
            row.output_tokens,
            row.cost_micros,
        )
        return inserted is not None

    async def update(self, row: JobRow) -> None:
        await self._conn.execute(UPDATE, *updated_values(row))

    async def write(
        self, updates: Sequence[JobRow], inserts: Sequence[JobRow], entries: Sequence[HistoryEntry]
    ) -> bool:
        inserted = await self._conn.fetchval(WRITE, *write_arguments(updates, inserts, entries))
        return bool(inserted == len(inserts))

    async def append_history(self, entry: HistoryEntry) -> None:
        await self.append_history_many([entry])

    async def append_history_many(self, entries: Sequence[HistoryEntry]) -> None:
        await self._conn.executemany(
            INSERT_HISTORY,
            [
                (
                    entry.job_id,
                    entry.seq,
                    entry.kind,
                    entry.occurred_at,
                    pg_text(entry.source),
                    pg_text(entry.message_id),
                    entry.summary,
                )
                for entry in entries
            ],
        )
