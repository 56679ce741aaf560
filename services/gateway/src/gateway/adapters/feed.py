"""The process's subscriptions to job changes, progress and new output chunks over core NATS,
feeding the event hub (and the running jobs' views), and the watch that ends every stream after
NATS reconnected."""

from __future__ import annotations

import asyncio
import logging
import uuid

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from gateway.hub import Hub, OutputAppended
from gateway.jobviews import JobViews, decode_change, read_head
from jobs_proto.api import JobProgress
from jobs_proto.output import decode_chunk
from jobs_proto.status import is_terminal
from jobs_proto.subjects import Subjects
from jobs_runtime import tracing
from jobs_runtime.bus import server_has_all
from jobs_runtime.periodic import every

# The logger it wrote to before it had a module of its own: log queries keep working.
log = logging.getLogger("gateway.adapters.nats")


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
        # `<prefix>job_output.`: what precedes `<jobId>.<predictionId>` in a chunk's subject.
        self._output_prefix = subjects.all_output[:-1]

    async def start(self) -> None:
        # Callbacks only hand the message to the hub (never blocking), so the limits are
        # a backlog bound for bursts, not for slow work.
        await self._nc.subscribe(
            self._subjects.all_job_changes, cb=self._on_change, pending_msgs_limit=100_000
        )
        await self._nc.subscribe(
            self._subjects.all_progress, cb=self._on_progress, pending_msgs_limit=100_000
        )
        # Every chunk stored in the output log, for the `/output` streams: one subscription
        # for the process, not one per stream. It also sees an offer JetStream refused (a
        # writer that lost the race for an offset); its characters are the prediction's own
        # text at those offsets all the same, and the streams merge by offset.
        await self._nc.subscribe(
            self._subjects.all_output, cb=self._on_output, pending_msgs_limit=100_000
        )
        await server_has_all(self._nc)

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
                self._hub.note_change(
                    job_id, user_id, is_terminal(head.job.status), version=head.job.version
                )
                return
            change = decode_change(raw)
        except msgspec.DecodeError:
            log.error("undecodable job change", extra={"subject": msg.subject})
            return
        if not tracing.ENABLED:
            self._hub.publish_change(change)
            return
        # Handed to this process's open event streams: the last hop of the job's trace.
        with tracing.span(
            "sse push",
            kind="consumer",
            parent=tracing.extract(msg.headers),
            attributes={"job.id": str(job_id), "job.status": head.job.status},
        ):
            self._hub.publish_change(change)

    async def _on_progress(self, msg: Msg) -> None:
        try:
            progress = self._progress.decode(msg.data)
        except msgspec.DecodeError:
            log.error("undecodable progress", extra={"subject": msg.subject})
            return
        self._hub.publish_progress(progress)

    async def _on_output(self, msg: Msg) -> None:
        # Only the subject is read for a job no `/output` stream of this process waits for.
        job, _, prediction_id = msg.subject[len(self._output_prefix) :].partition(".")
        try:
            job_id = uuid.UUID(job)
        except ValueError:
            log.error("output chunk on a subject naming no job", extra={"subject": msg.subject})
            return
        if not self._hub.watches_output(job_id):
            return
        try:
            chunk = decode_chunk(msg.data)
        except msgspec.DecodeError:
            log.error("undecodable output chunk", extra={"subject": msg.subject})
            return
        self._hub.publish_output(OutputAppended(job_id, prediction_id, chunk))
