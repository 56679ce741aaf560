"""The statements that write a batch: every row change and history entry of a batch in one
statement (one round trip), also guarded by the versions the batch was judged against; and
the per-row statements of a locking transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from job_store.adapters.columns import JOB_COLUMNS, encode_jsonb, pg_optional_text, pg_text
from job_store.model import HistoryEntry, JobRow

INSERT: Final = (
    f"INSERT INTO jobs ({JOB_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,"
    " $19)"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)
# Owner, type, input and creation time never change after `requested`.
UPDATE: Final = """
UPDATE jobs SET status = $2, version = $3, output = $4, error_code = $5, error_message = $6,
    prediction_id = $7, cancel_requested = $8, updated_at = $9, submitted_at = $10,
    started_at = $11, completed_at = $12, attempts = $13
WHERE id = $1
"""
INSERT_HISTORY: Final = """
INSERT INTO job_history (job_id, seq, kind, occurred_at, source, message_id, summary)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
# A batch's every row change and history entry in one statement (one round trip): rows to
# update, rows to insert (none written over an existing id), and the entries of the jobs whose
# row was written. jsonb travels as text, cast here, so no array-of-jsonb codec is needed.
# `{checks}` and `{guard}` are empty for `WRITE`, which answers how many rows were inserted
# (so a lost insert race shows and the caller's transaction rolls back).
_WRITE_TEMPLATE: Final = f"""
WITH {{checks}}updated AS (
    UPDATE jobs AS j SET status = u.status, version = u.version, output = u.output,
        error_code = u.error_code, error_message = u.error_message,
        prediction_id = u.prediction_id, cancel_requested = u.cancel_requested,
        updated_at = u.updated_at, submitted_at = u.submitted_at, started_at = u.started_at,
        completed_at = u.completed_at, attempts = u.attempts
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::bool[], $9::timestamptz[], $10::timestamptz[],
                $11::timestamptz[], $12::timestamptz[], $13::int[])
        AS u(id, status, version, output, error_code, error_message, prediction_id,
             cancel_requested, updated_at, submitted_at, started_at, completed_at, attempts)
    WHERE j.id = u.id {{guard}}
    RETURNING j.id
), inserted AS (
    INSERT INTO jobs ({JOB_COLUMNS})
    SELECT id, user_id, type, status, version, input::jsonb, output, error_code, error_message,
        prediction_id, cancel_requested, created_at, updated_at, submitted_at, started_at,
        completed_at, deadline_at, attempts, input_truncated
    FROM unnest($14::uuid[], $15::text[], $16::text[], $17::text[], $18::int[], $19::text[],
                $20::text[], $21::text[], $22::text[], $23::text[], $24::bool[],
                $25::timestamptz[], $26::timestamptz[], $27::timestamptz[], $28::timestamptz[],
                $29::timestamptz[], $30::timestamptz[], $31::int[], $32::bool[])
        AS i(id, user_id, type, status, version, input, output, error_code, error_message,
             prediction_id, cancel_requested, created_at, updated_at, submitted_at, started_at,
             completed_at, deadline_at, attempts, input_truncated)
    WHERE true {{guard}}
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), history AS (
    INSERT INTO job_history (job_id, seq, kind, occurred_at, source, message_id, summary)
    SELECT h.job_id, h.seq, h.kind, h.occurred_at, h.source, h.message_id, h.summary::jsonb
    FROM unnest($33::uuid[], $34::int[], $35::text[], $36::timestamptz[], $37::text[],
                $38::text[], $39::text[])
        AS h(job_id, seq, kind, occurred_at, source, message_id, summary)
    WHERE h.job_id IN (SELECT id FROM updated UNION ALL SELECT id FROM inserted)
)
"""
WRITE: Final = _WRITE_TEMPLATE.format(checks="", guard="") + "SELECT count(*) FROM inserted"
# The same for a batch judged against rows read without a lock: it writes only if every job
# is still at the version it was read at (NULL: still absent), checked under row locks the
# statement takes itself, so it is all or nothing without BEGIN and COMMIT round trips. A lost
# insert race (the job inserted by another writer after this statement's snapshot) divides by
# zero, which undoes the whole statement.
WRITE_UNLESS_CHANGED: Final = _WRITE_TEMPLATE.format(
    checks="""expected AS (
    SELECT * FROM unnest($40::uuid[], $41::int[]) AS e(id, version)
), current AS (
    SELECT j.id, j.version FROM jobs AS j JOIN expected USING (id) FOR UPDATE OF j
), stale AS (
    SELECT count(*) AS n FROM expected AS e LEFT JOIN current AS c USING (id)
    WHERE c.version IS DISTINCT FROM e.version
), """,
    guard="AND (SELECT n FROM stale) = 0",
) + (
    "SELECT (SELECT n FROM stale) AS stale,"
    " 1 / ((SELECT n FROM stale) > 0"
    " OR (SELECT count(*) FROM inserted) = cardinality($14::uuid[]))::int AS whole"
)
# `WRITE_UNLESS_CHANGED` for a batch that inserts nothing (most batches: every event of a job
# after its `requested`): 22 parameters instead of 41, no insert to plan, no race to catch.
UPDATE_UNLESS_CHANGED: Final = """
WITH expected AS (
    SELECT * FROM unnest($21::uuid[], $22::int[]) AS e(id, version)
), current AS (
    SELECT j.id, j.version FROM jobs AS j JOIN expected USING (id) FOR UPDATE OF j
), stale AS (
    SELECT count(*) AS n FROM expected AS e LEFT JOIN current AS c USING (id)
    WHERE c.version IS DISTINCT FROM e.version
), updated AS (
    UPDATE jobs AS j SET status = u.status, version = u.version, output = u.output,
        error_code = u.error_code, error_message = u.error_message,
        prediction_id = u.prediction_id, cancel_requested = u.cancel_requested,
        updated_at = u.updated_at, submitted_at = u.submitted_at, started_at = u.started_at,
        completed_at = u.completed_at, attempts = u.attempts
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::bool[], $9::timestamptz[], $10::timestamptz[],
                $11::timestamptz[], $12::timestamptz[], $13::int[])
        AS u(id, status, version, output, error_code, error_message, prediction_id,
             cancel_requested, updated_at, submitted_at, started_at, completed_at, attempts)
    WHERE j.id = u.id AND (SELECT n FROM stale) = 0
    RETURNING j.id
), history AS (
    INSERT INTO job_history (job_id, seq, kind, occurred_at, source, message_id, summary)
    SELECT h.job_id, h.seq, h.kind, h.occurred_at, h.source, h.message_id, h.summary::jsonb
    FROM unnest($14::uuid[], $15::int[], $16::text[], $17::timestamptz[], $18::text[],
                $19::text[], $20::text[])
        AS h(job_id, seq, kind, occurred_at, source, message_id, summary)
    WHERE h.job_id IN (SELECT id FROM updated)
)
SELECT (SELECT n FROM stale) AS stale
"""
# Locked in id order, so writers with overlapping batches queue instead of deadlocking.
LOCK_MANY: Final = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
)
DELETE: Final = "DELETE FROM jobs WHERE id = $1"
DELETE_HISTORY: Final = "DELETE FROM job_history WHERE job_id = $1"


def write_arguments(
    updates: Sequence[JobRow], inserts: Sequence[JobRow], entries: Sequence[HistoryEntry]
) -> list[list[Any]]:
    """`WRITE`'s 39 arrays: a column each, for the rows to update, to insert, and the entries."""
    return [
        [r.job_id for r in updates],
        [r.status for r in updates],
        [r.version for r in updates],
        [pg_optional_text(r.output) for r in updates],
        [pg_optional_text(r.error_code) for r in updates],
        [pg_optional_text(r.error_message) for r in updates],
        [pg_optional_text(r.prediction_id) for r in updates],
        [r.cancel_requested for r in updates],
        [r.updated_at for r in updates],
        [r.submitted_at for r in updates],
        [r.started_at for r in updates],
        [r.completed_at for r in updates],
        [r.attempts for r in updates],
        [r.job_id for r in inserts],
        [pg_text(r.user_id) for r in inserts],
        [pg_text(r.job_type) for r in inserts],
        [r.status for r in inserts],
        [r.version for r in inserts],
        [encode_jsonb(r.input) for r in inserts],
        [pg_optional_text(r.output) for r in inserts],
        [pg_optional_text(r.error_code) for r in inserts],
        [pg_optional_text(r.error_message) for r in inserts],
        [pg_optional_text(r.prediction_id) for r in inserts],
        [r.cancel_requested for r in inserts],
        [r.created_at for r in inserts],
        [r.updated_at for r in inserts],
        [r.submitted_at for r in inserts],
        [r.started_at for r in inserts],
        [r.completed_at for r in inserts],
        [r.deadline_at for r in inserts],
        [r.attempts for r in inserts],
        [r.input_truncated for r in inserts],
        [e.job_id for e in entries],
        [e.seq for e in entries],
        [e.kind for e in entries],
        [e.occurred_at for e in entries],
        [pg_text(e.source) for e in entries],
        [pg_text(e.message_id) for e in entries],
        [encode_jsonb(e.summary) for e in entries],
    ]
