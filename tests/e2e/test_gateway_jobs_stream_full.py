"""A full `JOBS` stream (its `JOBS_STREAM_MAX_BYTES` reached, discard new): the real gateway
answers a submission `503` with `Retry-After`, refused by JetStream, and nothing already in
the stream is dropped to make room."""

import uuid

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import APIError

from jobs_proto.stream import MIB, StreamSpec
from jobs_proto.subjects import Subjects

from .test_gateway_nats_outage import logged_refusals
from .test_gateway_processes import RunningGateway, bearer
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env

JOB = {"type": "video_outline", "input": {"topic": "tides"}}


@pytest.fixture
def gateway_env(gateway_base_env: dict[str, str]) -> dict[str, str]:
    # The smallest limit a setting takes; the gateway brings the test's stream down to it.
    return {**gateway_base_env, "JOBS_STREAM_MAX_BYTES": str(MIB)}


async def test_a_full_jobs_stream_answers_503_and_keeps_what_it_holds(
    gateway: RunningGateway,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    js = nats_client.jetstream()
    assert (await js.stream_info(jobs_stream_ready.name)).config.max_bytes == MIB
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice"), timeout=10) as api:
        assert (await api.post("/api/jobs", json=JOB)).status_code == 202
        # Fill it to the last bytes with stand-ins, smaller and smaller (nothing consumes this
        # stream here): what is left is less than any event.
        for size in (64 * 1024, 4096, 256, 1):
            for _ in range(1000):
                try:
                    await js.publish(f"{subjects.prefix}job.requested.{uuid.uuid4()}", b"x" * size)
                except APIError as exc:
                    refused = exc
                    break
            else:
                pytest.fail(f"1 MiB took 1000 more messages of {size} bytes")
            assert refused.description == "maximum bytes exceeded", refused
        response = await api.post("/api/jobs", json=JOB)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    (reason,) = await logged_refusals(gateway.process, "/api/jobs")
    assert reason.startswith("JetStream did not store the event"), reason
    # Discard new: the first job's event is still the stream's first message.
    info = await js.stream_info(jobs_stream_ready.name)
    assert info.state.first_seq == 1
    first = await js.get_msg(jobs_stream_ready.name, 1)
    assert (first.subject or "").startswith(f"{subjects.prefix}job.requested.")
    assert info.state.bytes <= MIB
