"""`GET /api/jobs` and `POST /api/jobs/{jobId}/cancel` of the gateway as a process over real
NATS and the real job-store, with a stand-in for the job-store only for what the real one
cannot do: every status each answers, what reaches the job-store and what reaches the stream."""

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.api import GetJob, JobReply, ListJobs
from jobs_proto.events import (
    JobCancelRequested,
    JobEvent,
    JobSubmitted,
    decode_event,
    encode_event,
)
from jobs_proto.status import JobStatus
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher, ensure_stream
from jobs_testkit import events
from jobs_testkit.processes import ServiceProcess
from jobs_testkit.waiting import eventually

from .test_gateway_api import assert_problem, at_version, stored_view
from .test_gateway_processes import (
    RunningGateway,
    bearer,
    job_store_double,
    job_store_list_double,
    overheard,
    random_job_id,
    requested_in_stream,
)
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def api(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice")) as client:
        yield client


def refusing(code: int) -> Callable[[ListJobs], int]:
    """A job-store `list` answering every request with the error `code`."""
    return lambda _: code


async def admitted(
    client: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
    user: str = "alice",
    job_type: str = "video_outline",
) -> uuid.UUID:
    """A job admitted through the gateway for `user`, once the real job-store has stored it
    (asked directly: the gateway answers a pending job from the stream before that)."""
    created = await client.post("/api/jobs", json={"type": job_type, "input": {"topic": "t"}})
    assert created.status_code == 202, created.text
    job_id = uuid.UUID(created.json()["jobId"])
    request = msgspec.json.encode(GetJob(job_id=job_id, user_id=user))

    async def stored() -> bool:
        reply = await nats_client.request(subjects.get_job, request, timeout=2)
        return msgspec.json.decode(reply.data, type=JobReply).job is not None

    await eventually(stored)
    return job_id


# --- GET /api/jobs ------------------------------------------------------------------------------


async def test_a_list_is_the_job_stores_page_in_camel_case(
    job_store: ServiceProcess,
    gateway: RunningGateway,
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    pending = await admitted(api, nats_client, subjects)  # the oldest
    older = await admitted(api, nats_client, subjects)
    newer = await admitted(api, nats_client, subjects)
    finished = await admitted(api, nats_client, subjects)  # left out by the status filter
    titles = await admitted(api, nats_client, subjects, job_type="title_generation")
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("bob")) as bob:
        await admitted(bob, nats_client, subjects, user="bob")  # never in alice's list
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    for job, minutes in ((older, 1), (newer, 2), (finished, 3)):
        await publisher.publish(
            JobSubmitted(
                job_id=job, occurred_at=AT + timedelta(minutes=minutes), prediction_id=f"p-{job}"
            )
        )
    await publisher.publish(events.completed(finished, prediction=f"p-{finished}"))
    for job, version in ((older, 2), (newer, 2), (finished, 3)):
        await at_version(api, str(job), version)

    filters = [("status", "processing"), ("status", "pending"), ("type", "video_outline")]
    async with overheard(nats_client, subjects.list_jobs, ListJobs) as asked:
        response = await api.get("/api/jobs", params=[("limit", "2"), *filters])
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        cursor = body["nextCursor"]
        assert isinstance(cursor, str)
        assert cursor
        assert [item["jobId"] for item in body["items"]] == [str(newer), str(older)]
        requested = await requested_in_stream(nats_client, jobs_stream_ready, subjects, str(newer))
        assert body["items"][0] == {
            "jobId": str(newer),
            "type": "video_outline",
            "status": "processing",
            "version": 2,
            "error": None,
            "predictionId": f"p-{newer}",
            "createdAt": msgspec.to_builtins(requested.occurred_at),
            "updatedAt": "2030-01-02T03:06:05Z",
            "completedAt": None,
            "cancelRequested": False,
        }
        # The next page: the cursor goes back as it came (with its filters), the limit defaults.
        rest = await api.get("/api/jobs", params=[("cursor", cursor), *filters])
        assert rest.status_code == 200, rest.text
        assert rest.json()["nextCursor"] is None
        assert [(i["jobId"], i["status"]) for i in rest.json()["items"]] == [
            (str(pending), "pending")
        ]
        # No parameters: defaults fill the rest, all of alice's jobs and none of bob's.
        everything = await api.get("/api/jobs")
        assert everything.status_code == 200, everything.text
        assert everything.json()["nextCursor"] is None
        assert [i["jobId"] for i in everything.json()["items"]] == [
            str(job) for job in (titles, finished, newer, older, pending)
        ]
        await eventually(lambda: len(asked) >= 3)
    statuses: list[JobStatus] = ["processing", "pending"]
    types = ["video_outline"]
    # A request the job-store answered too late for a loaded machine is asked again, the same.
    assert [a for n, a in enumerate(asked) if a not in asked[:n]] == [
        ListJobs(user_id="alice", limit=2, statuses=statuses, types=types),
        ListJobs(user_id="alice", limit=50, cursor=cursor, statuses=statuses, types=types),
        ListJobs(user_id="alice", limit=50),
    ]


async def test_bad_parameters_are_422_naming_each_before_the_job_store_is_asked(
    api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    # Overheard, not answered: a request that reached the job-store would also be a 503.
    async with overheard(nats_client, subjects.list_jobs, ListJobs) as asked:
        for query, named in [
            ("limit=0", ["limit"]),
            ("limit=201", ["limit"]),
            ("limit=many", ["limit"]),
            ("status=done", ["status"]),
            ("limit=500&status=pending&status=nope", ["limit", "status"]),
        ]:
            body = assert_problem(await api.get(f"/api/jobs?{query}"), 422, "validation")
            assert [e["parameter"] for e in body["errors"]] == named, query
            assert all("pointer" not in e and e["detail"] for e in body["errors"])
    assert asked == []


async def test_a_cursor_the_job_store_refuses_is_400(
    job_store: ServiceProcess, api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    body = assert_problem(await api.get("/api/jobs?cursor=zzz"), 400, "invalid-cursor")
    assert "cursor" in body["detail"]
    # A real cursor is refused as well once the filters it was made for change.
    for _ in range(2):
        await admitted(api, nats_client, subjects)
    page = await api.get("/api/jobs", params={"limit": "1"})
    assert page.status_code == 200, page.text
    cursor = page.json()["nextCursor"]
    assert (await api.get("/api/jobs", params={"cursor": cursor})).status_code == 200
    other = await api.get("/api/jobs", params={"cursor": cursor, "status": "pending"})
    assert "cursor" in assert_problem(other, 400, "invalid-cursor")["detail"]


async def test_a_list_without_the_job_store_or_with_it_failing_is_503(
    api: httpx.AsyncClient, gateway: RunningGateway, nats_client: NATS, subjects: Subjects
) -> None:
    response = await api.get("/api/jobs")  # no responders at all
    assert_problem(response, 503, "unavailable")
    assert int(response.headers["retry-after"]) > 0
    for code in (503, 422):
        # The double: the real job-store cannot be made to refuse a valid list on cue.
        async with job_store_list_double(nats_client, subjects, refusing(code)):
            response = await api.get("/api/jobs")
        assert_problem(response, 503, "unavailable")
        assert int(response.headers["retry-after"]) > 0
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        assert_problem(await anonymous.get("/api/jobs"), 401, "unauthorized")


# --- POST /api/jobs/{jobId}/cancel --------------------------------------------------------------


async def cancel_requests(
    nats_client: NATS, stream: StreamSpec, subjects: Subjects, job_id: str
) -> tuple[int, JobCancelRequested, str]:
    """The last cancel request of the job in the stream: its sequence, event, message id."""
    message = await nats_client.jetstream().get_last_msg(
        stream.name, f"{subjects.prefix}job.cancel_requested.{job_id}"
    )
    event = decode_event(message.data or b"")
    assert isinstance(event, JobCancelRequested)
    assert message.headers is not None
    assert message.seq is not None
    return message.seq, event, message.headers["Nats-Msg-Id"]


async def test_a_running_job_is_asked_to_cancel_once_however_often_asked(
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    job = await admitted(api, nats_client, subjects)
    job_id = str(job)
    await EventPublisher(nats_client.jetstream(), subjects).publish(events.submitted(job))
    view = (await at_version(api, job_id, 2)).json()
    assert view["status"] == "processing"

    first = await api.post(f"/api/jobs/{job_id}/cancel")
    assert first.status_code == 202, first.text
    # The request stands at once, before the job-store applied it.
    assert first.json() == {**view, "cancelRequested": True}
    assert first.headers["location"] == f"/api/jobs/{job_id}"
    seq, event, msg_id = await cancel_requests(nats_client, jobs_stream_ready, subjects, job_id)
    assert (event.job_id, event.user_id, msg_id) == (job, "alice", f"cancel:{job_id}")

    again = await api.post(f"/api/jobs/{job_id}/cancel")
    assert again.status_code == 202, again.text
    # Deduplicated by its message id: still the one request.
    assert (await cancel_requests(nats_client, jobs_stream_ready, subjects, job_id))[0] == seq


async def test_a_job_fresh_from_admission_is_canceled_from_the_stream(
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    created = await api.post("/api/ideation/generate-titles", json={"topic": "comets"})
    job_id = created.json()["jobId"]
    # No job-store at all: the `JobRequested` in the stream proves the job is alice's.
    response = await api.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    assert (response.json()["jobId"], response.json()["status"]) == (job_id, "pending")
    _, event, _ = await cancel_requests(nats_client, jobs_stream_ready, subjects, job_id)
    assert event.user_id == "alice"


@pytest.mark.parametrize(
    ("status", "answer"), [("canceled", 202), ("succeeded", 409), ("failed", 409)]
)
async def test_a_terminal_job_is_not_asked_again(
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    status: JobStatus,
    answer: int,
) -> None:
    job = await admitted(api, nats_client, subjects)
    job_id = str(job)
    js = nats_client.jetstream()
    publisher = EventPublisher(js, subjects)
    if status == "canceled":
        ended: list[JobEvent] = []
        cancel = events.cancel(job, user="alice")
        # Under its own message id: the gateway's `cancel:<jobId>` must not be dropped as its
        # duplicate, or the count of messages below could not see it.
        await js.publish(
            subjects.event(cancel), encode_event(cancel), headers={"Nats-Msg-Id": f"t-{job}"}
        )
    elif status == "succeeded":
        ended = [events.submitted(job), events.completed(job)]
    else:
        ended = [events.failed(job)]
    for event in ended:
        await publisher.publish(event)
    stored = (await at_version(api, job_id, 3 if status == "succeeded" else 2)).json()
    assert stored["status"] == status
    before = (await js.stream_info(jobs_stream_ready.name)).state.messages

    response = await api.post(f"/api/jobs/{job_id}/cancel")
    if answer == 202:
        assert response.status_code == 202, response.text
        assert response.json() == stored
    else:
        body = assert_problem(response, 409, "job-finished")
        assert status in body["detail"]
    info = await js.stream_info(jobs_stream_ready.name)
    assert info.state.messages == before  # nothing was published


async def test_unknown_foreign_and_malformed_jobs_are_404(
    gateway: RunningGateway,
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    job_id = str(await admitted(api, nats_client, subjects))  # alice's, known to the job-store
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("bob")) as bob:
        assert_problem(await bob.post(f"/api/jobs/{job_id}/cancel"), 404, "not-found")
    assert_problem(await api.post(f"/api/jobs/{random_job_id()}/cancel"), 404, "not-found")
    assert_problem(await api.post("/api/jobs/not-a-uuid/cancel"), 404, "not-found")
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        assert_problem(await anonymous.post(f"/api/jobs/{job_id}/cancel"), 401, "unauthorized")


async def test_a_cancel_that_cannot_be_stored_or_read_is_503(
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    # Nobody can tell whether the job exists: no job-store, no request in the stream.
    response = await api.post(f"/api/jobs/{random_job_id()}/cancel")
    assert_problem(response, 503, "unavailable")
    assert int(response.headers["retry-after"]) > 0

    job_id = random_job_id()
    reply = msgspec.json.encode(JobReply(job=stored_view(job_id)))
    js = nats_client.jetstream()
    await js.delete_stream(jobs_stream_ready.name)
    try:
        # The double: it answers with the stream deleted, which the real job-store (consuming
        # that stream) does not survive as a service to ask.
        async with job_store_double(nats_client, subjects, lambda _: reply):
            response = await api.post(f"/api/jobs/{job_id}/cancel")
        assert_problem(response, 503, "unavailable")
        assert int(response.headers["retry-after"]) > 0
    finally:
        await ensure_stream(js, jobs_stream_ready)
