"""The handler's ports over NATS: events into JetStream's `JOBS`, large results into the shared
results Object Store (`jobs_runtime.results`), webhooks naming no job into the parked stream
beside `JOBS` (the job-store's dead letters), progress on core NATS, output webhooks' text into
the output log beside `JOBS` (`jobs_runtime.output`)."""

from __future__ import annotations

import uuid
from typing import Final

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from jobs_proto.events import JobEvent, JobStarted
from jobs_proto.job_types import LONGEST_DEADLINE_S
from jobs_proto.output import OutputGap, output_stream
from jobs_proto.stream import (
    DEV_CAPACITY,
    PARK_DETAIL_HEADER,
    PARK_REASON_HEADER,
    PARK_SUBJECT_HEADER,
    parked_stream,
)
from jobs_proto.subjects import MSG_ID_HEADER, Subjects, message_id
from jobs_runtime.bus import EventPublisher, ensure_stream
from jobs_runtime.errors import Unavailable
from jobs_runtime.output import OutputLog
from jobs_runtime.results import result_store, store_result
from webhook_ingest.recent_ids import RecentIds

# Timeouts, no responders, a closed connection, a payload over the server's limit, JetStream
# refusing to store: whatever the cause, the webhook's sender should try again later.
_BUS_ERRORS = (nats.errors.Error, TimeoutError, OSError)


class JetStreamEvents:
    """Stores events with the runtime's publisher, which waits for JetStream's acknowledgement.

    Every webhook of a running prediction (its `start` and each `output`) becomes the same
    `started` event, whose message id is the prediction's: JetStream keeps the first and drops
    the rest. Those already stored from this process are answered as duplicates without asking
    JetStream again, so one prediction costs one publish however many output webhooks it sends;
    whichever webhook comes first (the `start`, or an `output` when the `start` was lost) still
    stores it.
    """

    def __init__(self, nc: NATS, publisher: EventPublisher, *, remembered: int = 10_000) -> None:
        self._nc = nc
        self._publisher = publisher
        self._started = RecentIds(remembered)

    async def store(self, event: JobEvent) -> bool:
        key = message_id(event) if isinstance(event, JobStarted) else None
        if key is not None and key in self._started:
            return True
        if not self._nc.is_connected:
            # While reconnecting, nats-py would buffer the publish and wait out the timeout;
            # answering at once lets Replicate's retry find us connected again.
            raise Unavailable("not connected to NATS")
        try:
            ack = await self._publisher.publish(event)
        except _BUS_ERRORS as exc:
            raise Unavailable(f"JetStream did not store the event: {exc!r}") from exc
        if key is not None:
            self._started.add(key)  # only once JetStream has it
        return bool(ack.duplicate)


class ObjectStoreResults:
    """Puts a final output into the results bucket of the jobs stream, under one name per
    prediction, and returns once every chunk is stored."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        jobs_stream: str,
        *,
        replicas: int,
        max_bytes: int = DEV_CAPACITY.results_store_max_bytes,
    ) -> None:
        self._nc = nc
        self._js = js
        self._jobs_stream = jobs_stream
        self._replicas = replicas
        self._max_bytes = max_bytes
        # Opened on first use: most webhooks never need it, and a failed open is retried with
        # the next large result instead of stopping the service.
        self._bucket: ObjectStore | None = None

    async def store(self, prediction_id: str, output: str) -> str:
        if not self._nc.is_connected:
            raise Unavailable("not connected to NATS")
        try:
            if self._bucket is None:
                self._bucket = await result_store(
                    self._js, self._jobs_stream, replicas=self._replicas, max_bytes=self._max_bytes
                )
            return await store_result(self._bucket, prediction_id, output)
        except _BUS_ERRORS as exc:
            raise Unavailable(f"the result store did not take the output: {exc!r}") from exc


class NatsWebhookParking:
    """Keeps a webhook's body in `<JOBS_STREAM>_PARKED` under `job_parked.<reason>`, its reason
    in the headers, as the job-store parks events; one copy per `webhook-id`."""

    # Where the webhook was bound for, in the header the job-store fills with an event subject.
    ORIGIN: Final = "POST /api/webhooks/replicate"

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        subjects: Subjects,
        jobs_stream: str,
        *,
        replicas: int,
        max_bytes: int = DEV_CAPACITY.parked_stream_max_bytes,
    ) -> None:
        self._nc = nc
        self._js = js
        self._subjects = subjects
        self._spec = parked_stream(subjects, jobs_stream, replicas=replicas, max_bytes=max_bytes)
        # Made sure of on first use: parking is rare, and a failed attempt is retried with the
        # next webhook (Replicate retries this one) instead of stopping the service.
        self._ensured = False

    async def park(self, webhook_id: str, body: bytes, reason: str, detail: str) -> bool:
        if not self._nc.is_connected:
            raise Unavailable("not connected to NATS")
        headers = {
            PARK_REASON_HEADER: reason,
            PARK_DETAIL_HEADER: detail,
            PARK_SUBJECT_HEADER: self.ORIGIN,
            MSG_ID_HEADER: f"parked:webhook:{webhook_id}",
        }
        try:
            if not self._ensured:
                await ensure_stream(self._js, self._spec)
                self._ensured = True
            ack = await self._js.publish(
                self._subjects.parked(reason), body, headers=headers, stream=self._spec.name
            )
        except _BUS_ERRORS as exc:
            raise Unavailable(f"the webhook could not be parked: {exc!r}") from exc
        return bool(ack.duplicate)


class LoggedOutput:
    """Offers an output webhook's whole text to the prediction's output log, which appends only
    what it lacks (the ai-runner's relay may have written more, or the same, already).

    Bounded by `timeout_s` per NATS request: the webhook's answer waits for this after its
    event is stored, and a slow log must not hold Replicate's request for long.
    """

    def __init__(
        self,
        nc: NATS,
        subjects: Subjects,
        jobs_stream: str,
        *,
        replicas: int,
        max_bytes: int = DEV_CAPACITY.output_stream_max_bytes,
        timeout_s: float = 1.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout_s)
        self._subjects = subjects
        self._spec = output_stream(
            subjects,
            jobs_stream,
            longest_deadline_s=LONGEST_DEADLINE_S,
            replicas=replicas,
            max_bytes=max_bytes,
        )
        self._log = OutputLog(self._js, self._spec.name, subjects, timeout_s=timeout_s)
        # Declared on first use, as the parked stream is: a failure is retried with the next
        # output webhook instead of stopping the service.
        self._ensured = False

    async def offer(self, job_id: uuid.UUID, prediction_id: str, text: str) -> None:
        self._subjects.output(job_id, prediction_id)  # `SubjectError` before any request
        if not self._nc.is_connected:
            raise Unavailable("not connected to NATS")
        try:
            if not self._ensured:
                await ensure_stream(self._js, self._spec)
                self._ensured = True
            await self._log.offer(job_id, prediction_id, 0, text)
        except OutputGap as exc:  # never from offset 0; kept so nothing escapes as a 500
            raise Unavailable(f"output log: {exc}") from exc
        except _BUS_ERRORS as exc:
            raise Unavailable(f"output not offered: {exc!r}") from exc
