"""What the ai-runner does with each event it consumes: a requested job becomes a Replicate
prediction (`JobSubmitted`) or a failed job (`JobFailed`); ports come in as arguments."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, unquote_plus

import msgspec

from ai_runner.ports import EventSink, PermanentRejection, Predictions, TransientFailure
from jobs_proto.events import JobCancelRequested, JobError, JobFailed, JobRequested, JobSubmitted
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.status import PREDICTION_REJECTED

log = logging.getLogger(__name__)

# Error codes of jobs that fail before any prediction exists. The gateway validates both before
# admitting a job, so reaching here means a gateway of another release, or a hand-made event.
UNKNOWN_JOB_TYPE: Final = "unknown_job_type"
INVALID_INPUT: Final = "invalid_input"

JOB_PARAMETER: Final = "job"


def utc_now() -> datetime:
    return datetime.now(UTC)


def webhook_url(base: str, job_id: str) -> str:
    """`base` with `job=<job_id>` added to its query, so webhook-ingest (and the simulator's
    audit) can tell the job from the URL alone.

    Everything else is kept byte for byte: other query parameters in their order and encoding,
    path, fragment. A `job` parameter already there is replaced, since a reader takes the first.
    """
    # Plain string surgery rather than urlsplit/urlunsplit, which would normalise the rest.
    head, hash_sign, fragment = base.partition("#")
    address, _, query = head.partition("?")
    kept = [
        pair
        for pair in query.split("&")
        if pair and unquote_plus(pair.partition("=")[0]) != JOB_PARAMETER
    ]
    query = "&".join([*kept, f"{JOB_PARAMETER}={quote(job_id, safe='')}"])
    return f"{address}?{query}{hash_sign}{fragment}"


@dataclass(frozen=True, slots=True)
class Runner:
    """The ports and settings the handlers work with.

    `webhook_base` empty is the contract's polling mode: predictions are created without a
    webhook and only polling can learn their outcome.
    """

    predictions: Predictions
    events: EventSink
    webhook_base: str
    now: Callable[[], datetime] = field(default=utc_now)


async def _fail(runner: Runner, event: JobRequested, code: str, message: str) -> None:
    log.warning(
        "job failed before a prediction existed",
        extra={"job_id": str(event.job_id), "code": code, "reason": message},
    )
    await runner.events.publish(
        JobFailed(
            job_id=event.job_id,
            occurred_at=runner.now(),
            error=JobError(code=code, message=message),
        )
    )


async def handle_requested(event: JobRequested, runner: Runner) -> None:
    """Create the job's prediction and announce it, or fail the job if it can never run.

    Raises `TransientFailure` (and lets any unexpected error through) so the consumer loop
    hands the message back with backoff. Not yet handled here, for later issues:
    - a timeout or 5xx after the request reached Replicate is ambiguous (the prediction may
      exist): the retry creates another one; recovery must look for it before re-creating;
    - attempts are not counted, so a job whose creation keeps failing is retried forever
      (capped backoff) instead of failing with `attempts_exhausted`.
    """
    context = {"job_id": str(event.job_id), "job_type": event.job_type}
    job_type = JOB_TYPES.get(event.job_type)
    if job_type is None:
        known = ", ".join(sorted(JOB_TYPES))
        await _fail(
            runner,
            event,
            UNKNOWN_JOB_TYPE,
            f"unknown job type {event.job_type!r}; known: {known}",
        )
        return
    try:
        job_input = job_type.parse_input(event.input)
    except msgspec.ValidationError as exc:
        await _fail(runner, event, INVALID_INPUT, f"invalid input: {exc}")
        return

    if runner.webhook_base:
        webhook: str | None = webhook_url(runner.webhook_base, str(event.job_id))
    else:
        webhook = None
        log.warning(
            "prediction created without a webhook (polling mode), but polling is not "
            "implemented yet: this job will not learn its outcome",
            extra=context,
        )
    try:
        prediction_id = await runner.predictions.create(
            job_type.model,
            job_type.model_input(job_input),
            webhook,
            list(job_type.webhook_events),
        )
    except PermanentRejection as exc:
        await _fail(runner, event, PREDICTION_REJECTED, exc.message)
        return
    except TransientFailure as exc:
        # Retried by the consumer loop; a refused token will not fix itself, so it is an error
        # an operator must see rather than a passing warning.
        level = logging.ERROR if exc.needs_operator else logging.WARNING
        log.log(
            level, "could not create the prediction, will retry: %s", exc.message, extra=context
        )
        raise

    log.info("prediction created", extra={**context, "prediction_id": prediction_id})
    await runner.events.publish(
        JobSubmitted(
            job_id=event.job_id,
            occurred_at=runner.now(),
            prediction_id=prediction_id,
            attempt=1,
        )
    )


async def handle_cancel_requested(event: JobCancelRequested, runner: Runner) -> None:
    """Logged and acknowledged, nothing more: canceling is a later issue."""
    # Returning normally acks the message: left unacknowledged it would come back every
    # ack_wait forever. So a cancel asked for while this release runs is not acted upon; the
    # prediction runs to its end.
    log.info(
        "cancel requested; canceling is not implemented yet", extra={"job_id": str(event.job_id)}
    )
