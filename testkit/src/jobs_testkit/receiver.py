"""An HTTP endpoint that records every request it gets, for tests of what sends webhooks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs_runtime.http import HttpServer

Answer = Callable[["Received"], Response]


@dataclass(slots=True)
class Received:
    """One request as it arrived: raw body, headers, the full URL and when."""

    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def url_tail(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass
class Receiver:
    """What the running endpoint saw; `answer` decides each response (default `200`)."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answer: Answer = field(default=lambda _: Response(status_code=200))
    delay_s: float = 0.0
    open_requests: int = 0
    most_open_requests: int = 0

    async def wait_for(self, count: int, within: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + within
        while len(self.received) < count:
            assert time.monotonic() < deadline, (
                f"got {len(self.received)} of {count} requests within {within}s"
            )
            await asyncio.sleep(0.02)
        return self.received


@asynccontextmanager
async def running_receiver(path: str = "/hook") -> AsyncIterator[Receiver]:
    receiver = Receiver()

    async def record(request: Request) -> Response:
        receiver.open_requests += 1
        receiver.most_open_requests = max(receiver.most_open_requests, receiver.open_requests)
        try:
            body = await request.body()
            got = Received(
                path=request.url.path,
                query=request.url.query,
                headers=dict(request.headers),
                body=body,
                at=time.time(),
            )
            if receiver.delay_s:
                await asyncio.sleep(receiver.delay_s)
            receiver.received.append(got)
            return receiver.answer(got)
        finally:
            receiver.open_requests -= 1

    server = HttpServer(Starlette(routes=[Route(path, record, methods=["POST"])]), "127.0.0.1", 0)
    await server.start()
    receiver.url = f"http://127.0.0.1:{server.port}{path}"
    try:
        yield receiver
    finally:
        await server.stop()
