"""The reads the job-store answers: one job, a page of a user's jobs (with its opaque
cursor), the stuck jobs, a page of a job's history, the versions of many jobs; each reply kept
within the bytes a message may carry.

No I/O here: the store comes in as an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Final, TypeVar

import msgspec

from job_store.model import HistoryEntry, job_view, stuck_job
from job_store.ports import JobStore
from jobs_proto.api import (
    FindStuckJobs,
    GetJob,
    GetJobHistory,
    GetJobVersions,
    JobHistory,
    JobHistoryEntry,
    JobPage,
    JobReply,
    JobSummary,
    JobVersions,
    ListJobs,
    StuckJobs,
)

T = TypeVar("T", bound=msgspec.Struct)

# Room a reply keeps for its envelope (field names, the cursor, JSON punctuation).
_REPLY_OVERHEAD_BYTES: Final = 4096
_encoder: Final = msgspec.json.Encoder()


class RequestRejected(Exception):
    """A read request that cannot be answered as asked; `code` is the error reply's code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


async def get_job(query: GetJob, store: JobStore, *, max_bytes: int | None = None) -> JobReply:
    """One job for its owner; null alike for an unknown job and another user's job.

    A job whose reply would be over `max_bytes` (an output near the message size limit) comes
    without its output, marked `output_omitted`, rather than as an error.
    """
    row = await store.get(query.job_id)
    if row is None or row.user_id != query.user_id:
        return JobReply(job=None)
    reply = JobReply(job=job_view(row), input_truncated=row.input_truncated)
    if max_bytes is None or row.output is None or len(_encoder.encode(reply)) <= max_bytes:
        return reply
    return JobReply(
        job=job_view(replace(row, output=None)),
        output_omitted=True,
        output_bytes=len(row.output.encode()),
        input_truncated=row.input_truncated,
    )


def _filters_key(query: ListJobs) -> str:
    # A cursor is only valid for the user and filters it was made for; the key ties them.
    material = "\x1f".join(
        [query.user_id, ",".join(sorted(set(query.statuses))), ",".join(sorted(set(query.types)))]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


_cursor_decoder: Final = msgspec.json.Decoder(tuple[datetime, uuid.UUID, str])


def encode_cursor(query: ListJobs, last: JobSummary) -> str:
    """The opaque position after `last`: base64url of (created_at, job_id, filters key)."""
    raw = _encoder.encode((last.created_at, last.job_id, _filters_key(query)))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(query: ListJobs) -> tuple[datetime, uuid.UUID] | None:
    """The position `query.cursor` names; `RequestRejected("400")` if bad or foreign."""
    if query.cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(query.cursor + "=" * (-len(query.cursor) % 4))
        created_at, job_id, key = _cursor_decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise RequestRejected("400", "bad_cursor: not a cursor of this list") from None
    if key != _filters_key(query):
        raise RequestRejected("400", "bad_cursor: made for other filters") from None
    return created_at, job_id


async def list_jobs(query: ListJobs, store: JobStore, *, max_bytes: int) -> JobPage:
    """A page of the user's jobs, newest first, at most `limit` items and `max_bytes` encoded."""
    # Postgres refuses NUL in text: answer that as the caller's mistake, not as an outage.
    if "\x00" in query.user_id or any("\x00" in t for t in query.types):
        raise RequestRejected("400", "bad_filter: a filter holds a NUL character")
    after = decode_cursor(query)
    rows = await store.list_jobs(
        query.user_id,
        statuses=query.statuses,
        types=query.types,
        after=after,
        limit=query.limit + 1,  # one more than asked tells whether another page exists
    )
    # The first item always: a page must move on (the rest comes on the next page).
    items = _within_bytes(rows[: query.limit], max_bytes, at_least_one=True)
    more = len(rows) > len(items)
    return JobPage(items=items, next_cursor=encode_cursor(query, items[-1]) if more else None)


async def stuck_jobs(query: FindStuckJobs, store: JobStore, *, max_bytes: int) -> StuckJobs:
    """Jobs processing for longer than asked, oldest first, bounded by count and bytes."""
    rows = await store.stuck_jobs(
        query.older_than_s, query.limit + 1, pending_older_than_s=query.pending_older_than_s
    )
    items = _within_bytes([stuck_job(r) for r in rows[: query.limit]], max_bytes)
    return StuckJobs(items=items, truncated=len(rows) > len(items))


async def job_versions(query: GetJobVersions, store: JobStore) -> JobVersions:
    """The stored version of each named job that exists (ids named twice are asked once)."""
    job_ids = list(dict.fromkeys(query.job_ids))
    return JobVersions(versions=await store.versions(job_ids) if job_ids else {})


def history_view(entry: HistoryEntry) -> JobHistoryEntry:
    return JobHistoryEntry(
        seq=entry.seq,
        kind=entry.kind,
        occurred_at=entry.occurred_at,
        recorded_at=entry.recorded_at or entry.occurred_at,
        source=entry.source,
        message_id=entry.message_id,
        summary=entry.summary,
    )


def _history_after(cursor: str | None) -> int:
    # The cursor is the last `seq` a page held, so pages stay stable while entries are added.
    if cursor is None:
        return 0
    if not cursor.isdecimal() or len(cursor) > 9:
        raise RequestRejected("400", "bad_cursor: not a cursor of this history")
    return int(cursor)


async def job_history(query: GetJobHistory, store: JobStore, *, max_bytes: int) -> JobHistory:
    """A page of a job's history for its owner; null alike for an unknown job and another
    user's job. At most `limit` entries and `max_bytes` encoded; `next_cursor` for the rest."""
    after = _history_after(query.cursor)
    row = await store.get(query.job_id)
    if row is None or row.user_id != query.user_id:
        return JobHistory(entries=None)
    found = await store.history(query.job_id, after_seq=after, limit=query.limit + 1)
    entries = [history_view(e) for e in found]
    kept = _within_bytes(entries[: query.limit], max_bytes)
    more = len(kept) < len(entries)
    return JobHistory(
        entries=kept,
        truncated=more,
        next_cursor=str(kept[-1].seq if kept else after) if more else None,
    )


def _within_bytes(items: list[T], max_bytes: int, *, at_least_one: bool = False) -> list[T]:
    """The first of `items` that fit a reply of `max_bytes` with its envelope; with
    `at_least_one`, the first item even if it alone is over."""
    budget = max_bytes - _REPLY_OVERHEAD_BYTES
    kept: list[T] = []
    for item in items:
        size = len(_encoder.encode(item)) + 1
        if size > budget and (kept or not at_least_one):
            break
        budget -= size
        kept.append(item)
    return kept
