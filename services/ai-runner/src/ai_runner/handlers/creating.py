"""Creating a job's prediction once this runner holds the create, and what a failed create
leaves in the claim: a retry later, a wait Replicate named, or the job failed for good."""

from __future__ import annotations

import logging
import math
import uuid
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import quote, unquote_plus

import msgspec

from ai_runner.handlers.binding import record
from ai_runner.handlers.runner import (
    WAIT_DELIVERIES,
    Runner,
    change_claim,
    fail_for_good,
)
from ai_runner.ports import (
    Claim,
    PermanentRejection,
    ReplicateUnavailable,
    StoredClaim,
)
from jobs_proto.events import (
    JobError,
    JobRequested,
)
from jobs_proto.job_types import JobType
from jobs_proto.replicate import WEBHOOK_JOB_PARAMETER, WEBHOOK_TRACE_PARAMETER
from jobs_proto.status import PREDICTION_REJECTED
from jobs_runtime import tracing
from jobs_runtime.errors import Unavailable
from jobs_runtime.retry import RetryLater

# One logger for every handler module: operators and tests select the handlers' lines by it.
log = logging.getLogger(__package__)

ATTEMPTS_EXHAUSTED: Final = "attempts_exhausted"

# Tries to record a created prediction: soon after the first failure, then at most this often.
_RECORD_RETRY_FIRST_S: Final = 0.5
_RECORD_RETRY_CAP_S: Final = 4.0


# webhook-ingest reads the job back from the URL Replicate echoes in each signed webhook body.
JOB_PARAMETER: Final = WEBHOOK_JOB_PARAMETER


def webhook_url(base: str, job_id: str, traceparent: str | None = None) -> str:
    """`base` with `job=<job_id>` added to its query, so webhook-ingest (from the signed body's
    `webhook` field, see `jobs_proto.replicate.webhook_job_id`) and the simulator's audit can
    tell the job from the URL alone; with `traceparent` (tracing on), `traceparent=<it>` after
    it, so the webhook's span joins the job's trace (`webhook_traceparent`).

    Everything else is kept byte for byte: other query parameters in their order and encoding,
    path, fragment. A `job` or `traceparent` parameter already there is replaced, since a
    reader takes the first.
    """
    # Plain string surgery rather than urlsplit/urlunsplit, which would normalise the rest.
    head, hash_sign, fragment = base.partition("#")
    address, _, query = head.partition("?")
    ours = (JOB_PARAMETER, WEBHOOK_TRACE_PARAMETER)
    kept = [
        pair
        for pair in query.split("&")
        if pair and unquote_plus(pair.partition("=")[0]) not in ours
    ]
    added = [f"{JOB_PARAMETER}={quote(job_id, safe='')}"]
    if traceparent:
        added.append(f"{WEBHOOK_TRACE_PARAMETER}={quote(traceparent, safe='')}")
    query = "&".join([*kept, *added])
    return f"{address}?{query}{hash_sign}{fragment}"


async def create(
    runner: Runner,
    event: JobRequested,
    job_type: JobType,
    model_input: dict[str, Any],
    context: dict[str, str],
    remaining_s: float,
    mine: StoredClaim,
) -> None:
    """Create the prediction of a job whose claim (`mine`, as this delivery stored it) says
    this runner is creating it."""
    job_id = event.job_id
    # Polling mode (no webhook base): the runner's poller learns the outcome instead.
    webhook = (
        webhook_url(runner.webhook_base, str(job_id), tracing.traceparent())
        if runner.webhook_base
        else None
    )
    try:
        # `Cancel-After` is what is left of the job's deadline, so Replicate itself stops the
        # prediction when the job's time is up (the adapter raises it to Replicate's minimum).
        created = await runner.predictions.create(
            job_type.model,
            dict(model_input),
            webhook,
            list(job_type.webhook_events),
            max(1, math.ceil(remaining_s)),
        )
    except PermanentRejection as exc:
        await fail_for_good(
            runner, job_id, JobError(code=PREDICTION_REJECTED, message=str(exc)), mine
        )
        return
    except ReplicateUnavailable as exc:
        if not exc.ambiguous:
            # Nothing was created, so nothing is in flight; an ambiguous failure keeps its
            # slot until the prediction it may have made is found or the slot expires.
            await runner.limits.release(job_id)
        if await _after_transient(runner, job_id, job_type.name, exc, context, mine):
            return
        raise
    log.info("prediction created", extra={**context, "prediction_id": created.id})
    runner.observer.created(job_type.name)
    await _record_in_hand(
        runner,
        job_id,
        created.id,
        context,
        until=runner.now() + timedelta(seconds=remaining_s),
        known=mine,
        stream_url=created.stream_url if job_type.streams else None,
    )


async def _record_in_hand(
    runner: Runner,
    job_id: uuid.UUID,
    prediction_id: str,
    context: dict[str, str],
    *,
    until: datetime,
    known: StoredClaim,
    stream_url: str | None,
) -> None:
    """Record a prediction this runner just created, trying again while NATS does not answer.

    Only this process knows the id until it is recorded (a `start` webhook may be lost too):
    handed back to the consumer, it would be forgotten, and once the binding window passed
    another runner would create a second prediction. So the id stays in hand, through a NATS
    node cut off from its cluster (the connection moves to another node meanwhile), until the
    job's deadline; past it, the prediction ends by its own `Cancel-After`.
    """
    delay_s = _RECORD_RETRY_FIRST_S
    while True:
        try:
            await record(runner, job_id, prediction_id, context, known=known, stream_url=stream_url)
            return
        except Unavailable as exc:
            if runner.now() + timedelta(seconds=delay_s) >= until:
                raise
            log.warning(
                "prediction created but not yet recorded; trying again in %.1fs: %s",
                delay_s,
                exc,
                extra={**context, "prediction_id": prediction_id},
            )
            await runner.pause(delay_s)
            delay_s = min(delay_s * 2, _RECORD_RETRY_CAP_S)


async def _after_transient(
    runner: Runner,
    job_id: uuid.UUID,
    job_type: str,
    exc: ReplicateUnavailable,
    context: dict[str, str],
    mine: StoredClaim,
) -> bool:
    """Note a failed create in the claim; fail the job once its attempts are used up (True:
    the message is settled); turn a throttle into a wait of the length Replicate named; else
    False, for the caller to re-raise `exc` into the consumer's backoff."""
    counted = not exc.throttled and not exc.needs_operator

    def note(claim: Claim) -> Claim:
        return msgspec.structs.replace(
            claim,
            attempts=claim.attempts + (1 if counted else 0),
            last_error=str(exc),
            # Kept when the prediction may exist, so the next delivery looks for it first.
            creating_since=claim.creating_since if exc.ambiguous else None,
        )

    stored = await change_claim(runner, job_id, note, known=mine)
    attempts = stored.claim.attempts
    if counted and attempts >= runner.max_attempts:
        runner.observer.attempts_exhausted(job_type)
        await fail_for_good(
            runner,
            job_id,
            JobError(
                code=ATTEMPTS_EXHAUSTED,
                message=f"{attempts} attempts to create the prediction failed; last: {exc}",
            ),
            stored,
        )
        return True
    runner.observer.retried(job_type, _retry_reason(exc))
    if exc.retry_after_s is not None:
        log.warning(
            "Replicate throttled the create, waiting %.0fs: %s",
            exc.retry_after_s,
            str(exc),
            extra=context,
        )
        raise RetryLater(
            f"throttled by Replicate: {exc}",
            delay_s=exc.retry_after_s,
            quick_attempts=WAIT_DELIVERIES,
        ) from exc
    # Retried by the consumer loop; a refused token will not fix itself, so it is an error an
    # operator must see rather than a passing warning.
    level = logging.ERROR if exc.needs_operator else logging.WARNING
    log.log(
        level,
        "could not create the prediction, will retry: %s",
        str(exc),
        extra={**context, "attempts": attempts, "ambiguous": exc.ambiguous},
    )
    return False


def _retry_reason(exc: ReplicateUnavailable) -> str:
    if exc.throttled:
        return "throttled"
    if exc.needs_operator:
        return "needs_operator"
    return "ambiguous" if exc.ambiguous else "transient"
