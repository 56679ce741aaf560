"""The bare endpoint: a Starlette route returning a constant body under the same uvicorn
settings as the services, the ceiling that status reads and admission are compared with.
Run it with `python -m jobs_bench.bare <port>`."""

from __future__ import annotations

import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs_bench.serving import run_like_a_service, serve_until_signal

# About the size of a finished job's answer for a short script.
BODY = b'{"jobId":"00000000-0000-4000-8000-000000000000","status":"succeeded","output":"' + (
    b"x" * 600 + b'"}'
)


async def constant(_request: Request) -> Response:
    return Response(BODY, media_type="application/json")


async def serve(port: int) -> None:
    app = Starlette(routes=[Route("/{path:path}", constant, methods=["GET", "POST"])])
    await serve_until_signal(app, port, "bare endpoint")


if __name__ == "__main__":
    run_like_a_service(serve(int(sys.argv[1])))
