"""The JetStream event store: one `started` publish per prediction, however many webhooks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.js import api as js_api

from jobs_proto.events import JobEvent, JobStarted
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from webhook_ingest.adapters.bus import JetStreamEvents


class CountingPublisher(EventPublisher):
    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        super().__init__(nc.jetstream(), subjects)
        self.published: list[JobEvent] = []

    async def publish(self, event: JobEvent) -> js_api.PubAck:
        self.published.append(event)
        return await super().publish(event)


def started(job_id: uuid.UUID, prediction_id: str) -> JobStarted:
    return JobStarted(job_id=job_id, occurred_at=datetime.now(UTC), prediction_id=prediction_id)


async def test_a_predictions_started_is_published_once_and_then_answered_as_stored(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    publisher = CountingPublisher(nats_client, subjects)
    events = JetStreamEvents(nats_client, publisher)
    job_id = uuid.uuid4()

    # The first webhook (a `start`, or an `output` when the `start` was lost) stores it.
    assert await events.store(started(job_id, "p1")) is False
    # Every later `output` webhook of the prediction: already stored, nothing published.
    assert await events.store(started(job_id, "p1")) is True
    assert await events.store(started(job_id, "p1")) is True
    # Another prediction is news again.
    assert await events.store(started(job_id, "p2")) is False

    assert [e.prediction_id for e in publisher.published if isinstance(e, JobStarted)] == [
        "p1",
        "p2",
    ]
    stream = await nats_client.jetstream().stream_info(jobs_stream_ready.name)
    assert stream.state.messages == 2


async def test_another_replicas_started_is_still_found_by_its_message_id(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    job_id = uuid.uuid4()
    first = JetStreamEvents(nats_client, EventPublisher(nats_client.jetstream(), subjects))
    second = JetStreamEvents(nats_client, EventPublisher(nats_client.jetstream(), subjects))
    assert await first.store(started(job_id, "p1")) is False
    assert await second.store(started(job_id, "p1")) is True  # JetStream's duplicate window
