"""Carrying out a cancel request: the claim marks the job canceled, so no prediction is created
for it from now on, and its prediction, if one exists, is canceled."""

from __future__ import annotations

import logging

import msgspec

from ai_runner.handlers.runner import (
    UNKNOWN_TYPE,
    Runner,
    cancel_quietly,
    change_claim,
)
from jobs_proto.events import (
    JobCancelRequested,
)

# One logger for every handler module: operators and tests select the handlers' lines by it.
log = logging.getLogger(__package__)


async def handle_cancel_requested(event: JobCancelRequested, runner: Runner) -> None:
    """Mark the job canceled in its claim, so no prediction is created for it from now on, and
    cancel its prediction if one exists.

    The job-store already ends a pending job canceled on the request itself; a prediction
    created meanwhile is canceled by its creator when it records it. A failing cancel call
    raises `Unavailable` and the request comes again (the mark is kept).
    """
    job_id = event.job_id
    stored = await change_claim(runner, job_id, lambda c: msgspec.structs.replace(c, canceled=True))
    prediction_id = stored.claim.prediction_id
    job_type = stored.claim.job_type or UNKNOWN_TYPE
    context = {"job_id": str(job_id)}
    if prediction_id is None:
        log.info("job canceled before any prediction was created", extra=context)
        runner.observer.canceled(job_type, before_creation=True)
        return
    context["prediction_id"] = prediction_id
    await cancel_quietly(runner, prediction_id, context)
    runner.observer.canceled(job_type, before_creation=False)
    log.info("prediction canceled", extra=context)
