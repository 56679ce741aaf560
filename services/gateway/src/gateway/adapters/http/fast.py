"""The lean path of the hottest route: `GET /api/jobs/{jobId}` answered from memory (the
finished-jobs cache, the job views) straight in ASGI, without Starlette's per-request objects
(middleware frames, router, `Request`, `Response`), which cost more than the answer itself.

It answers only what it can answer exactly as the route declared in `app.py` would, and hands
everything else to that route: a token that does not verify, a job not in memory or another
user's, a request rate refused (the route then answers `401`, `404`, `429` in the contract's
order), a CORS request, a query string that needs escaping. The route stays declared once, and
documented in the OpenAPI document, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.types import Receive, Scope, Send

from gateway.cache import CachedJob
from gateway.job_tokens import JobTokenOutOfScope
from gateway.jobviews import Answer
from gateway.jwks import KeysUnavailable
from gateway.limits import LimitExceeded
from gateway.ports import ReadSource
from gateway.tokens import AuthError

from .checks import etag_matches, parse_job_id
from .ports import GatewayPorts

log = logging.getLogger("gateway.http")

PREFIX: Final = "/api/jobs/"
_JOB_PATH_LENGTH: Final = len(PREFIX) + 36
# Per user, and must be revalidated: a job changes until it is terminal (as `jobs.py`).
_CACHE_CONTROL: Final = (b"cache-control", b"private, no-cache")
_JSON: Final = (b"content-type", b"application/json")

# Answers the request (`None`), or sends nothing and hands back the `Receive` the route is to
# read the request from (the same one, or one replaying what the lean path read of it).
FastPath = Callable[[Scope, Receive, Send], Awaitable[Receive | None]]


def fast_job_reads(ports: GatewayPorts) -> FastPath:
    cors = bool(ports.cors_origins)
    verifier, rate, finished, views = ports.verifier, ports.rate, ports.finished, ports.views
    observer = ports.observer

    async def answer(scope: Scope, receive: Receive, send: Send) -> Receive | None:
        path: str = scope["path"]
        if (
            len(path) != _JOB_PATH_LENGTH
            or scope["method"] != "GET"
            or not path.startswith(PREFIX)
            or not scope.get("query_string", b"").isascii()
        ):
            return receive
        job_id = parse_job_id(path[len(PREFIX) :])
        if job_id is None:
            return receive
        try:
            started = time.perf_counter()
            authorization = if_none_match = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                elif name == b"if-none-match":
                    if_none_match = value.decode("latin-1")
                elif name == b"origin" and cors:
                    return receive  # CORS headers are the middleware's
            known: CachedJob | Answer | None = None
            if finished is not None:
                known = finished.get(job_id)
            source: ReadSource = "cache"
            if known is None and views is not None:
                known = views.answer(job_id)
                source = "job_view"
            if known is None or authorization is None:
                return receive
            try:
                user_id = await verifier.authenticate(authorization)
            except (AuthError, KeysUnavailable, JobTokenOutOfScope):
                return receive  # a job token's read is the route's to answer
            if known.user_id != user_id:
                return receive
            if rate is not None:
                try:
                    rate.take(user_id)
                except LimitExceeded:
                    return receive  # refused without counting: the route refuses it again
            observer.job_read(source)
            tag = known.etag.encode()
            if etag_matches(if_none_match, known.etag):
                status, body = 304, b""
                headers = [(b"etag", tag), _CACHE_CONTROL]
            else:
                status, body = 200, known.body
                headers = [
                    (b"content-length", str(len(body)).encode()),
                    _JSON,
                    (b"etag", tag),
                    _CACHE_CONTROL,
                ]
        except Exception:
            # A bug here must not cost the answer: the route gives it (or its problem).
            log.exception("fast path failed", extra={"path": path})
            return receive
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if log.isEnabledFor(logging.INFO):
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            extra = {"method": "GET", "path": path, "status": status, "user_id": user_id}
            log.info("request", extra={**extra, "duration_ms": duration_ms})
        return None

    return answer
