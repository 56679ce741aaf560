"""Replicate's prediction object as the project reads it, from webhooks and from the API.

The `replicate` package's own model cannot parse `aborted`, so every service reads predictions
with this Struct instead; unknown fields are skipped, as Replicate adds fields over time.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

from jobs_proto.status import FINAL_PREDICTION_STATUSES, PredictionStatus


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

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_PREDICTION_STATUSES

    @property
    def predict_time_s(self) -> float | None:
        value = (self.metrics or {}).get("predict_time")
        if not isinstance(value, int | float):
            return None
        try:
            return float(value)
        except OverflowError:  # a sender's absurd integer must not fail the whole webhook
            return None


_decoder: Final[msgspec.json.Decoder[ReplicatePrediction]] = msgspec.json.Decoder(
    ReplicatePrediction
)


def decode_prediction(body: bytes) -> ReplicatePrediction:
    """Parse a prediction; raises `msgspec.DecodeError` when the body is not one."""
    return _decoder.decode(body)


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
