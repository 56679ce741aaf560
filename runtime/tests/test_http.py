"""The runtime's uvicorn server: a `Date` header that follows the clock, a prompt stop."""

import asyncio
import logging
import math
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from jobs_runtime.http import HttpServer


async def hello(_request: object) -> PlainTextResponse:
    return PlainTextResponse("hi")


class ShuttingDown(logging.Handler):
    """Sets `said` when uvicorn logs that its main loop has ended and it shuts down."""

    def __init__(self) -> None:
        super().__init__()
        self.said = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "Shutting down":
            self.said.set()


async def test_date_header_is_kept_current_and_stop_is_prompt(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = HttpServer(Starlette(routes=[Route("/", hello)]), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            first = parsedate_to_datetime((await client.get("/")).headers["date"])
            # The behaviour under test is the clock moving on: the header is refreshed once a
            # second, so more than two seconds must really pass.
            await asyncio.sleep(2.2)
            before = time.time()
            later = parsedate_to_datetime((await client.get("/")).headers["date"])
            after = time.time()
        assert (later - first).total_seconds() >= 1
        # Current: at most the one-second refresh behind the request (the header has whole
        # seconds), and never ahead of it.
        assert math.floor(before) - 1 <= later.timestamp() <= after
    finally:
        # The event loop's clock stands still until the main loop has ended: its
        # once-a-second tick can then never time out, so only the stop itself can end it (a
        # stop that waited for the tick would hang until the per-test timeout). uvicorn's
        # shutdown after that pauses on the clock, which moves again by then.
        caplog.set_level(logging.INFO, logger="uvicorn.error")
        ended = ShuttingDown()
        logging.getLogger("uvicorn.error").addHandler(ended)
        loop = asyncio.get_running_loop()
        frozen = loop.time()
        try:
            with monkeypatch.context() as clock:
                clock.setattr(loop, "time", lambda: frozen)
                stopping = asyncio.create_task(server.stop())
                await ended.said.wait()
            await stopping
        finally:
            logging.getLogger("uvicorn.error").removeHandler(ended)
