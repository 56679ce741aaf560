"""The one-statement write against real Postgres: all of a batch or, when any of its jobs
changed since it was read (or a job it inserts appeared), none of it."""

from __future__ import annotations

import asyncio
import uuid

from job_store.adapters.database import Pool
from job_store.adapters.postgres import PostgresJobStore
from job_store.batches import apply_events
from job_store.transitions import Change, transition
from jobs_testkit.events import requested, submitted
from jobs_testkit.waiting import eventually


async def _waiting_on_a_lock(pool: Pool) -> bool:
    """Whether a session of this test's database waits for a lock another one holds."""
    async with pool.acquire() as conn:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    return bool(waiting)


async def _history_count(pool: Pool, job_id: uuid.UUID) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM job_history WHERE job_id = $1", job_id))


async def test_a_batch_is_written_whole_when_nothing_changed_since_it_was_read(
    pool: Pool,
) -> None:
    store = PostgresJobStore(pool)
    old, new = uuid.uuid4(), uuid.uuid4()
    await apply_events([requested(old)], store)
    rows = await store.read_many([old, new])
    assert set(rows) == {old}
    moved = transition(rows[old], submitted(old))
    created = transition(None, requested(new))
    assert isinstance(moved, Change)
    assert isinstance(created, Change)

    written = await store.write_unless_changed(
        {old: rows[old].version, new: None},
        [moved.row],
        [created.row],
        [moved.entry, created.entry],
    )

    assert written
    after = await store.read_many([old, new])
    assert after[old].status == "processing"
    assert after[old].version == 2
    assert after[new].status == "pending"
    assert await _history_count(pool, old) == 2
    assert await _history_count(pool, new) == 1


async def test_nothing_is_written_when_a_job_moved_on_since_it_was_read(pool: Pool) -> None:
    store = PostgresJobStore(pool)
    job, other = uuid.uuid4(), uuid.uuid4()
    await apply_events([requested(job), requested(other)], store)
    rows = await store.read_many([job, other])
    await apply_events([submitted(job)], store)  # another writer, after the read
    moved = transition(rows[job], submitted(job, prediction="p-other"))
    other_moved = transition(rows[other], submitted(other))
    assert isinstance(moved, Change)
    assert isinstance(other_moved, Change)

    written = await store.write_unless_changed(
        {job: rows[job].version, other: rows[other].version},
        [moved.row, other_moved.row],
        [],
        [moved.entry, other_moved.entry],
    )

    assert not written
    after = await store.read_many([job, other])
    assert after[job].prediction_id != "p-other"
    assert after[other].status == "pending"  # all or nothing: the unchanged job is untouched
    assert await _history_count(pool, other) == 1


async def test_nothing_is_written_when_a_job_to_insert_appeared(pool: Pool) -> None:
    store = PostgresJobStore(pool)
    job = uuid.uuid4()
    created = transition(None, requested(job))
    assert isinstance(created, Change)
    await apply_events([requested(job)], store)  # inserted since this batch looked

    assert not await store.write_unless_changed({job: None}, [], [created.row], [created.entry])
    assert await _history_count(pool, job) == 1


async def test_an_insert_that_loses_a_race_in_flight_undoes_the_whole_statement(
    pool: Pool,
) -> None:
    store = PostgresJobStore(pool)
    job, other = uuid.uuid4(), uuid.uuid4()
    await apply_events([requested(other)], store)
    rows = await store.read_many([other])
    created = transition(None, requested(job))
    other_moved = transition(rows[other], submitted(other))
    assert isinstance(created, Change)
    assert isinstance(other_moved, Change)

    async with pool.acquire() as rival, rival.transaction():
        # Another writer inserts the job and has not committed when the statement starts.
        await rival.execute(
            "INSERT INTO jobs (id, user_id, type, status, version, input, created_at,"
            " updated_at) VALUES ($1, 'u', 'script_generation', 'pending', 1, '{}', now(), now())",
            job,
        )
        write = asyncio.create_task(
            store.write_unless_changed(
                {job: None, other: rows[other].version},
                [other_moved.row],
                [created.row],
                [created.entry, other_moved.entry],
            )
        )
        # The statement now waits on the rival's uncommitted row: Postgres shows it waiting.
        await eventually(lambda: _waiting_on_a_lock(pool), what="the write waiting on the row")
        assert not write.done()

    assert await write is False
    after = await store.read_many([job, other])
    assert after[other].status == "pending"
    assert await _history_count(pool, job) == 0
    assert await _history_count(pool, other) == 1


async def test_a_redelivered_request_changes_nothing(pool: Pool) -> None:
    store = PostgresJobStore(pool)
    job = uuid.uuid4()
    (first,) = await apply_events([requested(job)], store)
    (again,) = await apply_events([requested(job, s=5)], store)
    assert isinstance(first, Change)
    assert again is None
    assert await _history_count(pool, job) == 1
    assert (await store.read_many([job]))[job].version == 1
