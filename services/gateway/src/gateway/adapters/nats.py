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

from gateway.hub import Hub
from gateway.jobviews import JobViews, decode_change, read_head
from gateway.ports import BadCursor
from jobs_proto.api import GetJob, JobPage, JobProgress, JobReply, ListJobs
from jobs_proto.events import JobEvent, JobRequested, decode_event
from jobs_proto.status import is_terminal
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_runtime.errors import Unavailable
from jobs_runtime.jobstore import JobStoreClient, Refused
from jobs_runtime.periodic import every

log = logging.getLogger(__name__)

# JetStream's "no message found" (the subject has none), as opposed to "stream not found".
_NO_MESSAGE_FOUND: Final = 10037
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
    """The job-store's read endpoints (get-by-id, list) through the runtime's client. A
    refused list cursor (`400`) is `BadCursor`; any other refusal is `Unavailable` too (a
    `422` is a request this gateway should not have sent, which a retry after a fixed release
    may well get past), logged as an error."""

    def __init__(self, nc: NATS, subjects: Subjects, timeout_s: float = 2.0) -> None:
        self._client = JobStoreClient(nc, timeout_s=timeout_s)
        self._get_subject = subjects.get_job
        self._list_subject = subjects.list_jobs

    async def get_job(self, request: GetJob) -> JobReply:
        try:
            return await self._client.ask(self._get_subject, request, JobReply)
        except Refused as exc:
            raise _unavailable(exc) from exc

    async def list_jobs(self, request: ListJobs) -> JobPage:
        try:
            return await self._client.ask(self._list_subject, request, JobPage)
        except Refused as exc:
            if exc.code == _BAD_CURSOR:
                raise BadCursor(exc.description or "the cursor is not valid") from exc
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

    async def watch_reconnects(self, stop: asyncio.Event, every_s: float = 1.0) -> None:
        """Until `stop`: after NATS reconnected, end every open stream with a `retry:` hint.
        Core NATS does not replay what was published while this process was away, so a
        stream may have missed a change (even the terminal one); reconnecting, its client
        reads the current state."""
        seen = self._nc.stats["reconnects"]

        async def look() -> None:
            nonlocal seen
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

        await every(every_s, stop, "reconnect watch", look)

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
