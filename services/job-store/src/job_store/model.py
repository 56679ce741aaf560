"""A job as the store keeps it (one row of `jobs`, one entry of `job_history`), and how its
owner sees it on the wire."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from jobs_proto.api import JobUsage, JobView, StuckJob
from jobs_proto.events import JobError
from jobs_proto.spend import Metrics, Price, micros_to_usd
from jobs_proto.status import JobStatus, is_terminal


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRow:
    """Every column of a `jobs` row; the transition function returns a new one per change."""

    job_id: uuid.UUID
    user_id: str
    job_type: str
    status: JobStatus
    version: int
    input: dict[str, Any]
    output: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    prediction_id: str | None = None
    cancel_requested: bool = False
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # When the job type's deadline passes (None for jobs requested before migration 0002).
    deadline_at: datetime | None = None
    # Predictions created for the job so far: the highest `JobSubmitted.attempt` applied.
    attempts: int = 0
    # The stored input is a cut-down copy: the one sent was over
    # `jobs_proto.pending.MAX_INPUT_BYTES`.
    input_truncated: bool = False
    # The price the job was admitted with (None: not charged that way, or unknown).
    price_input_token_usd: Decimal | None = None
    price_output_token_usd: Decimal | None = None
    price_predict_second_usd: Decimal | None = None
    # What admitting the job reserved against its budgets (None: nothing).
    reserved_micros: int | None = None
    # What the final prediction's `metrics` reported, and what that cost: all None until the
    # job ends, then `cost_micros` is set (0 for a job that never ran).
    predict_time_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_micros: int | None = None

    @property
    def error(self) -> JobError | None:
        if self.error_code is None:
            return None
        return JobError(code=self.error_code, message=self.error_message or "")

    @property
    def price(self) -> Price:
        return Price(
            per_input_token_usd=self.price_input_token_usd,
            per_output_token_usd=self.price_output_token_usd,
            per_predict_second_usd=self.price_predict_second_usd,
        )

    @property
    def metrics(self) -> Metrics:
        return Metrics(
            predict_time_s=self.predict_time_s,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )

    @property
    def usage(self) -> JobUsage | None:
        """What the job used and cost, once it ended."""
        if self.cost_micros is None:
            return None
        return JobUsage(
            predict_time_s=self.predict_time_s,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=micros_to_usd(self.cost_micros),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    """One applied change of a job (a row of `job_history`); `seq` is the version it produced.

    `recorded_at` is None until the store has written the entry (Postgres sets it on insert).
    """

    job_id: uuid.UUID
    seq: int
    kind: str
    occurred_at: datetime
    source: str
    message_id: str
    summary: dict[str, Any]
    recorded_at: datetime | None = None


def job_view(row: JobRow) -> JobView:
    """The job as its owner sees it (`GET /api/jobs/{jobId}`, the change announcements)."""
    return JobView(
        job_id=row.job_id,
        type=row.job_type,
        status=row.status,
        version=row.version,
        input=row.input,
        output=row.output,
        error=row.error,
        prediction_id=row.prediction_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
        usage=row.usage,
        cancel_requested=row.cancel_requested and not is_terminal(row.status),
    )


def stuck_job(row: JobRow) -> StuckJob:
    """The job as the reconciler needs it: what was asked of Replicate, and since when (for a
    job still `pending`: since it was admitted)."""
    pending = row.status == "pending"
    return StuckJob(
        job_id=row.job_id,
        user_id=row.user_id,
        type=row.job_type,
        version=row.version,
        prediction_id=row.prediction_id,
        attempts=row.attempts,
        cancel_requested=row.cancel_requested,
        processing_since=row.created_at
        if pending
        else row.submitted_at or row.started_at or row.updated_at,
        deadline_at=row.deadline_at,
        status="pending" if pending else "processing",
    )
