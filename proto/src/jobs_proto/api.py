"""Every body of the gateway's HTTP API and of the services' request/reply."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Final

import msgspec

from jobs_proto.base import Message
from jobs_proto.events import JobError
from jobs_proto.status import JobStatus


class CreateJob(Message, frozen=True):
    """Body of `POST /api/jobs`."""

    type: str
    input: dict[str, Any]


class JobAccepted(Message, frozen=True):
    """Answer `202` to a create: the job exists and will be worked on."""

    job_id: uuid.UUID
    status: JobStatus = "pending"


class JobView(Message, frozen=True):
    """A job as its owner sees it (`GET /api/jobs/{jobId}`, SSE `status` events)."""

    job_id: uuid.UUID
    type: str
    status: JobStatus
    version: int
    input: dict[str, Any]
    output: str | None
    error: JobError | None
    prediction_id: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    # null until the prediction ends; a job that never ran ends with a zero cost.
    usage: JobUsage | None = None
    # Its owner asked to cancel it and it has not ended yet (a page shows "canceling");
    # false again once the job is terminal, whatever status it ended with.
    cancel_requested: bool = False


class JobUsage(Message, frozen=True):
    """What a job's final prediction reported in its `metrics`, and what that cost (the
    contract's formula over the type's price when the job was admitted; `failed`: 0)."""

    predict_time_s: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float


class JobSummary(Message, frozen=True):
    """A job in a list: the view without `input` and `output`."""

    job_id: uuid.UUID
    type: str
    status: JobStatus
    version: int
    error: JobError | None
    prediction_id: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    # As `JobView.cancel_requested`.
    cancel_requested: bool = False


class JobPage(Message, frozen=True):
    """Answer to `GET /api/jobs`: newest first, `nextCursor` null on the last page."""

    items: list[JobSummary]
    next_cursor: str | None


class JobToken(Message, frozen=True):
    """Answer `200` to `POST /api/jobs/{jobId}/token`: a bearer token that reads this one job
    (its `GET`, `/events` and `/output`) and nothing else, until `expiresAt`."""

    token: str
    expires_at: datetime


class JobProgress(Message, frozen=True):
    """Partial output of a running job (`event: progress`): all the text so far.

    `predictionId` names the prediction the text came from, always the job's own: progress of
    any other prediction is dropped before it reaches a stream.
    """

    job_id: uuid.UUID
    output: str
    seq: int
    prediction_id: str | None = None


class OutputText(Message, frozen=True):
    """`event: output` of `GET /api/jobs/{jobId}/output`: the text after what the client has;
    the event's `id:` counts the characters (code points) delivered up to and including it."""

    text: str


class OutputDone(Message, frozen=True):
    """`event: done` of `GET /api/jobs/{jobId}/output`: the job's terminal status, after the
    last text; the stream closes after it."""

    status: JobStatus
    error: JobError | None


class JobChanged(Message, frozen=True):
    """The job-store's announcement of a committed change, for the gateway's push.

    `output_omitted`: the output was too large for one message, so `job.output` is null here;
    whoever needs it reads the job (whose reply says the same when it cannot carry it either).
    """

    user_id: str
    job: JobView
    output_omitted: bool = False


class ProblemDetail(Message, frozen=True, omit_defaults=True):
    """One reason a request was refused: a JSON pointer into the body, or a query parameter."""

    detail: str
    pointer: str | None = None
    parameter: str | None = None


class Problem(Message, frozen=True, omit_defaults=True):
    """RFC 9457 problem details, the body of every error answer."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemDetail] | None = None
    # `budget-exceeded` only: the budget the job would pass, and what is left of it.
    limit_usd: float | None = None
    remaining_usd: float | None = None


class HealthStatus(Message, frozen=True):
    """Body of the admin port's `/healthz` and `/readyz`."""

    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)


class GetJob(Message, frozen=True):
    """Request to the job-store's `get` endpoint: one job, only if `user_id` owns it."""

    job_id: uuid.UUID
    user_id: str


class JobReply(Message, frozen=True):
    """The job-store's answer to `GetJob`: `job` is null for an unknown job or another
    user's job, which the gateway answers alike (`404`).

    `output_omitted`: the job's output (`output_bytes` bytes of UTF-8) does not fit in one reply
    under the message size limit, so `job.output` is null although the job has one; the
    gateway explains that instead of showing a job without a result. `input_truncated`: the
    stored input is a cut-down copy of what was sent (inputs over the store's size limit).
    """

    job: JobView | None
    output_omitted: bool = False
    output_bytes: int | None = None
    input_truncated: bool = False


# Request/reply of the job-store's read endpoints beyond `get` (NATS micro, queue group
# `q`). An error reply is an empty body with the headers `Nats-Service-Error-Code` (the code
# named in each request's docstring) and `Nats-Service-Error` (a one-line description).


class ListJobs(Message, frozen=True):
    """Request to the job-store's `list` endpoint (`Subjects.list_jobs`): `user_id`'s jobs,
    newest first (`created_at`, then `job_id`), answered with a `JobPage`.

    `statuses` and `types` filter (empty: all; several values: any of them); `cursor` is a
    previous page's `next_cursor`, valid only with the same user and filters. A page holds at
    most `limit` items and is cut short earlier to stay under the message size limit; its
    `next_cursor` is null only on the last page.

    Error codes: `400` the cursor is malformed, or was made for another user or other filters
    (the gateway answers `400`); `422` the request is not a valid `ListJobs` (say `limit`
    outside 1-200, an unknown status; the gateway validates first, so this is a caller bug);
    `503` the store cannot read now (the gateway answers `503`).
    """

    user_id: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    cursor: str | None = None
    statuses: list[JobStatus] = msgspec.field(default_factory=list)
    types: list[str] = msgspec.field(default_factory=list)


class FindStuckJobs(Message, frozen=True):
    """Request to the job-store's `stuck` endpoint (`Subjects.stuck_jobs`), for the ai-runner's
    reconciler: jobs `processing` for longer than `older_than_s` seconds (since submission, or
    since the first news of their prediction; the database's clock), oldest first, at most
    `limit`, answered with `StuckJobs`.

    With `pending_older_than_s`, jobs still `pending` (admitted, no prediction recorded) since
    their creation longer than that are included too, each with `status` `pending` and
    `processing_since` its creation time; all in one list, oldest first.

    Error codes: `422` the request is not a valid `FindStuckJobs`; `503` the store cannot read
    now (ask again later).
    """

    older_than_s: Annotated[float, msgspec.Meta(gt=0)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    pending_older_than_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class StuckJob(Message, frozen=True):
    """A job that has been `processing` for a while, with what a reconciler needs to ask
    Replicate about it."""

    job_id: uuid.UUID
    user_id: str
    type: str
    version: int
    prediction_id: str | None
    attempts: int
    cancel_requested: bool
    processing_since: datetime
    deadline_at: datetime | None
    # `pending` only when the request asked for pending jobs too (`pending_older_than_s`).
    status: JobStatus = "processing"


class StuckJobs(Message, frozen=True):
    """Answer to `FindStuckJobs`, oldest first; `truncated` when more jobs matched than were
    returned (the limit, or the message size), so the reconciler asks again after this round."""

    items: list[StuckJob]
    truncated: bool


# The most job ids one `GetJobVersions` may name: a caller with more asks in chunks.
MAX_VERSIONS_PER_REQUEST: Final = 1000


class GetJobVersions(Message, frozen=True):
    """Request to the job-store's `versions` endpoint (`Subjects.job_versions`), for the
    gateway's resync of its open streams: the stored version of each job named (read from the
    database, not from a replica's memory), answered with `JobVersions`. Only the gateway may
    ask (a version says nothing about a job but that it changed).

    Error codes: `422` the request is not a valid `GetJobVersions` (say more than
    `MAX_VERSIONS_PER_REQUEST` ids); `503` the store cannot read now (ask again later).
    """

    job_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_VERSIONS_PER_REQUEST)]


class JobVersions(Message, frozen=True):
    """Answer to `GetJobVersions`: each named job that exists, by id, with its stored version
    (an unknown or purged job is absent)."""

    versions: dict[uuid.UUID, int]


class GetJobHistory(Message, frozen=True):
    """Request to the job-store's `history` endpoint (`Subjects.job_history`): every applied
    change of one job, only if `user_id` owns it, answered with `JobHistory`.

    At most `limit` entries per answer (fewer to stay under the message size limit); `cursor`
    is a previous answer's `next_cursor`, for the entries after it.

    Error codes: `400` the cursor is malformed; `422` the request is not a valid
    `GetJobHistory`; `503` the store cannot read now (the gateway answers `503`, never a wrong
    `404`).
    """

    job_id: uuid.UUID
    user_id: str
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1000


class JobHistoryEntry(Message, frozen=True):
    """One applied change: `seq` is the job's version it produced (1 for `requested`);
    `source` the service that published the event; `summary` what changed (`from`, `to`,
    and per kind `predictionId`, `predictionStatus`, `errorCode`, ...; never input or output;
    readers must accept fields they do not know)."""

    seq: int
    kind: str
    occurred_at: datetime
    recorded_at: datetime
    source: str
    message_id: str
    summary: dict[str, Any]


class JobHistory(Message, frozen=True):
    """Answer to `GetJobHistory`, by `seq`: `entries` is null for an unknown job or another
    user's job (the gateway answers both `404`); `truncated` when more entries follow (the
    limit, or the message size), and `next_cursor` then asks for them."""

    entries: list[JobHistoryEntry] | None
    truncated: bool = False
    next_cursor: str | None = None


class PriceView(Message, frozen=True):
    """A job type's price per unit in dollars (`null`: not charged that way)."""

    per_input_token_usd: float | None
    per_output_token_usd: float | None
    per_predict_second_usd: float | None


class JobTypeView(Message, frozen=True):
    """One job type as `GET /api/job-types` shows it, so a page can show the price first."""

    type: str
    model: str
    streams: bool
    deadline_s: int
    input_schema: dict[str, Any]
    price: PriceView
    max_cost_usd: float


class JobTypeList(Message, frozen=True):
    """Answer to `GET /api/job-types`."""

    items: list[JobTypeView]


class TypeUsageView(Message, frozen=True):
    jobs: int
    cost_usd: float


class BudgetView(Message, frozen=True):
    """The caller's budget for the current calendar month (UTC)."""

    period_start: date
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    remaining_usd: float


class UsageView(Message, frozen=True):
    """Answer to `GET /api/usage`: the caller's ended jobs admitted from `from` to `to` (UTC
    days, inclusive), in all, by type and by day, and the month's budget (`null`: none)."""

    from_: date = msgspec.field(name="from")
    to: date
    jobs: int
    cost_usd: float
    by_type: dict[str, TypeUsageView]
    # Days with ended jobs only (`YYYY-MM-DD`): the page's spend-per-day chart.
    by_day: dict[date, TypeUsageView]
    budget: BudgetView | None
