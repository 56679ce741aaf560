"""The rows of running jobs this process read or wrote last, kept so that the next event of a
job needs no read before its write; and a row as Postgres would give it back."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime

from job_store.adapters.columns import pg_optional_text
from job_store.model import JobRow
from jobs_proto.status import is_terminal


def _utc(moment: datetime) -> datetime:
    # Postgres hands timestamptz back in UTC, whatever offset it was written with.
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _optional_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else _utc(moment)


def as_read_back(row: JobRow) -> JobRow:
    """`row` as reading it back from Postgres gives it, for a row whose owner, type and input
    were themselves read from Postgres: text without NUL, timestamps in UTC."""
    return replace(
        row,
        output=pg_optional_text(row.output),
        error_code=pg_optional_text(row.error_code),
        error_message=pg_optional_text(row.error_message),
        prediction_id=pg_optional_text(row.prediction_id),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        submitted_at=_optional_utc(row.submitted_at),
        started_at=_optional_utc(row.started_at),
        completed_at=_optional_utc(row.completed_at),
        deadline_at=_optional_utc(row.deadline_at),
    )


class RowCache:
    """The rows of running jobs as this process last read or wrote them, at most `size`, the
    least recently stored dropped first.

    Safe to judge an event against: `write_unless_changed` writes only while the job is still
    at the cached row's version, and every change of a row bumps its version, so a row another
    replica (or a purge) changed since is caught there, evicted, and read again. An event judged
    to change nothing against a kept row writes nothing and is not checked, which is sound for
    the same reason it is for a row just read: what makes an event a no-op for a running job (a
    bound prediction, a recorded start or submission, a requested cancel) never goes back, and
    terminal rows are not kept. Rows are kept
    only as Postgres would give them back: read from it, or updated from such a row
    (`as_read_back`); a freshly inserted row is not kept (its input has not been through jsonb
    yet), nor a terminal one (no event changes it again, and its output may be large).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._rows: dict[uuid.UUID, JobRow] = {}

    def get(self, job_id: uuid.UUID) -> JobRow | None:
        return self._rows.get(job_id)

    def keep(self, row: JobRow) -> None:
        """Keep `row` (already as read back), or forget its job if it is terminal."""
        self._rows.pop(row.job_id, None)
        if self._size <= 0 or is_terminal(row.status):
            return
        self._rows[row.job_id] = row
        if len(self._rows) > self._size:
            del self._rows[next(iter(self._rows))]

    def forget(self, job_ids: Collection[uuid.UUID]) -> None:
        for job_id in job_ids:
            self._rows.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._rows)
