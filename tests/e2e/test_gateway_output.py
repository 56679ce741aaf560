"""`GET /api/jobs/{jobId}/output` of the gateway as a process over real NATS and the real
job-store, the output log written with `OutputLog` as the relay and webhook-ingest write it:
text from offset 0 while the job runs, live chunks, a resume by `Last-Event-ID` mid-text (and
by `?offset=` with the token in the query), the rest from the stored output and `done` when the
job ends, a finished job's text, `done` at once past its end, the failed job's error, and the
refusals (`422` naming the bad offset, `404` for another user's job)."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.events import JobCompleted, JobSubmitted
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_runtime.output import OutputLog
from jobs_testkit.processes import ServiceProcess
from jobs_testkit.sse import Event, events

from .test_gateway_api import admitted_and_stored, assert_problem, at_version
from .test_gateway_processes import RunningGateway, bearer, token
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env


@pytest.fixture
async def api(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice"), timeout=10) as c:
        yield c


@asynccontextmanager
async def output_stream(
    api: httpx.AsyncClient,
    job_id: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[AsyncIterator[Event]]:
    """The job's `/output` stream as events, keepalive comments left out."""
    path = f"/api/jobs/{job_id}/output"
    async with api.stream("GET", path, params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")

        async def texts() -> AsyncIterator[Event]:
            async for event in events(response):
                if event.data:
                    yield event

        yield texts()


async def next_event(stream: AsyncIterator[Event]) -> tuple[str, str | None, object]:
    event = await anext(stream)
    data = event.json()
    return event.event, event.id, data.get("text", data)


async def rest(stream: AsyncIterator[Event]) -> list[tuple[str, str | None, object]]:
    """Every event until the stream closes (it must, after `done`)."""
    seen = []
    async for event in stream:
        data = event.json()
        seen.append((event.event, event.id, data.get("text", data)))
    return seen


async def running_job(
    api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> tuple[str, str, EventPublisher]:
    """A job admitted through the gateway and bound to a prediction of its own."""
    job_id = await admitted_and_stored(api, nats_client, subjects)
    prediction_id = f"p{uuid.uuid4().hex[:12]}"
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await publisher.publish(
        JobSubmitted(
            job_id=uuid.UUID(job_id), occurred_at=datetime.now(UTC), prediction_id=prediction_id
        )
    )
    await at_version(api, job_id, 2)
    return job_id, prediction_id, publisher


async def test_the_output_route_over_the_real_job_store_and_log(
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
    jobs_stream_ready: StreamSpec,
) -> None:
    # One system for both (a gateway and a job-store each start in seconds).
    await a_running_jobs_text_streams_resumes_and_ends_with_its_stored_output(
        api, nats_client, subjects, jobs_stream_ready
    )
    await a_failed_job_ends_with_its_error_and_bad_requests_are_refused(api, nats_client, subjects)


async def a_running_jobs_text_streams_resumes_and_ends_with_its_stored_output(
    api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects, jobs_stream_ready: StreamSpec
) -> None:
    job_id, prediction, publisher = await running_job(api, nats_client, subjects)
    job = uuid.UUID(job_id)
    # The gateway declared the log's stream when it started.
    log = OutputLog(nats_client.jetstream(), f"{jobs_stream_ready.name}_OUTPUT", subjects)
    cursor = await log.offer(job, prediction, 0, "Once upon ")

    async with output_stream(api, job_id) as live:
        assert await next_event(live) == ("output", "10", "Once upon ")
        cursor = await log.offer(job, prediction, 10, "a tïme", cursor)
        assert await next_event(live) == ("output", "16", "a tïme")

        # A reconnect mid-chunk: from character 7 on, nothing repeated, nothing skipped; the
        # URL's older `?offset=` loses to the `Last-Event-ID` an `EventSource` sends.
        async with output_stream(
            api, job_id, params={"offset": "2"}, headers={"Last-Event-ID": "7"}
        ) as resumed:
            assert await next_event(resumed) == ("output", "10", "on ")
            assert await next_event(resumed) == ("output", "16", "a tïme")
        # `?offset=` and the token in the query, as a browser opens it the first time.
        query = {"offset": "16", "access_token": token("alice")}
        async with (
            httpx.AsyncClient(base_url=str(api.base_url), timeout=10) as anonymous,
            output_stream(anonymous, job_id, params=query) as ahead,
        ):
            # Offers that overlap what the log holds append only the rest.
            cursor = await log.offer(job, prediction, 0, "Once upon a tïme, ", cursor)
            assert await next_event(live) == ("output", "18", ", ")
            assert await next_event(ahead) == ("output", "18", ", ")

        await publisher.publish(
            JobCompleted(
                job_id=job,
                occurred_at=datetime.now(UTC),
                prediction_id=prediction,
                prediction_status="succeeded",
                output="Once upon a tïme, the end.",
            )
        )
        done = {"status": "succeeded", "error": None}
        assert await rest(live) == [("output", "26", "the end."), ("done", None, done)]

    # Finished: the stored output (the log is not read), from any offset; past the end,
    # `done` at once.
    async with output_stream(api, job_id) as again:
        assert await rest(again) == [
            ("output", "26", "Once upon a tïme, the end."),
            ("done", None, done),
        ]
    async with output_stream(api, job_id, headers={"Last-Event-ID": "18"}) as later:
        assert await rest(later) == [("output", "26", "the end."), ("done", None, done)]
    async with output_stream(api, job_id, params={"offset": "400"}) as past:
        assert await rest(past) == [("done", None, done)]


async def a_failed_job_ends_with_its_error_and_bad_requests_are_refused(
    api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    job_id, prediction, publisher = await running_job(api, nats_client, subjects)
    path = f"/api/jobs/{job_id}/output"

    for params, headers, named in [
        ({"offset": "-1"}, {}, "offset"),
        ({"offset": "ten"}, {}, "offset"),
        ({}, {"Last-Event-ID": "1e3"}, "Last-Event-ID"),
    ]:
        refused = await api.get(path, params=params, headers=headers)
        problem = assert_problem(refused, 422, "validation")
        assert [e["parameter"] for e in problem["errors"]] == [named]
    # Another user's job, and no job at all, are the same `404`.
    assert_problem(await api.get(path, headers=bearer("bob")), 404, "not-found")
    assert_problem(await api.get(f"/api/jobs/{uuid.uuid4()}/output"), 404, "not-found")
    assert (await api.get(path, headers={"Authorization": "Bearer nope"})).status_code == 401

    async with output_stream(api, job_id) as stream:
        await publisher.publish(
            JobCompleted(
                job_id=uuid.UUID(job_id),
                occurred_at=datetime.now(UTC),
                prediction_id=prediction,
                prediction_status="failed",
                error="the model ran out of memory",
            )
        )
        [(name, event_id, data)] = await rest(stream)
    assert (name, event_id) == ("done", None)
    assert isinstance(data, dict)
    assert data["status"] == "failed"
    assert data["error"]["message"]
