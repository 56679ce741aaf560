"""The public endpoint Replicate calls, `POST /api/webhooks/replicate?job=<jobId>`.

Checks run in the contract's order (size `413`, signature headers, timestamp and signature
`401`, body and job id `400`), each refusal an RFC 9457 problem and one log line; `200` only
once JetStream has stored the event, `503` with `Retry-After` when it cannot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs_runtime.web import (
    INTERNAL,
    PAYLOAD_TOO_LARGE,
    UNAVAILABLE,
    ProblemKind,
    kind_for_status,
    problem,
    problem_response,
    read_limited,
)
from webhook_ingest.handlers import Outcome, Rejected, Stored, Unavailable, ingest_webhook
from webhook_ingest.ports import EventStore, ProgressSink
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

WEBHOOKS = Counter(
    "webhook_ingest_webhooks", "Webhooks received, by the answer they got", ["outcome"]
)


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
    max_bytes: int,
    clock: Clock = system_clock,
) -> Starlette:
    """The Starlette app of the webhook endpoint over the given ports."""

    async def replicate_webhook(request: Request) -> Response:
        context = {"webhook_id": request.headers.get(ID_HEADER, "")[:_LOGGED_ID_CHARS]}

        body = await read_limited(request, max_bytes)
        if body is None:
            return _refused(
                _problem(PAYLOAD_TOO_LARGE, f"the body is over the limit of {max_bytes} bytes"),
                "payload_too_large",
                context,
            )

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
            now=clock(),
        )
        return _answer(outcome, context)

    return Starlette(
        routes=[Route(PATH, replicate_webhook, methods=["POST"])],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )


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
                # Needs a change (large results stored aside), not a retry: an operator must see it.
                log.error("webhook result too large for the bus", extra=extra)
            else:
                log.warning("webhook not stored, bus unavailable", extra=extra)
            public_detail = (
                "the result is too large to be stored yet"
                if reason == "too_large_for_bus"
                else "the event could not be stored now; retry later"
            )
            return _problem(
                _kind(reason, UNAVAILABLE.title, 503),
                public_detail,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
