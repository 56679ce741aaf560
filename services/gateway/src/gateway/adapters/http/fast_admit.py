"""The lean path of admission: `POST /api/jobs` (and the ideation routes) with a good token, a
JSON body within the limit and a valid job, without an `Idempotency-Key`, admitted straight in
ASGI, without Starlette's per-request objects.

Anything else goes to the route declared in `app.py`, with the body it was sent (what was read
is replayed): a token that does not verify, a refused rate, another content type, a body
without `Content-Length` or over the limit, bad JSON, an invalid job, an `Idempotency-Key`, a
CORS request. Once the rate was counted here the route is told so (`RATE_COUNTED`), so a request
counts once. Only an admission the handler refuses is answered here as its problem, since
handing it on would admit it again: open jobs, a budget (`402`), NATS or the job-store away.
With no budget applying nothing more is asked than before; with one, the job-store's
reservation is the one round trip added.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from starlette.types import Message, Receive, Scope, Send

from gateway import handlers
from gateway.job_tokens import JobTokenOutOfScope
from gateway.jwks import KeysUnavailable
from gateway.limits import LimitExceeded
from gateway.tokens import AuthError
from jobs_proto.problems import INTERNAL, PROBLEM_MEDIA_TYPE
from jobs_runtime import tracing
from jobs_runtime.errors import Unavailable

from .checks import RATE_COUNTED, Refusal, check_content_type, decode_json
from .fast import FastPath
from .ports import GatewayPorts
from .problems import observe_refusal, refusal_of, request_log_level

log = logging.getLogger("gateway.http")

_JSON: Final = (b"content-type", b"application/json")


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A `Receive` giving `messages` again first, then the connection's own."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _read(receive: Receive, length: int) -> tuple[list[Message], bytes | None]:
    """The messages read, and the body when it arrived whole and is `length` bytes."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > length:
            return messages, None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return messages, b"".join(chunks) if size == length else None


def fast_admissions(ports: GatewayPorts, ideation_routes: Mapping[str, str]) -> FastPath:
    cors = bool(ports.cors_origins)
    verifier, rate, limit = ports.verifier, ports.rate, ports.max_body_bytes
    job_types: dict[str, str | None] = {"/api/jobs": None, **ideation_routes}

    async def answer(scope: Scope, receive: Receive, send: Send) -> Receive | None:
        path: str = scope["path"]
        if scope["method"] != "POST" or path not in job_types:
            return receive
        started = time.perf_counter()
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in headers:
                return receive  # repeated: the route's reading of it stands
            headers[name] = value
        length = headers.get(b"content-length", b"")
        if (
            (cors and b"origin" in headers)
            or b"idempotency-key" in headers
            or b"authorization" not in headers
            # Digits first, and few: `int` refuses (raises) past 4,300 of them.
            or not length.isdigit()
            or len(length) > 15
            or int(length) > limit
            or not scope.get("query_string", b"").isascii()
        ):
            return receive
        try:
            caller = await verifier.identify(headers[b"authorization"].decode("latin-1"))
            user_id = caller.user_id
            check_content_type(headers.get(b"content-type", b"").decode("latin-1"))
            if rate is not None:
                rate.take(user_id)
        except (AuthError, KeysUnavailable, JobTokenOutOfScope, Refusal, LimitExceeded):
            return receive  # nothing counted: the route refuses it again
        scope[RATE_COUNTED] = True
        messages, body = await _read(receive, int(length))
        if body is None:
            return _replaying(messages, receive)
        try:
            raw = decode_json(body)
            job_type = job_types[path]
            if job_type is None:
                job = handlers.parse_create_job(raw)
            else:
                job = handlers.parse_job_input(job_type, raw)
        except (Refusal, handlers.InvalidRequest):
            return _replaying(messages, receive)
        try:
            message = handlers.SubmitJob(user_id, job, budget_micros=caller.budget_micros)
            outcome = await handlers.submit_job(message, ports.deps)
        except Exception as exc:
            # A bug: answered as the route's wrapper answers one (the job may be admitted, so
            # the request cannot go to the route again).
            log.exception("unexpected error", extra={"path": path})
            outcome = handlers.Refused(exc)
        if isinstance(outcome, handlers.Refused):
            observe_refusal(ports.observer, outcome.reason)
            refusal = refusal_of(outcome.reason) or Refusal(INTERNAL, "unexpected error")
            problem = refusal.problem
            extra: dict[str, Any] = {"problem": problem.type, "detail": problem.detail}
            if isinstance(outcome.reason, Unavailable):
                extra["reason"] = str(outcome.reason)
            await _send(send, problem.status, msgspec.json.encode(problem), refusal.headers)
            _log(problem.status, path, user_id, started, extra)
            return None
        accepted = outcome.accepted
        ports.observer.job_admitted(job.job_type)
        if tracing.ENABLED:
            tracing.annotate("job.id", str(accepted.job_id))
        location = {"location": f"/api/jobs/{accepted.job_id}"}
        await _send(send, 202, msgspec.json.encode(accepted), location, json=True)
        if log.isEnabledFor(logging.INFO):
            ids = {"job_id": str(accepted.job_id), "job_type": job.job_type, "user_id": user_id}
            log.info("job admitted", extra=ids)
            _log(202, path, user_id, started, {})
        return None

    return answer


async def _send(
    send: Send, status: int, body: bytes, headers: Mapping[str, str], *, json: bool = False
) -> None:
    media_type = _JSON if json else (b"content-type", PROBLEM_MEDIA_TYPE.encode())
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    raw += [(b"content-length", str(len(body)).encode()), media_type]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _log(status: int, path: str, user_id: str, started: float, extra: dict[str, Any]) -> None:
    level = request_log_level(status)  # as `problems.log_request`
    if not log.isEnabledFor(level):
        return
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    line = {"method": "POST", "path": path, "status": status, "user_id": user_id}
    log.log(level, "request", extra={**line, "duration_ms": duration_ms, **extra})
