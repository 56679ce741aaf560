"""A job's change the gateway never heard announced (lost on core NATS: a partition, a stopped
job-store replica) still reaches its open streams: the gateway process's resync
(`SSE_RESYNC_S`) asks the real job-store's `versions` endpoint, reads the job that changed, and
its `/output`, `/events` and `/api/events` streams end as if the change had been announced; the
`gateway_missed_changes_total` metric counts it once."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.subjects import Subjects
from jobs_testkit.processes import ServiceProcess
from jobs_testkit.sse import Event, events

from .test_gateway_output import running_job
from .test_gateway_processes import RunningGateway, bearer
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env

OUTPUT = "The whole text, never announced."


@pytest.fixture
def gateway_env(gateway_base_env: dict[str, str]) -> dict[str, str]:
    return {**gateway_base_env, "SSE_RESYNC_S": "0.5"}


@pytest.fixture
async def api(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice"), timeout=10) as c:
        yield c


async def _data_events(response: httpx.Response) -> AsyncIterator[Event]:
    assert response.status_code == 200, await response.aread()
    async for event in events(response):
        if event.data:
            yield event


async def _finish_unannounced(database_url: str, job_id: str) -> None:
    """The job's row moved to `succeeded` behind the job-store's back: no announcement."""
    conn = await asyncpg.connect(database_url)
    try:
        updated = await conn.execute(
            "UPDATE jobs SET status = 'succeeded', version = version + 1, output = $2,"
            " updated_at = now(), completed_at = now() WHERE id = $1",
            uuid.UUID(job_id),
            OUTPUT,
        )
        assert updated == "UPDATE 1"
    finally:
        await conn.close()


async def test_an_unannounced_end_reaches_the_open_streams_through_the_resync(
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    gateway_env: dict[str, str],
    nats_client: NATS,
    subjects: Subjects,
    database_url: str,
) -> None:
    job_id, _, _ = await running_job(api, nats_client, subjects)  # processing, version 2
    output_path, events_path = f"/api/jobs/{job_id}/output", f"/api/jobs/{job_id}/events"
    async with (
        api.stream("GET", output_path) as output_response,
        api.stream("GET", events_path) as job_response,
        api.stream("GET", "/api/events") as user_response,
    ):
        output, job, mine = (
            _data_events(r) for r in (output_response, job_response, user_response)
        )
        # Each stream is open (its subscription taken before its first read) and has sent
        # the running state it read.
        first = await anext(job)
        assert (first.event, first.id, first.json()["status"]) == ("status", "2", "processing")
        while (await anext(mine)).json().get("jobId") != job_id:
            pass

        await _finish_unannounced(database_url, job_id)

        # Nothing else will ever be announced: only the resync can end these streams.
        async def all_of(stream: AsyncIterator[Event]) -> list[Event]:
            return [event async for event in stream]

        async def until_ended(stream: AsyncIterator[Event]) -> Event:
            async for event in stream:
                if event.json().get("jobId") == job_id and event.json()["version"] == 3:
                    return event
            raise AssertionError("the multiplexed stream closed")

        ended_output, ended_job, ended_mine = await asyncio.gather(
            all_of(output), all_of(job), until_ended(mine)
        )
    assert [(e.event, e.json()) for e in ended_output] == [
        ("output", {"text": OUTPUT}),
        ("done", {"status": "succeeded", "error": None}),
    ]
    assert [(e.event, e.id, e.json()["status"]) for e in ended_job] == [
        ("status", "3", "succeeded")
    ]
    assert ended_job[0].json()["output"] == OUTPUT
    assert (ended_mine.event, ended_mine.json()["status"]) == ("status", "succeeded")
    metrics = await api.get(f"http://127.0.0.1:{gateway_env['ADMIN_PORT']}/metrics")
    assert "gateway_missed_changes_total 1.0" in metrics.text
