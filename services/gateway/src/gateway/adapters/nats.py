"""The gateway's NATS edge: publishing admitted jobs, asking the job-store, reading the stream,
and the one subscription to job changes and progress that feeds the event streams.

Every way NATS can fail to answer (disconnected, timeout, no responders, a JetStream error)
becomes `Unavailable`, which the HTTP side answers `503` with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Final

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from gateway.jobviews import JobViews, decode_change, read_head
from gateway.ports import BadCursor, Unavailable
from gateway.realtime import Hub
from jobs_proto.api import GetJob, JobPage, JobProgress, JobReply, ListJobs
from jobs_proto.events import JobEvent, JobRequested, decode_event
from jobs_proto.status import is_terminal
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher

log = logging.getLogger(__name__)

# JetStream's "no message found" (the subject has none), as opposed to "stream not found".
_NO_MESSAGE_FOUND: Final = 10037
# NATS micro services mark an error reply with this header.
_SERVICE_ERROR_HEADER: Final = "Nats-Service-Error"
_SERVICE_ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"
# The job-store's error code for a cursor it refuses (`ListJobs`).
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
    """The job-store's read endpoints (get-by-id, list) over NATS request/reply."""

    def __init__(self, nc: NATS, subjects: Subjects, timeout_s: float = 2.0) -> None:
        self._nc = nc
        self._get_subject = subjects.get_job
        self._list_subject = subjects.list_jobs
        self._timeout_s = timeout_s
        self._reply_decoder = msgspec.json.Decoder(JobReply)
        self._page_decoder = msgspec.json.Decoder(JobPage)

    async def _ask(self, subject: str, request: msgspec.Struct) -> Msg:
        """The reply to `request`, error replies included; `Unavailable` without one."""
        _require_connected(self._nc)
        try:
            return await self._nc.request(
                subject, msgspec.json.encode(request), timeout=self._timeout_s
            )
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"job-store did not answer: {exc!r}") from exc

    async def get_job(self, request: GetJob) -> JobReply:
        reply = await self._ask(self._get_subject, request)
        _raise_service_error(reply)
        try:
            return self._reply_decoder.decode(reply.data)
        except msgspec.DecodeError as exc:
            raise Unavailable(f"job-store answered something else than a JobReply: {exc}") from exc

    async def list_jobs(self, request: ListJobs) -> JobPage:
        reply = await self._ask(self._list_subject, request)
        headers = reply.headers or {}
        if headers.get(_SERVICE_ERROR_CODE_HEADER) == _BAD_CURSOR:
            raise BadCursor(headers.get(_SERVICE_ERROR_HEADER) or "the cursor is not valid")
        _raise_service_error(reply)
        try:
            return self._page_decoder.decode(reply.data)
        except msgspec.DecodeError as exc:
            raise Unavailable(f"job-store answered something else than a JobPage: {exc}") from exc


def _raise_service_error(reply: Msg) -> None:
    """An error reply of the job-store (any code left) as `Unavailable`: a `503` is the store
    unable to read, and a `422` a request this gateway should not have sent, which a retry
    after a fixed release may well get past."""
    headers = reply.headers or {}
    if _SERVICE_ERROR_HEADER in headers or _SERVICE_ERROR_CODE_HEADER in headers:
        code = headers.get(_SERVICE_ERROR_CODE_HEADER, "?")
        if code not in ("503", "?"):
            log.error(
                "job-store refused a request",
                extra={"code": code, "error": headers.get(_SERVICE_ERROR_HEADER)},
            )
        raise Unavailable(
            f"job-store answered an error {code}: {headers.get(_SERVICE_ERROR_HEADER)}"
        )


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


class NatsJobFeed:
    """The process's one subscription to the job-store's change announcements and one to
    webhook-ingest's progress (wildcards over every job), handed to the in-memory hub that
    fans them out to the open event streams; the changes also feed the job views (running
    jobs answered without the job-store)."""

    def __init__(
        self, nc: NATS, subjects: Subjects, hub: Hub, views: JobViews | None = None
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._hub = hub
        self._views = views if views is not None else JobViews()
        self._progress = msgspec.json.Decoder(JobProgress)

    async def start(self) -> None:
        # Callbacks only hand the message to the hub (never blocking), so the limits are
        # a backlog bound for bursts, not for slow work.
        await self._nc.subscribe(
            self._subjects.all_job_changes, cb=self._on_change, pending_msgs_limit=100_000
        )
        await self._nc.subscribe(
            self._subjects.all_progress, cb=self._on_progress, pending_msgs_limit=100_000
        )
        await self._nc.flush()

    async def watch_reconnects(self, every_s: float = 1.0) -> None:
        """Forever: after NATS reconnected, end every open stream with a `retry:` hint.
        Core NATS does not replay what was published while this process was away, so a
        stream may have missed a change (even the terminal one); reconnecting, its client
        reads the current state."""
        seen = self._nc.stats["reconnects"]
        while True:
            await asyncio.sleep(every_s)
            if not self._nc.is_connected:
                # Changes are being missed: the views must not answer from what they knew.
                self._views.clear()
            reconnects = self._nc.stats["reconnects"]
            if reconnects != seen:
                seen = reconnects
                self._views.clear()
                ended = self._hub.resync()
                log.warning(
                    "nats reconnected: event streams told to reconnect", extra={"streams": ended}
                )

    async def _on_change(self, msg: Msg) -> None:
        # Every change of every job passes here: only its head is read, and the whole
        # announcement decoded only when a stream of this process waits for it.
        raw = msg.data
        try:
            head = read_head(raw)
            self._views.offer_change(head, raw)
            job_id, user_id = head.job.job_id, head.user_id
            if not self._hub.watches(job_id, user_id):
                self._hub.note_change(job_id, user_id, is_terminal(head.job.status))
                return
            change = decode_change(raw)
        except msgspec.DecodeError:
            log.error("undecodable job change", extra={"subject": msg.subject})
            return
        self._hub.publish_change(change)

    async def _on_progress(self, msg: Msg) -> None:
        try:
            progress = self._progress.decode(msg.data)
        except msgspec.DecodeError:
            log.error("undecodable progress", extra={"subject": msg.subject})
            return
        self._hub.publish_progress(progress)
