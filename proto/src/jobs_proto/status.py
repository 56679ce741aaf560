"""Job and prediction statuses, and the contract's table from a finished prediction to a job."""

from __future__ import annotations

from typing import Final, Literal

JobStatus = Literal["pending", "processing", "succeeded", "failed", "canceled"]
PredictionStatus = Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
FinalPredictionStatus = Literal["succeeded", "failed", "canceled", "aborted"]

JOB_STATUSES: Final[tuple[JobStatus, ...]] = (
    "pending",
    "processing",
    "succeeded",
    "failed",
    "canceled",
)
TERMINAL_JOB_STATUSES: Final[frozenset[JobStatus]] = frozenset({"succeeded", "failed", "canceled"})
FINAL_PREDICTION_STATUSES: Final[frozenset[PredictionStatus]] = frozenset(
    {"succeeded", "failed", "canceled", "aborted"}
)

# Error codes a failed job can carry; readers must accept codes they do not know.
DEADLINE_EXCEEDED: Final = "deadline_exceeded"
RESULT_EXPIRED: Final = "result_expired"
PREDICTION_FAILED: Final = "prediction_failed"
PREDICTION_REJECTED: Final = "prediction_rejected"
ATTEMPTS_EXHAUSTED: Final = "attempts_exhausted"


def is_terminal(status: JobStatus) -> bool:
    return status in TERMINAL_JOB_STATUSES


def job_outcome(
    prediction_status: FinalPredictionStatus,
    *,
    cancel_requested: bool,
    data_removed: bool,
    has_output: bool,
) -> tuple[JobStatus, str | None]:
    """The job status and error code that a finished prediction gives, per the contract's table.

    A prediction canceled without the user asking was canceled by its deadline (`Cancel-After`);
    `aborted` means the deadline passed before it even started.
    """
    if prediction_status == "succeeded":
        if data_removed and not has_output:
            return "failed", RESULT_EXPIRED
        return "succeeded", None
    if prediction_status == "failed":
        return "failed", PREDICTION_FAILED
    if prediction_status == "canceled" and cancel_requested:
        return "canceled", None
    return "failed", DEADLINE_EXCEEDED
