"""Postgres behind the `JobStore` port: an asyncpg pool, `jobs` and `job_history`, readiness,
startup, and the rows of running jobs this process wrote last (`RowCache`).

Startup never crash-loops: a bad `DATABASE_URL` or a database that is down is retried with
backoff, one log line per attempt, until it works or the service is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias, TypeVar, cast
from urllib.parse import unquote, urlsplit

import asyncpg
import msgspec

from job_store.adapters.migrations import migrate_database
from job_store.model import HistoryEntry, JobRow
from jobs_proto.api import JobSummary
from jobs_proto.events import JobError
from jobs_proto.status import JobStatus, is_terminal
from jobs_runtime.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# asyncpg's classes are generic only in their stubs, so the aliases are strings at runtime.
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

# What "the database cannot be reached now" looks like: refused or lost connections, a server
# starting up or shutting down, a full server, a statement timing out.
_UNAVAILABLE: Final = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
)

_COLUMNS: Final = (
    "id, user_id, type, status, version, input, output, error_code, error_message,"
    " prediction_id, cancel_requested, created_at, updated_at, submitted_at, started_at,"
    " completed_at, deadline_at, attempts, input_truncated"
)
_SELECT: Final = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1"
_INSERT: Final = (
    f"INSERT INTO jobs ({_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,"
    " $19)"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)
# Owner, type, input and creation time never change after `requested`.
_UPDATE: Final = """
UPDATE jobs SET status = $2, version = $3, output = $4, error_code = $5, error_message = $6,
    prediction_id = $7, cancel_requested = $8, updated_at = $9, submitted_at = $10,
    started_at = $11, completed_at = $12, attempts = $13
WHERE id = $1
"""
_INSERT_HISTORY: Final = """
INSERT INTO job_history (job_id, seq, kind, occurred_at, source, message_id, summary)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
# A batch's every row change and history entry in one statement (one round trip): rows to
# update, rows to insert (none written over an existing id), and the entries of the jobs whose
# row was written. jsonb travels as text, cast here, so no array-of-jsonb codec is needed.
# `{checks}` and `{guard}` are empty for `_WRITE`, which answers how many rows were inserted
# (so a lost insert race shows and the caller's transaction rolls back).
_WRITE_TEMPLATE: Final = f"""
WITH {{checks}}updated AS (
    UPDATE jobs AS j SET status = u.status, version = u.version, output = u.output,
        error_code = u.error_code, error_message = u.error_message,
        prediction_id = u.prediction_id, cancel_requested = u.cancel_requested,
        updated_at = u.updated_at, submitted_at = u.submitted_at, started_at = u.started_at,
        completed_at = u.completed_at, attempts = u.attempts
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::bool[], $9::timestamptz[], $10::timestamptz[],
                $11::timestamptz[], $12::timestamptz[], $13::int[])
        AS u(id, status, version, output, error_code, error_message, prediction_id,
             cancel_requested, updated_at, submitted_at, started_at, completed_at, attempts)
    WHERE j.id = u.id {{guard}}
    RETURNING j.id
), inserted AS (
    INSERT INTO jobs ({_COLUMNS})
    SELECT id, user_id, type, status, version, input::jsonb, output, error_code, error_message,
        prediction_id, cancel_requested, created_at, updated_at, submitted_at, started_at,
        completed_at, deadline_at, attempts, input_truncated
    FROM unnest($14::uuid[], $15::text[], $16::text[], $17::text[], $18::int[], $19::text[],
                $20::text[], $21::text[], $22::text[], $23::text[], $24::bool[],
                $25::timestamptz[], $26::timestamptz[], $27::timestamptz[], $28::timestamptz[],
                $29::timestamptz[], $30::timestamptz[], $31::int[], $32::bool[])
        AS i(id, user_id, type, status, version, input, output, error_code, error_message,
             prediction_id, cancel_requested, created_at, updated_at, submitted_at, started_at,
             completed_at, deadline_at, attempts, input_truncated)
    WHERE true {{guard}}
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), history AS (
    INSERT INTO job_history (job_id, seq, kind, occurred_at, source, message_id, summary)
    SELECT h.job_id, h.seq, h.kind, h.occurred_at, h.source, h.message_id, h.summary::jsonb
    FROM unnest($33::uuid[], $34::int[], $35::text[], $36::timestamptz[], $37::text[],
                $38::text[], $39::text[])
        AS h(job_id, seq, kind, occurred_at, source, message_id, summary)
    WHERE h.job_id IN (SELECT id FROM updated UNION ALL SELECT id FROM inserted)
)
"""
_WRITE: Final = _WRITE_TEMPLATE.format(checks="", guard="") + "SELECT count(*) FROM inserted"
# The same for a batch judged against rows read without a lock: it writes only if every job
# is still at the version it was read at (NULL: still absent), checked under row locks the
# statement takes itself, so it is all or nothing without BEGIN and COMMIT round trips. A lost
# insert race (the job inserted by another writer after this statement's snapshot) divides by
# zero, which undoes the whole statement.
_WRITE_UNLESS_CHANGED: Final = _WRITE_TEMPLATE.format(
    checks="""expected AS (
    SELECT * FROM unnest($40::uuid[], $41::int[]) AS e(id, version)
), current AS (
    SELECT j.id, j.version FROM jobs AS j JOIN expected USING (id) FOR UPDATE OF j
), stale AS (
    SELECT count(*) AS n FROM expected AS e LEFT JOIN current AS c USING (id)
    WHERE c.version IS DISTINCT FROM e.version
), """,
    guard="AND (SELECT n FROM stale) = 0",
) + (
    "SELECT (SELECT n FROM stale) AS stale,"
    " 1 / ((SELECT n FROM stale) > 0"
    " OR (SELECT count(*) FROM inserted) = cardinality($14::uuid[]))::int AS whole"
)
# `_WRITE_UNLESS_CHANGED` for a batch that inserts nothing (most batches: every event of a job
# after its `requested`): 22 parameters instead of 41, no insert to plan, no race to catch.
_UPDATE_UNLESS_CHANGED: Final = """
WITH expected AS (
    SELECT * FROM unnest($21::uuid[], $22::int[]) AS e(id, version)
), current AS (
    SELECT j.id, j.version FROM jobs AS j JOIN expected USING (id) FOR UPDATE OF j
), stale AS (
    SELECT count(*) AS n FROM expected AS e LEFT JOIN current AS c USING (id)
    WHERE c.version IS DISTINCT FROM e.version
), updated AS (
    UPDATE jobs AS j SET status = u.status, version = u.version, output = u.output,
        error_code = u.error_code, error_message = u.error_message,
        prediction_id = u.prediction_id, cancel_requested = u.cancel_requested,
        updated_at = u.updated_at, submitted_at = u.submitted_at, started_at = u.started_at,
        completed_at = u.completed_at, attempts = u.attempts
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::bool[], $9::timestamptz[], $10::timestamptz[],
                $11::timestamptz[], $12::timestamptz[], $13::int[])
        AS u(id, status, version, output, error_code, error_message, prediction_id,
             cancel_requested, updated_at, submitted_at, started_at, completed_at, attempts)
    WHERE j.id = u.id AND (SELECT n FROM stale) = 0
    RETURNING j.id
), history AS (
    INSERT INTO job_history (job_id, seq, kind, occurred_at, source, message_id, summary)
    SELECT h.job_id, h.seq, h.kind, h.occurred_at, h.source, h.message_id, h.summary::jsonb
    FROM unnest($14::uuid[], $15::int[], $16::text[], $17::timestamptz[], $18::text[],
                $19::text[], $20::text[])
        AS h(job_id, seq, kind, occurred_at, source, message_id, summary)
    WHERE h.job_id IN (SELECT id FROM updated)
)
SELECT (SELECT n FROM stale) AS stale
"""
_SELECT_MANY: Final = f"SELECT {_COLUMNS} FROM jobs WHERE id = ANY($1::uuid[])"
# Locked in id order, so writers with overlapping batches queue instead of deadlocking.
_LOCK_MANY: Final = f"SELECT {_COLUMNS} FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
_DELETE: Final = "DELETE FROM jobs WHERE id = $1"
_DELETE_HISTORY: Final = "DELETE FROM job_history WHERE job_id = $1"
_SELECT_HISTORY: Final = """
SELECT job_id, seq, kind, occurred_at, recorded_at, source, message_id, summary
FROM job_history WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
# `jobs_finished_idx` (migration 0003) serves this: terminal jobs by completion time.
_FINISHED_BEFORE: Final = """
SELECT id FROM jobs
WHERE status IN ('succeeded', 'failed', 'canceled')
  AND completed_at < now() - make_interval(secs => $1)
ORDER BY completed_at, id
LIMIT $2
"""
_SUMMARY_COLUMNS: Final = (
    "id, type, status, version, error_code, error_message, prediction_id, created_at,"
    " updated_at, completed_at"
)
# Newest first with `id` ascending as the tie-breaker, which `jobs_user_created_idx`
# (user_id, created_at DESC, id) serves in index order; hence the mixed-direction keyset test.
_LIST: Final = f"""
SELECT {_SUMMARY_COLUMNS} FROM jobs
WHERE user_id = $1
  AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND (cardinality($3::text[]) = 0 OR type = ANY($3::text[]))
  AND ($4::timestamptz IS NULL OR created_at < $4 OR (created_at = $4 AND id > $5))
ORDER BY created_at DESC, id
LIMIT $6
"""
# `jobs_processing_since_idx` is on exactly this expression, filtered on the same status.
_STUCK: Final = f"""
SELECT {_COLUMNS} FROM jobs
WHERE status = 'processing'
  AND COALESCE(submitted_at, started_at, updated_at) < now() - make_interval(secs => $1)
ORDER BY COALESCE(submitted_at, started_at, updated_at), id
LIMIT $2
"""
# With the pending ones too (`jobs_pending_created_idx`, migration 0003), merged oldest first.
_STUCK_OR_PENDING: Final = f"""
SELECT * FROM (
    (SELECT {_COLUMNS}, COALESCE(submitted_at, started_at, updated_at) AS since FROM jobs
     WHERE status = 'processing'
       AND COALESCE(submitted_at, started_at, updated_at) < now() - make_interval(secs => $1)
     ORDER BY COALESCE(submitted_at, started_at, updated_at), id
     LIMIT $2)
    UNION ALL
    (SELECT {_COLUMNS}, created_at AS since FROM jobs
     WHERE status = 'pending' AND created_at < now() - make_interval(secs => $3)
     ORDER BY created_at, id
     LIMIT $2)
) AS stuck
ORDER BY since, id
LIMIT $2
"""


def _pg_text(value: str) -> str:
    # Postgres text and jsonb cannot hold NUL; stored as-is it would fail the event forever.
    return value.replace("\x00", "\ufffd")


def _pg_optional_text(value: str | None) -> str | None:
    return None if value is None else _pg_text(value)


def _pg_json(value: Any) -> Any:
    if isinstance(value, str):
        return _pg_text(value)
    if isinstance(value, dict):
        return {_pg_text(str(k)): _pg_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pg_json(v) for v in value]
    return value


def _encode_jsonb(value: Any) -> str:
    return msgspec.json.encode(_pg_json(value)).decode()


async def _init_connection(conn: Connection) -> None:
    # jsonb in and out as Python objects, through msgspec rather than the json module.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=msgspec.json.decode
    )


async def _keep_session(conn: Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own rollback of an open transaction.

    asyncpg's default sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release, a round trip per transaction; this store never takes advisory locks, keeps cursors,
    listens or changes settings on pooled connections (migrations use a connection of their own),
    so there is nothing to reset.
    """


async def create_pool(dsn: str, *, max_size: int, timeout_s: float = 5.0) -> Pool:
    """A pool whose connections speak jsonb; raises when the database cannot be reached."""
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        timeout=timeout_s,
        # A statement stuck behind a lock or a dying server fails instead of hanging a handler.
        command_timeout=15.0,
    )


def _job_row(record: asyncpg.Record) -> JobRow:
    return JobRow(
        job_id=record["id"],
        user_id=record["user_id"],
        job_type=record["type"],
        status=cast(JobStatus, record["status"]),
        version=record["version"],
        input=record["input"],
        output=record["output"],
        error_code=record["error_code"],
        error_message=record["error_message"],
        prediction_id=record["prediction_id"],
        cancel_requested=record["cancel_requested"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        submitted_at=record["submitted_at"],
        started_at=record["started_at"],
        completed_at=record["completed_at"],
        deadline_at=record["deadline_at"],
        # Rows from before migration 0002 have nulls here.
        attempts=record["attempts"] or 0,
        input_truncated=bool(record["input_truncated"]),
    )


def _job_summary(record: asyncpg.Record) -> JobSummary:
    code = record["error_code"]
    return JobSummary(
        job_id=record["id"],
        type=record["type"],
        status=cast(JobStatus, record["status"]),
        version=record["version"],
        error=None if code is None else JobError(code=code, message=record["error_message"] or ""),
        prediction_id=record["prediction_id"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        completed_at=record["completed_at"],
    )


def _history_entry(record: asyncpg.Record) -> HistoryEntry:
    return HistoryEntry(
        job_id=record["job_id"],
        seq=record["seq"],
        kind=record["kind"],
        occurred_at=record["occurred_at"],
        recorded_at=record["recorded_at"],
        source=record["source"],
        message_id=record["message_id"],
        summary=record["summary"],
    )


def _write_arguments(
    updates: Sequence[JobRow], inserts: Sequence[JobRow], entries: Sequence[HistoryEntry]
) -> list[list[Any]]:
    """`_WRITE`'s 39 arrays: a column each, for the rows to update, to insert, and the entries."""
    return [
        [r.job_id for r in updates],
        [r.status for r in updates],
        [r.version for r in updates],
        [_pg_optional_text(r.output) for r in updates],
        [_pg_optional_text(r.error_code) for r in updates],
        [_pg_optional_text(r.error_message) for r in updates],
        [_pg_optional_text(r.prediction_id) for r in updates],
        [r.cancel_requested for r in updates],
        [r.updated_at for r in updates],
        [r.submitted_at for r in updates],
        [r.started_at for r in updates],
        [r.completed_at for r in updates],
        [r.attempts for r in updates],
        [r.job_id for r in inserts],
        [_pg_text(r.user_id) for r in inserts],
        [_pg_text(r.job_type) for r in inserts],
        [r.status for r in inserts],
        [r.version for r in inserts],
        [_encode_jsonb(r.input) for r in inserts],
        [_pg_optional_text(r.output) for r in inserts],
        [_pg_optional_text(r.error_code) for r in inserts],
        [_pg_optional_text(r.error_message) for r in inserts],
        [_pg_optional_text(r.prediction_id) for r in inserts],
        [r.cancel_requested for r in inserts],
        [r.created_at for r in inserts],
        [r.updated_at for r in inserts],
        [r.submitted_at for r in inserts],
        [r.started_at for r in inserts],
        [r.completed_at for r in inserts],
        [r.deadline_at for r in inserts],
        [r.attempts for r in inserts],
        [r.input_truncated for r in inserts],
        [e.job_id for e in entries],
        [e.seq for e in entries],
        [e.kind for e in entries],
        [e.occurred_at for e in entries],
        [_pg_text(e.source) for e in entries],
        [_pg_text(e.message_id) for e in entries],
        [_encode_jsonb(e.summary) for e in entries],
    ]


def _utc(moment: datetime) -> datetime:
    # Postgres hands timestamptz back in UTC, whatever offset it was written with.
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _optional_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else _utc(moment)


def as_read_back(row: JobRow) -> JobRow:
    """`row` as reading it back from Postgres gives it, for a row whose owner, type and input
    were themselves read from Postgres: text without NUL, timestamps in UTC."""
    return replace(
        row,
        output=_pg_optional_text(row.output),
        error_code=_pg_optional_text(row.error_code),
        error_message=_pg_optional_text(row.error_message),
        prediction_id=_pg_optional_text(row.prediction_id),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        submitted_at=_optional_utc(row.submitted_at),
        started_at=_optional_utc(row.started_at),
        completed_at=_optional_utc(row.completed_at),
        deadline_at=_optional_utc(row.deadline_at),
    )


class RowCache:
    """The rows of running jobs as this process last read or wrote them, at most `size`, the
    least recently stored dropped first.

    Safe to judge an event against: `write_unless_changed` writes only while the job is still
    at the cached row's version, and every change of a row bumps its version, so a row another
    replica (or a purge) changed since is caught there, evicted, and read again. An event judged
    to change nothing against a kept row writes nothing and is not checked, which is sound for
    the same reason it is for a row just read: what makes an event a no-op for a running job (a
    bound prediction, a recorded start or submission, a requested cancel) never goes back, and
    terminal rows are not kept. Rows are kept
    only as Postgres would give them back: read from it, or updated from such a row
    (`as_read_back`); a freshly inserted row is not kept (its input has not been through jsonb
    yet), nor a terminal one (no event changes it again, and its output may be large).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._rows: dict[uuid.UUID, JobRow] = {}

    def get(self, job_id: uuid.UUID) -> JobRow | None:
        return self._rows.get(job_id)

    def keep(self, row: JobRow) -> None:
        """Keep `row` (already as read back), or forget its job if it is terminal."""
        self._rows.pop(row.job_id, None)
        if self._size <= 0 or is_terminal(row.status):
            return
        self._rows[row.job_id] = row
        if len(self._rows) > self._size:
            del self._rows[next(iter(self._rows))]

    def forget(self, job_ids: Collection[uuid.UUID]) -> None:
        for job_id in job_ids:
            self._rows.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._rows)


class PostgresTransaction:
    """The `JobTransaction` port over one connection inside an open transaction."""

    def __init__(self, conn: Connection, cache: RowCache | None = None) -> None:
        self._conn = conn
        self._cache = cache

    async def lock(self, job_id: uuid.UUID) -> JobRow | None:
        if self._cache is not None:
            self._cache.forget([job_id])  # written here without the cache
        record = await self._conn.fetchrow(_SELECT + " FOR UPDATE", job_id)
        return None if record is None else _job_row(record)

    async def lock_many(self, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, JobRow]:
        if self._cache is not None:
            # Whatever this transaction writes or deletes is not kept: read again next time.
            self._cache.forget(job_ids)
        records = await self._conn.fetch(_LOCK_MANY, list(job_ids))
        return {r["id"]: _job_row(r) for r in records}

    async def delete(self, job_id: uuid.UUID) -> None:
        await self._conn.execute(_DELETE_HISTORY, job_id)
        await self._conn.execute(_DELETE, job_id)

    async def insert(self, row: JobRow) -> bool:
        inserted = await self._conn.fetchval(
            _INSERT,
            row.job_id,
            _pg_text(row.user_id),
            _pg_text(row.job_type),
            row.status,
            row.version,
            row.input,
            _pg_optional_text(row.output),
            _pg_optional_text(row.error_code),
            _pg_optional_text(row.error_message),
            _pg_optional_text(row.prediction_id),
            row.cancel_requested,
            row.created_at,
            row.updated_at,
            row.submitted_at,
            row.started_at,
            row.completed_at,
            row.deadline_at,
            row.attempts,
            row.input_truncated,
        )
        return inserted is not None

    async def update(self, row: JobRow) -> None:
        await self._conn.execute(
            _UPDATE,
            row.job_id,
            row.status,
            row.version,
            _pg_optional_text(row.output),
            _pg_optional_text(row.error_code),
            _pg_optional_text(row.error_message),
            _pg_optional_text(row.prediction_id),
            row.cancel_requested,
            row.updated_at,
            row.submitted_at,
            row.started_at,
            row.completed_at,
            row.attempts,
        )

    async def write(
        self, updates: Sequence[JobRow], inserts: Sequence[JobRow], entries: Sequence[HistoryEntry]
    ) -> bool:
        inserted = await self._conn.fetchval(_WRITE, *_write_arguments(updates, inserts, entries))
        return bool(inserted == len(inserts))

    async def append_history(self, entry: HistoryEntry) -> None:
        await self.append_history_many([entry])

    async def append_history_many(self, entries: Sequence[HistoryEntry]) -> None:
        await self._conn.executemany(
            _INSERT_HISTORY,
            [
                (
                    entry.job_id,
                    entry.seq,
                    entry.kind,
                    entry.occurred_at,
                    _pg_text(entry.source),
                    _pg_text(entry.message_id),
                    entry.summary,
                )
                for entry in entries
            ],
        )


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
        except _UNAVAILABLE as exc:
            raise Unavailable(f"postgres unavailable: {type(exc).__name__}: {exc}") from exc

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
            records = await self._pool.fetch(_SELECT_MANY, missing)
        except _UNAVAILABLE as exc:
            raise Unavailable(f"postgres unavailable: {type(exc).__name__}: {exc}") from exc
        for record in records:
            row = _job_row(record)
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
        arguments = _write_arguments(updates, inserts, entries)
        if inserts:
            statement = _WRITE_UNLESS_CHANGED
        else:
            statement = _UPDATE_UNLESS_CHANGED
            arguments = arguments[:13] + arguments[32:]  # the updates' and entries' arrays
        try:
            record = await self._pool.fetchrow(
                statement, *arguments, list(versions), list(versions.values())
            )
        except asyncpg.DivisionByZeroError:
            # An insert lost its race: nothing was written.
            self._forget(versions)
            return False
        except _UNAVAILABLE as exc:
            # Whether it committed is unknown: read those rows again next time.
            self._forget(versions)
            raise Unavailable(f"postgres unavailable: {type(exc).__name__}: {exc}") from exc
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
        record = await self._pool.fetchrow(_SELECT, job_id)
        return None if record is None else _job_row(record)

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
            _LIST, _pg_text(user_id), list(statuses), list(types), created_at, job_id, limit
        )
        return [_job_summary(r) for r in records]

    async def stuck_jobs(
        self, older_than_s: float, limit: int, *, pending_older_than_s: float | None = None
    ) -> list[JobRow]:
        if pending_older_than_s is None:
            records = await self._pool.fetch(_STUCK, older_than_s, limit)
        else:
            records = await self._pool.fetch(
                _STUCK_OR_PENDING, older_than_s, limit, pending_older_than_s
            )
        return [_job_row(r) for r in records]

    async def history(
        self, job_id: uuid.UUID, *, after_seq: int = 0, limit: int | None = None
    ) -> list[HistoryEntry]:
        records = await self._pool.fetch(_SELECT_HISTORY, job_id, after_seq, limit)
        return [_history_entry(r) for r in records]

    async def finished_before(self, age_s: float, limit: int) -> list[uuid.UUID]:
        return [r["id"] for r in await self._pool.fetch(_FINISHED_BEFORE, age_s, limit)]

    async def count_jobs(self) -> int:
        """How many jobs the database holds (replay refuses a non-empty target)."""
        return int(await self._pool.fetchval("SELECT count(*) FROM jobs"))

    async def truncate(self) -> None:
        """Empty `jobs` and `job_history` (replay's `--truncate`)."""
        await self._pool.execute("TRUNCATE jobs, job_history")

    async def ping(self) -> None:
        """Readiness: the pool hands out a connection and Postgres answers."""
        await self._pool.fetchval("SELECT 1")


def redact(text: str, dsn: str) -> str:
    """`text` without the DSN's password, for error messages that may quote the DSN."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return text
    if not password:
        return text
    for secret in {password, unquote(password)}:
        text = text.replace(secret, "***")
    return text


async def _unless_stopped(work: asyncio.Future[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None (with `work` cancelled) if `stop` is set first."""
    stopping = asyncio.ensure_future(stop.wait())
    either: set[asyncio.Future[Any]] = {work, stopping}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    return None


async def with_retries(
    action: Callable[[], Awaitable[T]],
    *,
    dsn: str,
    stop: asyncio.Event,
    give_up_after: int | None = None,
    max_delay_s: float = 10.0,
) -> T | None:
    """`action()`'s result, retried with backoff until it succeeds or `stop` is set (then None).

    Anything from a malformed URL to a refused connection or a failing migration is retried,
    one warning line per attempt, so a pod waits for its database instead of crash-looping.
    `give_up_after` bounds the attempts (for one-shot commands), re-raising the last error.
    """
    delay = 0.5
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            return await _unless_stopped(asyncio.ensure_future(action()), stop)
        except Exception as exc:
            if give_up_after is not None and attempt >= give_up_after:
                raise
            log.warning(
                "postgres not ready, retrying in %.1fs: %s",
                delay,
                redact(f"{type(exc).__name__}: {exc}", dsn),
                extra={"attempt": attempt},
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_delay_s)
    return None


async def open_database(dsn: str, *, pool_size: int, stop: asyncio.Event) -> Pool | None:
    """Migrate (under the lock), then open the pool; None if stopped before it worked."""

    async def migrate_and_connect() -> Pool:
        await migrate_database(dsn)
        return await create_pool(dsn, max_size=pool_size)

    return await with_retries(migrate_and_connect, dsn=dsn, stop=stop)
