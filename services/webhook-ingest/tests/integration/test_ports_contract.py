"""The handler's ports, one behaviour for the fakes the unit tests use and for the NATS adapters
the service runs: duplicates found by message id or `webhook-id`, one result object per
prediction, and `Unavailable` while NATS is away."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from jobs_proto.api import JobProgress
from jobs_proto.events import JobCompleted, JobStarted
from jobs_proto.stream import StreamSpec, parked_stream
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_runtime.errors import Unavailable
from jobs_runtime.progress import CoreNatsProgress
from jobs_runtime.results import bucket_name, load_result, result_ref, result_store
from webhook_ingest.adapters.bus import (
    JetStreamEvents,
    NatsWebhookParking,
    ObjectStoreResults,
)
from webhook_ingest.ports import EventStore, ProgressSink, ResultStore, WebhookParking

from ..fakes import FakeBus

NOW = datetime(2026, 7, 8, 9, 10, 11, tzinfo=UTC)


@dataclass
class Ports:
    events: EventStore
    progress: ProgressSink
    results: ResultStore
    parking: WebhookParking
    load: Callable[[str], Awaitable[str]]  # a stored result back by its reference


def fake_ports(*, down: bool) -> Ports:
    bus = FakeBus()
    bus.down = down

    async def load(ref: str) -> str:
        return bus.results.objects[ref]

    return Ports(bus.events, bus.progress, bus.results, bus.parking, load)


def nats_ports(nc: NATS, subjects: Subjects, stream: str) -> Ports:
    js = nc.jetstream()

    async def load(ref: str) -> str:
        return await load_result(await result_store(js, stream), ref)

    return Ports(
        JetStreamEvents(nc, EventPublisher(js, subjects)),
        CoreNatsProgress(nc, subjects),
        ObjectStoreResults(nc, js, stream, replicas=1),
        NatsWebhookParking(nc, js, subjects, stream, replicas=1),
        load,
    )


@pytest.fixture(params=["fake", "nats"])
async def ports(
    request: pytest.FixtureRequest,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> AsyncIterator[Ports]:
    if request.param == "fake":
        yield fake_ports(down=False)
        return
    yield nats_ports(nats_client, subjects, jobs_stream_ready.name)
    # What the adapters created beside the test's stream, on first use.
    js = nats_client.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(parked_stream(subjects, jobs_stream_ready.name).name)
    with contextlib.suppress(NotFoundError):
        await js.delete_object_store(bucket_name(jobs_stream_ready.name))


@pytest.fixture(params=["fake", "nats"])
async def ports_down(
    request: pytest.FixtureRequest, nats_url: str, subjects: Subjects
) -> AsyncIterator[Ports]:
    if request.param == "fake":
        yield fake_ports(down=True)
        return
    nc = await nats.connect(nats_url)
    await nc.close()
    yield nats_ports(nc, subjects, f"JOBS_{uuid.uuid4().hex[:8]}")


def started(job_id: uuid.UUID, prediction_id: str) -> JobStarted:
    return JobStarted(job_id=job_id, occurred_at=NOW, prediction_id=prediction_id)


def completed(job_id: uuid.UUID, webhook_id: str) -> JobCompleted:
    return JobCompleted(
        job_id=job_id,
        occurred_at=NOW,
        prediction_id="p1",
        prediction_status="succeeded",
        output="done",
        webhook_id=webhook_id,
    )


async def test_an_event_stored_again_is_a_duplicate(ports: Ports) -> None:
    job_id = uuid.uuid4()
    assert await ports.events.store(started(job_id, "p1")) is False
    assert await ports.events.store(started(job_id, "p1")) is True
    assert await ports.events.store(started(job_id, "p2")) is False
    # A final webhook's event is the same message when Replicate sends it again.
    assert await ports.events.store(completed(job_id, "msg_final")) is False
    assert await ports.events.store(completed(job_id, "msg_final")) is True


async def test_a_result_is_one_object_per_prediction(ports: Ports) -> None:
    ref = await ports.results.store("p1", "first try")
    assert ref == result_ref("p1")
    assert await ports.results.store("p1", "retried") == ref
    assert await ports.load(ref) == "retried"
    assert await ports.results.store("p2", "another") != ref


async def test_a_webhook_parked_again_is_kept_once(ports: Ports) -> None:
    assert await ports.parking.park("msg_1", b"{}", "no_job", "names no job") is False
    assert await ports.parking.park("msg_1", b"{}", "no_job", "names no job") is True
    assert await ports.parking.park("msg_2", b"{}", "no_job", "names no job") is False


async def test_progress_is_sent(ports: Ports) -> None:
    await ports.progress.send(JobProgress(job_id=uuid.uuid4(), output="a", seq=1))


async def test_every_port_is_unavailable_while_nats_is_away(ports_down: Ports) -> None:
    job_id = uuid.uuid4()
    with pytest.raises(Unavailable):
        await ports_down.events.store(started(job_id, "p1"))
    with pytest.raises(Unavailable):
        await ports_down.progress.send(JobProgress(job_id=job_id, output="a", seq=1))
    with pytest.raises(Unavailable):
        await ports_down.results.store("p1", "output")
    with pytest.raises(Unavailable):
        await ports_down.parking.park("msg_1", b"{}", "no_job", "names no job")
