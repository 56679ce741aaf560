"""What the gateway's handlers need from the outside world, as Protocols the adapters fulfil,
and the port-level types they speak in. "Does not answer" is `jobs_runtime.errors.Unavailable`
on every port."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal, NamedTuple, Protocol

import msgspec

from jobs_proto.api import GetJob, GetJobHistory, JobHistory, JobPage, JobReply, ListJobs
from jobs_proto.events import JobEvent, JobRequested
from jobs_proto.spend import (
    BudgetDecision,
    BudgetScope,
    GetUsage,
    ReleaseBudget,
    ReserveBudget,
    UsageReport,
)

Clock = Callable[[], datetime]
NewJobId = Callable[[], uuid.UUID]
Sleep = Callable[[float], Awaitable[None]]


class BadCursor(Exception):
    """The job-store refused a cursor: malformed, or (a list's) made for another user or other
    filters (`400`)."""


class EventBus(Protocol):
    async def publish(self, event: JobEvent) -> None:
        """Return once JetStream has stored `event`; raise `Unavailable` otherwise."""


class JobStore(Protocol):
    async def get_job(self, request: GetJob) -> JobReply:
        """The job-store's answer (`job` null: unknown or not this user's); `Unavailable`
        when it does not answer."""

    async def list_jobs(self, request: ListJobs) -> JobPage:
        """One page of the user's jobs, newest first; `BadCursor` when the job-store refuses
        the cursor, `Unavailable` when it does not answer or cannot read."""

    async def job_history(self, request: GetJobHistory) -> JobHistory:
        """One page of a job's applied changes, oldest first (`entries` null: unknown or not
        this user's); `BadCursor` when the job-store refuses the cursor, `Unavailable` when
        it does not answer or cannot read."""


class Budgets(Protocol):
    """The job-store's budgets and usage (`svc.job-store.reserve|release|usage`); each
    raises `Unavailable` when it does not answer."""

    async def reserve(self, request: ReserveBudget) -> BudgetDecision:
        """Reserve a job's maximum cost, or the budget it would pass; atomic across
        replicas and idempotent per job id."""

    async def release(self, request: ReleaseBudget) -> None:
        """Free the reservation of a job that was never published."""

    async def usage(self, request: GetUsage) -> UsageReport:
        """A user's ended jobs' cost over a span of days, and their month's budget."""


class RequestedLog(Protocol):
    async def find_requested(self, job_id: uuid.UUID) -> JobRequested | None:
        """The `job.requested.<jobId>` event still in the stream, if any; `Unavailable` when
        the stream cannot be asked."""


# An idempotency record's life: `admitting` while its first request publishes the job,
# `admitted` once it is stored (the answer is then replayed), `failed` when that publish
# failed (the next request with the key publishes the same job id again).
KeyState = Literal["admitting", "admitted", "failed"]


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What an `Idempotency-Key` stands for: a fingerprint of the request that used it first
    and the job id that request was given before it published anything."""

    fingerprint: str
    job_id: uuid.UUID
    state: KeyState
    # When the request now in charge of the key took it; a stale `admitting` was abandoned.
    since: datetime


class StoredRecord(NamedTuple):
    record: IdempotencyRecord
    revision: int


class IdempotencyKeys(Protocol):
    """Records by slot (a hash of user and key), shared by every gateway replica; each write
    is a compare-and-set, so of two concurrent requests exactly one takes a key.
    Every method raises `Unavailable` when the store does not answer."""

    async def read(self, slot: str) -> StoredRecord | None:
        """The record, or `None` when the slot is free (never used, expired or deleted)."""

    async def create(self, slot: str, record: IdempotencyRecord) -> int | None:
        """Store `record` if the slot is free: its revision, else `None`."""

    async def update(self, slot: str, record: IdempotencyRecord, revision: int) -> int | None:
        """Replace the record if it is still at `revision`: the new revision, else `None`."""


class Admission(Protocol):
    """A limit on new jobs (`USER_MAX_OPEN_JOBS`): `hold` raises to refuse one, and every
    `hold` that returned is ended by one `release` naming the job admitted, if any."""

    async def hold(self, user_id: str) -> None: ...

    def release(self, user_id: str, job_id: uuid.UUID | None) -> None: ...


class JwksFetchError(Exception):
    """The JWKS document could not be fetched; the message says why."""


class JwksSource(Protocol):
    async def fetch(self) -> bytes:
        """The JWKS document (`{"keys": [...]}`) as served; raise `JwksFetchError` otherwise.
        Must not block the event loop."""


# Where a job's `GET` answer came from: the finished-jobs cache, the running jobs' views, or
# the job-store.
ReadSource = Literal["cache", "job_view", "job_store"]
# Why a create was refused over its `Idempotency-Key`.
ConflictReason = Literal["reused", "in_progress"]


class GatewayObserver(Protocol):
    """The facts the gateway's metrics count, one method each (`adapters/metrics.py`)."""

    def job_admitted(self, job_type: str) -> None: ...

    def idempotent_replay(self) -> None: ...

    def idempotency_conflict(self, reason: ConflictReason) -> None: ...

    def limited(self, limit: str) -> None:
        """A per-user limit (`rate`, `open_jobs`, `streams`) refused a request (`429`)."""

    def streams_full(self) -> None:
        """A stream refused `503`: the process holds `MAX_STREAMS`."""

    def budget_exceeded(self, scope: BudgetScope) -> None:
        """A job refused `402`: it would pass the user's (`user`) or the day's (`global`)
        budget."""

    def job_read(self, source: ReadSource) -> None: ...

    def stream_opened(self) -> None: ...

    def output_wanted(self, published: int, failed: int) -> None:
        """`OutputWanted` messages published in one go, and those that could not be."""

    def missed_change(self) -> None:
        """The resync found a job changed without this process hearing of it (a lost
        announcement) and handed its streams the change."""


class NoObserver:
    """Counts nothing: for tests and tools that do not serve metrics."""

    def job_admitted(self, job_type: str) -> None:
        pass

    def idempotent_replay(self) -> None:
        pass

    def idempotency_conflict(self, reason: ConflictReason) -> None:
        pass

    def limited(self, limit: str) -> None:
        pass

    def streams_full(self) -> None:
        pass

    def budget_exceeded(self, scope: BudgetScope) -> None:
        pass

    def job_read(self, source: ReadSource) -> None:
        pass

    def stream_opened(self) -> None:
        pass

    def output_wanted(self, published: int, failed: int) -> None:
        pass

    def missed_change(self) -> None:
        pass
