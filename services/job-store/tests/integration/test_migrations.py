"""Migrations: applied once, in order, by the library (the `job-store migrate` command, two at
once under the lock among them: `tests/e2e/test_job_store_migrate.py`)."""

from __future__ import annotations

import uuid

import asyncpg

from job_store.adapters.migrations import applied_migrations, load_migrations, migrate_database

JOBS_COLUMNS = {
    "id": "uuid",
    "user_id": "text",
    "type": "text",
    "status": "text",
    "version": "integer",
    "input": "jsonb",
    "output": "text",
    "error_code": "text",
    "error_message": "text",
    "prediction_id": "text",
    "cancel_requested": "boolean",
    "created_at": "timestamp with time zone",
    "updated_at": "timestamp with time zone",
    "submitted_at": "timestamp with time zone",
    "started_at": "timestamp with time zone",
    "completed_at": "timestamp with time zone",
    "deadline_at": "timestamp with time zone",
    "attempts": "integer",
    "input_truncated": "boolean",
    "price_input_token_usd": "numeric",
    "price_output_token_usd": "numeric",
    "price_predict_second_usd": "numeric",
    "reserved_micros": "bigint",
    "predict_time_s": "double precision",
    "input_tokens": "bigint",
    "output_tokens": "bigint",
    "cost_micros": "bigint",
}
HISTORY_COLUMNS = {
    "job_id": "uuid",
    "seq": "integer",
    "kind": "text",
    "occurred_at": "timestamp with time zone",
    "recorded_at": "timestamp with time zone",
    "source": "text",
    "message_id": "text",
    "summary": "jsonb",
}
# How release 1 (migration 0001 only) wrote a job: migration 0002 must leave this working.
_RELEASE_1_INSERT = """
INSERT INTO jobs (id, user_id, type, status, version, input, cancel_requested, created_at,
    updated_at)
VALUES ($1, 'user-1', 'script_generation', 'pending', 1, '{"topic": "tides"}', false, now(),
    now())
"""


async def test_each_migration_is_applied_once_and_recorded(empty_database_url: str) -> None:
    shipped = load_migrations()
    assert [m.version for m in shipped] == list(range(1, len(shipped) + 1))
    applied = await migrate_database(empty_database_url)
    assert applied == shipped
    assert await migrate_database(empty_database_url) == []
    assert await applied_migrations(empty_database_url) == [(m.version, m.name) for m in shipped]

    conn = await asyncpg.connect(empty_database_url)
    try:
        columns = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'jobs'"
        )
        history_columns = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'job_history'"
        )
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_user_created_idx'"
        )
    finally:
        await conn.close()
    assert {c["column_name"]: c["data_type"] for c in columns} == JOBS_COLUMNS
    assert "(user_id, created_at DESC, id)" in index
    assert {c["column_name"]: c["data_type"] for c in history_columns} == HISTORY_COLUMNS


async def test_the_history_migration_is_expand_only(empty_database_url: str) -> None:
    """Release 1's writes still work after 0002, and this release reads release 1's rows."""
    from job_store.adapters.database import create_pool
    from job_store.adapters.postgres import PostgresJobStore

    first = load_migrations()[0]
    conn = await asyncpg.connect(empty_database_url)
    try:
        await conn.execute(first.sql)
        old_job = uuid.uuid4()
        await conn.execute(_RELEASE_1_INSERT, old_job)
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("INSERT INTO schema_migrations VALUES (1, $1)", first.name)
        assert [m.version for m in await migrate_database(empty_database_url)] == [2, 3, 4]
        # Release 1, still running during the rollout, writes as it always did.
        await conn.execute(_RELEASE_1_INSERT, uuid.uuid4())
        await conn.execute(
            "UPDATE jobs SET status = 'processing', version = 2 WHERE id = $1", old_job
        )
    finally:
        await conn.close()
    pool = await create_pool(empty_database_url, max_size=1)
    try:
        row = await PostgresJobStore(pool).get(old_job)
    finally:
        await pool.close()
    assert row is not None
    assert (row.status, row.attempts, row.deadline_at, row.input_truncated) == (
        "processing",
        0,
        None,
        False,
    )
