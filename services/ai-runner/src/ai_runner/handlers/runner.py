"""The ports and settings the handlers work with (`Runner`), and the steps every handler shares:
changing a job's claim by compare-and-set, failing a job, canceling a prediction quietly."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import msgspec

from ai_runner.ports import (
    Claim,
    Claims,
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
    JobError,
    JobFailed,
)

# One logger for every handler module: operators and tests select the handlers' lines by it.
log = logging.getLogger(__package__)

# A binding wait is bounded by `binding_wait_s` itself, so the runtime's "a long wait is a
# failure in disguise" fallback to backoff must not cut in first.
WAIT_DELIVERIES: Final = 10_000


# Metrics label of a job whose type is not known where it is counted (a cancel of a job no
# runner has seen).
UNKNOWN_TYPE: Final = "unknown"


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    # How a handler waits between attempts it keeps in hand (tests pass one that returns at once).
    pause: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)


async def change_claim(
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


async def fail(runner: Runner, job_id: uuid.UUID, code: str, message: str) -> None:
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


async def fail_for_good(
    runner: Runner, job_id: uuid.UUID, error: JobError, known: StoredClaim | None = None
) -> None:
    """Record the failure in the claim first, so a redelivered `requested` repeats it instead
    of creating; then announce it."""
    stored = await change_claim(
        runner, job_id, lambda c: msgspec.structs.replace(c, failed=error), known=known
    )
    if stored.claim.prediction_id is None:
        # No prediction will run for it (one an ambiguous create made is canceled when it
        # starts): its in-flight slot is free.
        await runner.limits.release(job_id)
    if stored.claim.prediction_id is not None or stored.claim.canceled:
        # Overtaken meanwhile (another runner's prediction, or a cancel): nothing to fail.
        return
    await fail(runner, job_id, error.code, error.message)


async def cancel_quietly(runner: Runner, prediction_id: str, context: dict[str, str]) -> None:
    try:
        await runner.predictions.cancel(prediction_id)
    except PermanentRejection as exc:
        # Replicate no longer knows it (or refuses): nothing left to stop.
        log.info("nothing to cancel: %s", str(exc), extra=context)
