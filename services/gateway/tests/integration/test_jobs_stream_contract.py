"""The contract of the two ports over the `JOBS` stream (`EventBus`, `RequestedLog`), run
against the fake the unit tests use and against the NATS adapters on a real JetStream stream:
a published request is found by its job id, nothing else is, and a stream that does not
answer is `Unavailable` both ways."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client as NATS

from gateway.adapters.nats import JetStreamEventBus, StreamRequestedLog
from gateway.ports import EventBus, RequestedLog
from jobs_proto.events import JobCancelRequested, JobRequested
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_runtime.errors import Unavailable

from ..fakes import FakeJobsStream

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Stream:
    """The two ports under test, and how to make the stream stop answering."""

    bus: EventBus
    log: RequestedLog
    take_down: Callable[[], Awaitable[None]]


def requested(job_id: uuid.UUID) -> JobRequested:
    return JobRequested(
        job_id=job_id,
        occurred_at=AT,
        user_id="alice",
        job_type="title_generation",
        input={"topic": "tides"},
    )


@pytest.fixture(params=["fake", "nats"])
async def stream(
    request: pytest.FixtureRequest,
    nats_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> AsyncIterator[Stream]:
    if request.param == "fake":
        fake = FakeJobsStream()

        async def take_down() -> None:
            fake.down = True

        yield Stream(fake, fake, take_down)
        return
    # A connection of its own, so that taking it down leaves the test kit's alone.
    nc: NATS = await nats.connect(nats_url, max_reconnect_attempts=0)
    bus = JetStreamEventBus(nc, EventPublisher(nc.jetstream(), subjects))
    try:
        yield Stream(bus, StreamRequestedLog(nc, jobs_stream_ready.name, subjects), nc.close)
    finally:
        await nc.close()


async def test_a_published_request_is_found_by_its_job_id(stream: Stream) -> None:
    job_id = uuid.uuid4()
    await stream.bus.publish(requested(job_id))
    await stream.bus.publish(requested(job_id))  # a retry: the same message
    assert await stream.log.find_requested(job_id) == requested(job_id)


async def test_nothing_else_is_found(stream: Stream) -> None:
    job_id = uuid.uuid4()
    assert await stream.log.find_requested(job_id) is None
    await stream.bus.publish(JobCancelRequested(job_id=job_id, occurred_at=AT, user_id="alice"))
    assert await stream.log.find_requested(job_id) is None
    await stream.bus.publish(requested(uuid.uuid4()))
    assert await stream.log.find_requested(job_id) is None


async def test_a_stream_that_does_not_answer_is_unavailable(stream: Stream) -> None:
    await stream.take_down()
    with pytest.raises(Unavailable):
        await stream.bus.publish(requested(uuid.uuid4()))
    with pytest.raises(Unavailable):
        await stream.log.find_requested(uuid.uuid4())
