"""`Idempotency-Key` with gateways as real processes over real NATS: the key survives a
restart and is shared by replicas (a JetStream KV bucket), another body is `409` (but an
invalid one `422`, validation coming first), and concurrent requests with one key store
exactly one job in the stream."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from nats.aio.client import Client as NATS

from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import free_port

from .test_gateway_processes import RunningGateway, bearer, requested_in_stream
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env

JOB = {"type": "video_outline", "input": {"topic": "tides"}}


@contextmanager
def started_gateway(base_env: dict[str, str], log: Path) -> Iterator[str]:
    """One more gateway over the same stream, on ports of its own; its base URL."""
    env = {**base_env, "ADMIN_PORT": str(free_port()), "HTTP_PORT": str(free_port())}
    with ServiceProcess([command_path("gateway")], env, log) as process:
        process.wait_http(f"http://127.0.0.1:{env['ADMIN_PORT']}/readyz")
        yield f"http://127.0.0.1:{env['HTTP_PORT']}"
        assert process.terminate() == 0, process.log


async def requested_count(nats_client: NATS, stream: StreamSpec, subjects: Subjects) -> int:
    info = await nats_client.jetstream().stream_info(
        stream.name, subjects_filter=f"{subjects.prefix}job.requested.>"
    )
    return sum((info.state.subjects or {}).values())


async def test_the_key_survives_a_restart_and_is_shared_by_replicas(
    tmp_path: Path,
    gateway_env: dict[str, str],
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    headers = {**bearer("alice"), "Idempotency-Key": "checkout-42"}
    http = httpx.AsyncClient(timeout=10)
    with started_gateway(gateway_env, tmp_path / "first.log") as url:
        first = await http.post(f"{url}/api/jobs", json=JOB, headers=headers)
    assert first.status_code == 202, first.text
    job_id = first.json()["jobId"]

    # A gateway started afterwards (a restart), and two at once (replicas).
    with (
        started_gateway(gateway_env, tmp_path / "second.log") as one,
        started_gateway(gateway_env, tmp_path / "third.log") as two,
    ):
        for url in (one, two):
            again = await http.post(f"{url}/api/jobs", json=JOB, headers=headers)
            assert (again.status_code, again.content) == (202, first.content)
            assert again.headers["location"] == f"/api/jobs/{job_id}"
            assert again.headers["idempotent-replayed"] == "true"
            other = await http.post(
                f"{url}/api/jobs", json={**JOB, "input": {"topic": "moons"}}, headers=headers
            )
            assert other.status_code == 409, other.text
            assert other.headers["content-type"] == "application/problem+json"
            assert other.json()["type"] == "urn:ai-jobs:problem:idempotency-key-reused"
            # Another user's identical key is another job.
            bob = await http.post(
                f"{url}/api/jobs",
                json=JOB,
                headers={**bearer("bob"), "Idempotency-Key": "checkout-42"},
            )
            assert bob.status_code == 202
            assert bob.json()["jobId"] != job_id
        # Too long a key is refused before anything is kept or published.
        long_key = await http.post(
            f"{one}/api/jobs", json=JOB, headers={**bearer("alice"), "Idempotency-Key": "k" * 256}
        )
        assert long_key.status_code == 422
        assert long_key.json()["errors"][0]["parameter"] == "Idempotency-Key"
    await http.aclose()

    event = await requested_in_stream(nats_client, jobs_stream_ready, subjects, job_id)
    assert event.user_id == "alice"
    # alice's job and bob's (admitted by the first replica, replayed by the second).
    assert await requested_count(nats_client, jobs_stream_ready, subjects) == 2


async def test_concurrent_requests_with_one_key_store_one_job(
    tmp_path: Path,
    gateway_env: dict[str, str],
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    with (
        started_gateway(gateway_env, tmp_path / "a.log") as one,
        started_gateway(gateway_env, tmp_path / "b.log") as two,
    ):
        headers = {**bearer("alice"), "Idempotency-Key": "double-click"}
        async with httpx.AsyncClient(headers=headers, timeout=15) as client:
            answers = await asyncio.gather(
                *(client.post(f"{url}/api/jobs", json=JOB) for _ in range(10) for url in (one, two))
            )
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
    assert len({a.json()["jobId"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") != "true" for a in answers) == 1
    assert await requested_count(nats_client, jobs_stream_ready, subjects) == 1


async def test_a_body_that_fails_validation_is_422_even_with_a_key_kept_for_another(
    gateway: RunningGateway,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    # The contract's check order puts validation (422) before idempotency (409): a key already
    # kept for another body does not turn an invalid body into a conflict.
    headers = {**bearer("alice"), "Idempotency-Key": "order-7"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as http:
        first = await http.post("/api/jobs", json=JOB)
        assert first.status_code == 202, first.text
        for invalid, pointer in (
            ({**JOB, "input": {"topic": ""}}, "/input/topic"),
            ({**JOB, "input": {}}, "/input/topic"),
            ({"type": "no_such_type", "input": {"topic": "tides"}}, "/type"),
        ):
            answer = await http.post("/api/jobs", json=invalid)
            assert answer.status_code == 422, (invalid, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert [e["pointer"] for e in answer.json()["errors"]] == [pointer], answer.text
        # The key still names the first job: the 422s neither replaced nor released it.
        again = await http.post("/api/jobs", json=JOB)
        assert (again.status_code, again.content) == (202, first.content)
        other = await http.post("/api/jobs", json={**JOB, "input": {"topic": "moons"}})
        assert other.status_code == 409, other.text
    assert await requested_count(nats_client, jobs_stream_ready, subjects) == 1
