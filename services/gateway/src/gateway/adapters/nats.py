"""The gateway's NATS edge for its handlers: publishing admitted jobs, asking the job-store
(reads, budgets, usage), reading a job's request back from the stream (`feed.py` has the
subscription to job changes).

Every way NATS can fail to answer (disconnected, timeout, no responders, a JetStream error)
becomes `Unavailable`, which the HTTP side answers `503` with `Retry-After`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Final

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from gateway.ports import BadCursor
from jobs_proto.api import GetJob, GetJobHistory, JobHistory, JobPage, JobReply, ListJobs
from jobs_proto.events import JobEvent, JobRequested, decode_event
from jobs_proto.spend import (
    BudgetDecision,
    GetUsage,
    ReleaseBudget,
    ReserveBudget,
    UsageReport,
)
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_runtime.errors import Unavailable
from jobs_runtime.jobstore import JobStoreClient, Refused

log = logging.getLogger(__name__)

# JetStream's "no message found" (the subject has none), as opposed to "stream not found".
_NO_MESSAGE_FOUND: Final = 10037
# The job-store's error code for a cursor it refuses (`ListJobs`, `GetJobHistory`).
_BAD_CURSOR: Final = "400"


def _require_connected(nc: NATS) -> None:
    # While reconnecting, nats-py buffers a request and it times out much later; answer at
    # once instead, and never leave a publish buffered to go out after the client gave up.
    if not nc.is_connected:
        raise Unavailable("not connected to NATS")


class JetStreamEventBus:
    """Publishes through the runtime's `EventPublisher` (deterministic `Nats-Msg-Id`)."""

    def __init__(self, nc: NATS, publisher: EventPublisher) -> None:
        self._nc = nc
        self._publisher = publisher

    async def publish(self, event: JobEvent) -> None:
        _require_connected(self._nc)
        try:
            await self._publisher.publish(event)
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"JetStream did not store the event: {exc!r}") from exc


class NatsJobStore:
    """The job-store's read endpoints (get-by-id, list, history) through the runtime's
    client. A refused cursor (`400`) is `BadCursor`; any other refusal is `Unavailable` too (a
    `422` is a request this gateway should not have sent, which a retry after a fixed release
    may well get past), logged as an error."""

    def __init__(self, nc: NATS, subjects: Subjects, timeout_s: float = 2.0) -> None:
        self._client = JobStoreClient(nc, timeout_s=timeout_s)
        self._get_subject = subjects.get_job
        self._list_subject = subjects.list_jobs
        self._history_subject = subjects.job_history

    async def get_job(self, request: GetJob) -> JobReply:
        try:
            return await self._client.ask(self._get_subject, request, JobReply)
        except Refused as exc:
            raise _unavailable(exc) from exc

    async def list_jobs(self, request: ListJobs) -> JobPage:
        try:
            return await self._client.ask(self._list_subject, request, JobPage)
        except Refused as exc:
            raise _cursor_or_unavailable(exc) from exc

    async def job_history(self, request: GetJobHistory) -> JobHistory:
        try:
            return await self._client.ask(self._history_subject, request, JobHistory)
        except Refused as exc:
            raise _cursor_or_unavailable(exc) from exc


def _cursor_or_unavailable(refused: Refused) -> Exception:
    if refused.code == _BAD_CURSOR:
        return BadCursor(refused.description or "the cursor is not valid")
    return _unavailable(refused)


class _Released(msgspec.Struct):
    """Whatever the job-store answers a release with: only that it answered matters."""


class NatsBudgets:
    """The job-store's budget and usage endpoints. Any refusal is `Unavailable` (logged as an
    error): the gateway only sends requests it validated, so a `4xx` is a bug of one side, and
    a budget must never be taken as granted on it."""

    def __init__(self, nc: NATS, subjects: Subjects, timeout_s: float = 2.0) -> None:
        self._client = JobStoreClient(nc, timeout_s=timeout_s)
        self._reserve_subject = subjects.reserve_budget
        self._release_subject = subjects.release_budget
        self._usage_subject = subjects.usage

    async def reserve(self, request: ReserveBudget) -> BudgetDecision:
        try:
            return await self._client.ask(self._reserve_subject, request, BudgetDecision)
        except Refused as exc:
            raise _unavailable(exc) from exc

    async def release(self, request: ReleaseBudget) -> None:
        try:
            await self._client.ask(self._release_subject, request, _Released)
        except Refused as exc:
            raise _unavailable(exc) from exc

    async def usage(self, request: GetUsage) -> UsageReport:
        try:
            return await self._client.ask(self._usage_subject, request, UsageReport)
        except Refused as exc:
            raise _unavailable(exc) from exc


def _unavailable(refused: Refused) -> Unavailable:
    log.error(
        "job-store refused a request", extra={"code": refused.code, "error": refused.description}
    )
    return Unavailable(f"job-store answered an error {refused.code}: {refused.description}")


class StreamRequestedLog:
    """Finds a job's `job.requested.<jobId>` in the `JOBS` stream, by subject."""

    def __init__(self, nc: NATS, stream: str, subjects: Subjects, timeout_s: float = 2.0) -> None:
        self._nc = nc
        # Its own context: the lookup is bounded like a job-store read, not like a publish.
        self._js = nc.jetstream(timeout=timeout_s)
        self._stream = stream
        self._subjects = subjects

    async def find_requested(self, job_id: uuid.UUID) -> JobRequested | None:
        _require_connected(self._nc)
        try:
            message = await self._js.get_last_msg(
                self._stream, self._subjects.job_event("requested", job_id)
            )
        except NotFoundError as exc:
            if exc.err_code == _NO_MESSAGE_FOUND:
                return None
            raise Unavailable(f"stream {self._stream} not readable: {exc}") from exc
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"stream {self._stream} did not answer: {exc!r}") from exc
        try:
            event = decode_event(message.data or b"")
        except msgspec.DecodeError:
            log.error("undecodable requested event in the stream", extra={"job_id": str(job_id)})
            return None
        if not isinstance(event, JobRequested) or event.job_id != job_id:
            log.error("requested subject holds another event", extra={"job_id": str(job_id)})
            return None
        return event
