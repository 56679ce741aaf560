"""Every body of the gateway's HTTP API and of the services' request/reply."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

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


class JobPage(Message, frozen=True):
    """Answer to `GET /api/jobs`: newest first, `next_cursor` null on the last page."""

    items: list[JobSummary]
    next_cursor: str | None


class JobProgress(Message, frozen=True):
    """Partial output of a running job (`event: progress`): all the text so far."""

    job_id: uuid.UUID
    output: str
    seq: int


class JobChanged(Message, frozen=True):
    """The job-store's announcement of a committed change, for the gateway's push."""

    user_id: str
    job: JobView


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
    user's job, which the gateway answers alike (`404`)."""

    job: JobView | None
