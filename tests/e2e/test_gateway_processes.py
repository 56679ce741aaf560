"""What the gateway's process tests share (imported by each `test_gateway_*.py`, since
`tests/e2e/conftest.py` is the whole stack's): the gateway as a real process (its installed
`gateway` command) over the test's own NATS stream and subject prefix, the real job-store
process over the test's own migrated database, tokens, and stand-ins for the job-store's
endpoints for the faults the real one cannot give. No tests here."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jwt
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from job_store.adapters.migrations import migrate_database
from jobs_proto.api import GetJob, JobPage, ListJobs
from jobs_proto.events import JobRequested, decode_event
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import server_has_all
from jobs_testkit.plugin import Migrate
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import free_port

SECRET = "gateway-integration-secret-0123456789abcdef"
Asked = TypeVar("Asked")
# Small, so the size tests send little; the default (64 KiB) is the setting's own.
MAX_BODY_BYTES = 2048


def token(sub: str = "alice", secret: str = SECRET, ttl_s: float = 300, **claims: Any) -> str:
    payload = {"sub": sub, "exp": int(time.time() + ttl_s), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(sub: str = "alice", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **claims)}"}


@dataclass
class RunningGateway:
    url: str
    process: ServiceProcess


@pytest.fixture
def gateway_base_env(
    nats_url: str, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> dict[str, str]:
    """The gateway's environment over the test's stream, prefix and ports."""
    return {
        "NATS_URL": nats_url,
        "JOBS_STREAM": jobs_stream_ready.name,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(free_port()),
        "HTTP_PORT": str(free_port()),
        "AUTH_JWT_SECRET": SECRET,
        "HTTP_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }


@pytest.fixture
def gateway_env(gateway_base_env: dict[str, str]) -> dict[str, str]:
    """What the `gateway` fixture starts with: a module changes it by defining its own
    `gateway_env` over `gateway_base_env`."""
    return gateway_base_env


@pytest.fixture
def gateway(tmp_path: Path, gateway_env: dict[str, str]) -> Iterator[RunningGateway]:
    """A started gateway; afterwards it must stop on SIGTERM with exit code 0."""
    process = ServiceProcess([command_path("gateway")], gateway_env, tmp_path / "gateway.log")
    with process:
        # Ready only once the HTTP API listens (the gateway adds that check to /readyz).
        process.wait_http(f"http://127.0.0.1:{gateway_env['ADMIN_PORT']}/readyz")
        yield RunningGateway(f"http://127.0.0.1:{gateway_env['HTTP_PORT']}", process)
        assert process.terminate() == 0, process.log


@pytest.fixture(scope="session")
def database_migrations() -> Migrate:
    """The test kit's databases come with the job-store's schema, for the real job-store."""

    def migrate(dsn: str) -> None:
        asyncio.run(migrate_database(dsn))

    return migrate


async def requested_in_stream(
    nats_client: NATS, stream: StreamSpec, subjects: Subjects, job_id: str
) -> JobRequested:
    message = await nats_client.jetstream().get_last_msg(
        stream.name, f"{subjects.prefix}job.requested.{job_id}"
    )
    event = decode_event(message.data or b"")
    assert isinstance(event, JobRequested)
    return event


@asynccontextmanager
async def job_store_double(
    nats_client: NATS,
    subjects: Subjects,
    answer: Callable[[GetJob], bytes],
    service_error: str | None = None,
    gate: asyncio.Event | None = None,
) -> AsyncIterator[list[GetJob]]:
    """A stand-in for the job-store's get endpoint: answers whatever `answer` says (once
    `gate` is set if given; as an error reply with `service_error`) and records what it was
    asked.

    Only for what the real job-store (the `job_store` fixture) cannot be made to do: answer
    late or on cue, fail, or answer nonsense; or a view no sequence of events produces. Each
    use says which at the spot.
    """
    asked: list[GetJob] = []

    async def respond(msg: Msg) -> None:
        request = msgspec.json.decode(msg.data, type=GetJob)
        asked.append(request)
        if gate is not None:
            await gate.wait()
        # A NATS micro service marks a failed request with this header.
        headers = {"Nats-Service-Error": service_error} if service_error else None
        await nats_client.publish(msg.reply, answer(request), headers=headers)

    subscription = await nats_client.subscribe(subjects.get_job, cb=respond)
    await server_has_all(nats_client)
    try:
        yield asked
    finally:
        await subscription.unsubscribe()


@asynccontextmanager
async def job_store_list_double(
    nats_client: NATS, subjects: Subjects, answer: Callable[[ListJobs], JobPage | int]
) -> AsyncIterator[list[ListJobs]]:
    """A stand-in for the job-store's `list` endpoint, like `job_store_double`: `answer`
    gives a page, or an error code sent as the job-store's error reply (an empty body with
    `Nats-Service-Error-Code` and `Nats-Service-Error`)."""
    asked: list[ListJobs] = []

    async def respond(msg: Msg) -> None:
        request = msgspec.json.decode(msg.data, type=ListJobs)
        asked.append(request)
        reply = answer(request)
        if isinstance(reply, int):
            headers = {"Nats-Service-Error-Code": str(reply), "Nats-Service-Error": "refused"}
            await nats_client.publish(msg.reply, b"", headers=headers)
        else:
            await nats_client.publish(msg.reply, msgspec.json.encode(reply))

    subscription = await nats_client.subscribe(subjects.list_jobs, cb=respond)
    await server_has_all(nats_client)
    try:
        yield asked
    finally:
        await subscription.unsubscribe()


@asynccontextmanager
async def overheard(
    nats_client: NATS, subject: str, request: type[Asked]
) -> AsyncIterator[list[Asked]]:
    """What the gateway asks the job-store on `subject`, overheard: this never answers, the
    real job-store alone does (or nobody, and the gateway answers `503`)."""
    asked: list[Asked] = []

    async def overhear(msg: Msg) -> None:
        asked.append(msgspec.json.decode(msg.data, type=request))

    subscription = await nats_client.subscribe(subject, cb=overhear)
    await server_has_all(nats_client)
    try:
        yield asked
    finally:
        await subscription.unsubscribe()


def random_job_id() -> str:
    return str(uuid.uuid4())
