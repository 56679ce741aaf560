from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from jobs_testkit.running import running_stack
from jobs_testkit.servers import NatsServer
from jobs_testkit.stack import Stack


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
    with running_stack(
        nats_url=nats_url,
        nats_server=nats_server,
        postgres_url=postgres_url,
        log_dir=tmp_path_factory.mktemp("stack"),
        overrides=stack_overrides,
    ) as running:
        yield running


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
