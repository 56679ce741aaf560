"""What each refusal is as an HTTP problem: the handlers' refusals (`handlers.Refused`), the
limits' and the stream caps', each with its status, `Retry-After` where a retry helps, and a
count for the gateway's metrics; and the wrapper giving every request one answer and one log
line (never its token)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway import handlers
from gateway.limits import LimitExceeded
from gateway.ports import BadCursor, GatewayObserver, NoObserver
from gateway.streams import StreamsFull
from jobs_proto.problems import (
    INTERNAL,
    NOT_FOUND,
    UNAVAILABLE,
    VALIDATION,
    ProblemKind,
    kind_for_status,
    problem,
)
from jobs_proto.spend import micros_to_usd
from jobs_runtime.errors import Unavailable
from jobs_runtime.web import problem_response

from .checks import Refusal

# The gateway's own kinds of problem, beside the shared ones of `jobs_runtime.web`.
INVALID_CURSOR: Final = ProblemKind("invalid-cursor", "Invalid cursor", 400)
JOB_FINISHED: Final = ProblemKind("job-finished", "Job already finished", 409)
IDEMPOTENCY_CONFLICT: Final = ProblemKind(
    "idempotency-key-reused", "Idempotency-Key used with another request", 409
)
IDEMPOTENCY_IN_PROGRESS: Final = ProblemKind(
    "idempotency-key-in-progress", "Request with this Idempotency-Key in progress", 409
)
# Admitting the job would pass the user's or the day's budget; `limitUsd` and `remainingUsd`
# say which numbers (RFC 9110's 402, which the contract gives budgets).
BUDGET_EXCEEDED: Final = ProblemKind("budget-exceeded", "Budget exceeded", 402)
# The job's output is more than one job-store reply can carry (the request was fine).
OUTPUT_TOO_LARGE: Final = ProblemKind("output-too-large", "Job output too large to answer", 413)
TOO_MANY_REQUESTS: Final = ProblemKind("too-many-requests", "Too many requests", 429)
# The process holds `MAX_STREAMS` streams; another replica may have room.
STREAMS_FULL: Final = ProblemKind("streams-full", "Too many open streams", 503)

NO_OBSERVER: Final = NoObserver()

log = logging.getLogger("gateway.http")

# How long a client should wait before retrying after a `503`: NATS reconnects within about
# a second, a restarted job-store within a few.
RETRY_AFTER_S: Final = 2


def not_found() -> Refusal:
    # One answer for an unknown job and another user's: nobody learns of others' jobs.
    return Refusal(NOT_FOUND, "no such job")


def refusal_of(exc: Exception) -> Refusal | None:
    """The problem `exc` answers, or `None` for an exception that is a bug (a `500`)."""
    match exc:
        case Refusal():
            return exc
        case handlers.InvalidRequest():
            return Refusal(VALIDATION, exc.detail, errors=exc.errors)
        case handlers.OutputTooLarge():
            return Refusal(OUTPUT_TOO_LARGE, str(exc))
        case handlers.JobFinished():
            return Refusal(JOB_FINISHED, str(exc))
        case handlers.KeyReused():
            return Refusal(IDEMPOTENCY_CONFLICT, str(exc))
        case handlers.KeyInProgress():
            return Refusal(
                IDEMPOTENCY_IN_PROGRESS, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        case LimitExceeded():
            return Refusal(
                TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": str(exc.retry_after_s)}
            )
        case StreamsFull():
            return Refusal(STREAMS_FULL, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
        case handlers.BudgetExceeded():
            return budget_refusal(exc)
        case BadCursor():
            return Refusal(
                INVALID_CURSOR,
                # The job-store's reason says which way (malformed, other filters, ...).
                f"the cursor is not valid: {exc}; start again without it",
            )
        case Unavailable():
            return Refusal(
                UNAVAILABLE,
                "the job system is unavailable; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
    return None


def budget_refusal(exc: handlers.BudgetExceeded) -> Refusal:
    """`402`, with the budget the job would pass and what is left of it, in dollars."""
    refusal = Refusal(BUDGET_EXCEEDED, str(exc))
    refusal.problem = msgspec.structs.replace(
        refusal.problem,
        limit_usd=micros_to_usd(exc.limit_micros),
        remaining_usd=micros_to_usd(exc.remaining_micros),
    )
    return refusal


def observe_refusal(observer: GatewayObserver, reason: BaseException | None) -> None:
    """Count a refusal the metrics follow, by the reason behind its problem."""
    match reason:
        case handlers.KeyReused():
            observer.idempotency_conflict("reused")
        case handlers.KeyInProgress():
            observer.idempotency_conflict("in_progress")
        case LimitExceeded():
            observer.limited(reason.limit)
        case StreamsFull():
            observer.streams_full()
        case handlers.BudgetExceeded():
            observer.budget_exceeded(reason.scope)


def refuse(outcome: handlers.Refused) -> Refusal:
    """Raise-ready: a handler's refusal as its problem (the reason is one of `REFUSALS`)."""
    refusal = refusal_of(outcome.reason)
    if refusal is None:
        raise outcome.reason
    # The reason stays attached: the request's log line names it (`Unavailable`'s cause).
    refusal.__cause__ = outcome.reason
    return refusal


# --- one answer and one log line per request ------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


def request_log_level(status: int) -> int:
    """A request line's level: a 503 is the bus being away (expected during restarts), other
    5xx are bugs."""
    if status == 503:
        return logging.WARNING
    return logging.ERROR if status >= 500 else logging.INFO


def log_request(request: Request, status: int, started: float, **fields: Any) -> None:
    level = request_log_level(status)
    # Nothing is built for a line that is not written: this runs on every request.
    if not log.isEnabledFor(level):
        return
    extra = {
        "method": request.method,
        # The path only: a query string may carry an `access_token`.
        "path": request.scope["path"],
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "user_id": getattr(request.state, "user_id", None),
        **fields,
    }
    log.log(level, "request", extra=extra)


def answered(endpoint: Endpoint, observer: GatewayObserver = NO_OBSERVER) -> Endpoint:
    """`endpoint` answering every refusal as its problem (counted by `observer`), and logging
    one line per request."""

    async def answer(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await endpoint(request)
        except ClientDisconnect:
            # Gone while sending its body: nothing was admitted and nobody reads an answer.
            log_request(request, 499, started, detail="client disconnected")
            return Response(status_code=400)
        except Exception as exc:
            refusal = refusal_of(exc)
            if refusal is None:
                log.exception("unexpected error", extra={"path": request.scope["path"]})
                refusal = Refusal(INTERNAL, "unexpected error")
            fields: dict[str, Any] = {
                "problem": refusal.problem.type,
                "detail": refusal.problem.detail,
            }
            if refusal.problem.errors:
                fields["errors"] = [
                    f"{handlers.where(e)}: {e.detail}" for e in refusal.problem.errors
                ]
            cause = refusal.__cause__ if isinstance(exc, Refusal) else exc
            observe_refusal(observer, cause)
            if isinstance(cause, Unavailable):
                fields["reason"] = str(cause)
            log_request(request, refusal.problem.status, started, **fields)
            return problem_response(refusal.problem, refusal.headers)
        log_request(request, response.status_code, started)
        return response

    return answer


async def framework_refusal(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods, answered as problems like everything else."""
    assert isinstance(exc, HTTPException)
    kind = kind_for_status(exc.status_code)
    body = problem(kind, exc.detail or kind.title)
    log_request(request, exc.status_code, time.perf_counter(), problem=kind.type)
    return problem_response(body, exc.headers)
