"""From a verified Replicate webhook to a stored job event (and partial output) and an outcome.

A final prediction becomes `JobCompleted`; any other becomes `JobStarted`, plus `JobProgress`
when it carries output. The HTTP adapter turns the outcome into Replicate's answer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import msgspec

from jobs_proto.api import JobProgress
from jobs_proto.events import JobCompleted, JobStarted, encode_event
from jobs_proto.replicate import ReplicatePrediction, decode_prediction, joined_output
from jobs_proto.status import FinalPredictionStatus, PredictionStatus
from jobs_proto.stream import MAX_MESSAGE_BYTES
from webhook_ingest.ports import BusUnavailable, EventStore, ProgressSink
from webhook_ingest.verify import VerifiedWebhook

# NATS counts the headers (`Nats-Msg-Id` and the protocol's framing) against `max_payload`
# and the stream's `max_msg_size`; this leaves them ample room.
HEADER_ALLOWANCE_BYTES: Final = 16 * 1024
MAX_EVENT_BYTES: Final = MAX_MESSAGE_BYTES - HEADER_ALLOWANCE_BYTES

WebhookEvent: TypeAlias = JobStarted | JobCompleted


@dataclass(frozen=True, slots=True)
class Stored:
    """The event is in `JOBS` (or was already, for a redelivered webhook): answer `200`."""

    event: WebhookEvent
    duplicate: bool
    # `None`: the webhook carried no output to report; `False`: sending it failed.
    progress_sent: bool | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Signed, but nothing we can act on: answer `400` (a retry would not change it)."""

    reason: Literal["not_a_prediction", "bad_job_id"]
    detail: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Nothing stored: answer `503` so Replicate retries the webhook later."""

    reason: Literal["bus_unavailable", "too_large_for_bus"]
    detail: str


Outcome: TypeAlias = Stored | Rejected | Unavailable


async def ingest_webhook(
    webhook: VerifiedWebhook,
    job_param: str | None,
    *,
    events: EventStore,
    progress: ProgressSink,
    now: datetime,
) -> Outcome:
    """Store what the webhook tells about the job named by `job_param` (the URL's `?job=`)."""
    try:
        prediction = decode_prediction(webhook.body)
    except msgspec.DecodeError as exc:
        # msgspec names the path and the expectation, never the offending value.
        return Rejected("not_a_prediction", f"the body is not a Replicate prediction: {exc}")
    job_id = _job_id(job_param)
    if job_id is None:
        return Rejected("bad_job_id", "the query parameter 'job' must be a job id (a UUID)")

    event = _event(prediction, job_id, webhook.webhook_id, now)
    size = len(encode_event(event))
    if size > MAX_EVENT_BYTES:
        # TODO(large results): store the output aside (Object Store) and publish `output_ref`
        # instead. Until then Replicate retries for about a minute and the result is lost unless
        # the ai-runner fetches the prediction itself.
        return Unavailable(
            "too_large_for_bus",
            f"the event would be {size} bytes, over the bus limit of {MAX_EVENT_BYTES}",
        )
    try:
        duplicate = await events.store(event)
    except BusUnavailable as exc:
        return Unavailable("bus_unavailable", str(exc))

    if isinstance(event, JobCompleted):
        return Stored(event, duplicate)
    update = _progress(prediction, job_id)
    if update is None:
        return Stored(event, duplicate)
    try:
        await progress.send(update)
    except BusUnavailable:
        # Progress is best effort: the next output webhook carries all the text again, and the
        # final one carries the whole result.
        return Stored(event, duplicate, progress_sent=False)
    return Stored(event, duplicate, progress_sent=True)


def _job_id(param: str | None) -> uuid.UUID | None:
    if not param:
        return None
    try:
        return uuid.UUID(param)
    except ValueError:
        return None


def _final_status(status: PredictionStatus) -> FinalPredictionStatus | None:
    match status:
        case "succeeded" | "failed" | "canceled" | "aborted":
            return status
        case _:
            return None


def _event(
    prediction: ReplicatePrediction, job_id: uuid.UUID, webhook_id: str, now: datetime
) -> WebhookEvent:
    final = _final_status(prediction.status)
    if final is None:
        # No webhook id here: the message id becomes `started:<predictionId>`, so the many
        # `output` webhooks of one prediction store a single `started` event.
        return JobStarted(job_id=job_id, occurred_at=now, prediction_id=prediction.id)
    return JobCompleted(
        job_id=job_id,
        occurred_at=now,
        prediction_id=prediction.id,
        prediction_status=final,
        output=joined_output(prediction.output),
        error=prediction.error,
        data_removed=prediction.data_removed,
        # The message id: Replicate's retry of the same final webhook is dropped by JetStream.
        webhook_id=webhook_id,
        predict_time_s=prediction.predict_time_s,
    )


def _progress(prediction: ReplicatePrediction, job_id: uuid.UUID) -> JobProgress | None:
    text = joined_output(prediction.output)
    if not text:
        return None
    return JobProgress(job_id=job_id, output=text, seq=_sequence(prediction.output, text))


def _sequence(output: Any, text: str) -> int:
    """Grows with each output webhook: streamed chunks so far, or the text's length otherwise."""
    return len(output) if isinstance(output, list) else len(text)
