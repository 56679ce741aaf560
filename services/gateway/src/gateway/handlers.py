"""The gateway's use cases as message handlers: one message and the `Dependencies` built in
`__main__` in, an outcome out (`Admitted | Found | NotFound | Refused`, a refusal naming its
reason). The HTTP adapters call only these (`submit_job`, `read`, `cancel`, `list_page`,
`history`, `usage`); their parts are `admission`, `budgets`, `idempotency`, `reads`,
`cancellation` and `usage`. Validation (`parse_create_job`, `parse_list_query`,
`parse_history_query`, ...) raises `InvalidRequest` before any message is built. No HTTP or
NATS here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date
from typing import Final

from jobs_proto.api import GetJobHistory, JobHistory, JobPage, JobView, ListJobs, UsageView
from jobs_runtime.errors import Unavailable

# Relative on purpose: `mypy --strict <path>/handlers.py` names this module after its path
# (`services.gateway.src.gateway...`), and an absolute `gateway.` import would make mypy see
# the package twice under two names.
from .admission import Admitted as Admitted
from .admission import admit_job
from .budgets import BudgetExceeded as BudgetExceeded
from .budgets import Spending as Spending
from .cancellation import JobFinished as JobFinished
from .cancellation import cancel_job
from .idempotency import IdempotencyPolicy as IdempotencyPolicy
from .idempotency import KeyInProgress as KeyInProgress
from .idempotency import KeyReused as KeyReused
from .idempotency import admit_job_once, idempotency_slot
from .idempotency import request_fingerprint as request_fingerprint
from .limits import LimitExceeded
from .ports import (
    Admission,
    BadCursor,
    Clock,
    EventBus,
    IdempotencyKeys,
    JobStore,
    NewJobId,
    RequestedLog,
)
from .reads import OutputTooLarge as OutputTooLarge
from .reads import job_history as job_history
from .reads import jobs_to_replay as jobs_to_replay
from .reads import list_jobs, read_job
from .usage import parse_usage_span as parse_usage_span
from .usage import read_usage
from .validation import IDEMPOTENCY_HEADER as IDEMPOTENCY_HEADER
from .validation import InvalidRequest as InvalidRequest
from .validation import NewJob as NewJob
from .validation import check_idempotency_key as check_idempotency_key
from .validation import parse_create_job as parse_create_job
from .validation import parse_history_query as parse_history_query
from .validation import parse_job_input as parse_job_input
from .validation import parse_list_query as parse_list_query
from .validation import where as where

# What a handler may meet that is an answer rather than a bug.
REFUSALS: Final = (
    InvalidRequest,
    OutputTooLarge,
    JobFinished,
    KeyReused,
    KeyInProgress,
    LimitExceeded,
    BudgetExceeded,
    BadCursor,
    Unavailable,
)


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What the handlers work with, built once in `__main__`."""

    bus: EventBus
    store: JobStore
    requested: RequestedLog
    clock: Clock
    # Where `Idempotency-Key`s are kept; `None`: the header is validated, then ignored.
    keys: IdempotencyKeys | None = None
    idempotency: IdempotencyPolicy = field(default_factory=IdempotencyPolicy)
    # `USER_MAX_OPEN_JOBS`; `None`: off.
    admission: Admission | None = None
    # The budgets and the job-store keeping them; `None`: no budgets, and no usage to read.
    spending: Spending | None = None
    new_id: NewJobId = uuid.uuid4


@dataclass(frozen=True, slots=True)
class SubmitJob:
    """Admit `job` for `user_id`; `fingerprint` tells the same request again under `key`;
    `budget_micros` is the budget the caller's token names (`None`: the configured one)."""

    user_id: str
    job: NewJob
    key: str | None = None
    fingerprint: str = ""
    budget_micros: int | None = None


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
class ReadUsage:
    """The user's spend over UTC days `first`..`last`, and this month's budget (the token's
    `budget_micros`, else the configured one)."""

    user_id: str
    first: date
    last: date
    budget_micros: int | None = None


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
    `BudgetExceeded`, `BadCursor`, `Unavailable`), which the adapter answers as its problem."""

    reason: Exception


SubmitOutcome = Admitted | Refused
ReadOutcome = Found | NotFound | Refused
CancelOutcome = Found | NotFound | Refused
ListOutcome = JobPage | Refused
HistoryOutcome = JobHistory | NotFound | Refused
UsageOutcome = UsageView | Refused


async def submit_job(message: SubmitJob, deps: Dependencies) -> SubmitOutcome:
    """Admit a validated job, once per `Idempotency-Key` when the message has one (and keys
    are kept)."""
    budget = (
        None
        if deps.spending is None
        else deps.spending.guard(message.budget_micros, deps.requested)
    )
    try:
        if message.key is None or deps.keys is None:
            accepted = await admit_job(
                message.user_id,
                message.job,
                deps.bus,
                clock=deps.clock,
                new_id=deps.new_id,
                admission=deps.admission,
                budget=budget,
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
            budget=budget,
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


async def history(query: GetJobHistory, deps: Dependencies) -> HistoryOutcome:
    """A page of the job's history (`entries` never null), or `NotFound` for an unknown job
    and another user's alike."""
    try:
        page = await job_history(query, deps.store)
    except REFUSALS as exc:
        return Refused(exc)
    return NotFound() if page is None else page


async def usage(message: ReadUsage, deps: Dependencies) -> UsageOutcome:
    try:
        if deps.spending is None:
            raise Unavailable("no job-store to read usage from")
        return await read_usage(
            message.user_id,
            message.first,
            message.last,
            deps.clock().astimezone(UTC).date(),
            deps.spending.user_limit(message.budget_micros),
            deps.spending.budgets,
        )
    except REFUSALS as exc:
        return Refused(exc)
