"""The `jobs` and `job_history` columns as Postgres holds them: which are selected, how text
is made storable, and how a record becomes a `JobRow`, a `JobSummary` or a `HistoryEntry`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeAlias, cast

import asyncpg
import msgspec

from job_store.model import HistoryEntry, JobRow
from jobs_proto.api import JobSummary
from jobs_proto.events import JobError
from jobs_proto.status import JobStatus, is_terminal

# A row as a query answers it, by column name; a mapping too, so a test double can read its
# rows back through the same functions.
Record: TypeAlias = "asyncpg.Record | Mapping[str, Any]"


JOB_COLUMNS: Final = (
    "id, user_id, type, status, version, input, output, error_code, error_message,"
    " prediction_id, cancel_requested, created_at, updated_at, submitted_at, started_at,"
    " completed_at, deadline_at, attempts, input_truncated, price_input_token_usd,"
    " price_output_token_usd, price_predict_second_usd, reserved_micros, predict_time_s,"
    " input_tokens, output_tokens, cost_micros"
)
SELECT_JOB: Final = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"


def pg_text(value: str) -> str:
    # Postgres text and jsonb cannot hold NUL; stored as-is it would fail the event forever.
    return value.replace("\x00", "\ufffd")


def pg_optional_text(value: str | None) -> str | None:
    return None if value is None else pg_text(value)


def _pg_json(value: Any) -> Any:
    if isinstance(value, str):
        return pg_text(value)
    if isinstance(value, dict):
        return {pg_text(str(k)): _pg_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pg_json(v) for v in value]
    return value


def encode_jsonb(value: Any) -> str:
    return msgspec.json.encode(_pg_json(value)).decode()


def row_from_record(record: Record) -> JobRow:
    return JobRow(
        job_id=record["id"],
        user_id=record["user_id"],
        job_type=record["type"],
        status=cast(JobStatus, record["status"]),
        version=record["version"],
        input=record["input"],
        output=record["output"],
        error_code=record["error_code"],
        error_message=record["error_message"],
        prediction_id=record["prediction_id"],
        cancel_requested=record["cancel_requested"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        submitted_at=record["submitted_at"],
        started_at=record["started_at"],
        completed_at=record["completed_at"],
        deadline_at=record["deadline_at"],
        # Rows from before migration 0002 have nulls here.
        attempts=record["attempts"] or 0,
        input_truncated=bool(record["input_truncated"]),
        price_input_token_usd=record["price_input_token_usd"],
        price_output_token_usd=record["price_output_token_usd"],
        price_predict_second_usd=record["price_predict_second_usd"],
        reserved_micros=record["reserved_micros"],
        predict_time_s=record["predict_time_s"],
        input_tokens=record["input_tokens"],
        output_tokens=record["output_tokens"],
        cost_micros=record["cost_micros"],
    )


def summary_from_record(record: Record) -> JobSummary:
    code = record["error_code"]
    return JobSummary(
        job_id=record["id"],
        type=record["type"],
        status=cast(JobStatus, record["status"]),
        version=record["version"],
        error=None if code is None else JobError(code=code, message=record["error_message"] or ""),
        prediction_id=record["prediction_id"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        completed_at=record["completed_at"],
        cancel_requested=record["cancel_requested"] and not is_terminal(record["status"]),
    )


def history_from_record(record: Record) -> HistoryEntry:
    return HistoryEntry(
        job_id=record["job_id"],
        seq=record["seq"],
        kind=record["kind"],
        occurred_at=record["occurred_at"],
        recorded_at=record["recorded_at"],
        source=record["source"],
        message_id=record["message_id"],
        summary=record["summary"],
    )
