"""The handler's ports over NATS: events into JetStream's `JOBS`, large results into the shared
results Object Store (`jobs_runtime.results`), progress on core NATS."""

from __future__ import annotations

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from jobs_proto.api import JobProgress
from jobs_proto.events import JobEvent
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_runtime.results import result_store, store_result
from webhook_ingest.ports import BusUnavailable

# Timeouts, no responders, a closed connection, a payload over the server's limit, JetStream
# refusing to store: whatever the cause, the webhook's sender should try again later.
_BUS_ERRORS = (nats.errors.Error, TimeoutError, OSError)


class JetStreamEvents:
    """Stores events with the runtime's publisher, which waits for JetStream's acknowledgement."""

    def __init__(self, nc: NATS, publisher: EventPublisher) -> None:
        self._nc = nc
        self._publisher = publisher

    async def store(self, event: JobEvent) -> bool:
        if not self._nc.is_connected:
            # While reconnecting, nats-py would buffer the publish and wait out the timeout;
            # answering at once lets Replicate's retry find us connected again.
            raise BusUnavailable("not connected to NATS")
        try:
            ack = await self._publisher.publish(event)
        except _BUS_ERRORS as exc:
            raise BusUnavailable(f"JetStream did not store the event: {exc!r}") from exc
        return bool(ack.duplicate)


class ObjectStoreResults:
    """Puts a final output into the results bucket of the jobs stream, under one name per
    prediction, and returns once every chunk is stored."""

    def __init__(self, nc: NATS, js: JetStreamContext, jobs_stream: str, *, replicas: int) -> None:
        self._nc = nc
        self._js = js
        self._jobs_stream = jobs_stream
        self._replicas = replicas
        # Opened on first use: most webhooks never need it, and a failed open is retried with
        # the next large result instead of stopping the service.
        self._bucket: ObjectStore | None = None

    async def store(self, prediction_id: str, output: str) -> str:
        if not self._nc.is_connected:
            raise BusUnavailable("not connected to NATS")
        try:
            if self._bucket is None:
                self._bucket = await result_store(
                    self._js, self._jobs_stream, replicas=self._replicas
                )
            return await store_result(self._bucket, prediction_id, output)
        except _BUS_ERRORS as exc:
            raise BusUnavailable(f"the result store did not take the output: {exc!r}") from exc


class CoreNatsProgress:
    """Publishes partial output on `job_progress.<jobId>`, fire and forget."""

    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects

    async def send(self, progress: JobProgress) -> None:
        if not self._nc.is_connected:
            # Stale by the time NATS is back: the next output webhook carries all the text.
            raise BusUnavailable("not connected to NATS")
        try:
            await self._nc.publish(
                self._subjects.progress(progress.job_id), msgspec.json.encode(progress)
            )
        except _BUS_ERRORS as exc:
            raise BusUnavailable(f"progress not sent: {exc!r}") from exc
