"""Binding a job to its one prediction: recording it in the claim and announcing it
(`JobSubmitted`), and canceling any other prediction that turns up for the job as an orphan."""

from __future__ import annotations

import logging
import uuid

import msgspec

from ai_runner.handlers.runner import (
    UNKNOWN_TYPE,
    Runner,
    cancel_quietly,
    change_claim,
)
from ai_runner.ports import (
    Claim,
    StoredClaim,
)
from jobs_proto.events import (
    JobStarted,
    JobSubmitted,
)

# One logger for every handler module: operators and tests select the handlers' lines by it.
log = logging.getLogger(__package__)


async def submitted(
    runner: Runner,
    job_id: uuid.UUID,
    prediction_id: str,
    claim: Claim,
    *,
    adopted: bool = False,
    stream_url: str | None = None,
) -> None:
    # The same fact on every call, so its Nats-Msg-Id (`submitted:<job>:<prediction>`) makes
    # JetStream drop a repeat within the duplicate window, and the job-store ignores it after.
    # The attempt that made it: every counted failure before it, plus itself; an adopted one
    # came from the last create, which was counted as failed when its answer was lost.
    attempt = max(1, claim.attempts) if adopted else claim.attempts + 1
    stream_url = stream_url or claim.stream_url
    await runner.events.publish(
        JobSubmitted(
            job_id=job_id,
            occurred_at=runner.now(),
            prediction_id=prediction_id,
            attempt=attempt,
            # Where the relay reads the text from; an adopted prediction's is not known here,
            # and its text then comes from `output` webhooks alone.
            stream_url=stream_url,
        )
    )


async def record(
    runner: Runner,
    job_id: uuid.UUID,
    prediction_id: str,
    context: dict[str, str],
    *,
    adopted: bool = False,
    known: StoredClaim | None = None,
    stream_url: str | None = None,
) -> None:
    """Make `prediction_id` the job's prediction and announce it; if the claim already names
    another one (a create past the binding window raced a late answer), this one is an orphan
    and is canceled; if the job was canceled meanwhile, the prediction is canceled too."""

    def bind(claim: Claim) -> Claim:
        if claim.prediction_id is not None:
            return claim
        return msgspec.structs.replace(
            claim, prediction_id=prediction_id, creating_since=None, stream_url=stream_url
        )

    stored = await change_claim(runner, job_id, bind, known=known)
    claim = stored.claim
    job_type = claim.job_type or UNKNOWN_TYPE
    context = {**context, "prediction_id": prediction_id}
    if claim.prediction_id != prediction_id:
        log.warning(
            "a second prediction was made for the job; canceling it",
            extra={**context, "kept": claim.prediction_id},
        )
        await cancel_quietly(runner, prediction_id, context)
        runner.observer.orphan_canceled(job_type)
        return
    if claim.canceled:
        log.info("job canceled while its prediction was created; canceling it", extra=context)
        await cancel_quietly(runner, prediction_id, context)
        return
    if claim.failed is not None:
        # The job was already announced failed (its attempts ran out meanwhile): the
        # prediction can no longer serve it.
        log.warning("job already failed; canceling its late prediction", extra=context)
        await cancel_quietly(runner, prediction_id, context)
        runner.observer.orphan_canceled(job_type)
        return
    await submitted(runner, job_id, prediction_id, claim, adopted=adopted, stream_url=stream_url)


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
    await cancel_quietly(runner, event.prediction_id, context)
    runner.observer.orphan_canceled(claim.job_type or UNKNOWN_TYPE)
