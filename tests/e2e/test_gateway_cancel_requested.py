"""`cancelRequested` on the gateway as a process over real NATS and the real job-store: true
from the cancel request until the job ends, in the cancel's answer, `GET /api/jobs/{jobId}`,
the list's items and the events' `status` data; false again once the job is terminal."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_testkit import events
from jobs_testkit.processes import ServiceProcess
from jobs_testkit.sse import Event
from jobs_testkit.sse import events as sse_events

from .test_gateway_api import at_version
from .test_gateway_list_and_cancel import admitted
from .test_gateway_processes import RunningGateway, bearer
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env


@pytest.fixture
async def api(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice")) as client:
        yield client


async def next_status(stream: AsyncIterator[Event]) -> Event:
    async with asyncio.timeout(10):
        async for event in stream:
            if event.event == "status":
                return event
    raise AssertionError("the stream ended")


async def listed(api: httpx.AsyncClient, job_id: str) -> bool:
    page = await api.get("/api/jobs")
    assert page.status_code == 200, page.text
    (item,) = [i for i in page.json()["items"] if i["jobId"] == job_id]
    flag: bool = item["cancelRequested"]
    return flag


async def test_a_cancel_request_shows_until_the_job_ends(
    job_store: ServiceProcess, api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    job = await admitted(api, nats_client, subjects)
    job_id = str(job)
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await publisher.publish(events.submitted(job, prediction=f"pred-{job}"))
    running = (await at_version(api, job_id, 2)).json()
    assert (running["status"], running["cancelRequested"]) == ("processing", False)
    assert not await listed(api, job_id)

    async with api.stream("GET", f"/api/jobs/{job_id}/events") as response:
        stream = sse_events(response)
        first = await next_status(stream)
        assert (first.id, first.json()["cancelRequested"]) == ("2", False)

        canceling = await api.post(f"/api/jobs/{job_id}/cancel")
        assert canceling.status_code == 202, canceling.text
        assert canceling.json()["cancelRequested"] is True

        change = await next_status(stream)
        assert change.id == "3"
        assert (change.json()["status"], change.json()["cancelRequested"]) == (
            "processing",
            True,
        )
    shown = (await at_version(api, job_id, 3)).json()
    assert (shown["status"], shown["cancelRequested"]) == ("processing", True)
    assert await listed(api, job_id)

    # The prediction ends canceled: the job is terminal, nothing is being canceled any more.
    await publisher.publish(events.completed(job, "canceled", prediction=f"pred-{job}"))
    ended = (await at_version(api, job_id, 4)).json()
    assert (ended["status"], ended["cancelRequested"]) == ("canceled", False)
    assert not await listed(api, job_id)


async def test_a_pending_job_canceled_shows_the_request_in_the_answer(
    job_store: ServiceProcess, api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    job_id = str(await admitted(api, nats_client, subjects))
    answer = await api.post(f"/api/jobs/{job_id}/cancel")
    assert answer.status_code == 202, answer.text
    assert (answer.json()["status"], answer.json()["cancelRequested"]) == ("pending", True)
    # A pending job is canceled by the request itself: it ends at once.
    ended = (await at_version(api, job_id, 2)).json()
    assert (ended["status"], ended["cancelRequested"]) == ("canceled", False)
