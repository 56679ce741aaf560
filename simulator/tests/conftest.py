import asyncio
import heapq
import itertools
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
from replicate_sim.webhooks import Later

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


class VirtualTime:
    """A clock and a timer queue that stand still until the test moves them: the simulator's
    latencies, deadlines, `Prefer: wait` and webhook retries then happen when the test says,
    and a test checks what is true just before and at a moment instead of timing a pause."""

    def __init__(self) -> None:
        # Starts at the real time (whole seconds, so offsets like 0.5 stay exact), as webhook
        # signatures are checked against the real clock.
        self.now = float(int(time.time()))
        self.delays: list[float] = []  # every delay asked for, in order
        self._timers: list[tuple[float, int, asyncio.TimerHandle, Callable[[], None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    def later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        self.delays.append(delay)
        due = self.now + delay
        handle = asyncio.TimerHandle(due, callback, (), asyncio.get_running_loop())
        heapq.heappush(self._timers, (due, next(self._order), handle, callback))
        return handle

    def advance(self, seconds: float) -> None:
        """Move time on, running each timer that falls due on the way at its own moment."""
        until = self.now + seconds
        while self._timers and self._timers[0][0] <= until:
            due, _, handle, callback = heapq.heappop(self._timers)
            self.now = max(self.now, due)
            if not handle.cancelled():
                callback()
        self.now = until


@asynccontextmanager
async def running_simulator(
    sim_settings: Settings, clock: Callable[[], float] = time.time, later: Later | None = None
) -> AsyncIterator[RunningSimulator]:
    """A simulator on a local port, with a client for it; the fixture's, or one of a test's own
    with other settings, a clock or a scheduler (`VirtualTime` is both)."""
    sim = Simulator(sim_settings, clock=clock, later=later)
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
def virtual_time() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
async def simulator_in_virtual_time(
    sim_settings: Settings, virtual_time: VirtualTime
) -> AsyncIterator[RunningSimulator]:
    """The simulator on `virtual_time`: nothing timed happens until the test advances it."""
    async with running_simulator(sim_settings, virtual_time, virtual_time.later) as running:
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
