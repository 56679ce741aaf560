"""The gateway's NATS edge: publishing admitted jobs, asking the job-store, reading the stream.

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

from gateway.ports import Unavailable
from jobs_proto.api import GetJob, JobReply
from jobs_proto.events import JobEvent, JobRequested, decode_event
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher

log = logging.getLogger(__name__)

# JetStream's "no message found" (the subject has none), as opposed to "stream not found".
_NO_MESSAGE_FOUND: Final = 10037
# NATS micro services mark an error reply with this header.
_SERVICE_ERROR_HEADER: Final = "Nats-Service-Error"


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
    """The job-store's get-by-id endpoint over NATS request/reply."""

    def __init__(self, nc: NATS, subjects: Subjects, timeout_s: float = 2.0) -> None:
        self._nc = nc
        self._subject = subjects.get_job
        self._timeout_s = timeout_s
        self._decoder = msgspec.json.Decoder(JobReply)

    async def get_job(self, request: GetJob) -> JobReply:
        _require_connected(self._nc)
        try:
            reply = await self._nc.request(
                self._subject, msgspec.json.encode(request), timeout=self._timeout_s
            )
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"job-store did not answer: {exc!r}") from exc
        if reply.headers and _SERVICE_ERROR_HEADER in reply.headers:
            raise Unavailable(
                f"job-store answered an error: {reply.headers[_SERVICE_ERROR_HEADER]}"
            )
        try:
            return self._decoder.decode(reply.data)
        except msgspec.DecodeError as exc:
            raise Unavailable(f"job-store answered something else than a JobReply: {exc}") from exc


class StreamRequestedLog:
    """Finds a job's `job.requested.<jobId>` in the `JOBS` stream, by subject."""

    def __init__(self, nc: NATS, stream: str, subjects: Subjects, timeout_s: float = 2.0) -> None:
        self._nc = nc
        # Its own context: the lookup is bounded like a job-store read, not like a publish.
        self._js = nc.jetstream(timeout=timeout_s)
        self._stream = stream
        self._subjects = subjects

    def _subject(self, job_id: uuid.UUID) -> str:
        # `Subjects` builds event subjects from an event only; this is the same scheme.
        return f"{self._subjects.prefix}job.requested.{job_id}"

    async def find_requested(self, job_id: uuid.UUID) -> JobRequested | None:
        _require_connected(self._nc)
        try:
            message = await self._js.get_last_msg(self._stream, self._subject(job_id))
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
