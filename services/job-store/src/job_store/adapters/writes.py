"""The statements that write a batch: every row change and history entry of a batch in one
statement (one round trip), also guarded by the versions the batch was judged against; and
the per-row statements of a locking transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from job_store.adapters.columns import JOB_COLUMNS, encode_jsonb, pg_optional_text, pg_text
from job_store.model import HistoryEntry, JobRow

# The columns a batch writes, with the Postgres type of their arrays: those an update sets
# (owner, type, input, creation time, price and reservation never change after `requested`),
# those an insert sets (every column), and a history entry's. jsonb travels as text, cast
# where it is inserted, so no array-of-jsonb codec is needed.
_UPDATED: Final = (
    ("id", "uuid"),
    ("status", "text"),
    ("version", "int"),
    ("output", "text"),
    ("error_code", "text"),
    ("error_message", "text"),
    ("prediction_id", "text"),
    ("cancel_requested", "bool"),
    ("updated_at", "timestamptz"),
    ("submitted_at", "timestamptz"),
    ("started_at", "timestamptz"),
    ("completed_at", "timestamptz"),
    ("attempts", "int"),
    ("predict_time_s", "float8"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("cost_micros", "bigint"),
)
_INSERTED: Final = (
    ("id", "uuid"),
    ("user_id", "text"),
    ("type", "text"),
    ("status", "text"),
    ("version", "int"),
    ("input", "text"),
    ("output", "text"),
    ("error_code", "text"),
    ("error_message", "text"),
    ("prediction_id", "text"),
    ("cancel_requested", "bool"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("submitted_at", "timestamptz"),
    ("started_at", "timestamptz"),
    ("completed_at", "timestamptz"),
    ("deadline_at", "timestamptz"),
    ("attempts", "int"),
    ("input_truncated", "bool"),
    ("price_input_token_usd", "numeric"),
    ("price_output_token_usd", "numeric"),
    ("price_predict_second_usd", "numeric"),
    ("reserved_micros", "bigint"),
    ("predict_time_s", "float8"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("cost_micros", "bigint"),
)
_ENTRY: Final = (
    ("job_id", "uuid"),
    ("seq", "int"),
    ("kind", "text"),
    ("occurred_at", "timestamptz"),
    ("source", "text"),
    ("message_id", "text"),
    ("summary", "text"),
)
assert ", ".join(name for name, _ in _INSERTED) == JOB_COLUMNS


def _placeholders(count: int, first: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(first, first + count))


def _unnest(columns: tuple[tuple[str, str], ...], first: int, alias: str) -> str:
    """`unnest($first::type[], ...) AS alias(name, ...)`: one array parameter per column."""
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, (_, kind) in enumerate(columns))
    return f"unnest({arrays}) AS {alias}({', '.join(name for name, _ in columns)})"


def _set(alias: str) -> str:
    return ", ".join(f"{name} = {alias}.{name}" for name, _ in _UPDATED[1:])


_INSERTED_VALUES: Final = ", ".join(
    "input::jsonb" if name == "input" else name for name, _ in _INSERTED
)
# Where each part's arrays start among `write_arguments`.
_U: Final = 1
_I: Final = _U + len(_UPDATED)
_E: Final = _I + len(_INSERTED)
_CHECKS: Final = _E + len(_ENTRY)
# The same for a batch that inserts nothing: the updates' and the entries' arrays only.
_E_ONLY: Final = _U + len(_UPDATED)
_CHECKS_ONLY: Final = _E_ONLY + len(_ENTRY)

INSERT: Final = (
    f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({_placeholders(len(_INSERTED))})"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)
UPDATE: Final = (
    "UPDATE jobs SET "
    + ", ".join(f"{name} = ${i}" for i, (name, _) in enumerate(_UPDATED[1:], start=2))
    + " WHERE id = $1"
)
INSERT_HISTORY: Final = f"""
INSERT INTO job_history ({", ".join(name for name, _ in _ENTRY)})
VALUES ({_placeholders(len(_ENTRY))})
"""


def _history(first: int, written: str) -> str:
    return f"""history AS (
    INSERT INTO job_history ({", ".join(name for name, _ in _ENTRY)})
    SELECT h.job_id, h.seq, h.kind, h.occurred_at, h.source, h.message_id, h.summary::jsonb
    FROM {_unnest(_ENTRY, first, "h")}
    WHERE h.job_id IN ({written})
)"""


def _checks(first: int) -> str:
    return f"""expected AS (
    SELECT * FROM unnest(${first}::uuid[], ${first + 1}::int[]) AS e(id, version)
), current AS (
    SELECT j.id, j.version FROM jobs AS j JOIN expected USING (id) FOR UPDATE OF j
), stale AS (
    SELECT count(*) AS n FROM expected AS e LEFT JOIN current AS c USING (id)
    WHERE c.version IS DISTINCT FROM e.version
), """


def _updated(guard: str) -> str:
    return f"""updated AS (
    UPDATE jobs AS j SET {_set("u")}
    FROM {_unnest(_UPDATED, _U, "u")}
    WHERE j.id = u.id {guard}
    RETURNING j.id
)"""


# A batch's every row change and history entry in one statement (one round trip): rows to
# update, rows to insert (none written over an existing id), and the entries of the jobs whose
# row was written. `{checks}` and `{guard}` are empty for `WRITE`, which answers how many rows
# were inserted (so a lost insert race shows and the caller's transaction rolls back).
#
# The budgets and usage of the jobs written are kept by the triggers of migration 0004, in
# this same statement: a job's end and its settlement commit together.
def _write(checks: str, guard: str) -> str:
    return f"""
WITH {checks}{_updated(guard)}, inserted AS (
    INSERT INTO jobs ({JOB_COLUMNS})
    SELECT {_INSERTED_VALUES}
    FROM {_unnest(_INSERTED, _I, "i")}
    WHERE true {guard}
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), {_history(_E, "SELECT id FROM updated UNION ALL SELECT id FROM inserted")}
"""


WRITE: Final = _write("", "") + "SELECT count(*) FROM inserted"
# The same for a batch judged against rows read without a lock: it writes only if every job
# is still at the version it was read at (NULL: still absent), checked under row locks the
# statement takes itself, so it is all or nothing without BEGIN and COMMIT round trips. A lost
# insert race (the job inserted by another writer after this statement's snapshot) divides by
# zero, which undoes the whole statement.
WRITE_UNLESS_CHANGED: Final = _write(_checks(_CHECKS), "AND (SELECT n FROM stale) = 0") + (
    "SELECT (SELECT n FROM stale) AS stale,"
    " 1 / ((SELECT n FROM stale) > 0"
    f" OR (SELECT count(*) FROM inserted) = cardinality(${_I}::uuid[]))::int AS whole"
)
# `WRITE_UNLESS_CHANGED` for a batch that inserts nothing (most batches: every event of a job
# after its `requested`): fewer parameters, no insert to plan, no race to catch.
UPDATE_UNLESS_CHANGED: Final = f"""
WITH {_checks(_CHECKS_ONLY)}{_updated("AND (SELECT n FROM stale) = 0")},
{_history(_E_ONLY, "SELECT id FROM updated")}
SELECT (SELECT n FROM stale) AS stale
"""
# Locked in id order, so writers with overlapping batches queue instead of deadlocking.
LOCK_MANY: Final = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
)
DELETE: Final = "DELETE FROM jobs WHERE id = $1"
DELETE_HISTORY: Final = "DELETE FROM job_history WHERE job_id = $1"


def updated_values(r: JobRow) -> list[Any]:
    """A changed row's columns in `UPDATE`'s order."""
    return [
        r.job_id,
        r.status,
        r.version,
        pg_optional_text(r.output),
        pg_optional_text(r.error_code),
        pg_optional_text(r.error_message),
        pg_optional_text(r.prediction_id),
        r.cancel_requested,
        r.updated_at,
        r.submitted_at,
        r.started_at,
        r.completed_at,
        r.attempts,
        r.predict_time_s,
        r.input_tokens,
        r.output_tokens,
        r.cost_micros,
    ]


def inserted_values(r: JobRow) -> list[Any]:
    """A new row's columns in `JOB_COLUMNS` order, as `INSERT` and `WRITE` take them."""
    return [
        r.job_id,
        pg_text(r.user_id),
        pg_text(r.job_type),
        r.status,
        r.version,
        encode_jsonb(r.input),
        pg_optional_text(r.output),
        pg_optional_text(r.error_code),
        pg_optional_text(r.error_message),
        pg_optional_text(r.prediction_id),
        r.cancel_requested,
        r.created_at,
        r.updated_at,
        r.submitted_at,
        r.started_at,
        r.completed_at,
        r.deadline_at,
        r.attempts,
        r.input_truncated,
        r.price_input_token_usd,
        r.price_output_token_usd,
        r.price_predict_second_usd,
        r.reserved_micros,
        r.predict_time_s,
        r.input_tokens,
        r.output_tokens,
        r.cost_micros,
    ]


def _entry_values(e: HistoryEntry) -> list[Any]:
    return [
        e.job_id,
        e.seq,
        e.kind,
        e.occurred_at,
        pg_text(e.source),
        pg_text(e.message_id),
        encode_jsonb(e.summary),
    ]


def _arrays(rows: list[list[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


def write_arguments(
    updates: Sequence[JobRow], inserts: Sequence[JobRow], entries: Sequence[HistoryEntry]
) -> list[list[Any]]:
    """`WRITE`'s arrays: a column each, for the rows to update, to insert, and the entries."""
    return (
        _arrays([updated_values(r) for r in updates], len(_UPDATED))
        + _arrays([inserted_values(r) for r in inserts], len(_INSERTED))
        + _arrays([_entry_values(e) for e in entries], len(_ENTRY))
    )


def without_inserts(arguments: list[list[Any]]) -> list[list[Any]]:
    """`write_arguments` for `UPDATE_UNLESS_CHANGED`: the updates' and entries' arrays."""
    return arguments[: len(_UPDATED)] + arguments[len(_UPDATED) + len(_INSERTED) :]
