"""Canceling a job for its owner: a `JobCancelRequested` published while the job can still
end `canceled`."""

from __future__ import annotations

import uuid
from typing import Final

import msgspec

from jobs_proto.api import JobView
from jobs_proto.events import JobCancelRequested
from jobs_proto.status import JobStatus

from .ports import Clock, EventBus, JobStore, RequestedLog
from .reads import read_job

# Statuses a cancel cannot change any more (`409`); `canceled` is answered `202` again.
UNCANCELABLE: Final[frozenset[JobStatus]] = frozenset({"succeeded", "failed"})


class JobFinished(Exception):
    """A cancel of a job that already `succeeded` or `failed` (`409`)."""

    def __init__(self, status: JobStatus) -> None:
        super().__init__(f"the job already {status}; it can no longer be canceled")
        self.status = status


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
    | `pending` or `processing` | `JobCancelRequested` published, the view with `cancelRequested` |
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
        # The request stands from now on, before the job-store has applied it.
        view = msgspec.structs.replace(view, cancel_requested=True)
    return view
