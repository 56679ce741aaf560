-- Indexes for retention and for the reconciler's pending jobs. Expand-only: the previous
-- release runs unchanged against this schema (it never reads these indexes' absence).
--
-- Built inside the migration's transaction like 0002's; see there for why not CONCURRENTLY.

-- Retention: terminal jobs by completion time, oldest first (`finished_before`).
CREATE INDEX jobs_finished_idx ON jobs (completed_at, id)
    WHERE status IN ('succeeded', 'failed', 'canceled');

-- The reconciler's pending jobs: admitted, no prediction recorded, by creation time.
CREATE INDEX jobs_pending_created_idx ON jobs (created_at, id)
    WHERE status = 'pending';
