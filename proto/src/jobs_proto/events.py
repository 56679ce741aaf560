"""Every event of the `JOBS` stream: what happened to a job, in the past tense, one Struct each.

The kind is both the subject's second token and the body's `kind` tag, so a body decodes alone
and a consumer can recognise a kind it does not know from the subject before decoding.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final, TypeAlias, cast

import msgspec

from jobs_proto.base import Message
from jobs_proto.spend import Price
from jobs_proto.status import FinalPredictionStatus
from jobs_proto.wire import decode_json


class JobError(Message, frozen=True):
    """Why a job failed: a stable `code` for programs, a `message` for people."""

    code: str
    message: str


class JobEvent(Message, frozen=True, tag_field="kind"):
    """Base of every event: which job, and when the fact became true."""

    job_id: uuid.UUID
    occurred_at: datetime

    @property
    def kind(self) -> str:
        return cast(str, type(self).__struct_config__.tag)


class JobRequested(JobEvent, frozen=True, tag="requested"):
    """The gateway admitted a job; nothing has been sent to Replicate yet."""

    user_id: str
    job_type: str
    input: dict[str, Any]
    # The type's price and the budget reserved at admission, so the job-store (and a replay)
    # charges the job as it was priced when admitted; None in events older than prices.
    price: Price | None = None
    reserved_micros: int | None = None


class JobSubmitted(JobEvent, frozen=True, tag="submitted"):
    """The ai-runner created a prediction for the job.

    `stream_url` is the prediction's `urls.stream` where its model streams its text: the
    ai-runner's relay reads it into the job's output log.
    """

    prediction_id: str
    attempt: int = 1
    stream_url: str | None = None


class JobStarted(JobEvent, frozen=True, tag="started"):
    """Replicate started the prediction (from a `start` webhook, or learnt by polling)."""

    prediction_id: str
    webhook_id: str | None = None


class JobCompleted(JobEvent, frozen=True, tag="completed"):
    """The prediction reached a final status (from the `completed` webhook, or by polling).

    `output` is the model's text already joined; a result too large for the bus is stored aside
    and named by `output_ref` instead.
    """

    prediction_id: str
    prediction_status: FinalPredictionStatus
    output: str | None = None
    output_ref: str | None = None
    error: str | None = None
    data_removed: bool = False
    webhook_id: str | None = None
    predict_time_s: float | None = None
    # The prediction's `metrics` token counts (language models report them): what it is billed.
    input_tokens: int | None = None
    output_tokens: int | None = None


class JobFailed(JobEvent, frozen=True, tag="failed"):
    """The job ended without a usable prediction (rejected input, attempts exhausted, ...)."""

    error: JobError
    prediction_id: str | None = None


class JobCancelRequested(JobEvent, frozen=True, tag="cancel_requested"):
    """The job's owner asked to cancel it."""

    user_id: str


class JobPurged(JobEvent, frozen=True, tag="purged"):
    """The job-store deleted a finished job and its history (retention): a replay of the stream
    applies this too, so a purged job never comes back. Purging an unknown job changes nothing.
    """

    reason: str = "retention"


AnyJobEvent: TypeAlias = (
    JobRequested
    | JobSubmitted
    | JobStarted
    | JobCompleted
    | JobFailed
    | JobCancelRequested
    | JobPurged
)
EVENT_TYPES: Final[tuple[type[JobEvent], ...]] = (
    JobRequested,
    JobSubmitted,
    JobStarted,
    JobCompleted,
    JobFailed,
    JobCancelRequested,
    JobPurged,
)
EVENT_KINDS: Final[dict[str, type[JobEvent]]] = {
    cast(str, t.__struct_config__.tag): t for t in EVENT_TYPES
}

_encoder: Final = msgspec.json.Encoder()
_decoder: Final[msgspec.json.Decoder[AnyJobEvent]] = msgspec.json.Decoder(AnyJobEvent)


def encode_event(event: JobEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> AnyJobEvent:
    """Decode any event body; raises `msgspec.DecodeError` (a `ValidationError` for bad shapes)."""
    return decode_json(data, _decoder)
