"""The gateway's HTTP API as one Starlette app: the route table (every route declared once
here, and documented in the OpenAPI document `site.py` serves), the middleware (escaped query
strings, CORS for configured origins) and problem answers for unknown routes and methods."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from gateway.hub import Hub
from jobs_runtime import tracing
from jobs_runtime.web import EscapedQueryString

from . import events, jobs, site, spend
from .fast import FastPath, fast_job_reads
from .fast_admit import fast_admissions
from .ports import GatewayPorts
from .problems import answered, framework_refusal

# The routes the existing frontend calls: the whole body is the input of one job type.
IDEATION_ROUTES: Final[Mapping[str, str]] = {
    "/api/ideation/generate-script": "script_generation",
    "/api/ideation/video-outline": "video_outline",
    "/api/ideation/generate-titles": "title_generation",
}
# CORS: what a browser page on an allowed origin may send and read. `Authorization` is a
# header, not a cookie, so credentials mode stays off.
CORS_ALLOW_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-None-Match",
    "Last-Event-ID",
)
CORS_EXPOSE_HEADERS: Final = ("Location", "ETag", "Retry-After", "Idempotent-Replayed")
CORS_MAX_AGE_S: Final = 600


def _middleware(ports: GatewayPorts) -> list[Middleware]:
    escaped = Middleware(EscapedQueryString)
    if not ports.cors_origins:
        return [escaped]
    # Outside the routes: a preflight carries no token and must be answered before auth.
    return [
        escaped,
        Middleware(
            CORSMiddleware,
            allow_origins=list(ports.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=list(CORS_ALLOW_HEADERS),
            expose_headers=list(CORS_EXPOSE_HEADERS),
            max_age=CORS_MAX_AGE_S,
        ),
    ]


class GatewayApp(Starlette):
    """The Starlette app, with the lean path (`fast.py`) tried first for each request."""

    def __init__(
        self, fast_paths: Sequence[FastPath], traced: frozenset[str] = frozenset(), **options: Any
    ) -> None:
        super().__init__(**options)
        self._fast_paths = tuple(fast_paths)
        # Paths whose `POST` starts (or, with a browser's `traceparent`, joins) a job's trace.
        self._traced = traced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            tracing.ENABLED
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in self._traced
        ):
            await self._traced_admission(scope, receive, send)
            return
        await self._answer(scope, receive, send)

    async def _traced_admission(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                tracing.annotate("http.response.status_code", message["status"])
            await send(message)

        with tracing.span(
            f"POST {path}",
            kind="server",
            parent=tracing.extract_asgi(scope["headers"]),
            attributes={"http.request.method": "POST", "http.route": path},
        ):
            await self._answer(scope, receive, send_noting_status)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for fast_path in self._fast_paths:
                continued = await fast_path(scope, receive, send)
                if continued is None:
                    return
                receive = continued
        await super().__call__(scope, receive, send)


def build_app(ports: GatewayPorts) -> Starlette:
    hub = ports.hub if ports.hub is not None else Hub()
    observer = ports.observer
    routes = [
        Route("/api/jobs", answered(jobs.create_job(ports), observer), methods=["POST"]),
        Route("/api/jobs", answered(jobs.list_jobs(ports), observer), methods=["GET"]),
        Route("/api/jobs/{job_id}", answered(jobs.get_job(ports), observer), methods=["GET"]),
        Route(
            "/api/jobs/{job_id}/history",
            answered(jobs.job_history(ports), observer),
            methods=["GET"],
        ),
        Route(
            "/api/jobs/{job_id}/cancel",
            answered(jobs.cancel_job(ports), observer),
            methods=["POST"],
        ),
        Route(
            "/api/jobs/{job_id}/token",
            answered(jobs.create_job_token(ports), observer),
            methods=["POST"],
        ),
        Route("/api/jobs/{job_id}/events", events.job_events(ports, hub), methods=["GET"]),
        Route("/api/events", events.user_events(ports, hub), methods=["GET"]),
        Route("/api/job-types", answered(spend.job_types(), observer), methods=["GET"]),
        Route("/api/usage", answered(spend.usage(ports), observer), methods=["GET"]),
        Route("/api/jobs/{job_id}/output", events.job_output(ports, hub), methods=["GET"]),
        *(
            Route(
                path, answered(jobs.create_typed_job(ports, job_type), observer), methods=["POST"]
            )
            for path, job_type in IDEATION_ROUTES.items()
        ),
        *site.documentation(IDEATION_ROUTES),
        *site.demo(ports),
    ]
    return GatewayApp(
        [fast_job_reads(ports), fast_admissions(ports, IDEATION_ROUTES)],
        traced=frozenset({"/api/jobs", *IDEATION_ROUTES}),
        routes=routes,
        middleware=_middleware(ports),
        exception_handlers={HTTPException: framework_refusal},
    )
