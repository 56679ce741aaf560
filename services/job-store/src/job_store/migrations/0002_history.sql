-- Every applied change of a job, append-only, and the columns the reconciler and replies need.
--
-- Expand-only (a new table, nullable columns, indexes), so the release before this one keeps
-- working against the migrated schema during a rollout. The indexes are built inside the
-- migration's transaction: `jobs` is small enough at this stage that the brief write lock is
-- cheaper than the complexity of CREATE INDEX CONCURRENTLY outside a transaction.

CREATE TABLE job_history (
    job_id      uuid        NOT NULL,
    -- The job's version this change produced: 1 for `requested`, +1 per applied event.
    seq         integer     NOT NULL,
    kind        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    -- The service that published the event, as the store infers it from the event.
    source      text        NOT NULL,
    message_id  text        NOT NULL,
    -- What the change did (statuses, prediction, error code); never the input or output.
    summary     jsonb       NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- When the job's type deadline passes; null for jobs requested before this migration.
ALTER TABLE jobs ADD COLUMN deadline_at timestamptz;
-- Predictions created for the job (the highest `attempt` seen); null: not recorded.
ALTER TABLE jobs ADD COLUMN attempts integer;
-- True when the stored input is not the whole input the user sent; null: not recorded.
ALTER TABLE jobs ADD COLUMN input_truncated boolean;

-- The reconciler's question: jobs processing for longer than some age, oldest first.
CREATE INDEX jobs_processing_since_idx ON jobs ((COALESCE(submitted_at, started_at, updated_at)), id)
    WHERE status = 'processing';
