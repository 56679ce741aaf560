"""Runs a benchmark's own HTTP process (the baseline, the bare endpoint) as the services run:
uvloop, the runtime's uvicorn settings, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

import uvloop

from jobs_runtime.http import HttpServer


async def serve_until_signal(app: Any, port: int, name: str) -> None:
    server = HttpServer(app, "127.0.0.1", port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"{name} listening on {server.port}", flush=True)
    await stop.wait()
    await server.stop()


def run_like_a_service(main: Coroutine[Any, Any, None]) -> None:
    """The same event loop as the services (jobs_runtime.service)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
