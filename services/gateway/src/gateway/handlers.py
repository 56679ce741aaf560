"""The gateway's use cases over its ports: validate and admit a job, read, list and cancel a
job for its owner.

The adapters call the message handlers at the end (`submit_job`, `read`, `cancel`,
`list_page`): one message and the `Dependencies` built in `__main__` in, an outcome out
(`Admitted | Found | NotFound | Refused`, a refusal naming its reason). Validation
(`parse_create_job`, `parse_list_query`, ...) raises `InvalidRequest` before any message is
built. No HTTP or NATS here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import msgspec

from jobs_proto.api import (
    GetJob,
    JobAccepted,
    JobPage,
    JobView,
    ListJobs,
)
from jobs_proto.events import JobCancelRequested, JobRequested
from jobs_proto.status import JOB_STATUSES, JobStatus, is_terminal
from jobs_runtime.errors import Unavailable

# Relative on purpose: `mypy --strict <path>/handlers.py` names this module after its path
# (`services.gateway.src.gateway...`), and an absolute `gateway.` import would make mypy see
# the package twice under two names.
from .limits import LimitExceeded
from .ports import (
    BadCursor,
    Clock,
    EventBus,
    IdempotencyKeys,
    IdempotencyRecord,
    JobStore,
    NewJobId,
    RequestedLog,
    Sleep,
)
from .validation import DEFAULT_LIMIT as DEFAULT_LIMIT
from .validation import IDEMPOTENCY_HEADER as IDEMPOTENCY_HEADER
from .validation import MAX_IDEMPOTENCY_KEY as MAX_IDEMPOTENCY_KEY
from .validation import MAX_LIMIT as MAX_LIMIT
from .validation import MIN_LIMIT as MIN_LIMIT
from .validation import InvalidRequest as InvalidRequest
from .validation import NewJob as NewJob
from .validation import check_idempotency_key as check_idempotency_key
from .validation import parse_create_job as parse_create_job
from .validation import parse_job_input as parse_job_input
from .validation import parse_list_query as parse_list_query
from .validation import where as where

# Rounds of reading a key and losing its compare-and-set (or waiting) before giving up;
# waiting for another request is bounded by `IdempotencyPolicy.wait_s` first.
_MAX_CAS_ROUNDS: Final = 1000
# Statuses a cancel cannot change any more (`409`); `canceled` is answered `202` again.
UNCANCELABLE: Final[frozenset[JobStatus]] = frozenset({"succeeded", "failed"})


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


class JobFinished(Exception):
    """A cancel of a job that already `succeeded` or `failed` (`409`)."""

    def __init__(self, status: JobStatus) -> None:
        super().__init__(f"the job already {status}; it can no longer be canceled")
        self.status = status


class Admission(Protocol):
    """A limit on new jobs (`USER_MAX_OPEN_JOBS`): `hold` raises to refuse one, and every
    `hold` that returned is ended by one `release` naming the job admitted, if any."""

    async def hold(self, user_id: str) -> None: ...

    def release(self, user_id: str, job_id: uuid.UUID | None) -> None: ...


async def _publish_requested(
    user_id: str,
    job: NewJob,
    job_id: uuid.UUID,
    bus: EventBus,
    clock: Clock,
    admission: Admission | None,
) -> JobAccepted:
    if admission is not None:
        await admission.hold(user_id)
    admitted: uuid.UUID | None = None
    try:
        event = JobRequested(
            job_id=job_id,
            occurred_at=clock(),
            user_id=user_id,
            job_type=job.job_type,
            input=job.input,
        )
        await bus.publish(event)
        admitted = job_id
    finally:
        if admission is not None:
            admission.release(user_id, admitted)
    return JobAccepted(job_id=job_id)


async def admit_job(
    user_id: str,
    job: NewJob,
    bus: EventBus,
    *,
    clock: Clock,
    new_id: NewJobId = uuid.uuid4,
    admission: Admission | None = None,
) -> JobAccepted:
    """Publish the job's `JobRequested`; the answer exists only once JetStream stored it.
    `admission` may refuse it first (nothing is published then)."""
    return await _publish_requested(user_id, job, new_id(), bus, clock, admission)


# --- Idempotency-Key ----------------------------------------------------------------------


class KeyReused(Exception):
    """The key was first used with another request (`409`)."""


class KeyInProgress(Exception):
    """The first request with this key is still being admitted (`409`; retry shortly)."""


@dataclass(frozen=True, slots=True)
class IdempotencyPolicy:
    """How a request waits for another with the same key.

    A request that finds the key taken by one still `admitting` polls for its outcome for up
    to `wait_s` (the first answer is then replayed), else answers `409` (as the IETF
    Idempotency-Key draft does for a concurrent request). A record still `admitting` after
    `stale_s` was abandoned (its gateway died between taking the key and finishing; longer
    than any publish takes): the next request finishes it, with the job id it names.
    """

    wait_s: float = 5.0
    stale_s: float = 15.0
    poll_s: float = 0.05


@dataclass(frozen=True, slots=True)
class Admitted:
    """The answer to a create, and whether it is the first one given again."""

    accepted: JobAccepted
    replayed: bool = False


def idempotency_slot(user_id: str, key: str) -> str:
    """Where a user's key is kept: a hash, so keys are per user, of any characters, and
    never readable from the store. The user id is length-prefixed: no (user, key) pair can
    run into another."""
    material = f"{len(user_id)}:{user_id}{key}".encode()
    return hashlib.sha256(material).hexdigest()


def request_fingerprint(route: str, body: object) -> str:
    """Identifies "the same body": the route and the JSON value sent, keys sorted, so the
    same object with other spacing or key order is the same request."""
    encoded = msgspec.json.encode([route, body], order="sorted")
    return hashlib.sha256(encoded).hexdigest()


def _reused() -> KeyReused:
    return KeyReused(
        "this Idempotency-Key was used with another request; use a new key for a new job"
    )


async def admit_job_once(
    user_id: str,
    slot: str,
    fingerprint: str,
    job: NewJob,
    bus: EventBus,
    keys: IdempotencyKeys,
    requested: RequestedLog,
    *,
    clock: Clock,
    new_id: NewJobId = uuid.uuid4,
    admission: Admission | None = None,
    policy: IdempotencyPolicy = IdempotencyPolicy(),
    sleep: Sleep = asyncio.sleep,
) -> Admitted:
    """Admit a job under an `Idempotency-Key` (its `slot` and the request's `fingerprint`).

    The first request takes the key atomically with a new job id, publishes, and marks the
    key `admitted`; the same key and body afterwards answers that job again, another body
    `KeyReused`. A failed publish is not kept as an answer: the key goes `failed` and the
    next request publishes the same job id again, so an ambiguous failure (stored, but the
    acknowledgement lost) can never become two jobs. See `IdempotencyPolicy` for requests
    that meet one still in progress.
    """
    waited_s = 0.0
    for _ in range(_MAX_CAS_ROUNDS):
        stored = await keys.read(slot)
        if stored is None:
            record = IdempotencyRecord(
                fingerprint=fingerprint, job_id=new_id(), state="admitting", since=clock()
            )
            revision = await keys.create(slot, record)
            if revision is None:
                continue  # another request took the key in between: look at its record
            return await _finish(user_id, slot, record, revision, job, bus, keys, clock, admission)
        record, revision = stored
        same = record.fingerprint == fingerprint
        if not same and record.state != "failed":
            raise _reused()
        if record.state == "admitted":
            return Admitted(JobAccepted(job_id=record.job_id), replayed=True)
        abandoned = (clock() - record.since).total_seconds() >= policy.stale_s
        if record.state == "failed" or abandoned:
            if await requested.find_requested(record.job_id) is not None:
                if not same:
                    raise _reused()
                # Published before its request gave up: it is the answer.
                admitted = msgspec.structs.replace(record, state="admitted")
                with contextlib.suppress(Unavailable):
                    await keys.update(slot, admitted, revision)
                return Admitted(JobAccepted(job_id=record.job_id), replayed=True)
            # Nothing was published under the key, so no answer was given: the key is free
            # for this request, even with another body (which then needs its own job id).
            taken = IdempotencyRecord(
                fingerprint=fingerprint,
                job_id=record.job_id if same else new_id(),
                state="admitting",
                since=clock(),
            )
            new_revision = await keys.update(slot, taken, revision)
            if new_revision is None:
                continue  # another request took it over first
            return await _finish(
                user_id, slot, taken, new_revision, job, bus, keys, clock, admission
            )
        if waited_s >= policy.wait_s:
            raise KeyInProgress(
                "a request with this Idempotency-Key is still being admitted; retry shortly"
            )
        await sleep(policy.poll_s)
        waited_s += policy.poll_s
    # Only reached when other requests keep winning every compare-and-set on this key.
    raise KeyInProgress("requests with this Idempotency-Key keep colliding; retry shortly")


async def _finish(
    user_id: str,
    slot: str,
    record: IdempotencyRecord,
    revision: int,
    job: NewJob,
    bus: EventBus,
    keys: IdempotencyKeys,
    clock: Clock,
    admission: Admission | None,
) -> Admitted:
    """Publish the job of a key this request holds and record the outcome."""
    try:
        accepted = await _publish_requested(user_id, job, record.job_id, bus, clock, admission)
    except BaseException:
        # Not an answer to keep: the next request with the key takes it over at once.
        with contextlib.suppress(Unavailable):
            await keys.update(slot, msgspec.structs.replace(record, state="failed"), revision)
        raise
    # The job is admitted whatever happens next; a record left `admitting` is finished by
    # the next request with the key once it is stale (the job is then found in the stream).
    with contextlib.suppress(Unavailable):
        await keys.update(slot, msgspec.structs.replace(record, state="admitted"), revision)
    return Admitted(accepted)


def pending_view(event: JobRequested) -> JobView:
    """The job as it is right after admission, from its `JobRequested` alone."""
    return JobView(
        job_id=event.job_id,
        type=event.job_type,
        status="pending",
        version=1,
        input=event.input,
        output=None,
        error=None,
        prediction_id=None,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        completed_at=None,
    )


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


async def cancel_job(
    user_id: str,
    job_id: uuid.UUID,
    store: JobStore,
    requested: RequestedLog,
    bus: EventBus,
    *,
    clock: Clock,
) -> JobView | None:
    """Ask to cancel a job; the answer is the job as it is now (`None`: unknown or another
    user's, `404`).

    | the job is | answer |
    | --- | --- |
    | `pending` or `processing` | `JobCancelRequested` published, then the view (`202`) |
    | `canceled` | the view, nothing published (`202`: asking again is harmless) |
    | `succeeded` or `failed` | `JobFinished` (`409`) |

    A repeated request within the duplicate window is one message (`cancel:<jobId>`); past
    it, the ai-runner and the job-store take a second cancel request as the first.
    """
    view = await read_job(user_id, job_id, store, requested)
    if view is None:
        return None
    if view.status in UNCANCELABLE:
        raise JobFinished(view.status)
    if view.status != "canceled":
        await bus.publish(JobCancelRequested(job_id=job_id, occurred_at=clock(), user_id=user_id))
    return view


# What a handler may meet that is an answer rather than a bug.
REFUSALS: Final = (
    InvalidRequest,
    OutputTooLarge,
    JobFinished,
    KeyReused,
    KeyInProgress,
    LimitExceeded,
    BadCursor,
    Unavailable,
)


# --- one message and its dependencies in, an outcome out --------------------------------------
# The HTTP adapter builds a message per request and turns each outcome into an answer; these are
# the only handlers it calls. The functions above are their parts (and tested as such).


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What the handlers work with, built once in `__main__`."""

    bus: EventBus
    store: JobStore
    requested: RequestedLog
    clock: Clock
    # Where `Idempotency-Key`s are kept; `None`: the header is validated, then ignored.
    keys: IdempotencyKeys | None = None
    idempotency: IdempotencyPolicy = IdempotencyPolicy()
    # `USER_MAX_OPEN_JOBS`; `None`: off.
    admission: Admission | None = None
    new_id: NewJobId = uuid.uuid4


@dataclass(frozen=True, slots=True)
class SubmitJob:
    """Admit `job` for `user_id`; `fingerprint` tells the same request again under `key`."""

    user_id: str
    job: NewJob
    key: str | None = None
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class ReadJob:
    """`whole`: a job whose output cannot be shown is `TooLarge`, not shown without it."""

    user_id: str
    job_id: uuid.UUID
    whole: bool = False


@dataclass(frozen=True, slots=True)
class CancelJob:
    user_id: str
    job_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Found:
    """The job as its owner sees it."""

    view: JobView


@dataclass(frozen=True, slots=True)
class NotFound:
    """Unknown, or another user's: the same answer, so nobody learns of others' jobs."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The request cannot be done as asked; `reason` names the exception saying why (one of
    `InvalidRequest`, `OutputTooLarge`, `JobFinished`, `KeyReused`, `KeyInProgress`, a limit,
    `BadCursor`, `Unavailable`), which the adapter answers as its problem."""

    reason: Exception


SubmitOutcome = Admitted | Refused
ReadOutcome = Found | NotFound | Refused
CancelOutcome = Found | NotFound | Refused
ListOutcome = JobPage | Refused


async def submit_job(message: SubmitJob, deps: Dependencies) -> SubmitOutcome:
    """Admit a validated job, once per `Idempotency-Key` when the message has one (and keys
    are kept)."""
    try:
        if message.key is None or deps.keys is None:
            accepted = await admit_job(
                message.user_id,
                message.job,
                deps.bus,
                clock=deps.clock,
                new_id=deps.new_id,
                admission=deps.admission,
            )
            return Admitted(accepted)
        return await admit_job_once(
            message.user_id,
            idempotency_slot(message.user_id, message.key),
            message.fingerprint,
            message.job,
            deps.bus,
            deps.keys,
            deps.requested,
            clock=deps.clock,
            new_id=deps.new_id,
            admission=deps.admission,
            policy=deps.idempotency,
        )
    except REFUSALS as exc:
        return Refused(exc)


async def read(message: ReadJob, deps: Dependencies) -> ReadOutcome:
    try:
        view = await read_job(
            message.user_id, message.job_id, deps.store, deps.requested, whole=message.whole
        )
    except REFUSALS as exc:
        return Refused(exc)
    return NotFound() if view is None else Found(view)


async def cancel(message: CancelJob, deps: Dependencies) -> CancelOutcome:
    try:
        view = await cancel_job(
            message.user_id, message.job_id, deps.store, deps.requested, deps.bus, clock=deps.clock
        )
    except REFUSALS as exc:
        return Refused(exc)
    return NotFound() if view is None else Found(view)


async def list_page(query: ListJobs, deps: Dependencies) -> ListOutcome:
    try:
        return await list_jobs(query, deps.store)
    except REFUSALS as exc:
        return Refused(exc)
