"""The public endpoint Replicate calls, `POST /api/webhooks/replicate?job=<jobId>`.

First a rate limit per source address (`429` with `Retry-After`). Then the contract's order:
size `413`, signature headers and timestamp `401` (both before any byte of the body is kept or
held), signature `401`, body and job id `400` (a `?job=` that is not the job the signed body
names is refused). Only a request that has passed the headers and the timestamp may read its
body, under a cap on large bodies in memory, in all and per source (`503` with `Retry-After`),
and a deadline for the whole body (`408`, connection closed). Each refusal is an RFC 9457
problem, one log line and a count in `webhook_ingest_webhooks_total{reason=...}`. `200` only
once JetStream has stored the event (and a large output its object), or parked a webhook naming
no job of ours (logged, counted as `parked`); `503` with `Retry-After` when any of them cannot be
stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from jobs_runtime.buckets import Monotonic, retry_after_s
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
from webhook_ingest.handlers import (
    NotStored,
    Outcome,
    Parked,
    Rejected,
    Stored,
    ingest_webhook,
)
from webhook_ingest.limits import (
    LARGE_BODY_BYTES,
    IngressLimits,
    LargeBodySlots,
    client_source,
    source_rate_limiter,
)
from webhook_ingest.ports import (
    EventStore,
    NoObserver,
    ProgressSink,
    ResultStore,
    WebhookObserver,
    WebhookParking,
)
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

_REJECTED_TITLES: Final = {
    "not_a_prediction": "Not a prediction",
    "bad_job_id": "Invalid job id",
    "job_mismatch": "Job does not match the signed webhook",
}

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
    parking: WebhookParking,
    max_bytes: int,
    limits: IngressLimits | None = None,
    clock: Clock = system_clock,
    monotonic: Monotonic = time.monotonic,
    observer: WebhookObserver | None = None,
) -> Starlette:
    """The Starlette app of the webhook endpoint over the given ports.

    `clock` stamps events; `monotonic` refills the rate limiter's buckets; `observer` is told
    what became of each request.
    """
    limits = limits or IngressLimits()
    observer = observer or NoObserver()
    rate_limiter = source_rate_limiter(limits, monotonic)
    slots = LargeBodySlots(limits.max_large_bodies, limits.max_large_bodies_per_source)

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
                observer,
            )

        reading = _BodyReader(request, max_bytes, slots, source, verifier, observer)
        try:
            read = await reading.read(limits.read_timeout_s)
            if isinstance(read, _Refusal):
                return _refused(read.response, read.reason, context, observer)
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
            refusal = _unauthenticated(exc)
            return _refused(refusal.response, refusal.reason, context, observer)

        outcome = await ingest_webhook(
            webhook,
            request.query_params.get("job"),
            events=events,
            progress=progress,
            results=results,
            parking=parking,
            now=clock(),
        )
        return _answer(outcome, context, observer)

    return Starlette(
        routes=[Route(PATH, replicate_webhook, methods=["POST"])],
        middleware=[Middleware(EscapedQueryString)],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )


@dataclass(frozen=True, slots=True)
class _Refusal:
    response: Response
    reason: str


def _unauthenticated(exc: VerificationError, headers: Mapping[str, str] | None = None) -> _Refusal:
    kind = _kind(exc.failure, "Webhook not authenticated", 401)
    return _Refusal(_problem(kind, exc.detail, headers), exc.failure)


# On an answer given before the body was read: the rest of it is not worth receiving.
_CLOSE: Final = {"Connection": "close"}


class _BodyReader:
    """Reads one request's body under the size limit, the large-body cap and a deadline, once
    its signature headers are present and fresh.

    Not `jobs_runtime.web.read_limited`: a body must take a large-body slot the moment it is
    known to be large (declared, or counted past 1 MiB when chunked), and the whole read runs
    under `WEBHOOK_READ_TIMEOUT_S`. Order: a declared size over the limit (`413`), the headers
    and timestamp (`401`), then the large-body cap (`503`), so a sender that cannot be signed
    never holds a slot, and a body that is too large is never looked at further.
    """

    def __init__(
        self,
        request: Request,
        max_bytes: int,
        slots: LargeBodySlots,
        source: str,
        verifier: WebhookVerifier,
        observer: WebhookObserver,
    ) -> None:
        self._request = request
        self._observer = observer
        self._max_bytes = max_bytes
        self._slots = slots
        self._source = source
        self._verifier = verifier
        self._holding = False

    def release(self) -> None:
        if self._holding:
            self._slots.give_back(self._source)
            self._holding = False
            self._observer.large_bodies(self._slots.in_use)

    def _large_body_refused(self) -> _Refusal | None:
        if self._holding:
            return None
        if self._slots.try_take(self._source):
            self._holding = True
            self._observer.large_bodies(self._slots.in_use)
            return None
        if self._slots.of(self._source) >= self._slots.per_source:
            detail = f"{self._slots.per_source} large bodies from this address are being received"
        else:
            detail = f"{self._slots.capacity} large bodies are already being received"
        return _Refusal(
            _problem(
                TOO_MANY_LARGE_BODIES,
                f"{detail}; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ),
            "too_many_large_bodies",
        )

    def _too_large(self) -> _Refusal:
        detail = f"the body is over the limit of {self._max_bytes} bytes"
        return _Refusal(_problem(PAYLOAD_TOO_LARGE, detail), "payload_too_large")

    async def read(self, timeout_s: float) -> bytes | _Refusal:
        declared = self._request.headers.get("content-length", "")
        # ASCII digits only (`isdigit` also takes "²", which `int` refuses), and few enough that
        # `int` stays cheap on a hostile header.
        digits = declared.isascii() and declared.isdigit() and len(declared) <= 18
        size_declared = int(declared) if digits else None
        if size_declared is not None and size_declared > self._max_bytes:
            return self._too_large()
        try:
            self._verifier.check_headers(self._request.headers)
        except VerificationError as exc:
            return await self._unsigned(exc, size_declared, timeout_s)
        if size_declared is not None and size_declared > LARGE_BODY_BYTES:
            refused = self._large_body_refused()
            if refused is not None:
                return refused
        try:
            async with asyncio.timeout(timeout_s):
                return await self._chunks()
        except TimeoutError:
            # Close the connection: reading and discarding the rest would keep the sender's
            # socket, and our time, for as long as it keeps trickling.
            response = _problem(
                READ_TIMEOUT,
                f"the body did not arrive within {timeout_s:g} s",
                headers=_CLOSE,
            )
            return _Refusal(response, "read_timeout")
        except ClientDisconnect:
            return _gone()

    async def _unsigned(
        self, exc: VerificationError, size_declared: int | None, timeout_s: float
    ) -> _Refusal:
        """A request whose headers cannot carry a valid signature: `401` without reading a
        declared body (its size is known to be within the limit). A body of unknown size is
        counted and dropped as it comes, holding neither memory nor a slot, so that an
        oversized one still gets the `413` that comes first; when its time is up it gets the
        `401` it was always going to get, and the connection is closed."""
        if size_declared is not None:
            return _unauthenticated(exc, _CLOSE)
        size = 0
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in self._request.stream():
                    size += len(chunk)
                    if size > self._max_bytes:
                        return self._too_large()
        except TimeoutError:
            return _unauthenticated(exc, _CLOSE)
        except ClientDisconnect:
            return _gone()
        return _unauthenticated(exc)

    async def _chunks(self) -> bytes | _Refusal:
        chunks: list[bytes] = []
        size = 0
        async for chunk in self._request.stream():
            size += len(chunk)
            if size > self._max_bytes:
                return self._too_large()
            if size > LARGE_BODY_BYTES:
                refused = self._large_body_refused()
                if refused is not None:
                    return refused
            chunks.append(chunk)
        return b"".join(chunks)


def _gone() -> _Refusal:
    # Nobody reads this answer; it is counted and logged like any refusal.
    kind = _kind("client_disconnected", "Request incomplete", 400)
    return _Refusal(_problem(kind, "the client went away"), "client_disconnected")


async def _http_error(_: Request, exc: Exception) -> Response:
    # Starlette's own refusals (unknown path, wrong method) as problem bodies too.
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    return _problem(kind_for_status(exc.status_code), str(exc.detail), exc.headers)


async def _internal_error(_: Request, exc: Exception) -> Response:
    # Starlette logs the exception itself; the sender gets no internals, and retries.
    return _problem(INTERNAL, "the webhook could not be handled")


def _refused(
    response: Response, reason: str, context: dict[str, str], observer: WebhookObserver
) -> Response:
    observer.refused(reason)
    log.warning(
        "webhook refused", extra={**context, "status": response.status_code, "reason": reason}
    )
    return response


def _answer(outcome: Outcome, context: dict[str, str], observer: WebhookObserver) -> Response:
    match outcome:
        case Stored(event=event, duplicate=duplicate, progress_sent=progress_sent):
            observer.stored(duplicate)
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
                # Each output webhook of a prediction repeats its stored `started`: a line per
                # new fact at info, the repeats (counted as `duplicate`) only at debug.
                log.log(
                    logging.DEBUG if duplicate else logging.INFO, "webhook stored", extra=fields
                )
            return Response(status_code=200)
        case Parked(reason=reason, detail=detail, prediction_id=prediction_id, duplicate=dup):
            observer.parked()
            # A warning, and the `parked` count, are what tell an operator to look at the
            # parked stream: a prediction in our account that is none of the system's jobs.
            log.warning(
                "webhook parked",
                extra={
                    **context,
                    "reason": reason,
                    "detail": detail,
                    "prediction_id": prediction_id[:_LOGGED_ID_CHARS],
                    "duplicate": dup,
                },
            )
            return Response(status_code=200)
        case Rejected(reason=reason, detail=detail):
            return _refused(
                _problem(_kind(reason, _REJECTED_TITLES[reason], 400), detail),
                reason,
                context,
                observer,
            )
        case NotStored(reason=reason, detail=detail):
            observer.not_stored(reason)
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
