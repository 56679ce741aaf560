"""`RowCache` and `as_read_back`: the pure parts of the rows a job-store keeps in hand."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta, timezone

from job_store.adapters.row_cache import RowCache, as_read_back
from job_store.model import JobRow
from jobs_testkit.events import T0


def _row(job_id: uuid.UUID) -> JobRow:
    return JobRow(
        job_id=job_id,
        user_id="u",
        job_type="script_generation",
        status="processing",
        version=2,
        input={"topic": "t"},
        created_at=T0,
        updated_at=T0,
    )


def test_the_cache_keeps_the_latest_rows_and_never_a_terminal_one() -> None:
    cache = RowCache(2)
    rows = [_row(uuid.uuid4()) for _ in range(3)]
    for row in rows:
        cache.keep(row)
    assert [cache.get(r.job_id) for r in rows] == [None, rows[1], rows[2]]
    cache.keep(replace(rows[1], status="succeeded"))
    assert cache.get(rows[1].job_id) is None
    assert len(cache) == 1
    cache.forget([rows[2].job_id])
    assert len(cache) == 0


def test_as_read_back_puts_times_in_utc_and_text_without_nul() -> None:
    row = replace(_row(uuid.uuid4()), error_message="a\x00b", output=None)
    row = replace(row, updated_at=row.updated_at.astimezone(timezone(timedelta(hours=-5))))
    back = as_read_back(row)
    assert back.updated_at == row.updated_at
    assert back.updated_at.utcoffset() == timedelta(0)
    assert back.error_message == "a\ufffdb"
    assert back.output is None
