"""The store's contract, run over the in-memory fake and over `PostgresJobStore` on a real
Postgres: what the applier and the reads rely on (a transaction locking and writing a batch,
the guarded write, a row, a page of a user's jobs, a history, stuck and finished jobs) answers
the same from both."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import TypeAlias

import pytest

from job_store.adapters.postgres import PostgresJobStore
from job_store.model import HistoryEntry, JobRow
from job_store.transitions import Change, transition
from jobs_proto.events import AnyJobEvent
from jobs_testkit.events import OWNER, completed, requested, started, submitted

from ..fakes import OptimisticMemoryStore

Store: TypeAlias = OptimisticMemoryStore | PostgresJobStore


@pytest.fixture(params=["memory", "postgres"])
def any_store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return OptimisticMemoryStore()
    store: PostgresJobStore = request.getfixturevalue("store")
    return store


class _RolledBack(Exception):
    pass


def _change(row: JobRow | None, event: AnyJobEvent) -> Change:
    change = transition(row, event)
    assert isinstance(change, Change)
    return change


def _facts(entries: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    # `recorded_at` is the store's clock: the one column the two stores fill differently.
    return [replace(e, recorded_at=None) for e in entries]


async def _write_then_roll_back(store: Store, change: Change) -> bool:
    """Insert `change` in a transaction, then roll it back, as the applier does when an insert
    lost its race: what the write answered."""
    written = True
    try:
        async with store.transaction() as tx:
            written = await tx.write([], [change.row], [change.entry])
            raise _RolledBack
    except _RolledBack:
        return written


async def _story(store: Store, *events: AnyJobEvent) -> tuple[JobRow, list[HistoryEntry]]:
    """Each event of one job in a transaction of its own, as the applier writes them."""
    row: JobRow | None = None
    entries: list[HistoryEntry] = []
    for event in events:
        async with store.transaction() as tx:
            locked = await tx.lock_many([event.job_id])
            assert locked.get(event.job_id) == row
            change = _change(row, event)
            updates, inserts = ([], [change.row]) if row is None else ([change.row], [])
            assert await tx.write(updates, inserts, [change.entry])
        row = change.row
        entries.append(change.entry)
    assert row is not None
    return row, entries


async def test_a_batch_written_in_a_transaction_reads_back_as_written(any_store: Store) -> None:
    jobs = [uuid.uuid4(), uuid.uuid4()]
    changes = [_change(None, requested(job, input={"topic": "tides"})) for job in jobs]
    async with any_store.transaction() as tx:
        assert await tx.lock_many(jobs) == {}
        assert await tx.write([], [c.row for c in changes], [c.entry for c in changes])
    for change in changes:
        assert await any_store.get(change.row.job_id) == change.row
        history = await any_store.history(change.row.job_id)
        assert _facts(history) == [change.entry]
        assert all(e.recorded_at is not None for e in history)
    async with any_store.transaction() as tx:
        assert await tx.lock_many(jobs) == {c.row.job_id: c.row for c in changes}


async def test_updates_apply_in_order_and_the_history_pages_by_seq(any_store: Store) -> None:
    job = uuid.uuid4()
    row, entries = await _story(
        any_store, requested(job), submitted(job), started(job), completed(job)
    )
    assert await any_store.get(job) == row
    assert row.status == "succeeded"
    assert _facts(await any_store.history(job)) == entries
    assert _facts(await any_store.history(job, after_seq=1, limit=2)) == entries[1:3]
    assert await any_store.history(job, after_seq=4) == []


async def test_inserting_a_job_that_exists_writes_nothing(any_store: Store) -> None:
    job = uuid.uuid4()
    row, entries = await _story(any_store, requested(job))
    again = _change(None, requested(job, s=5))
    assert not await _write_then_roll_back(any_store, again)
    assert await any_store.get(job) == row
    assert _facts(await any_store.history(job)) == entries


async def test_a_deleted_job_is_gone_with_its_history(any_store: Store) -> None:
    job, kept = uuid.uuid4(), uuid.uuid4()
    await _story(any_store, requested(job), submitted(job))
    kept_row, _ = await _story(any_store, requested(kept))
    async with any_store.transaction() as tx:
        await tx.lock_many([job])
        await tx.delete(job)
    assert await any_store.get(job) is None
    assert await any_store.history(job) == []
    assert await any_store.get(kept) == kept_row


async def test_a_users_jobs_come_newest_first_filtered_and_page_by_page(any_store: Store) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    rows = [(await _story(any_store, requested(uuid.uuid4(), s=i, user=user)))[0] for i in range(3)]
    latest = uuid.uuid4()
    running, _ = await _story(any_store, requested(latest, s=3, user=user), submitted(latest, s=4))
    await _story(any_store, requested(uuid.uuid4(), s=9, user="someone-else"))

    first = await any_store.list_jobs(user, statuses=[], types=[], after=None, limit=2)
    assert [s.job_id for s in first] == [running.job_id, rows[2].job_id]
    assert (first[0].status, first[0].version, first[0].prediction_id) == (
        "processing",
        2,
        running.prediction_id,
    )
    last = first[-1]
    rest = await any_store.list_jobs(
        user, statuses=[], types=[], after=(last.created_at, last.job_id), limit=5
    )
    assert [s.job_id for s in rest] == [rows[1].job_id, rows[0].job_id]
    pending = await any_store.list_jobs(
        user, statuses=["pending"], types=["script_generation"], after=None, limit=5
    )
    assert [s.job_id for s in pending] == [r.job_id for r in reversed(rows)]
    assert await any_store.list_jobs(user, statuses=[], types=["other"], after=None, limit=5) == []


async def test_stuck_and_finished_jobs_come_oldest_first(any_store: Store) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    done = [uuid.uuid4(), uuid.uuid4()]
    for i, job in enumerate(done):
        await _story(any_store, requested(job, user=user), completed(job, s=20 - i))
    waiting, processing = uuid.uuid4(), uuid.uuid4()
    await _story(any_store, requested(waiting, user=user))
    await _story(any_store, requested(processing, user=user), submitted(processing))

    finished = await any_store.finished_before(3600, 100)
    assert [j for j in finished if j in done] == list(reversed(done))
    stuck = [r.job_id for r in await any_store.stuck_jobs(60, 100) if r.user_id == user]
    assert stuck == [processing]
    both = await any_store.stuck_jobs(60, 100, pending_older_than_s=60)
    assert [r.job_id for r in both if r.user_id == user] == [waiting, processing]


async def test_a_guarded_write_happens_only_at_the_versions_read(any_store: Store) -> None:
    job, new = uuid.uuid4(), uuid.uuid4()
    row, _ = await _story(any_store, requested(job))
    assert await any_store.read_many([job, new]) == {job: row}

    moved = _change(row, submitted(job))
    created = _change(None, requested(new))
    assert await any_store.write_unless_changed(
        {job: row.version, new: None}, [moved.row], [created.row], [moved.entry, created.entry]
    )
    assert await any_store.read_many([job, new]) == {job: moved.row, new: created.row}

    # Judged against what is no longer there: nothing written.
    late = _change(row, started(job))
    assert not await any_store.write_unless_changed(
        {job: row.version}, [late.row], [], [late.entry]
    )
    again = _change(None, requested(new, s=5))
    assert not await any_store.write_unless_changed({new: None}, [], [again.row], [again.entry])
    assert await any_store.get(job) == moved.row
    assert await any_store.get(new) == created.row
    assert [e.seq for e in await any_store.history(job)] == [1, 2]


async def test_an_unknown_job_reads_as_none(any_store: Store) -> None:
    job = uuid.uuid4()
    assert await any_store.get(job) is None
    assert await any_store.history(job) == []
    assert await any_store.read_many([job]) == {}
    assert (await _story(any_store, requested(job)))[0].user_id == OWNER
