"""A job as it is right after admission, defined once: the job-store stores it as the job's
first row, and the gateway answers it while the job-store has not seen the job yet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from jobs_proto.api import JobView
from jobs_proto.events import JobRequested

# Inputs larger than this (encoded as JSON) are stored cut down and marked `input_truncated`.
# The gateway admits bodies up to 64 KiB, so only events from elsewhere (an older release, a
# hand-made publish) reach it. A constant, not a setting: a replay must cut exactly alike.
MAX_INPUT_BYTES: Final = 64 * 1024
_encoder: Final = msgspec.json.Encoder()


def as_utc(moment: datetime) -> datetime:
    """A timestamp without an offset read as UTC, rather than failing on every redelivery."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def bounded_input(
    value: dict[str, Any], limit: int = MAX_INPUT_BYTES
) -> tuple[dict[str, Any], bool]:
    """The input as stored: whole when its JSON fits in `limit` bytes, else cut down (and True).

    Fields are kept in order while they fit; the first that does not is cut if it is text (on a
    character boundary), and the rest are left out. Deterministic, so a replay stores the same.
    """
    if len(_encoder.encode(value)) <= limit:
        return value, False
    budget = limit - 2  # the braces
    kept: dict[str, Any] = {}
    for key, item in value.items():
        size = len(_encoder.encode({key: item})) - 1  # its `"key":value,` share
        if size <= budget:
            kept[key] = item
            budget -= size
            continue
        if isinstance(item, str):
            room = budget - (len(_encoder.encode({key: ""})) - 1)
            # JSON escapes make the encoded text longer than the raw: cut until it fits.
            text = item.encode()[: max(room, 0)].decode(errors="ignore")
            while text and len(_encoder.encode({key: text})) - 1 > budget:
                text = text[: len(text) * 3 // 4]
            if text:
                kept[key] = text
        break
    return kept, True


def pending_view(event: JobRequested) -> JobView:
    """The job as its owner sees it from its `JobRequested` alone: `pending`, version 1."""
    at = as_utc(event.occurred_at)
    stored_input, _ = bounded_input(event.input)
    return JobView(
        job_id=event.job_id,
        type=event.job_type,
        status="pending",
        version=1,
        input=stored_input,
        output=None,
        error=None,
        prediction_id=None,
        created_at=at,
        updated_at=at,
        completed_at=None,
    )
