"""The runtime's uvicorn server: a `Date` header that follows the clock, a prompt stop."""

import asyncio
import time
from email.utils import parsedate_to_datetime

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from jobs_runtime.http import HttpServer


async def hello(_request: object) -> PlainTextResponse:
    return PlainTextResponse("hi")


async def test_date_header_is_kept_current_and_stop_is_prompt() -> None:
    server = HttpServer(Starlette(routes=[Route("/", hello)]), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            first = parsedate_to_datetime((await client.get("/")).headers["date"])
            await asyncio.sleep(2.2)
            later = parsedate_to_datetime((await client.get("/")).headers["date"])
        assert (later - first).total_seconds() >= 1
        assert abs(later.timestamp() - time.time()) < 2
    finally:
        started = time.monotonic()
        await server.stop()
    assert time.monotonic() - started < 0.5
