"""What the gateway's handlers need from the outside world, as Protocols the adapters fulfil."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from jobs_proto.api import GetJob, JobPage, JobReply, ListJobs
from jobs_proto.events import JobEvent, JobRequested

Clock = Callable[[], datetime]
NewJobId = Callable[[], uuid.UUID]


class Unavailable(Exception):
    """NATS, JetStream or the job-store did not answer; the client should retry later."""


class BadCursor(Exception):
    """The job-store refused a list cursor: malformed, or made for another user or other
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


class RequestedLog(Protocol):
    async def find_requested(self, job_id: uuid.UUID) -> JobRequested | None:
        """The `job.requested.<jobId>` event still in the stream, if any; `Unavailable` when
        the stream cannot be asked."""
