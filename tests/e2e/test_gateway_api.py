"""The gateway as a process over real NATS: admission publishes `JobRequested` only once
stored, every refusal has its status and problem body in the contract's order, and reads
come from the job-store, else from the stream, else `503`, never a wrong `404`."""

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.api import GetJob, JobReply, JobView
from jobs_proto.events import JobCompleted, JobStarted, JobSubmitted
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher, ensure_stream
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.waiting import eventually

from .test_gateway_processes import (
    MAX_BODY_BYTES,
    RunningGateway,
    bearer,
    job_store_double,
    random_job_id,
    requested_in_stream,
    token,
)
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env

PROBLEM = "application/problem+json"


@pytest.fixture
async def api(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway authenticated as `alice`."""
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice")) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:ai-jobs:problem:{kind}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


async def test_a_job_is_admitted_once_its_request_is_in_the_stream(
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    before = datetime.now(UTC)
    response = await api.post(
        "/api/jobs", json={"type": "video_outline", "input": {"topic": "tides", "sections": 3}}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {"jobId": body["jobId"], "status": "pending"}
    assert uuid.UUID(body["jobId"]).version == 4
    assert response.headers["location"] == f"/api/jobs/{body['jobId']}"

    event = await requested_in_stream(nats_client, jobs_stream_ready, subjects, body["jobId"])
    assert (event.user_id, event.job_type) == ("alice", "video_outline")
    assert event.input == {"topic": "tides", "sections": 3}
    assert before <= event.occurred_at <= datetime.now(UTC)


async def test_each_ideation_route_is_its_job_type_with_the_body_as_input(
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    routes = {
        "/api/ideation/generate-script": (
            {"topic": "tides", "tone": "calm", "durationMinutes": 4},
            "script_generation",
            {"topic": "tides", "tone": "calm", "durationMinutes": 4},
        ),
        "/api/ideation/video-outline": (
            {"topic": "moons", "notAField": True},
            "video_outline",
            {"topic": "moons"},
        ),
        "/api/ideation/generate-titles": (
            {"topic": "comets", "count": 3},
            "title_generation",
            {"topic": "comets", "count": 3},
        ),
    }
    for route, (body, job_type, published) in routes.items():
        # Parameters on the media type are fine.
        response = await api.post(
            route,
            content=msgspec.json.encode(body),
            headers={"content-type": "application/json; charset=utf-8"},
        )
        assert response.status_code == 202, (route, response.text)
        job_id = response.json()["jobId"]
        assert response.headers["location"] == f"/api/jobs/{job_id}"
        event = await requested_in_stream(nats_client, jobs_stream_ready, subjects, job_id)
        assert (event.job_type, event.input, event.user_id) == (job_type, published, "alice")


async def test_every_refusal_has_its_status_and_problem_and_publishes_nothing(
    gateway: RunningGateway,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
) -> None:
    expired = token(ttl_s=-120)
    wrong_secret = token(secret="another-secret-0123456789abcdef-xyz")
    good = bearer("alice")
    json_type = {"content-type": "application/json"}
    too_big = b'{"type": "video_outline", "input": {"topic": "' + b"x" * MAX_BODY_BYTES + b'"}}'

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit must hold while reading, too.
        for _ in range(4):
            yield b" " * (MAX_BODY_BYTES // 2)

    async with httpx.AsyncClient(base_url=gateway.url) as http:
        # (what, response, status, problem kind, pointer of the 422)
        cases: list[tuple[str, httpx.Response, int, str, str | None]] = [
            ("no token", await http.post("/api/jobs", json={}), 401, "unauthorized", None),
            (
                "garbage token",
                await http.post("/api/jobs", json={}, headers={"Authorization": "Bearer x.y.z"}),
                401,
                "unauthorized",
                None,
            ),
            (
                "expired token",
                await http.post(
                    "/api/jobs", json={}, headers={"Authorization": f"Bearer {expired}"}
                ),
                401,
                "unauthorized",
                None,
            ),
            (
                "token of another secret",
                await http.post(
                    "/api/jobs", json={}, headers={"Authorization": f"Bearer {wrong_secret}"}
                ),
                401,
                "unauthorized",
                None,
            ),
            (
                "not a bearer header",
                await http.post("/api/jobs", json={}, headers={"Authorization": "Basic YTpi"}),
                401,
                "unauthorized",
                None,
            ),
            (
                "token before content type",
                await http.post("/api/ideation/generate-script", content=b"x"),
                401,
                "unauthorized",
                None,
            ),
            (
                "no token on a read",
                await http.get("/api/jobs/not-a-uuid"),
                401,
                "unauthorized",
                None,
            ),
            (
                "wrong content type",
                await http.post(
                    "/api/jobs", content=b"{}", headers={**good, "content-type": "text/plain"}
                ),
                415,
                "unsupported-media-type",
                None,
            ),
            (
                "no content type",
                await http.post("/api/jobs", content=b"{}", headers=good),
                415,
                "unsupported-media-type",
                None,
            ),
            (
                "content type before size",
                await http.post(
                    "/api/jobs", content=too_big, headers={**good, "content-type": "text/plain"}
                ),
                415,
                "unsupported-media-type",
                None,
            ),
            (
                "oversized by Content-Length",
                await http.post("/api/jobs", content=too_big, headers={**good, **json_type}),
                413,
                "payload-too-large",
                None,
            ),
            (
                "oversized while reading",
                await http.post("/api/jobs", content=chunks(), headers={**good, **json_type}),
                413,
                "payload-too-large",
                None,
            ),
            (
                "size before JSON",
                await http.post(
                    "/api/jobs", content=b"{" * (MAX_BODY_BYTES + 1), headers={**good, **json_type}
                ),
                413,
                "payload-too-large",
                None,
            ),
            (
                "malformed JSON",
                await http.post("/api/jobs", content=b'{"type": ', headers={**good, **json_type}),
                400,
                "malformed-json",
                None,
            ),
            (
                "empty body",
                await http.post("/api/jobs", content=b"", headers={**good, **json_type}),
                400,
                "malformed-json",
                None,
            ),
            (
                "unknown type",
                await http.post(
                    "/api/jobs", json={"type": "poem", "input": {"topic": "x"}}, headers=good
                ),
                422,
                "validation",
                "/type",
            ),
            (
                "missing type",
                await http.post("/api/jobs", json={"input": {"topic": "x"}}, headers=good),
                422,
                "validation",
                "/type",
            ),
            (
                "input not an object",
                await http.post(
                    "/api/jobs", json={"type": "video_outline", "input": "x"}, headers=good
                ),
                422,
                "validation",
                "/input",
            ),
            (
                "missing topic",
                await http.post(
                    "/api/jobs", json={"type": "video_outline", "input": {}}, headers=good
                ),
                422,
                "validation",
                "/input/topic",
            ),
            (
                "empty topic on an ideation route",
                await http.post("/api/ideation/generate-titles", json={"topic": ""}, headers=good),
                422,
                "validation",
                "/topic",
            ),
            (
                "blank topic on an ideation route",
                await http.post("/api/ideation/video-outline", json={"topic": "  "}, headers=good),
                422,
                "validation",
                "/topic",
            ),
            (
                "bad optional field on an ideation route",
                await http.post(
                    "/api/ideation/generate-script",
                    json={"topic": "x", "durationMinutes": 0},
                    headers=good,
                ),
                422,
                "validation",
                "/durationMinutes",
            ),
            (
                "a read of a job id that is not a UUID",
                await http.get("/api/jobs/not-a-uuid", headers=good),
                404,
                "not-found",
                None,
            ),
            ("an unknown route", await http.get("/api/nope", headers=good), 404, "not-found", None),
            (
                "a wrong method",
                await http.get("/api/ideation/generate-script", headers=good),
                405,
                "method-not-allowed",
                None,
            ),
        ]

    for what, response, status, kind, pointer in cases:
        assert response.status_code == status, (what, response.status_code, response.text)
        body = assert_problem(response, status, kind)
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer"), what
        if pointer is not None:
            assert [e["pointer"] for e in body["errors"]] == [pointer], (what, body)
            assert body["errors"][0]["detail"], what

    info = await nats_client.jetstream().stream_info(jobs_stream_ready.name)
    assert info.state.messages == 0, "a refused request published something"
    # Request lines are written once the answer has gone out: wait for the last case's (405).
    await eventually(lambda: '"status":405' in gateway.process.log, what="the 405 logged")
    log = gateway.process.log
    for secret_bearing in (expired, wrong_secret, good["Authorization"].split()[1]):
        assert secret_bearing not in log
    assert '"problem":"urn:ai-jobs:problem:validation"' in log


async def test_a_read_right_after_admission_is_pending_from_the_stream_without_a_job_store(
    api: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    created = await api.post("/api/ideation/generate-titles", json={"topic": "comets"})
    job_id = created.json()["jobId"]
    event = await requested_in_stream(nats_client, jobs_stream_ready, subjects, job_id)

    response = await api.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    occurred = event.occurred_at.isoformat().replace("+00:00", "Z")
    assert response.json() == {
        "jobId": job_id,
        "type": "title_generation",
        "status": "pending",
        "version": 1,
        "input": {"topic": "comets"},
        "output": None,
        "error": None,
        "predictionId": None,
        "createdAt": occurred,
        "updatedAt": occurred,
        "completedAt": None,
        "usage": None,
        "cancelRequested": False,
    }
    assert response.headers["etag"] == f'W/"{job_id}.1"'


async def test_an_unknown_job_without_a_job_store_is_unavailable_not_missing(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get(f"/api/jobs/{random_job_id()}")
    assert_problem(response, 503, "unavailable")
    assert int(response.headers["retry-after"]) > 0


def stored_view(job_id: str, **changes: Any) -> JobView:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    fields: dict[str, Any] = {
        "job_id": uuid.UUID(job_id),
        "type": "script_generation",
        "status": "processing",
        "version": 3,
        "input": {"topic": "tides"},
        "output": None,
        "error": None,
        "prediction_id": "p-123",
        "created_at": at,
        "updated_at": at + timedelta(seconds=2),
        "completed_at": None,
    }
    return JobView(**{**fields, **changes})


async def admitted_and_stored(
    api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects, **body: Any
) -> str:
    """A job admitted through the gateway, once the real job-store has stored it (asked
    directly: the gateway would answer a pending job from the stream before that)."""
    created = await api.post(
        "/api/jobs", json=body or {"type": "video_outline", "input": {"topic": "t"}}
    )
    assert created.status_code == 202, created.text
    job_id: str = created.json()["jobId"]
    request = msgspec.json.encode(GetJob(job_id=uuid.UUID(job_id), user_id="alice"))

    async def stored() -> bool:
        reply = await nats_client.request(subjects.get_job, request, timeout=2)
        return msgspec.json.decode(reply.data, type=JobReply).job is not None

    await eventually(stored)
    return job_id


async def at_version(api: httpx.AsyncClient, job_id: str, version: int) -> httpx.Response:
    """The gateway's read once it shows `version` (the job-store applies events in its time)."""
    response: httpx.Response | None = None

    async def reached() -> bool:
        nonlocal response
        response = await api.get(f"/api/jobs/{job_id}")
        return response.status_code == 200 and response.json()["version"] == version

    await eventually(reached)
    assert response is not None
    return response


async def test_a_read_answers_the_job_stores_view_with_an_etag(
    job_store: ServiceProcess, api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    job_id = await admitted_and_stored(
        api, nats_client, subjects, type="video_outline", input={"topic": "tides"}
    )
    job = uuid.UUID(job_id)
    now = datetime.now(UTC)
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await publisher.publish(JobSubmitted(job_id=job, occurred_at=now, prediction_id="p-123"))
    await publisher.publish(
        JobStarted(job_id=job, occurred_at=now, prediction_id="p-123", webhook_id="w-1")
    )

    response = await at_version(api, job_id, 3)
    body = response.json()
    assert (body["jobId"], body["type"], body["status"]) == (job_id, "video_outline", "processing")
    assert (body["input"], body["output"], body["predictionId"]) == (
        {"topic": "tides"},
        None,
        "p-123",
    )
    tag = response.headers["etag"]
    assert tag == f'W/"{job_id}.3"'

    unchanged = await api.get(f"/api/jobs/{job_id}", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == tag
    stale = await api.get(f"/api/jobs/{job_id}", headers={"If-None-Match": f'W/"{job_id}.2"'})
    assert (stale.status_code, stale.headers["etag"]) == (200, tag)


async def test_a_new_version_has_a_new_etag_and_a_finished_job_stays_304(
    job_store: ServiceProcess, api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    job_id = await admitted_and_stored(api, nats_client, subjects)
    job = uuid.UUID(job_id)
    pending = (await at_version(api, job_id, 1)).headers["etag"]
    assert pending == f'W/"{job_id}.1"'
    assert (
        await api.get(f"/api/jobs/{job_id}", headers={"If-None-Match": pending})
    ).status_code == 304

    publisher = EventPublisher(nats_client.jetstream(), subjects)
    now = datetime.now(UTC)
    await publisher.publish(JobSubmitted(job_id=job, occurred_at=now, prediction_id="p-1"))
    submitted = await at_version(api, job_id, 2)
    # The old tag no longer matches: the new version is sent whole, with its own tag.
    changed = await api.get(f"/api/jobs/{job_id}", headers={"If-None-Match": pending})
    assert changed.status_code == 200
    assert changed.json()["version"] == 2
    assert changed.headers["etag"] == submitted.headers["etag"] == f'W/"{job_id}.2"'

    await publisher.publish(
        JobCompleted(
            job_id=job,
            occurred_at=now,
            prediction_id="p-1",
            prediction_status="succeeded",
            output="An outline",
        )
    )
    finished = await at_version(api, job_id, 3)
    assert (finished.json()["status"], finished.json()["output"]) == ("succeeded", "An outline")
    done = finished.headers["etag"]
    assert done == f'W/"{job_id}.3"'
    # A finished job is answered from the gateway's cache, the same with or without the store.
    assert await asyncio.to_thread(job_store.terminate) == 0, job_store.log
    for _ in range(2):
        cached = await api.get(f"/api/jobs/{job_id}", headers={"If-None-Match": done})
        assert (cached.status_code, cached.content, cached.headers["etag"]) == (304, b"", done)
    again = await api.get(
        f"/api/jobs/{job_id}", headers={"If-None-Match": submitted.headers["etag"]}
    )
    assert (again.status_code, again.json()["output"]) == (200, "An outline")


async def test_another_users_job_is_not_found(
    gateway: RunningGateway,
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    job_id = await admitted_and_stored(api, nats_client, subjects)
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("bob")) as bob:
        # Alice's job, known to the job-store, and a job nobody has, look alike to bob.
        assert_problem(await bob.get(f"/api/jobs/{job_id}"), 404, "not-found")
        assert_problem(await bob.get(f"/api/jobs/{random_job_id()}"), 404, "not-found")
    mine = await api.get(f"/api/jobs/{job_id}")
    assert (mine.status_code, mine.json()["status"]) == (200, "pending")


async def test_a_job_store_answering_nonsense_or_an_error_is_unavailable(
    api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    # The double: the real job-store cannot be made to answer nonsense or fail on cue.
    async with job_store_double(nats_client, subjects, lambda _: b'{"oops": true'):
        response = await api.get(f"/api/jobs/{random_job_id()}")
    assert_problem(response, 503, "unavailable")
    assert "retry-after" in response.headers

    null = msgspec.json.encode(JobReply(job=None))
    async with job_store_double(nats_client, subjects, lambda _: null, service_error="db down"):
        response = await api.get(f"/api/jobs/{random_job_id()}")
    assert_problem(response, 503, "unavailable")


async def test_without_jetstream_a_job_is_refused_with_503_and_retry_after(
    api: httpx.AsyncClient, nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    await js.delete_stream(jobs_stream_ready.name)
    try:
        response = await api.post(
            "/api/jobs", json={"type": "video_outline", "input": {"topic": "t"}}
        )
        assert_problem(response, 503, "unavailable")
        assert int(response.headers["retry-after"]) > 0
    finally:
        # Put it back for the fixture that deletes it.
        await ensure_stream(js, jobs_stream_ready)


async def test_sigterm_lets_a_request_in_flight_finish_and_exits_0(
    tmp_path: Path, gateway_env: dict[str, str], nats_client: NATS, subjects: Subjects
) -> None:
    job_id = random_job_id()

    def answer(_: GetJob) -> bytes:
        return msgspec.json.encode(JobReply(job=stored_view(job_id)))

    # The job-store's answer is held until the gateway has logged that it is stopping, so the
    # request is in flight when SIGTERM is handled: by order, not by a sleep. The gateway's
    # job-store timeout is the longest allowed, so no scheduler stall between the signal and
    # the release can turn the answer into a 503 (the 15 s wait below would fail first).
    env = {**gateway_env, "JOB_STORE_TIMEOUT_S": "60"}
    release = asyncio.Event()
    with ServiceProcess([command_path("gateway")], env, tmp_path / "gateway.log") as gateway:
        gateway.wait_http(f"http://127.0.0.1:{env['ADMIN_PORT']}/readyz")
        # The double: the real job-store cannot be made to hold an answer until told to.
        async with (
            job_store_double(nats_client, subjects, answer, gate=release) as asked,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{env['HTTP_PORT']}", headers=bearer("alice")
            ) as http,
        ):
            in_flight = asyncio.create_task(http.get(f"/api/jobs/{job_id}", timeout=30))
            await eventually(lambda: len(asked) == 1)
            gateway.signal(signal.SIGTERM)
            await eventually(lambda: '"msg":"stopping"' in gateway.log)
            release.set()
            response = await in_flight
        assert (response.status_code, response.json()["version"]) == (200, 3)
        exit_code = await asyncio.to_thread(gateway.process.wait, 15)
        assert exit_code == 0, gateway.log
        assert '"msg":"stopped"' in gateway.log
