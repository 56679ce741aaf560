-- The jobs table: one row per job, its current state; the store is the only writer.
--
-- Expand-friendly by design: later migrations only add tables, nullable columns or columns
-- with defaults, and indexes, so the previous release keeps working during a rollout.
-- `status` has no CHECK constraint for the same reason: the set of statuses is the code's to
-- validate, and widening a constraint would need a rewrite-free migration of its own.

CREATE TABLE jobs (
    id               uuid        PRIMARY KEY,
    user_id          text        NOT NULL,
    type             text        NOT NULL,
    status           text        NOT NULL,
    -- The job's change count: 1 once requested, +1 per applied event (the SSE `id:`).
    version          integer     NOT NULL,
    input            jsonb       NOT NULL,
    output           text,
    error_code       text,
    error_message    text,
    prediction_id    text,
    cancel_requested boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    submitted_at     timestamptz,
    started_at       timestamptz,
    completed_at     timestamptz
);

-- The owner's list, newest first, with `id` as the tie-breaker of a keyset cursor.
CREATE INDEX jobs_user_created_idx ON jobs (user_id, created_at DESC, id);
