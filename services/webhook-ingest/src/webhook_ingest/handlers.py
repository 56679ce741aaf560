"""From a verified Replicate webhook to a stored job event (and partial output) and an outcome.

The job is the one the signed body's `webhook` field names (the URL the ai-runner created the
prediction with): the request URL's `?job=` is outside the signature, so it may only agree. A
webhook naming no job of ours is parked, not refused, so Replicate stops retrying and an
operator sees it. A final prediction becomes `JobCompleted`; any other becomes `JobStarted`,
plus `JobProgress` (naming the prediction) when it carries output, whose text is also offered
to the prediction's output log (for `/output`; best effort, after the event decided the answer:
the next output webhook or the relay covers a failed offer). A final output too large for one
bus message is stored aside first and the event names it by `output_ref` (output `None`); the
answer is `Stored` only once both are stored. The HTTP adapter turns the outcome into
Replicate's answer.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

import msgspec

from jobs_proto.api import JobProgress
from jobs_proto.events import JobCompleted, JobStarted, encode_event
from jobs_proto.replicate import (
    ReplicatePrediction,
    completed_event,
    decode_prediction,
    joined_output,
    webhook_job_id,
)
from jobs_proto.stream import MAX_EVENT_BYTES, output_fits_inline
from jobs_proto.subjects import SubjectError
from jobs_runtime.errors import Unavailable
from webhook_ingest.ports import EventStore, OutputSink, ProgressSink, ResultStore, WebhookParking
from webhook_ingest.verify import VerifiedWebhook

log = logging.getLogger(__name__)

WebhookEvent: TypeAlias = JobStarted | JobCompleted


@dataclass(frozen=True, slots=True)
class Stored:
    """The event is in `JOBS` (or was already, for a redelivered webhook): answer `200`."""

    event: WebhookEvent
    duplicate: bool
    # `None`: the webhook carried no output to report; `False`: sending it failed.
    progress_sent: bool | None = None
    # `None`: nothing offered to the output log (no text, a final webhook, no log);
    # `False`: the offer failed.
    output_offered: bool | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Signed, but nothing we can act on: answer `400` (a retry would not change it)."""

    # `job_mismatch`: the request URL's `?job=` is not the job the signed body names (a signed
    # webhook replayed against another job).
    reason: Literal["not_a_prediction", "bad_job_id", "job_mismatch"]
    detail: str


@dataclass(frozen=True, slots=True)
class Parked:
    """Signed, but naming no job the system created (a prediction made elsewhere): kept aside
    with its reason for an operator, nothing else changes; answer `200` so Replicate stops."""

    reason: Literal["no_job"]
    detail: str
    prediction_id: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class NotStored:
    """Nothing stored: answer `503` so Replicate retries the webhook later."""

    # `too_large_for_bus`: even without its output the event is over the limit (a huge error
    # text), which no retry changes; kept as a guard so nothing oversized reaches NATS.
    reason: Literal[
        "bus_unavailable", "results_unavailable", "parking_unavailable", "too_large_for_bus"
    ]
    detail: str


Outcome: TypeAlias = Stored | Parked | Rejected | NotStored


async def ingest_webhook(
    webhook: VerifiedWebhook,
    job_param: str | None,
    *,
    events: EventStore,
    progress: ProgressSink,
    results: ResultStore,
    parking: WebhookParking,
    now: datetime,
    output: OutputSink | None = None,
) -> Outcome:
    """Store what the webhook tells about the job its signed body names; `job_param` (the
    request URL's `?job=`, None when absent) must name the same job."""
    try:
        prediction = decode_prediction(webhook.body)
        # Joined once, here: a nested output that decoded can still exhaust the recursion limit
        # when turned into text, and either way it is no output we can keep.
        text = joined_output(prediction.output)
    except msgspec.DecodeError as exc:
        # msgspec names the path and the expectation, never the offending value.
        return Rejected("not_a_prediction", f"the body is not a Replicate prediction: {exc}")
    except RecursionError:
        return Rejected("not_a_prediction", "the body nests too deeply to be a prediction")
    job_id = webhook_job_id(prediction.webhook)
    if job_param is not None:
        asked = _job_id(job_param)
        if asked is None:
            return Rejected("bad_job_id", "the query parameter 'job' must be a job id (a UUID)")
        if asked != job_id:
            # Only the body is signed: a `?job=` that differs was changed on the way.
            return Rejected(
                "job_mismatch",
                "the query parameter 'job' is not the job the signed webhook URL names",
            )
    if job_id is None:
        detail = "the prediction's webhook URL names no job (a prediction made elsewhere)"
        try:
            duplicate = await parking.park(webhook.webhook_id, webhook.body, "no_job", detail)
        except Unavailable as exc:
            return NotStored("parking_unavailable", str(exc))
        return Parked("no_job", detail, prediction.id, duplicate)

    event = _event(prediction, text, job_id, webhook.webhook_id, now)
    if isinstance(event, JobCompleted) and _needs_result_store(event.output):
        assert event.output is not None  # narrowed by `_needs_result_store`
        try:
            # The object before the event: an event must never name a result that is not there.
            # If the event then fails, the retry overwrites the same object.
            ref = await results.store(event.prediction_id, event.output)
        except Unavailable as exc:
            return NotStored("results_unavailable", str(exc))
        event = msgspec.structs.replace(event, output=None, output_ref=ref)
    size = len(encode_event(event))
    if size > MAX_EVENT_BYTES:
        return NotStored(
            "too_large_for_bus",
            f"the event would be {size} bytes, over the bus limit of {MAX_EVENT_BYTES}",
        )
    try:
        duplicate = await events.store(event)
    except Unavailable as exc:
        return NotStored("bus_unavailable", str(exc))

    if isinstance(event, JobCompleted):
        return Stored(event, duplicate)
    update = _progress(prediction, text, job_id)
    if update is None:
        return Stored(event, duplicate)
    try:
        await progress.send(update)
        sent = True
    except Unavailable:
        # Progress is best effort: the next output webhook carries all the text again, and the
        # final one carries the whole result.
        sent = False
    offered = None if output is None else await _offer(output, job_id, prediction.id, update.output)
    return Stored(event, duplicate, progress_sent=sent, output_offered=offered)


async def _offer(
    output: OutputSink, job_id: uuid.UUID, prediction_id: str, text: str
) -> bool | None:
    """Offer the text so far to the output log: `None` when the prediction cannot have one."""
    try:
        await output.offer(job_id, prediction_id, text)
    except SubjectError:
        log.info(
            "output not logged: the prediction id is not one subject token",
            extra={"job_id": str(job_id), "prediction_id": prediction_id[:80]},
        )
        return None
    except Unavailable:
        return False
    return True


def _needs_result_store(output: str | None) -> bool:
    return output is not None and not output_fits_inline(output)


def _job_id(param: str | None) -> uuid.UUID | None:
    if not param:
        return None
    try:
        return uuid.UUID(param)
    except ValueError:
        return None


def _event(
    prediction: ReplicatePrediction,
    text: str | None,
    job_id: uuid.UUID,
    webhook_id: str,
    now: datetime,
) -> WebhookEvent:
    # The webhook id is the message id: Replicate's retry of the same final webhook is dropped.
    completed = completed_event(prediction, job_id, now, output=text, webhook_id=webhook_id)
    if completed is None:
        # No webhook id here: the message id becomes `started:<predictionId>`, so the many
        # `output` webhooks of one prediction store a single `started` event.
        return JobStarted(job_id=job_id, occurred_at=now, prediction_id=prediction.id)
    return completed


def _progress(
    prediction: ReplicatePrediction, text: str | None, job_id: uuid.UUID
) -> JobProgress | None:
    if not text:
        return None
    return JobProgress(
        job_id=job_id,
        output=text,
        seq=_sequence(prediction.output, text),
        # So a reader can drop output of any prediction other than the job's own.
        prediction_id=prediction.id,
    )


def _sequence(output: Any, text: str) -> int:
    """Grows with each output webhook: streamed chunks so far, or the text's length otherwise."""
    return len(output) if isinstance(output, list) else len(text)
