"""The `job-store` command as a real process: consumes events, answers `GetJob`, announces."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.api import GetJob, JobChanged, JobReply
from jobs_proto.events import JobCompleted, JobRequested, JobStarted, JobSubmitted
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import free_port
from jobs_testkit.waiting import eventually

OWNER = "user-7"


def _now() -> datetime:
    return datetime.now(UTC)


def _env(
    nats_url: str, database_url: str, stream: StreamSpec, subjects: Subjects
) -> dict[str, str]:
    return {
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        "JOBS_STREAM": stream.name,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(free_port()),
    }


@pytest.fixture
async def job_store(
    tmp_path: Path,
    nats_url: str,
    database_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> AsyncIterator[ServiceProcess]:
    env = _env(nats_url, database_url, jobs_stream_ready, subjects)
    with ServiceProcess([command_path("job-store")], env, tmp_path / "job-store.log") as process:
        await _ready(process)
        yield process


async def _ready(process: ServiceProcess) -> None:
    """Until `/readyz` says yes with the job-store's own check among the answers.

    The runtime answers `/readyz` before the service has registered its checks, so a bare 200
    can come before the job-store is serving.
    """

    async def postgres_checked() -> bool:
        assert process.process.poll() is None, process.log
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                response = await http.get(_admin(process, "/readyz"))
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and "postgres" in response.json()["checks"]

    await eventually(postgres_checked, within=15.0)


def _admin(process: ServiceProcess, path: str) -> str:
    return f"http://127.0.0.1:{process.env['ADMIN_PORT']}{path}"


async def _get(nc: NATS, subjects: Subjects, job_id: uuid.UUID, user: str = OWNER) -> JobReply:
    request = msgspec.json.encode(GetJob(job_id=job_id, user_id=user))
    reply = await nc.request(subjects.get_job, request, timeout=2)
    return msgspec.json.decode(reply.data, type=JobReply)


async def test_it_records_a_run_answers_reads_and_announces_each_change(
    job_store: ServiceProcess,
    nats_client: NATS,
    subjects: Subjects,
    announced: list[JobChanged],
) -> None:
    job = uuid.uuid4()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    for event in (
        JobRequested(
            job_id=job,
            occurred_at=_now(),
            user_id=OWNER,
            job_type="title_generation",
            input={"topic": "tides"},
        ),
        JobSubmitted(job_id=job, occurred_at=_now(), prediction_id="p-1"),
        JobStarted(job_id=job, occurred_at=_now(), prediction_id="p-1", webhook_id="w-1"),
        JobCompleted(
            job_id=job,
            occurred_at=_now(),
            prediction_id="p-1",
            prediction_status="succeeded",
            output="Tides, explained",
            webhook_id="w-2",
        ),
    ):
        await publisher.publish(event)

    async def succeeded() -> bool:
        reply = await _get(nats_client, subjects, job)
        return reply.job is not None and reply.job.status == "succeeded"

    await eventually(succeeded)
    view = (await _get(nats_client, subjects, job)).job
    assert view is not None
    assert (view.version, view.output, view.prediction_id, view.type) == (
        4,
        "Tides, explained",
        "p-1",
        "title_generation",
    )

    # One announcement per change, in order, each the job's committed state.
    await eventually(lambda: len(announced) >= 4)
    await asyncio.sleep(0.3)
    assert [(c.job.version, c.job.status) for c in announced] == [
        (1, "pending"),
        (2, "processing"),
        (3, "processing"),
        (4, "succeeded"),
    ]
    assert announced[-1] == JobChanged(user_id=OWNER, job=view)

    # Another user's job and an unknown job look alike: null.
    assert (await _get(nats_client, subjects, job, user="someone-else")).job is None
    assert (await _get(nats_client, subjects, uuid.uuid4())).job is None

    async with httpx.AsyncClient() as http:
        ready = await http.get(_admin(job_store, "/readyz"))
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": "ok", "postgres": "ok"}

    assert await asyncio.to_thread(job_store.terminate) == 0, job_store.log
    assert '"msg":"stopped"' in job_store.log


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"jobId": "not-a-uuid", "userId": "u"}', b"", b'{"userId": "u"}'],
)
async def test_a_malformed_request_gets_an_error_reply_and_service_goes_on(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects, body: bytes
) -> None:
    reply = await nats_client.request(subjects.get_job, body, timeout=2)
    assert reply.headers is not None
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert reply.headers["Nats-Service-Error"].startswith("not a GetJob request")
    assert (await _get(nats_client, subjects, uuid.uuid4())).job is None
    assert job_store.process.poll() is None


async def test_an_event_ahead_of_its_request_is_applied_soon_after_it(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects
) -> None:
    job = uuid.uuid4()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await publisher.publish(JobSubmitted(job_id=job, occurred_at=_now(), prediction_id="p-9"))
    await asyncio.sleep(0.5)
    await publisher.publish(
        JobRequested(
            job_id=job, occurred_at=_now(), user_id=OWNER, job_type="video_outline", input={}
        )
    )

    async def processing() -> bool:
        reply = await _get(nats_client, subjects, job)
        return reply.job is not None and reply.job.status == "processing"

    await eventually(processing, within=5.0)
    view = (await _get(nats_client, subjects, job)).job
    assert view is not None
    assert (view.version, view.prediction_id) == (2, "p-9")


@pytest.mark.parametrize(
    "database_url",
    ["postgresql://postgres:s3cret-pw@127.0.0.1:{port}/jobs", "mysql://nowhere"],
    ids=["postgres-down", "malformed-url"],
)
async def test_without_postgres_it_waits_unready_and_stops_cleanly(
    tmp_path: Path,
    nats_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    database_url: str,
) -> None:
    dsn = database_url.format(port=free_port())
    env = _env(nats_url, dsn, jobs_stream_ready, subjects)
    with ServiceProcess([command_path("job-store")], env, tmp_path / "job-store.log") as process:
        await asyncio.to_thread(process.wait_http, _admin(process, "/healthz"))
        not_ready = await asyncio.to_thread(
            process.wait_http, _admin(process, "/readyz"), 15.0, 503
        )
        assert not_ready.json()["checks"]["postgres"].startswith("failed")
        # Retrying, one line per attempt, instead of crashing.
        await eventually(lambda: process.log.count("postgres not ready") >= 2)
        assert process.process.poll() is None
        assert await asyncio.to_thread(process.terminate, 10.0) == 0, process.log
    assert "s3cret-pw" not in process.log
