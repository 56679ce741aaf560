"""A job as the store keeps it (one row of `jobs`), and how its owner sees it on the wire."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs_proto.api import JobView
from jobs_proto.events import JobError
from jobs_proto.status import JobStatus


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

    @property
    def error(self) -> JobError | None:
        if self.error_code is None:
            return None
        return JobError(code=self.error_code, message=self.error_message or "")


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
    )
