"""The public endpoint Replicate calls, `POST /api/webhooks/replicate?job=<jobId>`.

Before anything is verified, the abuse checks: a rate limit per source address (`429` with
`Retry-After`), a cap on large bodies in memory (`503` with `Retry-After`) and a deadline for
the whole body (`408`, connection closed). Then the contract's order: size `413`, signature
headers, timestamp and signature `401`, body and job id `400`. Each refusal is an RFC 9457
problem, one log line and a count in `webhook_ingest_webhooks_total{reason=...}`. `200` only
once JetStream has stored the event (and a large output its object), `503` with `Retry-After`
when either cannot be stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from jobs_runtime.web import (
    INTERNAL,
    PAYLOAD_TOO_LARGE,
    UNAVAILABLE,
    EscapedQueryString,
    ProblemKind,
    kind_for_status,
    problem,
    problem_response,
)
from webhook_ingest.handlers import Outcome, Rejected, Stored, Unavailable, ingest_webhook
from webhook_ingest.limits import (
    LARGE_BODY_BYTES,
    IngressLimits,
    LargeBodySlots,
    Monotonic,
    SourceRateLimiter,
    client_source,
    retry_after_s,
)
from webhook_ingest.ports import EventStore, ProgressSink, ResultStore
from webhook_ingest.verify import (
    ID_HEADER,
    Clock,
    VerificationError,
    WebhookVerifier,
    system_clock,
)

log = logging.getLogger(__name__)

PATH: Final = "/api/webhooks/replicate"
RETRY_AFTER_S: Final = 5
# HMAC over a big body takes milliseconds; beyond this size it runs off the event loop.
_VERIFY_INLINE_BYTES: Final = 256 * 1024
# A sender-chosen string goes into the logs only this long.
_LOGGED_ID_CHARS: Final = 128

# `reason`: `stored` or `duplicate` for a `200`, else why the request was refused.
WEBHOOKS = Counter(
    "webhook_ingest_webhooks", "Webhook requests, by what became of them", ["reason"]
)

RATE_LIMITED: Final = ProblemKind("rate-limited", "Too many requests", 429)
TOO_MANY_LARGE_BODIES: Final = ProblemKind("too-many-large-bodies", UNAVAILABLE.title, 503)
READ_TIMEOUT: Final = ProblemKind("read-timeout", "Request body too slow", 408)


def _kind(reason: str, title: str, status: int) -> ProblemKind:
    # This endpoint's own kinds name the reason: `bad_signature` is `...:bad-signature`.
    return ProblemKind(reason.replace("_", "-"), title, status)


def _problem(kind: ProblemKind, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return problem_response(problem(kind, detail), headers)


def webhook_app(
    *,
    verifier: WebhookVerifier,
    events: EventStore,
    progress: ProgressSink,
    results: ResultStore,
    max_bytes: int,
    limits: IngressLimits | None = None,
    clock: Clock = system_clock,
    monotonic: Monotonic = time.monotonic,
) -> Starlette:
    """The Starlette app of the webhook endpoint over the given ports.

    `clock` stamps events; `monotonic` refills the rate limiter's buckets.
    """
    limits = limits or IngressLimits()
    rate_limiter = SourceRateLimiter(limits.rate_per_s, limits.burst, clock=monotonic)
    slots = LargeBodySlots(limits.max_large_bodies)

    async def replicate_webhook(request: Request) -> Response:
        source = client_source(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            limits.trusted_proxy_hops,
        )
        context = {
            "webhook_id": request.headers.get(ID_HEADER, "")[:_LOGGED_ID_CHARS],
            "source": source,
        }
        wait_s = rate_limiter.take(source)
        if wait_s is not None:
            return _refused(
                _problem(
                    RATE_LIMITED,
                    "too many requests from this address; retry later",
                    headers={"Retry-After": str(retry_after_s(wait_s))},
                ),
                "rate_limited",
                context,
            )

        reading = _BodyReader(request, max_bytes, slots)
        try:
            read = await reading.read(limits.read_timeout_s)
            if isinstance(read, _Refusal):
                return _refused(read.response, read.reason, context)
            return await verified_and_ingested(request, read, context)
        finally:
            # The body is held until the answer is decided; only then is its slot free.
            reading.release()

    async def verified_and_ingested(
        request: Request, body: bytes, context: dict[str, str]
    ) -> Response:
        try:
            if len(body) > _VERIFY_INLINE_BYTES:
                webhook = await asyncio.to_thread(verifier.verify, request.headers, body)
            else:
                webhook = verifier.verify(request.headers, body)
        except VerificationError as exc:
            kind = _kind(exc.failure, "Webhook not authenticated", 401)
            return _refused(_problem(kind, exc.detail), exc.failure, context)

        outcome = await ingest_webhook(
            webhook,
            request.query_params.get("job"),
            events=events,
            progress=progress,
            results=results,
            now=clock(),
        )
        return _answer(outcome, context)

    return Starlette(
        routes=[Route(PATH, replicate_webhook, methods=["POST"])],
        middleware=[Middleware(EscapedQueryString)],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )


@dataclass(frozen=True, slots=True)
class _Refusal:
    response: Response
    reason: str


class _BodyReader:
    """Reads one request's body under the size limit, the large-body cap and a deadline.

    Not `jobs_runtime.web.read_limited`: a body must take a large-body slot the moment it is
    known to be large (declared, or counted past 1 MiB when chunked), and the whole read runs
    under `WEBHOOK_READ_TIMEOUT_S`. Order: the cap (`503`) before the size (`413`), as asked.
    """

    def __init__(self, request: Request, max_bytes: int, slots: LargeBodySlots) -> None:
        self._request = request
        self._max_bytes = max_bytes
        self._slots = slots
        self._holding = False

    def release(self) -> None:
        if self._holding:
            self._slots.give_back()
            self._holding = False

    def _large_body_refused(self) -> _Refusal | None:
        if self._holding or self._slots.try_take():
            self._holding = True
            return None
        return _Refusal(
            _problem(
                TOO_MANY_LARGE_BODIES,
                f"{self._slots.capacity} large bodies are already being received; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ),
            "too_many_large_bodies",
        )

    def _too_large(self) -> _Refusal:
        detail = f"the body is over the limit of {self._max_bytes} bytes"
        return _Refusal(_problem(PAYLOAD_TOO_LARGE, detail), "payload_too_large")

    async def read(self, timeout_s: float) -> bytes | _Refusal:
        declared = self._request.headers.get("content-length", "")
        # Digits only, and few enough that `int` stays cheap on a hostile header.
        size_declared = int(declared) if declared.isdigit() and len(declared) <= 18 else None
        if size_declared is not None and size_declared > LARGE_BODY_BYTES:
            refused = self._large_body_refused()
            if refused is not None:
                return refused
        if size_declared is not None and size_declared > self._max_bytes:
            return self._too_large()
        try:
            async with asyncio.timeout(timeout_s):
                return await self._chunks()
        except TimeoutError:
            # Close the connection: reading and discarding the rest would keep the sender's
            # socket, and our time, for as long as it keeps trickling.
            response = _problem(
                READ_TIMEOUT,
                f"the body did not arrive within {timeout_s:g} s",
                headers={"Connection": "close"},
            )
            return _Refusal(response, "read_timeout")
        except ClientDisconnect:
            # Nobody reads this answer; it is counted and logged like any refusal.
            kind = _kind("client_disconnected", "Request incomplete", 400)
            return _Refusal(_problem(kind, "the client went away"), "client_disconnected")

    async def _chunks(self) -> bytes | _Refusal:
        chunks: list[bytes] = []
        size = 0
        async for chunk in self._request.stream():
            size += len(chunk)
            if size > LARGE_BODY_BYTES:
                refused = self._large_body_refused()
                if refused is not None:
                    return refused
            if size > self._max_bytes:
                return self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)


async def _http_error(_: Request, exc: Exception) -> Response:
    # Starlette's own refusals (unknown path, wrong method) as problem bodies too.
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    return _problem(kind_for_status(exc.status_code), str(exc.detail), exc.headers)


async def _internal_error(_: Request, exc: Exception) -> Response:
    # Starlette logs the exception itself; the sender gets no internals, and retries.
    return _problem(INTERNAL, "the webhook could not be handled")


def _refused(response: Response, reason: str, context: dict[str, str]) -> Response:
    WEBHOOKS.labels(reason).inc()
    log.warning(
        "webhook refused", extra={**context, "status": response.status_code, "reason": reason}
    )
    return response


def _answer(outcome: Outcome, context: dict[str, str]) -> Response:
    match outcome:
        case Stored(event=event, duplicate=duplicate, progress_sent=progress_sent):
            WEBHOOKS.labels("duplicate" if duplicate else "stored").inc()
            fields = {
                **context,
                "kind": event.kind,
                "job_id": str(event.job_id),
                "prediction_id": event.prediction_id,
                "duplicate": duplicate,
            }
            if progress_sent is False:
                log.warning("webhook stored, its progress not sent", extra=fields)
            else:
                log.info("webhook stored", extra=fields)
            return Response(status_code=200)
        case Rejected(reason=reason, detail=detail):
            title = "Not a prediction" if reason == "not_a_prediction" else "Invalid job id"
            return _refused(_problem(_kind(reason, title, 400), detail), reason, context)
        case Unavailable(reason=reason, detail=detail):
            WEBHOOKS.labels(reason).inc()
            extra = {**context, "status": 503, "reason": reason, "detail": detail}
            if reason == "too_large_for_bus":
                # Even without its output (stored aside) the event is too large: no retry helps,
                # so an operator must see it.
                log.error("webhook event too large for the bus", extra=extra)
            else:
                log.warning("webhook not stored, bus unavailable", extra=extra)
            public_detail = (
                "the prediction is too large to be stored"
                if reason == "too_large_for_bus"
                else "the event could not be stored now; retry later"
            )
            return _problem(
                _kind(reason, UNAVAILABLE.title, 503),
                public_detail,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
