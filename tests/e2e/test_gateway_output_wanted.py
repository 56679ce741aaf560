"""`OutputWanted` from the gateway as a process over real NATS and the real job-store: a client
reading a running job's text (`/output`, or its `/events`) makes the gateway say so on core
NATS at once, with the job's prediction, and again every `OUTPUT_WANTED_EVERY_S` while it reads;
nothing for a finished job, nothing once the reader hung up."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from jobs_proto.events import JobCompleted
from jobs_proto.output import OutputWanted, decode_wanted
from jobs_proto.subjects import Subjects
from jobs_testkit.processes import ServiceProcess
from jobs_testkit.waiting import eventually

from .test_gateway_api import at_version
from .test_gateway_output import api as api
from .test_gateway_output import output_stream, rest, running_job
from .test_gateway_processes import RunningGateway
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env

PERIOD_S = 0.3


@pytest.fixture
def gateway_env(gateway_base_env: dict[str, str]) -> dict[str, str]:
    # A short period, and keepalives as often, so a reader that hung up is noticed soon.
    return {
        **gateway_base_env,
        "OUTPUT_WANTED_EVERY_S": str(PERIOD_S),
        "SSE_KEEPALIVE_S": str(PERIOD_S),
    }


class Announced:
    """Every `OutputWanted` this test's subscription received, in order."""

    def __init__(self) -> None:
        self.seen: list[OutputWanted] = []

    async def on_message(self, msg: Msg) -> None:
        self.seen.append(decode_wanted(msg.data))

    def of(self, job_id: str) -> list[OutputWanted]:
        return [w for w in self.seen if str(w.job_id) == job_id]

    async def times(self, job_id: str, times: int) -> list[OutputWanted]:
        """Once `job_id` was announced `times` times (rounds as a clock): its announcements."""
        await eventually(lambda: len(self.of(job_id)) >= times, what=f"{times} for {job_id}")
        return self.of(job_id)


@asynccontextmanager
async def job_events(api: httpx.AsyncClient, job_id: str) -> AsyncIterator[None]:
    async with api.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.status_code == 200, await response.aread()
        yield


async def metric(gateway_env: dict[str, str], name: str) -> float:
    async with httpx.AsyncClient() as client:
        metrics = await client.get(f"http://127.0.0.1:{gateway_env['ADMIN_PORT']}/metrics")
    for line in metrics.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def test_a_reader_of_a_running_jobs_text_is_announced_while_it_reads(
    job_store: ServiceProcess,
    gateway: RunningGateway,
    gateway_env: dict[str, str],
    api: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    announced = Announced()
    subscription = await nats_client.subscribe(subjects.all_output_wanted, cb=announced.on_message)
    read, prediction, publisher = await running_job(api, nats_client, subjects)
    clock, clock_prediction, _ = await running_job(api, nats_client, subjects)
    ended, ended_prediction, _ = await running_job(api, nats_client, subjects)
    await publisher.publish(
        JobCompleted(
            job_id=uuid.UUID(ended),
            occurred_at=datetime.now(UTC),
            prediction_id=ended_prediction,
            prediction_status="succeeded",
            output="All done.",
        )
    )
    await at_version(api, ended, 3)
    async with output_stream(api, ended) as finished:
        assert [name for name, _, _ in await rest(finished)] == ["output", "done"]

    async with output_stream(api, read):
        # At once, with the job's prediction; then once per period while the reader stays.
        expected = OutputWanted(job_id=uuid.UUID(read), prediction_id=prediction)
        assert (await announced.times(read, 1))[0] == expected
        assert await announced.times(read, 3) == [expected] * len(announced.of(read))

        # An event stream reads the text too (its progress comes from the relay).
        async with job_events(api, clock):
            assert (await announced.times(clock, 1))[0] == OutputWanted(
                job_id=uuid.UUID(clock), prediction_id=clock_prediction
            )

    # Both readers hung up. Once the gateway noticed, nothing is read here any more: wait for
    # what it published before that, then only a new reader of `clock` is announced.
    async def none_open() -> bool:
        return await metric(gateway_env, "gateway_event_streams_open") == 0

    await eventually(none_open, what="the gateway noticed the readers left")
    published = await metric(gateway_env, "gateway_output_wanted_published_total")
    await eventually(lambda: len(announced.seen) >= published, what="all published received")
    before = len(announced.seen)
    async with output_stream(api, clock) as stream:
        # Rounds for `clock` alone, as a clock: the reader that hung up, and the finished
        # job, are never announced again.
        await announced.times(clock, len(announced.of(clock)) + 3)
        assert {str(w.job_id) for w in announced.seen[before:]} == {clock}
        assert announced.of(ended) == []
        await publisher.publish(
            JobCompleted(
                job_id=uuid.UUID(clock),
                occurred_at=datetime.now(UTC),
                prediction_id=clock_prediction,
                prediction_status="succeeded",
                output="The end.",
            )
        )
        assert [name for name, _, _ in await rest(stream)] == ["output", "done"]
    await subscription.unsubscribe()
