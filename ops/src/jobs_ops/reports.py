"""What each subcommand finds, as plain Structs: `--json` prints them as they are, and the text
form is rendered from them (`render`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from jobs_proto.api import JobHistoryEntry, StuckJob


class Report(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of everything `jobsctl --json` prints."""


class StreamEvent(Report, frozen=True):
    """One message of a job in the `JOBS` stream."""

    seq: int
    time: datetime
    kind: str
    subject: str
    msg_id: str | None
    body: str


class PredictionReport(Report, frozen=True):
    """A prediction as Replicate shows it; `problem` says why it could not be read."""

    prediction_id: str
    status: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    data_removed: bool = False
    metrics: dict[str, Any] | None = None
    problem: str | None = None


class JobReport(Report, frozen=True):
    """`jobsctl job`: the job as the store has it, its history, predictions and stream events.

    `source` says where the job came from: `job-store` (asked over NATS), `postgres` (read
    directly), or null when neither knows it."""

    job_id: uuid.UUID
    source: Literal["job-store", "postgres"] | None
    job: dict[str, Any] | None
    history: list[JobHistoryEntry] | None
    predictions: list[PredictionReport]
    events: list[StreamEvent]
    notes: list[str]


StuckReason = Literal[
    "no_prediction",
    "prediction_running",
    "webhook_never_came",
    "prediction_unknown",
    "prediction_unchecked",
]


class StuckEntry(Report, frozen=True):
    """A job not yet terminal past its deadline or the age asked for, and the likely why."""

    job: StuckJob
    age_s: float
    past_deadline: bool
    reason: StuckReason
    why: str
    prediction: PredictionReport | None = None


class StuckReport(Report, frozen=True):
    older_than_s: float
    items: list[StuckEntry]
    # More jobs matched than one read returned: there are more stuck jobs than listed.
    truncated: bool


class ParkedMessage(Report, frozen=True):
    """A dead letter of `<JOBS>_PARKED`; `replayable` when its original subject is a job event
    of this deployment (a webhook naming no job has nowhere to go back to)."""

    seq: int
    time: datetime
    reason: str | None
    original_subject: str | None
    detail: str | None
    msg_id: str | None
    body: str
    replayable: bool


class ParkedReport(Report, frozen=True):
    stream: str
    items: list[ParkedMessage]


class Replayed(Report, frozen=True):
    """What replaying one parked message did: `replayed` (stored again under its original
    subject, applied, and removed from the parked stream), `kept` (published, but not applied:
    still parked), or `skipped` (not published: it has nowhere to go back to)."""

    seq: int
    outcome: Literal["replayed", "kept", "skipped"]
    subject: str | None
    detail: str = ""


class ReplayReport(Report, frozen=True):
    stream: str
    items: list[Replayed]


class PeerHealth(Report, frozen=True):
    name: str
    current: bool
    offline: bool
    lag: int
    active_s: float | None


class ConsumerHealth(Report, frozen=True):
    name: str
    durable: bool
    pending: int
    ack_pending: int
    max_ack_pending: int
    redelivered: int
    waiting: int
    last_active: datetime | None
    problems: list[str]


class StreamHealth(Report, frozen=True):
    """A stream (a KV bucket is `KV_<bucket>`, an object store `OBJ_<bucket>`)."""

    name: str
    replicas: int
    leader: str | None
    peers: list[PeerHealth]
    messages: int
    bytes: int
    max_bytes: int
    consumers: list[ConsumerHealth]
    problems: list[str]


class HealthReport(Report, frozen=True):
    healthy: bool
    streams: list[StreamHealth]
    # Missing streams the services create at start-up (the system never started, or a name is
    # wrong).
    missing: list[str]
