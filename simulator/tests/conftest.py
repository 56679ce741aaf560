import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import replicate

from jobs_runtime.http import HttpServer
from jobs_runtime.settings import load_settings
from jobs_testkit.receiver import Receiver, running_receiver
from replicate_sim.app import build_app
from replicate_sim.config import Settings
from replicate_sim.engine import Simulator

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class RunningSimulator:
    sim: Simulator
    url: str
    http: httpx.AsyncClient

    async def configure(self, **knobs: object) -> dict[str, object]:
        response = await self.http.put("/_sim/config", json=knobs)
        assert response.status_code == 200, response.text
        return dict(response.json())


def settings(**overrides: object) -> Settings:
    base = {
        "SIM_WEBHOOK_SECRET": SECRET,
        # Fast retries keep the retry tests short; the default schedule spans a minute.
        "SIM_WEBHOOK_RETRY_S": "0.1,0.2,0.4",
        "SIM_WEBHOOK_CONCURRENCY": "16",
    }
    base.update({k: str(v) for k, v in overrides.items()})
    return load_settings(Settings, base)


@pytest.fixture
def sim_settings() -> Settings:
    return settings()


@asynccontextmanager
async def running_simulator(
    sim_settings: Settings, clock: Callable[[], float] = time.time
) -> AsyncIterator[RunningSimulator]:
    """A simulator on a local port, with a client for it; the fixture's, or one of a test's own
    with other settings or a clock."""
    sim = Simulator(sim_settings, clock=clock)
    await sim.start()
    server = HttpServer(build_app(sim), "127.0.0.1", 0)
    await server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            yield RunningSimulator(sim, url, http)
    finally:
        await server.stop()
        await sim.stop()


@pytest.fixture
async def simulator(sim_settings: Settings) -> AsyncIterator[RunningSimulator]:
    async with running_simulator(sim_settings) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running


@asynccontextmanager
async def replicate_client(url: str, token: str = "r8_test") -> AsyncIterator[replicate.Client]:
    """The real `replicate` client; it has no close of its own, so it gets a transport we close."""
    transport = httpx.AsyncHTTPTransport()
    try:
        yield replicate.Client(api_token=token, base_url=url, transport=transport)
    finally:
        await transport.aclose()
