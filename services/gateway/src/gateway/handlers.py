"""The gateway's use cases over its ports: validate and admit a job, read a job for its owner.

No HTTP or NATS here: the adapters turn requests into these calls and the outcomes (a value,
`InvalidRequest`, `Unavailable`) into answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from jobs_proto.api import CreateJob, GetJob, JobAccepted, JobView, ProblemDetail
from jobs_proto.events import JobRequested
from jobs_proto.job_types import JOB_TYPES

# Relative on purpose: `mypy --strict <path>/handlers.py` names this module after its path
# (`services.gateway.src.gateway...`), and an absolute `gateway.` import would make mypy see
# the package twice under two names.
from .ports import Clock, EventBus, JobStore, NewJobId, RequestedLog, Unavailable
from .problems import validation_detail


class InvalidRequest(Exception):
    """A body that is well-formed JSON but not an acceptable job (`422`)."""

    def __init__(self, errors: list[ProblemDetail]) -> None:
        super().__init__("; ".join(f"{e.pointer}: {e.detail}" for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job that passed validation: its type and its input as plain camelCase JSON values."""

    job_type: str
    input: dict[str, Any]


def parse_job_input(job_type: str, raw: object, at: str = "") -> NewJob:
    """Validate `raw` as the input of `job_type`; pointers in errors are under `at`.

    The published input holds the fields the client gave, as validated and in their camelCase
    wire names; unknown fields are dropped, and defaults are left to whoever parses it again
    (`JobType.parse_input`), so a job shows the input its owner sent.
    """
    if not isinstance(raw, dict):
        raise InvalidRequest([ProblemDetail(pointer=at, detail="Expected `object`")])
    try:
        parsed = JOB_TYPES[job_type].parse_input(raw)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([validation_detail(str(exc), at)]) from None
    validated: dict[str, Any] = msgspec.to_builtins(parsed)
    return NewJob(job_type=job_type, input={k: v for k, v in validated.items() if k in raw})


def parse_create_job(body: object) -> NewJob:
    """Validate the body of `POST /api/jobs`: a known `type` and its `input`."""
    try:
        create = msgspec.convert(body, CreateJob)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([validation_detail(str(exc))]) from None
    if create.type not in JOB_TYPES:
        known = ", ".join(sorted(JOB_TYPES))
        detail = f"unknown job type {create.type!r}; one of: {known}"
        raise InvalidRequest([ProblemDetail(pointer="/type", detail=detail)])
    return parse_job_input(create.type, create.input, at="/input")


async def admit_job(
    user_id: str,
    job: NewJob,
    bus: EventBus,
    *,
    clock: Clock,
    new_id: NewJobId = uuid.uuid4,
) -> JobAccepted:
    """Publish the job's `JobRequested`; the answer exists only once JetStream stored it."""
    event = JobRequested(
        job_id=new_id(),
        occurred_at=clock(),
        user_id=user_id,
        job_type=job.job_type,
        input=job.input,
    )
    await bus.publish(event)
    return JobAccepted(job_id=event.job_id)


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
    user_id: str, job_id: uuid.UUID, store: JobStore, requested: RequestedLog
) -> JobView | None:
    """The job as its owner sees it; `None` for an unknown job or another user's job.

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
            return reply.job
    event = await requested.find_requested(job_id)
    if event is not None:
        # Owner of a job never changes, so the stream alone may refuse another user's job.
        return pending_view(event) if event.user_id == user_id else None
    if store_down is not None:
        raise store_down
    return None
