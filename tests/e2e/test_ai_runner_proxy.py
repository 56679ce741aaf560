"""The ai-runner reaches Replicate through the egress proxy named in `HTTP(S)_PROXY`, as a
cluster without direct egress needs: creates and reads go through a real forwarding proxy to the
real simulator over HTTP, and `NO_PROXY` sends them around it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from ai_runner.adapters.reader import HttpPredictionReader
from ai_runner.adapters.replicate import ReplicatePredictions
from jobs_runtime.http import HttpServer
from jobs_runtime.settings import load_settings
from replicate_sim.app import build_app
from replicate_sim.config import Settings as SimSettings
from replicate_sim.engine import Simulator

TOKEN = "r8_proxy_test_token"
MODEL = "google/gemini-3-pro"


class ForwardingProxy:
    """A plain HTTP forward proxy: each request arrives in absolute form and is sent on to its
    host; what it forwarded is recorded."""

    def __init__(self) -> None:
        self.forwarded: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _forward(self, request: web.Request) -> web.Response:
        self.forwarded.append(f"{request.method} {request.url}")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in {"host", "proxy-connection"}
        }
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.request(
                request.method, str(request.url), headers=headers, data=await request.read()
            ) as answer,
        ):
            body = await answer.read()
            return web.Response(
                status=answer.status,
                body=body,
                content_type=answer.content_type,
            )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def simulator_url() -> AsyncIterator[str]:
    engine = Simulator(load_settings(SimSettings, {"SIM_API_TOKEN": TOKEN}))
    await engine.start()
    server = HttpServer(build_app(engine), "127.0.0.1", 0)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()
        await engine.stop()


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardingProxy]:
    running = ForwardingProxy()
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_creates_and_reads_go_through_the_proxy_named_in_the_environment(
    simulator_url: str, proxy: ForwardingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    predictions = ReplicatePredictions(api_token=TOKEN, base_url=simulator_url, timeout_s=10.0)
    reader = HttpPredictionReader(api_token=TOKEN, base_url=simulator_url, timeout_s=10.0)
    try:
        created = await predictions.create(MODEL, {"prompt": "through the proxy"}, None, ())
        await reader.get(created.id)
    finally:
        await predictions.aclose()
        await reader.aclose()
    assert proxy.forwarded == [
        f"POST {simulator_url}/v1/models/{MODEL}/predictions",
        f"GET {simulator_url}/v1/predictions/{created.id}",
    ]


async def test_no_proxy_sends_them_around_it(
    simulator_url: str, proxy: ForwardingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    predictions = ReplicatePredictions(api_token=TOKEN, base_url=simulator_url, timeout_s=10.0)
    try:
        created = await predictions.create(MODEL, {"prompt": "around the proxy"}, None, ())
    finally:
        await predictions.aclose()
    assert created.id
    assert proxy.forwarded == []
