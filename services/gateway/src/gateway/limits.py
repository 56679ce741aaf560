"""Per-user admission limits: requests per second (a token bucket per user, in this replica's
memory) and jobs not yet terminal (counted by the job-store, plus what this replica admitted
that the job-store may not have consumed yet). Refusals become `429` with `Retry-After`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from jobs_proto.api import GetJob, ListJobs
from jobs_proto.status import TERMINAL_JOB_STATUSES, JobStatus
from jobs_runtime.buckets import TokenBuckets
from jobs_runtime.buckets import retry_after_s as retry_after_s_of
from jobs_runtime.errors import Unavailable

from .ports import BadCursor, JobStore

Monotonic = Callable[[], float]

# The statuses of a job that counts against `USER_MAX_OPEN_JOBS`.
OPEN_STATUSES: Final[list[JobStatus]] = ["pending", "processing"]
# Largest page the job-store answers (`ListJobs.limit`).
_PAGE: Final = 200


class LimitExceeded(Exception):
    """A per-user limit (`limit`: `rate` or `open_jobs`) refused the request (`429`);
    `retry_after_s` is a whole second or more."""

    def __init__(self, detail: str, retry_after_s: float, limit: str) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s_of(retry_after_s)
        self.limit = limit


class RequestRate:
    """A token bucket per user (the runtime's `TokenBuckets`): `burst` requests at once,
    refilled at `rate_per_s`.

    Per replica: behind a load balancer spreading one user over `n` replicas a user may get
    up to `n` times the rate, which is what an abuse limit needs (no shared state to ask on
    every request). At most `max_users` buckets are kept; a bucket pushed out comes back
    full, so the bound only ever errs on the lenient side.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        max_users: int = 100_000,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._buckets = TokenBuckets(
            rate_per_s, max(1.0, burst), max_keys=max_users, monotonic=monotonic
        )

    def take(self, user_id: str) -> None:
        """Count one request of `user_id`; `LimitExceeded` when the bucket is empty."""
        wait_s = self._buckets.take(user_id)
        if wait_s is not None:
            raise LimitExceeded(
                f"more than {self._buckets.rate_per_s:g} requests per second; retry later",
                wait_s,
                "rate",
            )


@dataclass(slots=True)
class _Admissions:
    """One user's admissions this replica knows of beyond the job-store's view."""

    in_flight: int = 0
    # Admitted (stored in JetStream) at a monotonic time; the job-store may lag behind.
    recent: dict[uuid.UUID, float] = field(default_factory=dict)


class OpenJobs:
    """`USER_MAX_OPEN_JOBS`: a new job is refused while its user has `max_open` jobs
    `pending` or `processing`.

    The count is the job-store's (a list filtered by those statuses, `max_open + 1` at most),
    plus jobs this replica admitted within `recent_s` that the job-store does not know yet,
    plus admissions in flight here. It is approximate across replicas: another replica's
    admission the job-store has not consumed yet is not seen, so for the time the job-store
    lags (normally milliseconds) a user spreading creates over `n` replicas can exceed the
    limit by up to `n - 1` jobs. When the job-store does not answer, the limit counts what
    this replica knows alone (admission does not depend on the job-store being up).
    """

    def __init__(
        self,
        store: JobStore,
        max_open: int,
        *,
        recent_s: float = 10.0,
        retry_after_s: float = 5.0,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._store = store
        self._max_open = max_open
        self._recent_s = recent_s
        self._retry_after_s = retry_after_s
        self._now = monotonic
        self._users: dict[str, _Admissions] = {}

    async def hold(self, user_id: str) -> None:
        """Reserve room for one more job of `user_id`, or raise `LimitExceeded`; every `hold`
        that returns is followed by exactly one `release`."""
        mine = self._users.setdefault(user_id, _Admissions())
        # Counted before the job-store is asked, so concurrent creates of one user here see
        # each other: they may both be refused at the edge, never both admitted past it.
        mine.in_flight += 1
        try:
            open_count = await self._count(user_id, mine)
        except BaseException:
            self.release(user_id, None)
            raise
        if open_count + mine.in_flight - 1 >= self._max_open:
            self.release(user_id, None)
            raise LimitExceeded(
                f"at most {self._max_open} jobs may be pending or processing at once; "
                "retry when one has finished",
                self._retry_after_s,
                "open_jobs",
            )

    def release(self, user_id: str, job_id: uuid.UUID | None) -> None:
        """End a `hold`: `job_id` is the job admitted under it, `None` when none was."""
        mine = self._users.get(user_id)
        if mine is None:
            return
        mine.in_flight -= 1
        if job_id is not None:
            mine.recent[job_id] = self._now()
        self._forget_old(mine)
        if mine.in_flight <= 0 and not mine.recent:
            del self._users[user_id]

    def _forget_old(self, mine: _Admissions) -> None:
        horizon = self._now() - self._recent_s
        for job_id in [j for j, at in mine.recent.items() if at < horizon]:
            del mine.recent[job_id]

    async def _count(self, user_id: str, mine: _Admissions) -> int:
        self._forget_old(mine)
        try:
            known = await self._open_in_store(user_id)
        except (Unavailable, BadCursor):
            return len(mine.recent)
        count = len(known)
        for job_id in list(mine.recent):
            if job_id in known:
                continue
            try:
                reply = await self._store.get_job(GetJob(job_id=job_id, user_id=user_id))
            except Unavailable:
                count += 1
                continue
            if reply.job is not None and reply.job.status in TERMINAL_JOB_STATUSES:
                # Finished already: the job-store has it, and it no longer counts.
                mine.recent.pop(job_id, None)
            else:
                # Not consumed yet (or it became open after the list was read).
                count += 1
        return count

    async def _open_in_store(self, user_id: str) -> set[uuid.UUID]:
        """Ids of the user's open jobs, `max_open + 1` at most (more need not be known)."""
        wanted = self._max_open + 1
        found: set[uuid.UUID] = set()
        cursor: str | None = None
        while len(found) < wanted:
            page = await self._store.list_jobs(
                ListJobs(
                    user_id=user_id,
                    limit=min(_PAGE, wanted - len(found)),
                    cursor=cursor,
                    statuses=list(OPEN_STATUSES),
                )
            )
            found.update(item.job_id for item in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        return found
