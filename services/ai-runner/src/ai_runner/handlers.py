"""What the ai-runner does with each event it consumes: a requested job becomes at most one
Replicate prediction (`JobSubmitted`) or a failed job (`JobFailed`), a cancel request cancels
it, a started prediction that is not the job's is canceled as an orphan; a per-job claim keeps
runners from doing any of it twice. Ports come in as arguments."""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote, unquote_plus

import msgspec

from ai_runner.decide import (
    Adopt,
    Announce,
    Create,
    DeadlinePassed,
    LookForPrediction,
    NothingToDo,
    RepeatFailure,
    Wait,
    creating,
    decide,
)
from ai_runner.ports import (
    Claim,
    Claims,
    CreateUnavailable,
    EventSink,
    JobHistory,
    Limits,
    NoLimits,
    NoObserver,
    PermanentRejection,
    Predictions,
    RunnerObserver,
    StoredClaim,
)
from jobs_proto.events import (
    JobCancelRequested,
    JobError,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSubmitted,
)
from jobs_proto.job_types import JOB_TYPES, JobType
from jobs_proto.replicate import WEBHOOK_JOB_PARAMETER
from jobs_proto.status import DEADLINE_EXCEEDED, PREDICTION_REJECTED
from jobs_runtime.retry import RetryLater

log = logging.getLogger(__name__)

# Error codes of jobs that fail before any prediction exists. The gateway validates both before
# admitting a job, so reaching here means a gateway of another release, or a hand-made event.
UNKNOWN_JOB_TYPE: Final = "unknown_job_type"
INVALID_INPUT: Final = "invalid_input"
ATTEMPTS_EXHAUSTED: Final = "attempts_exhausted"

# A binding wait is bounded by `binding_wait_s` itself, so the runtime's "a long wait is a
# failure in disguise" fallback to backoff must not cut in first.
_WAIT_DELIVERIES: Final = 10_000
# How often a job waiting for its binding looks again, at most.
_BINDING_POLL_S: Final = 2.0
# A prediction ends by its `Cancel-After`; its in-flight slot is kept this much longer in case
# the news of its end is late, and is freed then even if it never comes.
_IN_FLIGHT_GRACE_S: Final = 120.0
# Metrics label of a job whose type is not known where it is counted (a cancel of a job no
# runner has seen).
UNKNOWN_TYPE: Final = "unknown"

# webhook-ingest reads the job back from the URL Replicate echoes in each signed webhook body.
JOB_PARAMETER: Final = WEBHOOK_JOB_PARAMETER


def utc_now() -> datetime:
    return datetime.now(UTC)


def webhook_url(base: str, job_id: str) -> str:
    """`base` with `job=<job_id>` added to its query, so webhook-ingest (from the signed body's
    `webhook` field, see `jobs_proto.replicate.webhook_job_id`) and the simulator's audit can
    tell the job from the URL alone.

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
    claims: Claims
    history: JobHistory
    webhook_base: str
    binding_wait_s: float = 30.0
    max_attempts: int = 5
    now: Callable[[], datetime] = field(default=utc_now)
    observer: RunnerObserver = field(default_factory=NoObserver)
    limits: Limits = field(default_factory=NoLimits)


async def _fail(runner: Runner, job_id: uuid.UUID, code: str, message: str) -> None:
    log.warning(
        "job failed before a prediction existed",
        extra={"job_id": str(job_id), "code": code, "reason": message},
    )
    await runner.events.publish(
        JobFailed(
            job_id=job_id,
            occurred_at=runner.now(),
            error=JobError(code=code, message=message),
        )
    )


async def _submitted(
    runner: Runner, job_id: uuid.UUID, prediction_id: str, claim: Claim, *, adopted: bool = False
) -> None:
    # The same fact on every call, so its Nats-Msg-Id (`submitted:<job>:<prediction>`) makes
    # JetStream drop a repeat within the duplicate window, and the job-store ignores it after.
    # The attempt that made it: every counted failure before it, plus itself; an adopted one
    # came from the last create, which was counted as failed when its answer was lost.
    attempt = max(1, claim.attempts) if adopted else claim.attempts + 1
    await runner.events.publish(
        JobSubmitted(
            job_id=job_id,
            occurred_at=runner.now(),
            prediction_id=prediction_id,
            attempt=attempt,
        )
    )


def deadline_at(event: JobRequested, job_type: JobType) -> datetime:
    """The job's own deadline: from its submission (the gateway's time), queue time included."""
    return event.occurred_at + timedelta(seconds=job_type.deadline_s)


async def _admit(runner: Runner, job_id: uuid.UUID, job_type: JobType, remaining_s: float) -> None:
    """Take the shared limits' slots for one create, or raise `RetryLater` until they free."""
    wait = await runner.limits.admit(job_id, remaining_s + _IN_FLIGHT_GRACE_S, job_type.name)
    if wait is None:
        return
    runner.observer.limit_waited(job_type.name, wait.limit)
    raise RetryLater(
        f"the shared {wait.limit} limit is reached; waiting {wait.wait_s:.1f}s",
        delay_s=wait.wait_s,
        quick_attempts=_WAIT_DELIVERIES,
    )


async def _change(
    runner: Runner,
    job_id: uuid.UUID,
    change: Callable[[Claim], Claim],
    known: StoredClaim | None = None,
) -> StoredClaim:
    """Apply `change` to the job's claim (an empty one if none exists) by compare-and-set,
    reading again after every conflict; returns what was stored. `known`: the claim as this
    delivery last wrote it, tried first without a read (a conflict reads)."""
    stored = known
    while True:
        if stored is None:
            stored = await runner.claims.read(job_id)
        if stored is None:
            claim = change(Claim())
            revision = await runner.claims.create(job_id, claim)
        else:
            claim = change(stored.claim)
            if claim == stored.claim and stored is not known:
                return stored
            revision = await runner.claims.update(job_id, claim, stored.revision)
        if revision is not None:
            return StoredClaim(claim, revision)
        stored = None


async def _fail_for_good(
    runner: Runner, job_id: uuid.UUID, error: JobError, known: StoredClaim | None = None
) -> None:
    """Record the failure in the claim first, so a redelivered `requested` repeats it instead
    of creating; then announce it."""
    stored = await _change(
        runner, job_id, lambda c: msgspec.structs.replace(c, failed=error), known=known
    )
    if stored.claim.prediction_id is None:
        # No prediction will run for it (one an ambiguous create made is canceled when it
        # starts): its in-flight slot is free.
        await runner.limits.release(job_id)
    if stored.claim.prediction_id is not None or stored.claim.canceled:
        # Overtaken meanwhile (another runner's prediction, or a cancel): nothing to fail.
        return
    await _fail(runner, job_id, error.code, error.message)


async def handle_requested(event: JobRequested, runner: Runner) -> None:
    """Create the job's one prediction and announce it, or fail the job if it can never run.

    The job's claim decides what this delivery does: nothing (canceled), repeat what is known
    (prediction recorded, job failed), adopt the prediction the job's events name (a create
    whose answer was lost), wait (a create may be in flight, within `binding_wait_s`), or
    create. Raises `RetryLater` for those waits and throttling, `Unavailable` for other
    passing failures (and lets any unexpected error through), so the consumer loop hands the
    message back.
    """
    job_id = event.job_id
    context = {"job_id": str(job_id), "job_type": event.job_type}
    job_type = JOB_TYPES.get(event.job_type)
    if job_type is None:
        known = ", ".join(sorted(JOB_TYPES))
        await _fail(
            runner, job_id, UNKNOWN_JOB_TYPE, f"unknown job type {event.job_type!r}; known: {known}"
        )
        return
    try:
        job_input = job_type.parse_input(event.input)
    except msgspec.ValidationError as exc:
        await _fail(runner, job_id, INVALID_INPUT, f"invalid input: {exc}")
        return

    mine = await _claim_first(runner, event, job_type)
    deadline = deadline_at(event, job_type)
    remaining_s = (deadline - runner.now()).total_seconds()
    while mine is None:
        stored = await runner.claims.read(job_id)
        claim = None if stored is None else stored.claim
        now = runner.now()
        remaining_s = (deadline - now).total_seconds()
        decision = decide(
            claim,
            now,
            deadline_at=deadline,
            binding_wait_s=runner.binding_wait_s,
        )
        if isinstance(decision, LookForPrediction):
            found = await runner.history.prediction_of(job_id)
            decision = decide(
                claim,
                now,
                deadline_at=deadline,
                binding_wait_s=runner.binding_wait_s,
                found=found,
            )
        match decision:
            case NothingToDo():
                log.info(
                    "job canceled before its prediction was created; nothing to do", extra=context
                )
                return
            case RepeatFailure(error):
                await _fail(runner, job_id, error.code, error.message)
                return
            case Announce(prediction_id):
                log.info(
                    "prediction already created; announcing it again",
                    extra={**context, "prediction_id": prediction_id},
                )
                await _submitted(runner, job_id, prediction_id, claim or Claim())
                return
            case Adopt(prediction_id):
                log.info(
                    "found the prediction of an earlier create in the job's events; keeping it",
                    extra={**context, "prediction_id": prediction_id},
                )
                runner.observer.adopted(job_type.name)
                await _record(runner, job_id, prediction_id, context, adopted=True)
                return
            case Wait(remaining):
                runner.observer.retried(job_type.name, "binding_wait")
                raise RetryLater(
                    f"a create may be in flight or may have made a prediction; waiting "
                    f"{remaining:.1f}s more for it to show",
                    delay_s=min(remaining, _BINDING_POLL_S),
                    quick_attempts=_WAIT_DELIVERIES,
                )
            case DeadlinePassed():
                await _deadline_passed(runner, event, job_type)
                return
            case Create(waited_s):
                if waited_s is not None:
                    log.warning(
                        "no prediction showed for an earlier create within the binding window; "
                        "creating again",
                        extra={**context, "waited_s": round(waited_s, 1)},
                    )
                await _admit(runner, job_id, job_type, remaining_s)
                # The first to claim the job takes its create; a runner that loses this race
                # (or whose claim changed meanwhile) reads again and decides on what it finds.
                taken = creating(claim, runner.now(), job_type.name)
                if stored is None:
                    revision = await runner.claims.create(job_id, taken)
                else:
                    revision = await runner.claims.update(job_id, taken, stored.revision)
                if revision is not None:
                    mine = StoredClaim(taken, revision)
            case LookForPrediction():
                raise AssertionError("decide looks for the prediction once, then decides")

    await _create(
        runner, event, job_type, job_type.model_input(job_input), context, remaining_s, mine
    )


async def _claim_first(
    runner: Runner, event: JobRequested, job_type: JobType
) -> StoredClaim | None:
    """Most deliveries are a job's first: claim it without reading, then take the limits' slots.
    None when a claim exists already (the caller reads it and decides) or the deadline passed.

    A limit that makes the create wait takes the claim's `creating_since` back, so the next
    delivery creates at once instead of waiting out the binding window for a create that was
    never sent.
    """
    remaining_s = (deadline_at(event, job_type) - runner.now()).total_seconds()
    if remaining_s <= 0:
        return None
    first = Claim(creating_since=runner.now(), job_type=job_type.name)
    revision = await runner.claims.create(event.job_id, first)
    if revision is None:
        return None
    mine = StoredClaim(first, revision)
    try:
        await _admit(runner, event.job_id, job_type, remaining_s)
    except Exception:

        def not_creating(claim: Claim) -> Claim:
            if claim.creating_since != first.creating_since:
                return claim
            return msgspec.structs.replace(claim, creating_since=None)

        # Best effort: if this fails too, the claim waits out the binding window instead.
        with contextlib.suppress(Exception):
            await _change(runner, event.job_id, not_creating, known=mine)
        raise
    return mine


async def _deadline_passed(runner: Runner, event: JobRequested, job_type: JobType) -> None:
    """The job waited in the queue past its deadline: it fails without a prediction."""
    runner.observer.deadline_exceeded(job_type.name, "before_creation")
    await _fail_for_good(
        runner,
        event.job_id,
        JobError(
            code=DEADLINE_EXCEEDED,
            message=(
                f"the job's deadline of {job_type.deadline_s}s from its submission passed "
                "before its prediction could be created"
            ),
        ),
    )


async def _create(
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
    webhook = webhook_url(runner.webhook_base, str(job_id)) if runner.webhook_base else None
    try:
        # `Cancel-After` is what is left of the job's deadline, so Replicate itself stops the
        # prediction when the job's time is up (the adapter raises it to Replicate's minimum).
        prediction_id = await runner.predictions.create(
            job_type.model,
            dict(model_input),
            webhook,
            list(job_type.webhook_events),
            max(1, math.ceil(remaining_s)),
        )
    except PermanentRejection as exc:
        await _fail_for_good(
            runner, job_id, JobError(code=PREDICTION_REJECTED, message=str(exc)), mine
        )
        return
    except CreateUnavailable as exc:
        if not exc.ambiguous:
            # Nothing was created, so nothing is in flight; an ambiguous failure keeps its
            # slot until the prediction it may have made is found or the slot expires.
            await runner.limits.release(job_id)
        if await _after_transient(runner, job_id, job_type.name, exc, context, mine):
            return
        raise
    log.info("prediction created", extra={**context, "prediction_id": prediction_id})
    runner.observer.created(job_type.name)
    await _record(runner, job_id, prediction_id, context, known=mine)


async def _after_transient(
    runner: Runner,
    job_id: uuid.UUID,
    job_type: str,
    exc: CreateUnavailable,
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

    stored = await _change(runner, job_id, note, known=mine)
    attempts = stored.claim.attempts
    if counted and attempts >= runner.max_attempts:
        runner.observer.attempts_exhausted(job_type)
        await _fail_for_good(
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
            quick_attempts=_WAIT_DELIVERIES,
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


def _retry_reason(exc: CreateUnavailable) -> str:
    if exc.throttled:
        return "throttled"
    if exc.needs_operator:
        return "needs_operator"
    return "ambiguous" if exc.ambiguous else "transient"


async def _record(
    runner: Runner,
    job_id: uuid.UUID,
    prediction_id: str,
    context: dict[str, str],
    *,
    adopted: bool = False,
    known: StoredClaim | None = None,
) -> None:
    """Make `prediction_id` the job's prediction and announce it; if the claim already names
    another one (a create past the binding window raced a late answer), this one is an orphan
    and is canceled; if the job was canceled meanwhile, the prediction is canceled too."""

    def bind(claim: Claim) -> Claim:
        if claim.prediction_id is not None:
            return claim
        return msgspec.structs.replace(claim, prediction_id=prediction_id, creating_since=None)

    stored = await _change(runner, job_id, bind, known=known)
    claim = stored.claim
    job_type = claim.job_type or UNKNOWN_TYPE
    context = {**context, "prediction_id": prediction_id}
    if claim.prediction_id != prediction_id:
        log.warning(
            "a second prediction was made for the job; canceling it",
            extra={**context, "kept": claim.prediction_id},
        )
        await _cancel_quietly(runner, prediction_id, context)
        runner.observer.orphan_canceled(job_type)
        return
    if claim.canceled:
        log.info("job canceled while its prediction was created; canceling it", extra=context)
        await _cancel_quietly(runner, prediction_id, context)
        return
    if claim.failed is not None:
        # The job was already announced failed (its attempts ran out meanwhile): the
        # prediction can no longer serve it.
        log.warning("job already failed; canceling its late prediction", extra=context)
        await _cancel_quietly(runner, prediction_id, context)
        runner.observer.orphan_canceled(job_type)
        return
    await _submitted(runner, job_id, prediction_id, claim, adopted=adopted)


async def _cancel_quietly(runner: Runner, prediction_id: str, context: dict[str, str]) -> None:
    try:
        await runner.predictions.cancel(prediction_id)
    except PermanentRejection as exc:
        # Replicate no longer knows it (or refuses): nothing left to stop.
        log.info("nothing to cancel: %s", str(exc), extra=context)


async def handle_cancel_requested(event: JobCancelRequested, runner: Runner) -> None:
    """Mark the job canceled in its claim, so no prediction is created for it from now on, and
    cancel its prediction if one exists.

    The job-store already ends a pending job canceled on the request itself; a prediction
    created meanwhile is canceled by its creator when it records it. A failing cancel call
    raises `Unavailable` and the request comes again (the mark is kept).
    """
    job_id = event.job_id
    stored = await _change(runner, job_id, lambda c: msgspec.structs.replace(c, canceled=True))
    prediction_id = stored.claim.prediction_id
    job_type = stored.claim.job_type or UNKNOWN_TYPE
    context = {"job_id": str(job_id)}
    if prediction_id is None:
        log.info("job canceled before any prediction was created", extra=context)
        runner.observer.canceled(job_type, before_creation=True)
        return
    context["prediction_id"] = prediction_id
    await _cancel_quietly(runner, prediction_id, context)
    runner.observer.canceled(job_type, before_creation=False)
    log.info("prediction canceled", extra=context)


async def handle_started(event: JobStarted, runner: Runner) -> None:
    """A prediction reported in (its `start` webhook, or a poll): if the job is already bound to
    another prediction, this one is an orphan of a create whose answer was lost and is canceled.

    So is one for a job that already failed or was canceled before any prediction was
    recorded: nothing will ever read its result. Any other prediction for a job with no
    recorded one yet is left alone: within the binding window a redelivered `requested` adopts
    it from the job's events.
    """
    stored = await runner.claims.read(event.job_id)
    if stored is None:
        return
    claim = stored.claim
    if claim.prediction_id == event.prediction_id:
        return
    if claim.prediction_id is None and claim.failed is None and not claim.canceled:
        return
    context = {
        "job_id": str(event.job_id),
        "prediction_id": event.prediction_id,
        "kept": str(claim.prediction_id),
    }
    log.warning("a prediction the job cannot use turned up; canceling it", extra=context)
    await _cancel_quietly(runner, event.prediction_id, context)
    runner.observer.orphan_canceled(claim.job_type or UNKNOWN_TYPE)
