import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from jobs_testkit.plugin import delete_streams_at
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.stack import Ports, Stack


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def stack_overrides() -> dict[str, str]:
    """Settings a test module adds to every service of its stack (it overrides this fixture)."""
    return {}


@pytest.fixture(scope="module")
def stack(
    nats_url: str,
    nats_server: NatsServer | None,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    stack_overrides: dict[str, str],
) -> Iterator[Stack]:
    """The simulator and the four services as processes, on free ports, with a database,
    stream and subject prefix of this test module alone."""
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_database(postgres_url, name))
    base, _, _ = postgres_url.rpartition("/")
    ports = Ports(*(free_port() for _ in range(7)))
    running = Stack(
        nats_url=nats_url,
        database_url=f"{base}/{name}",
        ports=ports,
        subject_prefix=f"t{uuid.uuid4().hex[:10]}.",
        jobs_stream=f"JOBS_{uuid.uuid4().hex[:10]}",
        log_dir=tmp_path_factory.mktemp("stack"),
        # Short retries keep the fault scenarios quick.
        overrides={"RETRY_BASE_S": "0.2", **stack_overrides},
    )
    if nats_server is not None:
        # Each service as its own NATS user: the whole flow passes with permissions on.
        running.secure(nats_server)
    try:
        running.start()
        yield running
    finally:
        codes = running.stop()
        asyncio.run(delete_streams_at(nats_url, running.jobs_stream))
        assert all(code == 0 for code in codes.values()), codes
        if nats_server is not None:
            assert nats_server.violations(running.subject_prefix) == []


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    return stack.dev_token("e2e-user")


@pytest.fixture
async def gateway(stack: Stack, token: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers) as client:
        yield client


@pytest.fixture
async def simulator(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.simulator_url) as client:
        await client.post("/_sim/reset")
        yield client
        await client.post("/_sim/reset")
