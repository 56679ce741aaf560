"""Long fetches over a real NATS: a message is handed over as soon as it is published, and
`stop` ends a fetch with nothing in it at once instead of when it runs out."""

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError

from ai_runner.__main__ import consumer_specs
from ai_runner.adapters.fetching import stoppable
from ai_runner.config import Settings
from jobs_proto.events import JobRequested
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher, ensure_consumer


def requested_event() -> JobRequested:
    return JobRequested(
        job_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        user_id="user-1",
        job_type="script_generation",
        input={"topic": "tides"},
    )


async def test_a_long_fetch_returns_a_message_at_once_and_ends_when_stop_is_set(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    stop = asyncio.Event()
    settings = Settings(jobs_stream=jobs_stream_ready.name, subject_prefix=subjects.prefix)
    spec = consumer_specs(settings)[0]
    js = stoppable(nats_client.jetstream(), stop)
    await ensure_consumer(js, jobs_stream_ready.name, spec)
    subscription = await js.pull_subscribe_bind(durable=spec.durable, stream=jobs_stream_ready.name)

    fetching = asyncio.ensure_future(subscription.fetch(8, timeout=30))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await EventPublisher(nats_client.jetstream(), subjects).publish(requested_event())
    messages = await asyncio.wait_for(fetching, 5)
    assert len(messages) == 1
    assert time.monotonic() - started < 2
    await messages[0].ack()

    fetching = asyncio.ensure_future(subscription.fetch(8, timeout=30))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    stop.set()
    with pytest.raises(NatsTimeoutError):
        await asyncio.wait_for(fetching, 5)
    assert time.monotonic() - started < 1
    # Once stopped, a fetch gives up before asking.
    with pytest.raises(NatsTimeoutError):
        await subscription.fetch(8, timeout=30)
    await subscription.unsubscribe()
