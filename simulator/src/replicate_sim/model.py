"""A simulated prediction and its state at any instant, as pure functions of time.

A prediction is planned once at creation (when it starts, when it ends and how); what the API
shows at a given moment is computed from that plan, so no timer has to fire for `get` to be
right, and a cancel or a deadline only moves the end earlier.

The text follows its own clock, fixed at creation by the `tokensPerS` knob: token `i` (0-based)
is written at `start_at + (i + 1) / tokens_per_s`. The final state keeps the time `latencyS`
gave it: a prediction that succeeds before its text is all written writes the rest at that
moment; one whose text is written sooner stays `processing` until then; a cancel, a deadline or
a failure stops the text where it is. `output` is always the text written so far, cut into the
model's chunks (the last one possibly partial), so every webhook and `get` shows exactly what
`urls.stream` has sent by then; a failed prediction's `output` is null at the end, as before.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from replicate_sim.outputs import first_tokens, token_counts

Status = Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
FinalStatus = Literal["succeeded", "failed", "canceled", "aborted"]
WebhookEvent = Literal["start", "output", "logs", "completed"]

MODEL_ERROR = "Simulated model failure: the model raised an exception"


@dataclass(slots=True)
class Delivery:
    """One webhook attempt, for the audit: what was sent and how the receiver answered."""

    event: WebhookEvent
    webhook_id: str
    attempt: int
    at: float
    status: int | None = None
    error: str | None = None


@dataclass(slots=True)
class Faults:
    """Webhook faults drawn for this prediction when it was created."""

    drop_webhooks: bool = False
    duplicate_final: bool = False
    reorder: bool = False


@dataclass(slots=True)
class Prediction:
    id: str
    seq: int
    model: str
    version: str
    input: dict[str, Any]
    webhook: str | None
    events: frozenset[WebhookEvent]
    job: str | None
    created_at: float
    start_at: float
    end_at: float
    outcome: Literal["succeeded", "failed"]
    aborts: bool
    chunks: list[str]
    # Where the client reached the simulator: `urls.*` must point back there.
    base_url: str
    deadline_at: float | None = None
    canceled_at: float | None = None
    data_removed: bool = False
    # The `dataRemovedAfterS` knob when the prediction was created.
    data_removed_after_s: float = 3600.0
    # Set when the end was processed; from then on the prediction is shown as ended even if
    # the wall clock reads a hair earlier than the loop's timer did.
    finished: bool = False
    faults: Faults = field(default_factory=Faults)
    deliveries: list[Delivery] = field(default_factory=list)
    # A model with `urls.stream` (see `outputs.STREAMING_MODELS`).
    streams: bool = False
    # The `tokensPerS` knob when the prediction was created.
    tokens_per_s: float = 50.0
    input_tokens: int = 0
    # Tokens up to the end of each chunk; kept when the data is removed, for `metrics`.
    token_counts: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.token_counts = token_counts(self.chunks)


def ending(p: Prediction) -> tuple[float, FinalStatus]:
    """When the prediction ends and with which status, given everything that can end it."""
    natural: FinalStatus = "aborted" if p.aborts else p.outcome
    end, status = p.end_at, natural
    if p.deadline_at is not None and p.deadline_at < end:
        # A deadline before the prediction ever started aborts it (and it is not billed).
        never_started = p.aborts or p.deadline_at < p.start_at
        end, status = p.deadline_at, "aborted" if never_started else "canceled"
    if p.canceled_at is not None and p.canceled_at < end:
        end, status = p.canceled_at, "canceled"
    return end, status


def started(p: Prediction, now: float) -> bool:
    end, _ = ending(p)
    return not p.aborts and p.start_at <= now and p.start_at <= end


def status_at(p: Prediction, now: float) -> Status:
    end, final = ending(p)
    if now >= end:
        return final
    return "processing" if started(p, now) else "starting"


def tokens_written(p: Prediction, now: float) -> int:
    """How many tokens of its text the model has written by `now` (see the module's doc)."""
    if not p.token_counts or not started(p, now):
        return 0
    total = p.token_counts[-1]
    end, final = ending(p)
    if final == "succeeded" and now >= end:
        return total
    elapsed = min(now, end) - p.start_at
    # A hair of slack: a reader woken at a token's own instant must see that token.
    return min(total, math.floor(elapsed * p.tokens_per_s + 1e-6))


def token_due(p: Prediction, count: float) -> float:
    """When the model has written `count` tokens, on the text's own clock."""
    return p.start_at + count / p.tokens_per_s


def chunks_at(p: Prediction, now: float) -> list[str]:
    """The output shown at `now`: the text written so far in the model's chunks."""
    if p.data_removed:
        return []
    end, final = ending(p)
    if final == "failed" and now >= end:
        return []
    written = tokens_written(p, now)
    whole = bisect.bisect_right(p.token_counts, written)
    chunks = p.chunks[:whole]
    done = p.token_counts[whole - 1] if whole else 0
    if written > done:
        chunks.append(first_tokens(p.chunks[whole], written - done))
    return chunks


def logs_at(p: Prediction, now: float) -> str:
    if p.data_removed or not started(p, now):
        return ""
    total = p.token_counts[-1] if p.token_counts else 0
    lines = ["Starting prediction", f"Generated {tokens_written(p, now)} of {total} tokens"]
    status = status_at(p, now)
    if status in ("succeeded", "failed", "canceled"):
        lines.append(f"Prediction {status}")
    return "\n".join(lines) + "\n"


# Replicate's own order of the webhook events.
_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("start", "output", "logs", "completed")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def urls(p: Prediction) -> dict[str, str]:
    shown = {
        "get": f"{p.base_url}/v1/predictions/{p.id}",
        "cancel": f"{p.base_url}/v1/predictions/{p.id}/cancel",
        "web": f"{p.base_url}/p/{p.id}",
    }
    if p.streams:
        shown["stream"] = f"{p.base_url}/v1/streams/{p.id}"
    return shown


def token_metrics(p: Prediction, end: float) -> dict[str, float | int]:
    """What Replicate's official language models add to `metrics` once a prediction ended."""
    written = tokens_written(p, end)
    predict_time = end - p.start_at
    one_token = 1 / p.tokens_per_s
    return {
        "input_token_count": p.input_tokens,
        "output_token_count": written,
        # Over at least one token's time: a text written all at once is not infinitely fast.
        "tokens_per_second": round(written / max(predict_time, one_token), 3),
        "time_to_first_token": round(min(one_token, predict_time), 6) if written else 0.0,
    }


def render(p: Prediction, now: float) -> dict[str, Any]:
    """The prediction as Replicate's API shows it at `now`."""
    status = status_at(p, now)
    end, _ = ending(p)
    terminal = now >= end
    is_started = started(p, now)
    chunks = chunks_at(p, now)
    body: dict[str, Any] = {
        "id": p.id,
        "model": p.model,
        "version": p.version,
        "input": {} if p.data_removed else p.input,
        "logs": logs_at(p, now),
        "output": chunks or None,
        "data_removed": p.data_removed,
        "error": MODEL_ERROR if status == "failed" else None,
        "status": status,
        "source": "api",
        "created_at": iso(p.created_at),
        "urls": urls(p),
        "metrics": {},
    }
    if p.webhook is not None:
        # Replicate echoes the creation's webhook settings in every prediction it shows: this is
        # how a receiver learns, from the signed body, which URL (and so which job) it serves.
        body["webhook"] = p.webhook
        body["webhook_events_filter"] = [e for e in _WEBHOOK_EVENTS if e in p.events]
    # `started_at` and `completed_at` are non-nullable strings in the OpenAPI description, and
    # Replicate leaves them out until they happen (a `starting` prediction has neither).
    if is_started:
        body["started_at"] = iso(p.start_at)
    if p.deadline_at is not None:
        body["deadline"] = iso(p.deadline_at)
    if terminal:
        body["completed_at"] = iso(end)
        body["metrics"]["total_time"] = round(end - p.created_at, 6)
        if is_started:
            body["metrics"]["predict_time"] = round(end - p.start_at, 6)
            if p.streams:
                body["metrics"].update(token_metrics(p, end))
    return body
