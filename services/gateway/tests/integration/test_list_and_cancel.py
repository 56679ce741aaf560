"""`GET /api/jobs` and `POST /api/jobs/{jobId}/cancel` of the gateway as a process over real
NATS, with a stand-in for the job-store where one is needed: every status each answers, what
reaches the job-store and what reaches the stream."""

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.api import GetJob, JobPage, JobReply, JobSummary, JobView, ListJobs
from jobs_proto.events import JobCancelRequested, decode_event
from jobs_proto.status import JobStatus
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import ensure_stream

from .conftest import (
    RunningGateway,
    bearer,
    job_store_double,
    job_store_list_double,
    random_job_id,
)
from .test_api import assert_problem, stored_view

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def api(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice")) as client:
        yield client


def summary(job_id: str, minutes: int, status: JobStatus = "processing") -> JobSummary:
    return JobSummary(
        job_id=uuid.UUID(job_id),
        type="video_outline",
        status=status,
        version=2,
        error=None,
        prediction_id=None,
        created_at=AT + timedelta(minutes=minutes),
        updated_at=AT + timedelta(minutes=minutes),
        completed_at=None,
    )


def refusing(code: int) -> Callable[[ListJobs], int]:
    """A job-store `list` answering every request with the error `code`."""
    return lambda _: code


# --- GET /api/jobs ------------------------------------------------------------------------------


async def test_a_list_is_the_job_stores_page_in_camel_case(
    api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    newer, older = random_job_id(), random_job_id()
    page = JobPage(items=[summary(newer, 2), summary(older, 1)], next_cursor="c2")
    async with job_store_list_double(nats_client, subjects, lambda _: page) as asked:
        response = await api.get(
            "/api/jobs",
            params=[
                ("limit", "2"),
                ("status", "processing"),
                ("status", "pending"),
                ("type", "video_outline"),
            ],
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["nextCursor"] == "c2"
        assert [item["jobId"] for item in body["items"]] == [newer, older]
        assert body["items"][0] == {
            "jobId": newer,
            "type": "video_outline",
            "status": "processing",
            "version": 2,
            "error": None,
            "predictionId": None,
            "createdAt": "2030-01-02T03:06:05Z",
            "updatedAt": "2030-01-02T03:06:05Z",
            "completedAt": None,
        }
        # The next page: the cursor goes back as it came, defaults fill the rest.
        assert (await api.get("/api/jobs", params={"cursor": "c2"})).status_code == 200
    assert asked == [
        ListJobs(
            user_id="alice",
            limit=2,
            statuses=["processing", "pending"],
            types=["video_outline"],
        ),
        ListJobs(user_id="alice", limit=50, cursor="c2"),
    ]


async def test_bad_parameters_are_422_naming_each_before_the_job_store_is_asked(
    api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    empty = JobPage(items=[], next_cursor=None)
    async with job_store_list_double(nats_client, subjects, lambda _: empty) as asked:
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
    api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    async with job_store_list_double(nats_client, subjects, refusing(400)):
        body = assert_problem(await api.get("/api/jobs?cursor=zzz"), 400, "invalid-cursor")
    assert "cursor" in body["detail"]


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
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    job_id = random_job_id()
    view = stored_view(job_id)  # processing

    def answer(request: GetJob) -> bytes:
        return msgspec.json.encode(JobReply(job=view if request.user_id == "alice" else None))

    async with job_store_double(nats_client, subjects, answer):
        first = await api.post(f"/api/jobs/{job_id}/cancel")
        assert first.status_code == 202, first.text
        assert first.json() == msgspec.to_builtins(view)
        assert first.headers["location"] == f"/api/jobs/{job_id}"
        seq, event, msg_id = await cancel_requests(nats_client, jobs_stream_ready, subjects, job_id)
        assert (event.job_id, event.user_id, msg_id) == (
            uuid.UUID(job_id),
            "alice",
            f"cancel:{job_id}",
        )

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
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    status: JobStatus,
    answer: int,
) -> None:
    job_id = random_job_id()
    view: JobView = stored_view(job_id, status=status, completed_at=AT)
    reply = msgspec.json.encode(JobReply(job=view))
    async with job_store_double(nats_client, subjects, lambda _: reply):
        response = await api.post(f"/api/jobs/{job_id}/cancel")
    if answer == 202:
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "canceled"
    else:
        body = assert_problem(response, 409, "job-finished")
        assert status in body["detail"]
    info = await nats_client.jetstream().stream_info(jobs_stream_ready.name)
    assert info.state.messages == 0  # nothing was published


async def test_unknown_foreign_and_malformed_jobs_are_404(
    gateway: RunningGateway,
    api: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    created = await api.post("/api/jobs", json={"type": "video_outline", "input": {"topic": "t"}})
    job_id = created.json()["jobId"]
    null = msgspec.json.encode(JobReply(job=None))
    async with (
        job_store_double(nats_client, subjects, lambda _: null),
        httpx.AsyncClient(base_url=gateway.url, headers=bearer("bob")) as bob,
    ):
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
