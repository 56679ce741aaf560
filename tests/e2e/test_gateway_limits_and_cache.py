"""The gateway as a process over real NATS: per-user limits answer `429` with `Retry-After`
before anything is published; a finished job is answered from memory without asking the
job-store (and still `404` for another user); `/readyz` follows the gateway's own NATS
connection, never the job-store."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
from nats.aio.client import Client as NATS

from jobs_proto.api import GetJob, JobPage, JobReply, JobView, ListJobs
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.waiting import eventually

from .test_gateway_idempotency import requested_count
from .test_gateway_processes import (
    SECRET,
    bearer,
    job_store_double,
    job_store_list_double,
    random_job_id,
)
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


async def test_open_jobs_are_limited_counting_those_the_job_store_has_not_seen(
    tmp_path: Path,
    gateway_env: dict[str, str],
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    finished: set[uuid.UUID] = set()
    at = datetime(2030, 1, 2, tzinfo=UTC)

    def get(request: GetJob) -> bytes:
        # The job-store knows only the jobs marked finished; the others it has not consumed.
        if request.job_id not in finished:
            return msgspec.json.encode(JobReply(job=None))
        view = JobView(
            job_id=request.job_id,
            type="video_outline",
            status="succeeded",
            version=3,
            input={"topic": "tides"},
            output="done",
            error=None,
            prediction_id="p-1",
            created_at=at,
            updated_at=at,
            completed_at=at,
        )
        return msgspec.json.encode(JobReply(job=view))

    def open_jobs(request: ListJobs) -> JobPage:
        assert request.statuses == ["pending", "processing"]
        return JobPage(items=[], next_cursor=None)

    with gateway_with(gateway_env, tmp_path / "gateway.log", USER_MAX_OPEN_JOBS="2") as url:
        async with (
            job_store_double(nats_client, subjects, get),
            job_store_list_double(nats_client, subjects, open_jobs) as listed,
            httpx.AsyncClient(base_url=url, headers=bearer("alice")) as api,
        ):
            admitted = [await api.post("/api/jobs", json=JOB) for _ in range(2)]
            assert [a.status_code for a in admitted] == [202, 202]
            assert_too_many(await api.post("/api/ideation/video-outline", json={"topic": "x"}))
            assert listed, "the job-store was asked for the open jobs"
            assert (await api.post("/api/jobs", json=JOB, headers=bearer("bob"))).status_code == 202
            # One of alice's jobs finished: room for one more.
            finished.add(uuid.UUID(admitted[0].json()["jobId"]))
            assert (await api.post("/api/jobs", json=JOB)).status_code == 202
            assert_too_many(await api.post("/api/jobs", json=JOB))
    assert await requested_count(nats_client, jobs_stream_ready, subjects) == 4


async def test_a_finished_job_is_read_once_from_the_job_store(
    tmp_path: Path, gateway_env: dict[str, str], nats_client: NATS, subjects: Subjects
) -> None:
    job_id = random_job_id()
    at = datetime(2030, 1, 2, tzinfo=UTC)
    view = JobView(
        job_id=uuid.UUID(job_id),
        type="video_outline",
        status="failed",
        version=4,
        input={"topic": "tides"},
        output=None,
        error=None,
        prediction_id="p-1",
        created_at=at,
        updated_at=at,
        completed_at=at,
    )

    def answer(request: GetJob) -> bytes:
        return msgspec.json.encode(JobReply(job=view if request.user_id == "alice" else None))

    with gateway_with(gateway_env, tmp_path / "gateway.log") as url:
        # The double: the test counts what the job-store was asked, which the real one does not
        # record per request.
        async with (
            job_store_double(nats_client, subjects, answer) as asked,
            httpx.AsyncClient(base_url=url, headers=bearer("alice")) as api,
        ):
            first = await api.get(f"/api/jobs/{job_id}")
            assert first.status_code == 200, first.text
            assert first.json()["status"] == "failed"
            for _ in range(5):
                again = await api.get(f"/api/jobs/{job_id}")
                assert (again.status_code, again.content) == (200, first.content)
            tag = first.headers["etag"]
            unchanged = await api.get(f"/api/jobs/{job_id}", headers={"If-None-Match": tag})
            assert (unchanged.status_code, unchanged.headers["etag"]) == (304, tag)
            other = await api.get(f"/api/jobs/{job_id}", headers=bearer("bob"))
            assert other.status_code == 404
            assert len(asked) == 1, asked
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
