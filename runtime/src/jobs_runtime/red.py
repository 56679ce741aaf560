"""RED metrics of a public HTTP app (requests by route template, method and status; latency by
route and method) as a pure ASGI middleware around it, cheap enough for the gateway's front door.

Each service declares its own two metrics (so their names stay greppable and its `/metrics`
only shows its own) with the label names and buckets given here, and wraps its app once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Final

from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Label names of the two metrics: route TEMPLATES, never raw paths (job ids would make one
# series per job), and the method only among the standard ones.
REQUEST_LABELS: Final = ("route", "method", "status")
DURATION_LABELS: Final = ("route", "method")
# From a cached read (well under a millisecond) to a slow admission.
DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# What a request that matches no route is counted under (scanners, typos: 404s, 405s).
UNMATCHED: Final = "unmatched"
OTHER_METHOD: Final = "other"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RouteTemplates:
    """The template of the route a path belongs to: one dict lookup for a route without
    parameters, else the parameterised routes' patterns in their declared order (as Starlette's
    router tries them). Routes other than `Route` (mounts) are not resolved: `UNMATCHED`."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._exact: dict[str, str] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        seen: set[str] = set()
        for route in routes:
            if not isinstance(route, Route) or route.path in seen:
                continue
            seen.add(route.path)
            if route.param_convertors:
                self._patterns.append((route.path_regex, route.path_format))
            else:
                self._exact[route.path] = route.path

    def of(self, path: str) -> str:
        template = self._exact.get(path)
        if template is not None:
            return template
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return UNMATCHED


class RedMetrics:
    """ASGI middleware: each HTTP request counted once by route template, method and status
    when its response starts, and the time to that start observed by route and method.

    Time to the response's start, not its end: for an SSE stream that is the time to open it
    (authenticated, subscribed), not the hours it stays open, so streams and quick reads share
    one histogram; every other answer here is sent whole right after its start. A request
    whose app raises before answering counts as the `500` the server then sends.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        requests: Counter,
        seconds: Histogram,
    ) -> None:
        self.app = app
        self._templates = RouteTemplates(routes)
        self._requests = requests
        self._seconds = seconds
        # Label children looked up once: `labels()` takes a lock and builds a key every call.
        self._counted: dict[tuple[str, str, int], Counter] = {}
        self._timed: dict[tuple[str, str], Histogram] = {}

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = self._templates.of(scope["path"])
        method: str = scope["method"]
        if method not in _METHODS:
            method = OTHER_METHOD
        counter = self._counted.get((route, method, status))
        if counter is None:
            counter = self._requests.labels(route, method, str(status))
            self._counted[(route, method, status)] = counter
        counter.inc()
        timer = self._timed.get((route, method))
        if timer is None:
            timer = self._timed[(route, method)] = self._seconds.labels(route, method)
        timer.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                self._observe(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if not answered:
                self._observe(scope, 500, time.perf_counter() - started)
            raise


def with_red_metrics(app: Starlette, requests: Counter, seconds: Histogram) -> RedMetrics:
    """`app` counted and timed by its own routes' templates (declared with `REQUEST_LABELS`
    and `DURATION_LABELS`)."""
    return RedMetrics(app, app.routes, requests, seconds)
