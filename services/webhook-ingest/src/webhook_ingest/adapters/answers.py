"""The endpoint's answers: each refusal and outcome as its status and RFC 9457 problem, with
its log line and what the observer is told.

A refusal's problem type names its reason (`bad_signature` is `...:bad-signature`); `503`s carry
`Retry-After`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from jobs_proto.problems import INTERNAL, UNAVAILABLE, ProblemKind, kind_for_status, problem
from jobs_runtime.buckets import retry_after_s
from jobs_runtime.web import problem_response
from webhook_ingest.handlers import NotStored, Outcome, Parked, Rejected, Stored
from webhook_ingest.ports import WebhookObserver
from webhook_ingest.verify import VerificationError

# The endpoint's request lines keep the logger name they had when this was part of `http.py`.
log = logging.getLogger("webhook_ingest.adapters.http")

RETRY_AFTER_S: Final = 5
# A sender-chosen string goes into the logs only this long.
LOGGED_ID_CHARS: Final = 128
# On an answer given before the body was read: the rest of it is not worth receiving.
CLOSE: Final = {"Connection": "close"}

_REJECTED_TITLES: Final = {
    "not_a_prediction": "Not a prediction",
    "bad_job_id": "Invalid job id",
    "job_mismatch": "Job does not match the signed webhook",
}

RATE_LIMITED: Final = ProblemKind("rate-limited", "Too many requests", 429)
TOO_MANY_LARGE_BODIES: Final = ProblemKind("too-many-large-bodies", UNAVAILABLE.title, 503)
READ_TIMEOUT: Final = ProblemKind("read-timeout", "Request body too slow", 408)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused before its webhook reached the handler, and why (the metric label)."""

    response: Response
    reason: str


def kind(reason: str, title: str, status: int) -> ProblemKind:
    # This endpoint's own kinds name the reason: `bad_signature` is `...:bad-signature`.
    return ProblemKind(reason.replace("_", "-"), title, status)


def problem_answer(
    kind: ProblemKind, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    return problem_response(problem(kind, detail), headers)


def rate_limited(wait_s: float) -> Refusal:
    response = problem_answer(
        RATE_LIMITED,
        "too many requests from this address; retry later",
        headers={"Retry-After": str(retry_after_s(wait_s))},
    )
    return Refusal(response, "rate_limited")


def unauthenticated(exc: VerificationError, headers: Mapping[str, str] | None = None) -> Refusal:
    refusal_kind = kind(exc.failure, "Webhook not authenticated", 401)
    return Refusal(problem_answer(refusal_kind, exc.detail, headers), exc.failure)


def gone() -> Refusal:
    # Nobody reads this answer; it is counted and logged like any refusal.
    refusal_kind = kind("client_disconnected", "Request incomplete", 400)
    return Refusal(problem_answer(refusal_kind, "the client went away"), "client_disconnected")


def refused(refusal: Refusal, context: dict[str, str], observer: WebhookObserver) -> Response:
    observer.refused(refusal.reason)
    log.warning(
        "webhook refused",
        extra={**context, "status": refusal.response.status_code, "reason": refusal.reason},
    )
    return refusal.response


async def http_error(_: Request, exc: Exception) -> Response:
    # Starlette's own refusals (unknown path, wrong method) as problem bodies too.
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    return problem_answer(kind_for_status(exc.status_code), str(exc.detail), exc.headers)


async def internal_error(_: Request, exc: Exception) -> Response:
    # Starlette logs the exception itself; the sender gets no internals, and retries.
    return problem_answer(INTERNAL, "the webhook could not be handled")


def answer(outcome: Outcome, context: dict[str, str], observer: WebhookObserver) -> Response:
    match outcome:
        case Stored(
            event=event,
            duplicate=duplicate,
            progress_sent=progress_sent,
            output_offered=output_offered,
        ):
            observer.stored(duplicate)
            fields = {
                **context,
                "kind": event.kind,
                "job_id": str(event.job_id),
                "prediction_id": event.prediction_id,
                "duplicate": duplicate,
            }
            if output_offered is False:
                observer.output_not_offered()
                log.warning("webhook stored, its output not offered to the log", extra=fields)
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
                    "prediction_id": prediction_id[:LOGGED_ID_CHARS],
                    "duplicate": dup,
                },
            )
            return Response(status_code=200)
        case Rejected(reason=reason, detail=detail):
            rejected = kind(reason, _REJECTED_TITLES[reason], 400)
            return refused(Refusal(problem_answer(rejected, detail), reason), context, observer)
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
            return problem_answer(
                kind(reason, UNAVAILABLE.title, 503),
                public_detail,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
