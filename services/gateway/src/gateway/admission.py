"""Admitting a job: its `JobRequested` published under a job id, once `Admission` (the open
jobs limit) lets it in and, when a budget applies, the job-store reserved the type's
`maxCostUsd` (`BudgetGuard`); the answer exists only once JetStream stored the event."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from jobs_proto.api import JobAccepted
from jobs_proto.events import JobRequested
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.spend import usd_to_micros

from .budgets import BudgetGuard
from .ports import Admission, Clock, EventBus, NewJobId
from .validation import NewJob


@dataclass(frozen=True, slots=True)
class Admitted:
    """The answer to a create, and whether it is the first one given again."""

    accepted: JobAccepted
    replayed: bool = False


async def publish_requested(
    user_id: str,
    job: NewJob,
    job_id: uuid.UUID,
    bus: EventBus,
    clock: Clock,
    admission: Admission | None,
    budget: BudgetGuard | None = None,
) -> JobAccepted:
    """Publish the job under `job_id` (new, or the one its `Idempotency-Key` holds) once
    `admission` lets it in and `budget` (if any) holds its maximum cost; `admission` learns
    whether it was admitted either way, and a reservation whose job was not published is
    released."""
    if admission is not None:
        await admission.hold(user_id)
    admitted: uuid.UUID | None = None
    try:
        job_type = JOB_TYPES[job.job_type]
        at = clock()
        reserved = 0
        if budget is not None:
            reserved = usd_to_micros(job_type.max_cost_usd)
            await budget.reserve(user_id, job.job_type, job_id, reserved, at)
        event = JobRequested(
            job_id=job_id,
            occurred_at=at,
            user_id=user_id,
            job_type=job.job_type,
            input=job.input,
            price=job_type.price,
            reserved_micros=reserved,
        )
        try:
            await bus.publish(event)
        except BaseException:
            if budget is not None:
                await budget.release(user_id, job_id)
            raise
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
    budget: BudgetGuard | None = None,
) -> JobAccepted:
    """Publish the job's `JobRequested`; the answer exists only once JetStream stored it.
    `admission` and `budget` may refuse it first (nothing is published then)."""
    return await publish_requested(user_id, job, new_id(), bus, clock, admission, budget)
