"""The admin port of every service: `/healthz`, `/readyz`, `/metrics`; never routed from outside."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs_proto.api import HealthStatus
from jobs_runtime.web import EscapedQueryString

ReadinessCheck = Callable[[], Awaitable[None]]

log = logging.getLogger(__name__)

_CHECK_TIMEOUT_S = 2.0
# What `/readyz` says of a failing check, e.g. `{"nats": "unavailable"}`.
UNAVAILABLE = "unavailable"


class Readiness:
    """Named checks that must all pass, a gate that holds until the service says it has started
    (its own checks are added while it starts, so "no failing check" is not yet "ready"), and
    a switch that fails them all while shutting down."""

    def __init__(self) -> None:
        self.checks: dict[str, ReadinessCheck] = {}
        self.started = False
        self.stopping = False
        # Checks failing at the last probe: each failure is logged when it starts, not on
        # every probe.
        self._failing: set[str] = set()

    def mark_started(self) -> None:
        self.started = True

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def probe(self) -> HealthStatus:
        results: dict[str, str] = {}
        if not self.started:
            results["startup"] = "starting"
        if self.stopping:
            results["shutdown"] = "stopping"
        # A copy: the service may add its checks while a probe is awaiting one.
        for name, check in list(self.checks.items()):
            try:
                await asyncio.wait_for(check(), _CHECK_TIMEOUT_S)
                results[name] = "ok"
            except Exception as exc:
                # What is down, never why: an exception's text may name hosts, users or a
                # connection string, and `/readyz` answers whoever reaches the port.
                results[name] = UNAVAILABLE
                if name not in self._failing:
                    # The exception's type only: its text stays out of the logs for the same
                    # reason; the adapter that failed logs its own errors.
                    log.warning(
                        "readiness check failing",
                        extra={"check": name, "error": type(exc).__name__},
                    )
                self._failing.add(name)
            else:
                self._failing.discard(name)
        ok = all(v == "ok" for v in results.values())
        return HealthStatus(status="ok" if ok else "unavailable", checks=results)


def _json(body: HealthStatus, status: int) -> Response:
    return Response(msgspec.json.encode(body), status, media_type="application/json")


def admin_app(readiness: Readiness) -> Starlette:
    async def healthz(_: Request) -> Response:
        return _json(HealthStatus(status="ok"), 200)

    async def readyz(_: Request) -> Response:
        status = await readiness.probe()
        return _json(status, 200 if status.status == "ok" else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        middleware=[Middleware(EscapedQueryString)],
    )
