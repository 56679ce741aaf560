"""The `JobHistory` contract, run against the fake the unit tests use and against
`StreamHistory` on a real JetStream: a job's own events name its prediction, its runners'
`submitted` before a webhook's `started`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from ai_runner.adapters.history import StreamHistory
from ai_runner.ports import JobHistory
from jobs_proto.events import JobStarted, JobSubmitted
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher

from ..fakes import FakeHistory

# The history under test, and how a runner's `submitted` of a prediction gets into it.
Submit = Callable[[uuid.UUID, str], Awaitable[None]]


@pytest.fixture(params=["fake", "stream"])
def history(request: pytest.FixtureRequest) -> tuple[JobHistory, Submit]:
    if request.param == "fake":
        fake = FakeHistory()

        async def bind(job_id: uuid.UUID, prediction_id: str) -> None:
            fake.bound[job_id] = prediction_id

        return fake, bind
    nats_client: NATS = request.getfixturevalue("nats_client")
    stream: StreamSpec = request.getfixturevalue("jobs_stream_ready")
    subjects: Subjects = request.getfixturevalue("subjects")
    js = nats_client.jetstream()
    publisher = EventPublisher(js, subjects)

    async def submit(job_id: uuid.UUID, prediction_id: str) -> None:
        now = datetime.now(UTC)
        await publisher.publish(
            JobSubmitted(job_id=job_id, occurred_at=now, prediction_id=prediction_id)
        )

    return StreamHistory(js, stream.name, subjects), submit


async def test_a_submitted_prediction_is_named_and_only_for_its_job(
    history: tuple[JobHistory, Submit],
) -> None:
    events, submit = history
    job_id = uuid.uuid4()
    assert await events.prediction_of(job_id) is None
    await submit(job_id, "p-1")
    assert await events.prediction_of(job_id) == "p-1"
    assert await events.prediction_of(uuid.uuid4()) is None


async def test_the_stream_names_the_prediction_from_submitted_else_started(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    js = nats_client.jetstream()
    history = StreamHistory(js, jobs_stream_ready.name, subjects)
    publisher = EventPublisher(js, subjects)
    job_id, now = uuid.uuid4(), datetime.now(UTC)
    await publisher.publish(JobStarted(job_id=job_id, occurred_at=now, prediction_id="p-start"))
    assert await history.prediction_of(job_id) == "p-start"
    await publisher.publish(JobSubmitted(job_id=job_id, occurred_at=now, prediction_id="p-sub"))
    assert await history.prediction_of(job_id) == "p-sub"
