"""What a requested job becomes: the claim loop performing `decide`'s decisions (create, adopt,
announce again, wait, fail), so at most one prediction is created for the job across runners."""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import Final

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
from ai_runner.handlers.binding import record, submitted
from ai_runner.handlers.creating import create
from ai_runner.handlers.runner import (
    WAIT_DELIVERIES,
    Runner,
    change_claim,
    fail,
    fail_for_good,
)
from ai_runner.ports import (
    Claim,
    StoredClaim,
)
from jobs_proto.events import (
    JobError,
    JobRequested,
)
from jobs_proto.job_types import JOB_TYPES, JobType
from jobs_proto.status import DEADLINE_EXCEEDED
from jobs_runtime.retry import RetryLater

# One logger for every handler module: operators and tests select the handlers' lines by it.
log = logging.getLogger(__package__)

# Error codes of jobs that fail before any prediction exists. The gateway validates both before
# admitting a job, so reaching here means a gateway of another release, or a hand-made event.
UNKNOWN_JOB_TYPE: Final = "unknown_job_type"


INVALID_INPUT: Final = "invalid_input"


# How often a job waiting for its binding looks again, at most.
_BINDING_POLL_S: Final = 2.0


# A prediction ends by its `Cancel-After`; its in-flight slot is kept this much longer in case
# the news of its end is late, and is freed then even if it never comes.
_IN_FLIGHT_GRACE_S: Final = 120.0


def deadline_at(event: JobRequested, job_type: JobType) -> datetime:
    """The job's own deadline: from its submission (the gateway's time), queue time included."""
    return event.occurred_at + timedelta(seconds=job_type.deadline_s)


async def admit(runner: Runner, job_id: uuid.UUID, job_type: JobType, remaining_s: float) -> None:
    """Take the shared limits' slots for one create, or raise `RetryLater` until they free."""
    wait = await runner.limits.admit(job_id, remaining_s + _IN_FLIGHT_GRACE_S, job_type.name)
    if wait is None:
        return
    runner.observer.limit_waited(job_type.name, wait.limit)
    raise RetryLater(
        f"the shared {wait.limit} limit is reached; waiting {wait.wait_s:.1f}s",
        delay_s=wait.wait_s,
        quick_attempts=WAIT_DELIVERIES,
    )


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
        await fail(
            runner, job_id, UNKNOWN_JOB_TYPE, f"unknown job type {event.job_type!r}; known: {known}"
        )
        return
    try:
        job_input = job_type.parse_input(event.input)
    except msgspec.ValidationError as exc:
        await fail(runner, job_id, INVALID_INPUT, f"invalid input: {exc}")
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
                await fail(runner, job_id, error.code, error.message)
                return
            case Announce(prediction_id):
                log.info(
                    "prediction already created; announcing it again",
                    extra={**context, "prediction_id": prediction_id},
                )
                await submitted(runner, job_id, prediction_id, claim or Claim())
                return
            case Adopt(prediction_id):
                log.info(
                    "found the prediction of an earlier create in the job's events; keeping it",
                    extra={**context, "prediction_id": prediction_id},
                )
                runner.observer.adopted(job_type.name)
                await record(runner, job_id, prediction_id, context, adopted=True)
                return
            case Wait(remaining):
                runner.observer.retried(job_type.name, "binding_wait")
                raise RetryLater(
                    f"a create may be in flight or may have made a prediction; waiting "
                    f"{remaining:.1f}s more for it to show",
                    delay_s=min(remaining, _BINDING_POLL_S),
                    quick_attempts=WAIT_DELIVERIES,
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
                await admit(runner, job_id, job_type, remaining_s)
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

    await create(
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
        await admit(runner, event.job_id, job_type, remaining_s)
    except Exception:

        def not_creating(claim: Claim) -> Claim:
            if claim.creating_since != first.creating_since:
                return claim
            return msgspec.structs.replace(claim, creating_since=None)

        # Best effort: if this fails too, the claim waits out the binding window instead.
        with contextlib.suppress(Exception):
            await change_claim(runner, event.job_id, not_creating, known=mine)
        raise
    return mine


async def _deadline_passed(runner: Runner, event: JobRequested, job_type: JobType) -> None:
    """The job waited in the queue past its deadline: it fails without a prediction."""
    runner.observer.deadline_exceeded(job_type.name, "before_creation")
    await fail_for_good(
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
