"""Job events with readable defaults and round times, for any service's tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs_proto.events import (
    JobCancelRequested,
    JobCompleted,
    JobError,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSubmitted,
)
from jobs_proto.status import FinalPredictionStatus

OWNER = "user-1"
PREDICTION = "pred-1"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """`seconds` after T0: events in tests happen at round, readable times."""
    return T0 + timedelta(seconds=seconds)


def requested(
    job_id: uuid.UUID, *, s: float = 0, user: str = OWNER, input: dict[str, Any] | None = None
) -> JobRequested:
    return JobRequested(
        job_id=job_id,
        occurred_at=at(s),
        user_id=user,
        job_type="script_generation",
        input={"topic": "tides"} if input is None else input,
    )


def submitted(job_id: uuid.UUID, *, s: float = 1, prediction: str = PREDICTION) -> JobSubmitted:
    return JobSubmitted(job_id=job_id, occurred_at=at(s), prediction_id=prediction)


def started(job_id: uuid.UUID, *, s: float = 2, prediction: str = PREDICTION) -> JobStarted:
    return JobStarted(job_id=job_id, occurred_at=at(s), prediction_id=prediction, webhook_id="w1")


def completed(
    job_id: uuid.UUID,
    status: FinalPredictionStatus = "succeeded",
    *,
    s: float = 3,
    prediction: str = PREDICTION,
    output: str | None = None,
    error: str | None = None,
    data_removed: bool = False,
) -> JobCompleted:
    if output is None and status == "succeeded" and not data_removed:
        output = "Waves rise and fall."
    return JobCompleted(
        job_id=job_id,
        occurred_at=at(s),
        prediction_id=prediction,
        prediction_status=status,
        output=output,
        error=error,
        data_removed=data_removed,
    )


def failed(job_id: uuid.UUID, *, s: float = 3, code: str = "attempts_exhausted") -> JobFailed:
    return JobFailed(
        job_id=job_id,
        occurred_at=at(s),
        error=JobError(code=code, message="Replicate kept refusing the prediction."),
    )


def cancel(job_id: uuid.UUID, *, s: float = 2.5, user: str = OWNER) -> JobCancelRequested:
    return JobCancelRequested(job_id=job_id, occurred_at=at(s), user_id=user)
