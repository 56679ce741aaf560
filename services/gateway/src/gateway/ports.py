"""What the gateway's handlers need from the outside world, as Protocols the adapters fulfil."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from jobs_proto.api import GetJob, JobReply
from jobs_proto.events import JobEvent, JobRequested

Clock = Callable[[], datetime]
NewJobId = Callable[[], uuid.UUID]


class Unavailable(Exception):
    """NATS, JetStream or the job-store did not answer; the client should retry later."""


class EventBus(Protocol):
    async def publish(self, event: JobEvent) -> None:
        """Return once JetStream has stored `event`; raise `Unavailable` otherwise."""


class JobStore(Protocol):
    async def get_job(self, request: GetJob) -> JobReply:
        """The job-store's answer (`job` null: unknown or not this user's); `Unavailable`
        when it does not answer."""


class RequestedLog(Protocol):
    async def find_requested(self, job_id: uuid.UUID) -> JobRequested | None:
        """The `job.requested.<jobId>` event still in the stream, if any; `Unavailable` when
        the stream cannot be asked."""
