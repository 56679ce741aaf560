"""RED metrics of a public app: requests counted by route template (never the raw path), method
and status; time to the response's start, so an open stream is timed to its opening."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from jobs_runtime.http import HttpServer
from jobs_runtime.red import (
    DURATION_BUCKETS,
    DURATION_LABELS,
    REQUEST_LABELS,
    UNMATCHED,
    RouteTemplates,
    with_red_metrics,
)


class Metrics:
    """A registry of its own with the two metrics a service declares."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "t_http_requests", "requests", REQUEST_LABELS, registry=self.registry
        )
        self.seconds = Histogram(
            "t_http_request_duration_seconds",
            "seconds",
            DURATION_LABELS,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def count(self, route: str, method: str, status: str) -> float:
        value = self.registry.get_sample_value(
            "t_http_requests_total", {"route": route, "method": method, "status": status}
        )
        return value or 0.0

    def timed(self, route: str, method: str) -> float:
        value = self.registry.get_sample_value(
            "t_http_request_duration_seconds_count", {"route": route, "method": method}
        )
        return value or 0.0

    def routes_seen(self) -> set[str]:
        return {
            sample.labels["route"]
            for family in self.registry.collect()
            for sample in family.samples
            if "route" in sample.labels
        }


async def job(request: Request) -> Response:
    return PlainTextResponse(request.path_params["job_id"])


async def broken(request: Request) -> Response:
    raise RuntimeError("a bug")


def app(opened: asyncio.Event, release: asyncio.Event) -> Starlette:
    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            yield b": open\n\n"
            opened.set()
            await release.wait()
            yield b"data: done\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def create(request: Request) -> Response:
        return PlainTextResponse("made", status_code=201)

    return Starlette(
        routes=[
            Route("/api/jobs", create, methods=["POST"]),
            Route("/api/jobs/{job_id}", job, methods=["GET"]),
            Route("/api/jobs/{job_id}/events", events, methods=["GET"]),
            Route("/broken", broken, methods=["GET"]),
        ]
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@asynccontextmanager
async def client(
    metrics: Metrics, opened: asyncio.Event, release: asyncio.Event
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the wrapped app served by uvicorn on a free port (streams arrive as sent)."""
    server = HttpServer(
        with_red_metrics(app(opened, release), metrics.requests, metrics.seconds), "127.0.0.1", 0
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            yield http
    finally:
        release.set()
        await server.stop()


async def test_requests_are_counted_by_route_template_method_and_status(metrics: Metrics) -> None:
    async with client(metrics, asyncio.Event(), asyncio.Event()) as http:
        for _ in range(3):
            assert (await http.get(f"/api/jobs/{uuid.uuid4()}")).status_code == 200
        assert (await http.post("/api/jobs")).status_code == 201
        assert (await http.delete(f"/api/jobs/{uuid.uuid4()}")).status_code == 405
        assert (await http.get("/no/such/path")).status_code == 404
        assert (await http.request("PROPFIND", "/api/jobs")).status_code == 405
    assert metrics.count("/api/jobs/{job_id}", "GET", "200") == 3
    assert metrics.timed("/api/jobs/{job_id}", "GET") == 3
    assert metrics.count("/api/jobs", "POST", "201") == 1
    assert metrics.count("/api/jobs/{job_id}", "DELETE", "405") == 1
    assert metrics.count(UNMATCHED, "GET", "404") == 1
    # A method outside the standard ones is not a label value of its own.
    assert metrics.count("/api/jobs", "other", "405") == 1
    # No raw path (no job id) ever becomes a label value.
    assert metrics.routes_seen() == {"/api/jobs/{job_id}", "/api/jobs", UNMATCHED}


async def test_an_app_that_raises_counts_a_500(metrics: Metrics) -> None:
    async with client(metrics, asyncio.Event(), asyncio.Event()) as http:
        assert (await http.get("/broken")).status_code == 500
    assert metrics.count("/broken", "GET", "500") == 1


async def test_a_stream_is_counted_and_timed_when_it_opens(metrics: Metrics) -> None:
    opened, release = asyncio.Event(), asyncio.Event()
    route = "/api/jobs/{job_id}/events"
    async with (
        client(metrics, opened, release) as http,
        http.stream("GET", f"/api/jobs/{uuid.uuid4()}/events") as answer,
    ):
        assert answer.status_code == 200
        await opened.wait()
        # Still open: already counted, its time observed up to the opening only.
        assert metrics.count(route, "GET", "200") == 1
        assert metrics.timed(route, "GET") == 1
        release.set()
        assert b"data: done" in await answer.aread()
    assert metrics.count(route, "GET", "200") == 1
    assert metrics.timed(route, "GET") == 1


def test_route_templates_resolve_paths_as_the_router_does() -> None:
    templates = RouteTemplates(app(asyncio.Event(), asyncio.Event()).routes)
    job_id = str(uuid.uuid4())
    assert templates.of("/api/jobs") == "/api/jobs"
    assert templates.of(f"/api/jobs/{job_id}") == "/api/jobs/{job_id}"
    assert templates.of(f"/api/jobs/{job_id}/events") == "/api/jobs/{job_id}/events"
    assert templates.of(f"/api/jobs/{job_id}/nope") == UNMATCHED
    assert templates.of("/api/jobs/") == UNMATCHED
