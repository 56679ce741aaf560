"""The bare endpoint: a Starlette route returning a constant body under the same uvicorn
settings as the services, the ceiling that status reads and admission are compared with.
Run it with `python -m jobs_bench.bare <port>`."""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs_runtime.http import HttpServer

# About the size of a finished job's answer for a short script.
BODY = b'{"jobId":"00000000-0000-4000-8000-000000000000","status":"succeeded","output":"' + (
    b"x" * 600 + b'"}'
)


async def constant(_request: Request) -> Response:
    return Response(BODY, media_type="application/json")


async def serve(port: int) -> None:
    app = Starlette(routes=[Route("/{path:path}", constant, methods=["GET", "POST"])])
    server = HttpServer(app, "127.0.0.1", port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare endpoint listening on {server.port}", flush=True)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    # The same event loop as the services (jobs_runtime.service).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(int(sys.argv[1])))
