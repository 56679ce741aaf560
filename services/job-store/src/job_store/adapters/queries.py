"""The statements that read: rows by id, versions by id, a user's jobs by keyset, stuck jobs,
a history, what retention purges next, open jobs past their deadline."""

from __future__ import annotations

from typing import Final

from job_store.adapters.columns import JOB_COLUMNS

SELECT_MANY: Final = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1::uuid[])"
# Only the two columns, by primary key: the gateway's resync asks every few seconds.
SELECT_VERSIONS: Final = "SELECT id, version FROM jobs WHERE id = ANY($1::uuid[])"
SELECT_HISTORY: Final = """
SELECT job_id, seq, kind, occurred_at, recorded_at, source, message_id, summary
FROM job_history WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
# `jobs_finished_idx` (migration 0003) serves this: terminal jobs by completion time.
FINISHED_BEFORE: Final = """
SELECT id FROM jobs
WHERE status IN ('succeeded', 'failed', 'canceled')
  AND completed_at < now() - make_interval(secs => $1)
ORDER BY completed_at, id
LIMIT $2
"""
SUMMARY_COLUMNS: Final = (
    "id, type, status, version, error_code, error_message, prediction_id, created_at,"
    " updated_at, completed_at, cancel_requested"
)
# Newest first with `id` ascending as the tie-breaker, which `jobs_user_created_idx`
# (user_id, created_at DESC, id) serves in index order; hence the mixed-direction keyset test.
LIST: Final = f"""
SELECT {SUMMARY_COLUMNS} FROM jobs
WHERE user_id = $1
  AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND (cardinality($3::text[]) = 0 OR type = ANY($3::text[]))
  AND ($4::timestamptz IS NULL OR created_at < $4 OR (created_at = $4 AND id > $5))
ORDER BY created_at DESC, id
LIMIT $6
"""
# `jobs_processing_since_idx` is on exactly this expression, filtered on the same status.
STUCK: Final = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE status = 'processing'
  AND COALESCE(submitted_at, started_at, updated_at) < now() - make_interval(secs => $1)
ORDER BY COALESCE(submitted_at, started_at, updated_at), id
LIMIT $2
"""
# With the pending ones too (`jobs_pending_created_idx`, migration 0003), merged oldest first.
STUCK_OR_PENDING: Final = f"""
SELECT * FROM (
    (SELECT {JOB_COLUMNS}, COALESCE(submitted_at, started_at, updated_at) AS since FROM jobs
     WHERE status = 'processing'
       AND COALESCE(submitted_at, started_at, updated_at) < now() - make_interval(secs => $1)
     ORDER BY COALESCE(submitted_at, started_at, updated_at), id
     LIMIT $2)
    UNION ALL
    (SELECT {JOB_COLUMNS}, created_at AS since FROM jobs
     WHERE status = 'pending' AND created_at < now() - make_interval(secs => $3)
     ORDER BY created_at, id
     LIMIT $2)
) AS stuck
ORDER BY since, id
LIMIT $2
"""
# Jobs still open after their type's deadline (the ai-runner ends a job by then). Each count is
# of one open status, which a partial index covers (migrations 0002, 0003): the planner can
# walk the open jobs alone, never the finished ones that make up most of the table.
PAST_DEADLINE: Final = """
SELECT
    (SELECT count(*) FROM jobs WHERE status = 'pending' AND deadline_at < now()) AS pending,
    (SELECT count(*) FROM jobs WHERE status = 'processing' AND deadline_at < now()) AS processing
"""
