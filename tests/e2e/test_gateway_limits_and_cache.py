"""The gateway as a process over real NATS and the real job-store: per-user limits answer
`429` with `Retry-After` before anything is published; a finished job is answered from memory
after one read of the job-store (and still `404` for another user); `/readyz` follows the
gateway's own NATS connection, never the job-store."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
from nats.aio.client import Client as NATS

from jobs_proto.api import GetJob, JobReply, ListJobs
from jobs_proto.status import is_terminal
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_testkit import events
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.waiting import eventually

from .test_gateway_idempotency import requested_count
from .test_gateway_processes import (
    SECRET,
    bearer,
    overheard,
    random_job_id,
)
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env

JOB = {"type": "video_outline", "input": {"topic": "tides"}}
PROBLEM = "application/problem+json"


@contextmanager
def gateway_with(base_env: dict[str, str], log: Path, **settings: str) -> Iterator[str]:
    env = {**base_env, **settings}
    with ServiceProcess([command_path("gateway")], env, log) as process:
        process.wait_http(f"http://127.0.0.1:{env['ADMIN_PORT']}/readyz")
        yield f"http://127.0.0.1:{env['HTTP_PORT']}"
        assert process.terminate() == 0, process.log


def assert_too_many(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:ai-jobs:problem:too-many-requests"
    assert int(response.headers["retry-after"]) >= 1


async def test_the_request_rate_is_per_user_and_refused_before_publishing(
    tmp_path: Path,
    gateway_env: dict[str, str],
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    with gateway_with(
        gateway_env,
        tmp_path / "gateway.log",
        USER_REQUESTS_PER_S="0.2",
        USER_REQUESTS_BURST="3",
    ) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer("alice")) as api:
            for _ in range(3):
                assert (await api.post("/api/jobs", json=JOB)).status_code == 202
            refused = await api.post("/api/jobs", json=JOB)
            assert_too_many(refused)
            assert int(refused.headers["retry-after"]) == 5  # one token at 0.2 per second
            # Reads count too, and another user has requests of their own.
            assert_too_many(await api.get(f"/api/jobs/{random_job_id()}"))
            other = await api.post("/api/jobs", json=JOB, headers=bearer("bob"))
            assert other.status_code == 202
    assert await requested_count(nats_client, jobs_stream_ready, subjects) == 4


async def until_finished(nats_client: NATS, subjects: Subjects, job_id: uuid.UUID) -> None:
    """Once the job-store holds the job as finished (asked directly, not through the gateway,
    whose reads this file counts)."""
    request = msgspec.json.encode(GetJob(job_id=job_id, user_id="alice"))

    async def finished() -> bool:
        reply = await nats_client.request(subjects.get_job, request, timeout=2)
        job = msgspec.json.decode(reply.data, type=JobReply).job
        return job is not None and is_terminal(job.status)

    await eventually(finished, what=f"job {job_id} finished in the job-store")


async def test_open_jobs_are_limited_per_user_and_a_finished_one_makes_room(
    job_store: ServiceProcess,
    tmp_path: Path,
    gateway_env: dict[str, str],
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    # Whether the job-store has consumed an admission when the next request is counted is a
    # race here: the gateway counts its own recent admissions the job-store does not list yet,
    # so the answer is the same either way (each side alone: unit/test_limits.py).
    with gateway_with(gateway_env, tmp_path / "gateway.log", USER_MAX_OPEN_JOBS="2") as url:
        async with (
            overheard(nats_client, subjects.list_jobs, ListJobs) as listed,
            httpx.AsyncClient(base_url=url, headers=bearer("alice")) as api,
        ):
            admitted = [await api.post("/api/jobs", json=JOB) for _ in range(2)]
            assert [a.status_code for a in admitted] == [202, 202]
            assert_too_many(await api.post("/api/ideation/video-outline", json={"topic": "x"}))
            assert listed, "the job-store was asked for the open jobs"
            assert all(a.statuses == ["pending", "processing"] for a in listed), listed
            assert (await api.post("/api/jobs", json=JOB, headers=bearer("bob"))).status_code == 202
            # One of alice's jobs finished: room for one more.
            first = uuid.UUID(admitted[0].json()["jobId"])
            await EventPublisher(nats_client.jetstream(), subjects).publish(
                events.failed(first, s=1)
            )
            await until_finished(nats_client, subjects, first)
            assert (await api.post("/api/jobs", json=JOB)).status_code == 202
            assert_too_many(await api.post("/api/jobs", json=JOB))
    assert await requested_count(nats_client, jobs_stream_ready, subjects) == 4


async def test_a_finished_job_is_read_once_from_the_job_store(
    job_store: ServiceProcess,
    tmp_path: Path,
    gateway_env: dict[str, str],
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    job = uuid.uuid4()
    job_id = str(job)
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    for event in (events.requested(job, user="alice"), events.submitted(job), events.failed(job)):
        await publisher.publish(event)
    await until_finished(nats_client, subjects, job)

    with gateway_with(gateway_env, tmp_path / "gateway.log") as url:
        # Overheard, the real job-store answering: what the gateway asked it, counted.
        async with (
            overheard(nats_client, subjects.get_job, GetJob) as asked,
            httpx.AsyncClient(base_url=url, headers=bearer("alice")) as api,
        ):
            first = await api.get(f"/api/jobs/{job_id}")
            assert first.status_code == 200, first.text
            assert (first.json()["status"], first.json()["version"]) == ("failed", 3)
            for _ in range(5):
                again = await api.get(f"/api/jobs/{job_id}")
                assert (again.status_code, again.content) == (200, first.content)
            tag = first.headers["etag"]
            assert tag == f'W/"{job_id}.3"'
            unchanged = await api.get(f"/api/jobs/{job_id}", headers={"If-None-Match": tag})
            assert (unchanged.status_code, unchanged.headers["etag"]) == (304, tag)
            other = await api.get(f"/api/jobs/{job_id}", headers=bearer("bob"))
            assert other.status_code == 404
            assert asked == [GetJob(job_id=job, user_id="alice")]
            metrics = await api.get(f"http://127.0.0.1:{gateway_env['ADMIN_PORT']}/metrics")
            assert 'gateway_finished_job_reads_total{source="cache"} 6.0' in metrics.text
            assert 'gateway_finished_job_reads_total{source="job_store"} 1.0' in metrics.text


async def test_readiness_follows_nats_not_the_job_store(
    tmp_path: Path, restartable_nats: NatsServer
) -> None:
    admin_port, http_port = free_port(), free_port()
    env = {
        "NATS_URL": restartable_nats.url,
        "SUBJECT_PREFIX": "ready.",
        "ADMIN_PORT": str(admin_port),
        "HTTP_PORT": str(http_port),
        "AUTH_JWT_SECRET": SECRET,
    }
    readyz = f"http://127.0.0.1:{admin_port}/readyz"
    with ServiceProcess([command_path("gateway")], env, tmp_path / "gateway.log") as gateway:
        gateway.wait_http(readyz)
        # No job-store anywhere: reads answer 503, the gateway stays in the load balancer.
        async with httpx.AsyncClient(timeout=5) as http:
            read = await http.get(
                f"http://127.0.0.1:{http_port}/api/jobs/{random_job_id()}",
                headers=bearer("alice"),
            )
            assert read.status_code == 503
            ready = await http.get(readyz)
            assert ready.status_code == 200
            assert set(ready.json()["checks"]) == {"nats"}

            restartable_nats.stop()

            async def readiness(status: int) -> bool:
                return (await http.get(readyz)).status_code == status

            await eventually(lambda: readiness(503), within=10, what="unready without NATS")
            restartable_nats.start()
            await eventually(lambda: readiness(200), within=15, what="ready again")
        assert gateway.terminate() == 0, gateway.log
