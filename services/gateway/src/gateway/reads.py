"""Reading jobs for their owner: one job (from the job-store, or from its `JobRequested` while
the job-store has not caught up), a page of them, a page of one's history, and what an event
stream sends first."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Final

from jobs_proto.api import GetJob, GetJobHistory, JobHistory, JobPage, JobView, ListJobs
from jobs_proto.pending import pending_view
from jobs_proto.status import JOB_STATUSES, is_terminal
from jobs_runtime.errors import Unavailable

from .ports import JobStore, RequestedLog
from .validation import MAX_LIMIT


class OutputTooLarge(Exception):
    """A job whose output the job-store cannot send in one reply (`output_bytes` of UTF-8,
    over the message size limit): the gateway says so (`413`) rather than show it without."""

    def __init__(self, job_id: uuid.UUID, output_bytes: int | None) -> None:
        size = f"{output_bytes} bytes" if output_bytes is not None else "too large"
        super().__init__(
            f"the output of job {job_id} is {size}, more than one answer of the job system "
            "can carry; GET /api/jobs lists its status without it"
        )
        self.output_bytes = output_bytes


async def read_job(
    user_id: str,
    job_id: uuid.UUID,
    store: JobStore,
    requested: RequestedLog,
    *,
    whole: bool = False,
) -> JobView | None:
    """The job as its owner sees it; `None` for an unknown job or another user's job.
    With `whole`, a job the job-store sends without its output (too large for a reply)
    raises `OutputTooLarge` instead of being shown with `output` null.

    The job-store may not have consumed a fresh `JobRequested` yet, or may be down: the
    request in the stream then still proves the job exists, so a GET right after the POST
    never answers `404`. Without that proof and without the job-store, nobody can tell an
    unknown job from one the job-store knows, so `Unavailable` propagates (`503`).
    """
    store_down: Unavailable | None = None
    try:
        reply = await store.get_job(GetJob(job_id=job_id, user_id=user_id))
    except Unavailable as exc:
        store_down = exc
    else:
        if reply.job is not None:
            if whole and reply.output_omitted:
                raise OutputTooLarge(job_id, reply.output_bytes)
            return reply.job
    event = await requested.find_requested(job_id)
    if event is not None:
        # Owner of a job never changes, so the stream alone may refuse another user's job.
        return pending_view(event) if event.user_id == user_id else None
    if store_down is not None:
        raise store_down
    return None


# `GET /api/events`: the most open jobs whose state opens the stream (`USER_MAX_OPEN_JOBS`
# normally keeps a user far below), and how many recent jobs a resumed stream looks through.
MAX_OPEN_JOBS_SENT: Final = 1000
RESUME_SCAN: Final = 200
# Job-store reads at once while opening one stream.
_READS_AT_ONCE: Final = 8


async def jobs_to_replay(
    user_id: str, store: JobStore, changed_since: datetime | None
) -> list[JobView]:
    """What `GET /api/events` sends first: every job of the user not yet terminal and, when
    resuming, the recent ones changed since `changed_since` (the stream's position); oldest
    change first."""
    wanted: list[uuid.UUID] = []
    cursor: str | None = None
    while len(wanted) < MAX_OPEN_JOBS_SENT:
        page = await store.list_jobs(
            ListJobs(
                user_id=user_id,
                limit=MAX_LIMIT,
                cursor=cursor,
                statuses=[s for s in JOB_STATUSES if not is_terminal(s)],
            )
        )
        wanted += [item.job_id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    if changed_since is not None:
        recent = await store.list_jobs(ListJobs(user_id=user_id, limit=RESUME_SCAN))
        wanted += [
            item.job_id
            for item in recent.items
            if item.updated_at >= changed_since and item.job_id not in wanted
        ]
    gate = asyncio.Semaphore(_READS_AT_ONCE)

    async def read(job_id: uuid.UUID) -> JobView | None:
        async with gate:
            return (await store.get_job(GetJob(job_id=job_id, user_id=user_id))).job

    views = await asyncio.gather(*(read(job_id) for job_id in dict.fromkeys(wanted)))
    return sorted((v for v in views if v is not None), key=lambda v: v.updated_at)


async def list_jobs(query: ListJobs, store: JobStore) -> JobPage:
    """One page of the caller's jobs, newest first, as the job-store answers it."""
    return await store.list_jobs(query)


async def job_history(query: GetJobHistory, store: JobStore) -> JobHistory | None:
    """One page of a job's applied changes for its owner, oldest first; `None` for an unknown
    job and another user's alike.

    Only the job-store keeps a history: a job it has not consumed yet has none to show, so it
    is `None` too (its `GET` may still answer from the stream), and a store that does not
    answer is `Unavailable`, never a `None` it did not say.
    """
    page = await store.job_history(query)
    return None if page.entries is None else page
