"""Replicate's prediction object as the project reads it, from webhooks and from the API.

The `replicate` package's own model cannot parse `aborted`, so every service reads predictions
with this Struct instead; unknown fields are skipped, as Replicate adds fields over time.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import msgspec

from jobs_proto.events import JobCompleted
from jobs_proto.status import FINAL_PREDICTION_STATUSES, FinalPredictionStatus, PredictionStatus
from jobs_proto.wire import decode_json


class PredictionUrls(msgspec.Struct, frozen=True, kw_only=True):
    get: str | None = None
    cancel: str | None = None
    web: str | None = None


class ReplicatePrediction(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of a prediction the project relies on, in Replicate's own snake_case."""

    id: str
    status: PredictionStatus
    model: str | None = None
    version: str | None = None
    output: Any = None
    error: str | None = None
    logs: str | None = None
    data_removed: bool = False
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    metrics: dict[str, Any] | None = None
    urls: PredictionUrls | None = None
    # The URL the prediction was created with, echoed by Replicate in every webhook body: the
    # signed statement of which job the prediction serves (see `webhook_job_id`).
    webhook: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_PREDICTION_STATUSES

    def _count(self, name: str) -> int | None:
        value = (self.metrics or {}).get(name)
        # bool is an int to Python, never a count to Replicate.
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None
        return value

    @property
    def input_tokens(self) -> int | None:
        """`metrics.input_token_count` (official language models report it), if a count."""
        return self._count("input_token_count")

    @property
    def output_tokens(self) -> int | None:
        return self._count("output_token_count")

    @property
    def predict_time_s(self) -> float | None:
        value = (self.metrics or {}).get("predict_time")
        if not isinstance(value, int | float):
            return None
        try:
            return float(value)
        except OverflowError:  # a sender's absurd integer must not fail the whole webhook
            return None


# The query parameter of a prediction's webhook URL that names its job; the ai-runner writes it.
WEBHOOK_JOB_PARAMETER: Final = "job"


def webhook_job_id(url: str | None) -> uuid.UUID | None:
    """The job a webhook URL names (its first `job` query parameter), or None when it names
    none: no URL, no such parameter, or one that is not a UUID.

    Read from the prediction body's `webhook` field, this is covered by the signature, unlike
    the request URL a webhook arrives on.
    """
    if not url:
        return None
    try:
        query = urlsplit(url).query
    except ValueError:  # a malformed URL (say, an unbalanced `[` in the host) names no job
        return None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == WEBHOOK_JOB_PARAMETER:
            try:
                return uuid.UUID(value)
            except ValueError:
                return None
    return None


# Beside `job`: the W3C traceparent of the span that created the prediction, so the webhook's
# span joins the job's trace (signed like the job: it is read from the body's `webhook` field).
WEBHOOK_TRACE_PARAMETER: Final = "traceparent"


def webhook_traceparent(url: str | None) -> str | None:
    """The first `traceparent` query parameter of a webhook URL, as it is (the reader checks
    its form), or None when there is none."""
    if not url or WEBHOOK_TRACE_PARAMETER not in url:
        return None
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == WEBHOOK_TRACE_PARAMETER:
            return value
    return None


_decoder: Final[msgspec.json.Decoder[ReplicatePrediction]] = msgspec.json.Decoder(
    ReplicatePrediction
)


def decode_prediction(body: bytes) -> ReplicatePrediction:
    """Parse a prediction; raises `msgspec.DecodeError` when the body is not one."""
    return decode_json(body, _decoder)


def joined_output(output: Any) -> str | None:
    """The model's text: language models stream a list of string chunks, joined here; any other
    output (a single string, a number, an object) is kept as text."""
    if output is None:
        return None
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(chunk, str) for chunk in output):
        return "".join(output)
    return json.dumps(output, separators=(",", ":"))


def final_status(status: PredictionStatus) -> FinalPredictionStatus | None:
    """The status if it is a final one, typed as such; None while the prediction runs."""
    match status:
        case "succeeded" | "failed" | "canceled" | "aborted":
            return status
        case _:
            return None


def completed_event(
    prediction: ReplicatePrediction,
    job_id: uuid.UUID,
    occurred_at: datetime,
    *,
    output: str | None,
    output_ref: str | None = None,
    webhook_id: str | None = None,
) -> JobCompleted | None:
    """The `JobCompleted` a finished prediction makes (None while it runs), however it was
    learnt: `output` is the joined text (or None with `output_ref` when stored aside);
    `webhook_id` None gives the poll's message id `completed:<predictionId>`."""
    status = final_status(prediction.status)
    if status is None:
        return None
    try:
        predict_time_s = prediction.predict_time_s
    except OverflowError:
        predict_time_s = None
    return JobCompleted(
        job_id=job_id,
        occurred_at=occurred_at,
        prediction_id=prediction.id,
        prediction_status=status,
        output=output,
        output_ref=output_ref,
        error=prediction.error,
        data_removed=prediction.data_removed,
        webhook_id=webhook_id,
        predict_time_s=predict_time_s,
        input_tokens=prediction.input_tokens,
        output_tokens=prediction.output_tokens,
    )
