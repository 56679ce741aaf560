"""The job-store's test doubles, once: an in-memory store that reads its rows back through the
Postgres adapter's own column mapping (and runs the same contract tests as `PostgresJobStore`),
and recording stand-ins for the other ports."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from job_store.adapters.columns import history_from_record, row_from_record, summary_from_record
from job_store.model import HistoryEntry, JobRow
from job_store.ports import NoObserver
from jobs_proto.api import JobChanged, JobSummary
from jobs_proto.events import AnyJobEvent, JobPurged
from jobs_runtime.errors import Unavailable
from jobs_testkit.events import T0

# "Now" for the fake's age questions (stuck, finished): the test events' clock plus a day.
NOW = T0 + timedelta(days=1)


def _columns(row: JobRow) -> dict[str, Any]:
    """A row as the `jobs` columns hold it: what the fake stands for Postgres's storage with."""
    return {
        "id": row.job_id,
        "user_id": row.user_id,
        "type": row.job_type,
        "status": row.status,
        "version": row.version,
        "input": row.input,
        "output": row.output,
        "error_code": row.error_code,
        "error_message": row.error_message,
        "prediction_id": row.prediction_id,
        "cancel_requested": row.cancel_requested,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "submitted_at": row.submitted_at,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "deadline_at": row.deadline_at,
        "attempts": row.attempts,
        "input_truncated": row.input_truncated,
        "price_input_token_usd": row.price_input_token_usd,
        "price_output_token_usd": row.price_output_token_usd,
        "price_predict_second_usd": row.price_predict_second_usd,
        "reserved_micros": row.reserved_micros,
        "predict_time_s": row.predict_time_s,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost_micros": row.cost_micros,
    }


def read_back(row: JobRow) -> JobRow:
    """The row as a read gives it: through production's mapping of a `jobs` record."""
    return row_from_record(_columns(row))


def _entry_read_back(entry: HistoryEntry) -> HistoryEntry:
    # Recorded when written, as far as the fake's clock goes.
    record = {
        "job_id": entry.job_id,
        "seq": entry.seq,
        "kind": entry.kind,
        "occurred_at": entry.occurred_at,
        "recorded_at": entry.recorded_at or entry.occurred_at,
        "source": entry.source,
        "message_id": entry.message_id,
        "summary": entry.summary,
    }
    return history_from_record(record)


class MemoryTransaction:
    """Read-committed like Postgres: reads see committed rows, writes show at commit, and
    `lock` of a row that does not exist yet locks nothing."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.writes: dict[uuid.UUID, JobRow] = {}
        self.entries: list[HistoryEntry] = []
        self.deletes: list[uuid.UUID] = []
        self.held: list[asyncio.Lock] = []

    async def lock(self, job_id: uuid.UUID) -> JobRow | None:
        await asyncio.sleep(0)  # a round trip: other tasks run meanwhile
        if job_id in self.writes:
            return self.writes[job_id]
        if job_id not in self._store.rows:
            return None
        lock = self._store.row_locks[job_id]
        if lock not in self.held:
            await lock.acquire()
            self.held.append(lock)
        return read_back(self._store.rows[job_id])

    async def lock_many(self, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, JobRow]:
        found: dict[uuid.UUID, JobRow] = {}
        for job_id in sorted(job_ids):
            row = await self.lock(job_id)
            if row is not None:
                found[job_id] = row
        return found

    async def delete(self, job_id: uuid.UUID) -> None:
        await asyncio.sleep(0)
        self.deletes.append(job_id)
        self.writes.pop(job_id, None)

    async def insert(self, row: JobRow) -> bool:
        await asyncio.sleep(0)
        if row.job_id in self._store.rows and row.job_id not in self.deletes:
            return False
        self.writes[row.job_id] = row
        return True

    async def update(self, row: JobRow) -> None:
        await asyncio.sleep(0)
        self.writes[row.job_id] = row

    async def append_history(self, entry: HistoryEntry) -> None:
        self.entries.append(replace(entry, recorded_at=entry.occurred_at))

    async def append_history_many(self, entries: Sequence[HistoryEntry]) -> None:
        await self._store.fail_for(entries)
        for entry in entries:
            await self.append_history(entry)

    async def write(
        self, updates: Sequence[JobRow], inserts: Sequence[JobRow], entries: Sequence[HistoryEntry]
    ) -> bool:
        for row in updates:
            await self.update(row)
        for row in inserts:
            if not await self.insert(row):
                return False
        await self.append_history_many(entries)
        return True


class MemoryStore:
    """The `JobStore` port in memory; `rows` and `entries` as committed."""

    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, JobRow] = {}
        self.entries: list[HistoryEntry] = []
        self.row_locks: defaultdict[uuid.UUID, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Committed transactions, each as the number of history entries it wrote.
        self.commits: list[int] = []
        # A job whose writes fail (a poison event, as far as the store can tell).
        self.poison: uuid.UUID | None = None
        # How many transactions from now on find the database unreachable.
        self.unavailable = 0

    async def fail_for(self, entries: Sequence[HistoryEntry]) -> None:
        if any(e.job_id == self.poison for e in entries):
            raise ValueError("the store cannot take this job's change")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        if self.unavailable:
            self.unavailable -= 1
            raise Unavailable("postgres is restarting")
        tx = MemoryTransaction(self)
        try:
            yield tx
            await asyncio.sleep(0)
            for job_id in tx.deletes:
                self.rows.pop(job_id, None)
                self.entries = [e for e in self.entries if e.job_id != job_id]
            self.rows.update(tx.writes)
            self.entries.extend(tx.entries)
            self.commits.append(len(tx.entries))
        finally:
            for lock in tx.held:
                lock.release()

    async def get(self, job_id: uuid.UUID) -> JobRow | None:
        row = self.rows.get(job_id)
        return None if row is None else read_back(row)

    async def list_jobs(
        self,
        user_id: str,
        *,
        statuses: Sequence[str],
        types: Sequence[str],
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobSummary]:
        # The same order as the Postgres query: newest first, ties by id ascending.
        rows = sorted(
            (r for r in self.rows.values() if r.user_id == user_id),
            key=lambda r: (-r.created_at.timestamp(), r.job_id),
        )
        rows = [r for r in rows if (not statuses or r.status in statuses)]
        rows = [r for r in rows if (not types or r.job_type in types)]
        if after is not None:
            key = (-after[0].timestamp(), after[1])
            rows = [r for r in rows if (-r.created_at.timestamp(), r.job_id) > key]
        return [summary_from_record(_columns(r)) for r in rows[:limit]]

    async def stuck_jobs(
        self, older_than_s: float, limit: int, *, pending_older_than_s: float | None = None
    ) -> list[JobRow]:
        def since(row: JobRow) -> datetime:
            if row.status == "pending":
                return row.created_at
            return row.submitted_at or row.started_at or row.updated_at

        def stuck(row: JobRow) -> bool:
            if row.status == "processing":
                return since(row) < NOW - timedelta(seconds=older_than_s)
            return (
                row.status == "pending"
                and pending_older_than_s is not None
                and row.created_at < NOW - timedelta(seconds=pending_older_than_s)
            )

        found = sorted(filter(stuck, self.rows.values()), key=lambda r: (since(r), r.job_id))
        return [read_back(r) for r in found[:limit]]

    async def versions(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        return {j: self.rows[j].version for j in job_ids if j in self.rows}

    async def history(
        self, job_id: uuid.UUID, *, after_seq: int = 0, limit: int | None = None
    ) -> list[HistoryEntry]:
        found = sorted(
            (e for e in self.entries if e.job_id == job_id and e.seq > after_seq),
            key=lambda e: e.seq,
        )
        return [_entry_read_back(e) for e in (found if limit is None else found[:limit])]

    async def finished_before(self, age_s: float, limit: int) -> list[uuid.UUID]:
        cutoff = NOW - timedelta(seconds=age_s)
        done = [
            r for r in self.rows.values() if r.completed_at is not None and r.completed_at < cutoff
        ]
        return [r.job_id for r in sorted(done, key=lambda r: (r.completed_at, r.job_id))][:limit]


class OptimisticMemoryStore(MemoryStore):
    """A store that also writes without a transaction when nothing changed since its read
    (`OptimisticWrites`); `rival` changes a job between the read and the write (another
    replica)."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: Callable[[], None] | None = None
        self.optimistic_writes: list[bool] = []

    async def read_many(self, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, JobRow]:
        found = {j: read_back(self.rows[j]) for j in job_ids if j in self.rows}
        if self.rival is not None:
            self.rival()
            self.rival = None
        return found

    async def write_unless_changed(
        self,
        versions: Mapping[uuid.UUID, int | None],
        updates: Sequence[JobRow],
        inserts: Sequence[JobRow],
        entries: Sequence[HistoryEntry],
    ) -> bool:
        now = {j: self.rows[j].version if j in self.rows else None for j in versions}
        written = now == dict(versions)
        self.optimistic_writes.append(written)
        if written:
            self.rows.update({r.job_id: r for r in [*updates, *inserts]})
            self.entries.extend(entries)
            self.commits.append(len(entries))
        return written


class GatedStore(MemoryStore):
    """Writes of `gated`'s changes wait at `gate` (a slow commit)."""

    def __init__(self, gated: uuid.UUID) -> None:
        super().__init__()
        self.gated = gated
        self.gate = asyncio.Event()
        # Set once a write of `gated` waits at the gate.
        self.held = asyncio.Event()

    async def fail_for(self, entries: Sequence[HistoryEntry]) -> None:
        if any(e.job_id == self.gated for e in entries):
            self.held.set()
            await self.gate.wait()
        await super().fail_for(entries)


class MemoryResults:
    """The `ResultLoader` port over a dict of stored outputs, counting loads."""

    def __init__(self, objects: dict[str, str] | None = None) -> None:
        self.objects = objects or {}
        self.loads = 0

    async def load(self, ref: str) -> str | None:
        self.loads += 1
        return self.objects.get(ref)


class RecordingObserver(NoObserver):
    """The `JobStoreObserver` port, keeping what the applier and retention reported."""

    def __init__(self) -> None:
        self.applied_events: list[tuple[str, str]] = []
        self.waits: list[str] = []
        self.commits: list[tuple[int, str]] = []
        self.purges: list[int] = []
        self.spend: list[tuple[str, int]] = []
        self.released: list[int] = []

    def applied(self, kind: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.applied_events.append((kind, outcome))

    def waited(self, reason: str) -> None:
        self.waits.append(reason)

    def committed(self, events: int, mode: str) -> None:
        self.commits.append((events, mode))

    def purges_published(self, jobs: int) -> None:
        self.purges.append(jobs)

    def spent(self, job_type: str, micros: int) -> None:
        self.spend.append((job_type, micros))

    def reservations_released(self, count: int) -> None:
        self.released.append(count)


class RecordingAnnouncer:
    """The `ChangeAnnouncer` port, keeping the changes; `broken` fails each announcement."""

    def __init__(self, *, broken: bool = False) -> None:
        self.changes: list[JobChanged] = []
        self.broken = broken

    async def announce(self, change: JobChanged) -> None:
        if self.broken:
            raise ConnectionError("nats is gone")
        self.changes.append(change)


class RecordingParking:
    """The `Parking` port, keeping what was parked; `broken` fails each park."""

    def __init__(self, *, broken: bool = False) -> None:
        self.parked: list[tuple[AnyJobEvent, str]] = []
        self.broken = broken

    async def park(self, event: AnyJobEvent, reason: str, detail: str) -> None:
        if self.broken:
            raise ConnectionError("nats is gone")
        self.parked.append((event, reason))


class RecordingPublisher:
    """The `PurgePublisher` port, keeping the purges."""

    def __init__(self) -> None:
        self.events: list[JobPurged] = []

    async def publish(self, event: JobPurged) -> object:
        self.events.append(event)
        return None
