-- Spend: what each job was priced at and cost, budgets per user and month and for everyone per
-- day, and usage per user, day and type. Money is integer micro-dollars (bigint) throughout.
--
-- Expand-only (nullable columns, new tables, functions, triggers): the previous release keeps
-- writing `jobs` as before. Its rows carry no price or reservation; the triggers then count
-- its jobs' ends at a cost of 0, which is what that release knew about them.

-- The price the job was admitted with (null: not charged that way, or unknown).
ALTER TABLE jobs ADD COLUMN price_input_token_usd numeric;
ALTER TABLE jobs ADD COLUMN price_output_token_usd numeric;
ALTER TABLE jobs ADD COLUMN price_predict_second_usd numeric;
-- What admitting it reserved against its budgets (null: nothing).
ALTER TABLE jobs ADD COLUMN reserved_micros bigint;
-- What its final prediction reported and cost; all null until the job ends, then
-- `cost_micros` is set (0 for a job that never ran) and the metrics as reported.
ALTER TABLE jobs ADD COLUMN predict_time_s double precision;
ALTER TABLE jobs ADD COLUMN input_tokens bigint;
ALTER TABLE jobs ADD COLUMN output_tokens bigint;
ALTER TABLE jobs ADD COLUMN cost_micros bigint;

-- A job's hold on its budgets from admission to its end. `month` and `day` are the periods it
-- was reserved in (UTC), so the release takes it from where it was added.
CREATE TABLE budget_reservations (
    job_id        uuid        PRIMARY KEY,
    user_id       text        NOT NULL,
    month         date        NOT NULL,
    day           date        NOT NULL,
    amount_micros bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- The sweep: reservations past their grace, oldest first.
CREATE INDEX budget_reservations_created_idx ON budget_reservations (created_at);

CREATE TABLE budget_months (
    user_id         text   NOT NULL,
    month           date   NOT NULL,
    spent_micros    bigint NOT NULL DEFAULT 0,
    reserved_micros bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, month)
);

CREATE TABLE budget_days (
    day             date   PRIMARY KEY,
    spent_micros    bigint NOT NULL DEFAULT 0,
    reserved_micros bigint NOT NULL DEFAULT 0
);

-- Ended jobs by the day they were admitted: `GET /api/usage` sums at most 366 days of these.
CREATE TABLE usage_days (
    user_id     text   NOT NULL,
    day         date   NOT NULL,
    job_type    text   NOT NULL,
    jobs        bigint NOT NULL DEFAULT 0,
    cost_micros bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day, job_type)
);

-- Adds to the month and day sums. Every writer of these rows (this, and the reservation
-- request) first takes the budgets' transaction-level advisory lock (the key is "budgets!"),
-- then months, then days, each in key order. The lock is what keeps them from deadlocking: one
-- statement of the store can fire both triggers below (a batch that inserts and updates jobs),
-- each adding to months and days, so one transaction may come back to a month row after a day
-- row; with the lock held from the first, no other writer can hold that month meanwhile. It
-- serializes little that the day row, which every reservation and settlement changes, does
-- not serialize already.
CREATE FUNCTION spend_add(
    p_users text[], p_months date[], p_days date[], p_spent bigint[], p_reserved bigint[]
) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(7094687183238624033)
    WHERE EXISTS (SELECT 1 FROM unnest(p_spent, p_reserved) AS d(s, r) WHERE s <> 0 OR r <> 0);
    INSERT INTO budget_months AS m (user_id, month, spent_micros, reserved_micros)
    SELECT u, mo, sum(s), sum(r)
    FROM unnest(p_users, p_months, p_spent, p_reserved) AS d(u, mo, s, r)
    GROUP BY u, mo HAVING sum(s) <> 0 OR sum(r) <> 0
    ORDER BY u, mo
    ON CONFLICT (user_id, month) DO UPDATE
        SET spent_micros = m.spent_micros + EXCLUDED.spent_micros,
            reserved_micros = m.reserved_micros + EXCLUDED.reserved_micros;
    INSERT INTO budget_days AS b (day, spent_micros, reserved_micros)
    SELECT dy, sum(s), sum(r)
    FROM unnest(p_days, p_spent, p_reserved) AS d(dy, s, r)
    GROUP BY dy HAVING sum(s) <> 0 OR sum(r) <> 0
    ORDER BY dy
    ON CONFLICT (day) DO UPDATE
        SET spent_micros = b.spent_micros + EXCLUDED.spent_micros,
            reserved_micros = b.reserved_micros + EXCLUDED.reserved_micros;
$$;

-- The budget side of a statement's job changes, in that statement's transaction, so a job's
-- end and its settlement commit together whichever way the store writes (one guarded
-- statement or a locking transaction, live or replayed).
--
-- Per job: `p_reserve` (not null) reserves that much unless a reservation exists (the gateway
-- made it, or budgets are off there, or this is a replay); `p_ended` releases the reservation
-- and counts the job in its admission day's usage; `p_cost` is added to what was spent (a
-- job's first end: its cost; later metrics of an ended job: the difference).
CREATE FUNCTION spend_apply(
    p_ids uuid[], p_users text[], p_types text[], p_created timestamptz[],
    p_reserve bigint[], p_ended boolean[], p_cost bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r_users text[];
    r_months date[];
    r_days date[];
    r_amounts bigint[];
    a_users text[];
    a_months date[];
    a_days date[];
    a_amounts bigint[];
BEGIN
    -- Held until commit: the sweep and the release take a reservation only once no job row
    -- exists, which they see after this commits (they lock it FOR UPDATE first).
    PERFORM 1 FROM budget_reservations r
    JOIN unnest(p_ids, p_reserve) AS j(id, amount) ON r.job_id = j.id
    WHERE j.amount IS NOT NULL
    ORDER BY r.job_id
    FOR SHARE OF r;

    WITH added AS (
        INSERT INTO budget_reservations (job_id, user_id, month, day, amount_micros)
        SELECT id, u, date_trunc('month', c AT TIME ZONE 'UTC')::date,
            (c AT TIME ZONE 'UTC')::date, amount
        FROM unnest(p_ids, p_users, p_created, p_reserve) AS j(id, u, c, amount)
        WHERE amount IS NOT NULL
        ORDER BY id
        ON CONFLICT (job_id) DO NOTHING
        RETURNING user_id, month, day, amount_micros
    )
    SELECT array_agg(user_id), array_agg(month), array_agg(day), array_agg(amount_micros)
    INTO a_users, a_months, a_days, a_amounts
    FROM added;

    WITH released AS (
        DELETE FROM budget_reservations r
        USING unnest(p_ids, p_ended) AS j(id, ended)
        WHERE r.job_id = j.id AND j.ended
        RETURNING r.user_id, r.month, r.day, r.amount_micros
    )
    SELECT array_agg(user_id), array_agg(month), array_agg(day), array_agg(amount_micros)
    INTO r_users, r_months, r_days, r_amounts
    FROM released;

    PERFORM spend_add(
        coalesce(a_users, '{}') || coalesce(r_users, '{}') || p_users,
        coalesce(a_months, '{}') || coalesce(r_months, '{}')
            || ARRAY(SELECT date_trunc('month', c AT TIME ZONE 'UTC')::date
                     FROM unnest(p_created) WITH ORDINALITY AS t(c, i) ORDER BY i),
        coalesce(a_days, '{}') || coalesce(r_days, '{}')
            || ARRAY(SELECT (c AT TIME ZONE 'UTC')::date
                     FROM unnest(p_created) WITH ORDINALITY AS t(c, i) ORDER BY i),
        array_fill(0::bigint, ARRAY[cardinality(coalesce(a_users, '{}'))])
            || array_fill(0::bigint, ARRAY[cardinality(coalesce(r_users, '{}'))])
            || p_cost,
        coalesce(a_amounts, '{}')
            || ARRAY(SELECT -x FROM unnest(coalesce(r_amounts, '{}')) WITH ORDINALITY AS t(x, i)
                     ORDER BY i)
            || array_fill(0::bigint, ARRAY[cardinality(p_ids)])
    );

    INSERT INTO usage_days AS u (user_id, day, job_type, jobs, cost_micros)
    SELECT usr, (c AT TIME ZONE 'UTC')::date, t, sum(ended::int), sum(cost)
    FROM unnest(p_users, p_types, p_created, p_ended, p_cost) AS j(usr, t, c, ended, cost)
    WHERE ended OR cost <> 0
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (user_id, day, job_type) DO UPDATE
        SET jobs = u.jobs + EXCLUDED.jobs, cost_micros = u.cost_micros + EXCLUDED.cost_micros;
END;
$$;

-- New jobs: reserve for those still running, settle those already ended (their request and
-- their end came in one batch).
CREATE FUNCTION jobs_spend_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM spend_apply(
        array_agg(id ORDER BY id), array_agg(user_id ORDER BY id), array_agg(type ORDER BY id),
        array_agg(created_at ORDER BY id),
        array_agg(CASE WHEN ended THEN NULL ELSE reserved_micros END ORDER BY id),
        array_agg(ended ORDER BY id), array_agg(coalesce(cost_micros, 0) ORDER BY id))
    FROM (
        SELECT *, status IN ('succeeded', 'failed', 'canceled') AS ended FROM new_jobs
    ) AS n
    HAVING count(*) > 0;
    RETURN NULL;
END;
$$;

-- Changed jobs: settle those that ended, add the metrics an ended job reports late.
CREATE FUNCTION jobs_spend_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM spend_apply(
        array_agg(id ORDER BY id), array_agg(user_id ORDER BY id), array_agg(type ORDER BY id),
        array_agg(created_at ORDER BY id), array_agg(NULL::bigint ORDER BY id),
        array_agg(ended ORDER BY id), array_agg(cost ORDER BY id))
    FROM (
        SELECT n.id, n.user_id, n.type, n.created_at,
            (o.status NOT IN ('succeeded', 'failed', 'canceled')
             AND n.status IN ('succeeded', 'failed', 'canceled')) AS ended,
            coalesce(n.cost_micros, 0) - coalesce(o.cost_micros, 0) AS cost
        FROM new_jobs AS n JOIN old_jobs AS o ON o.id = n.id
    ) AS c
    WHERE ended OR cost <> 0
    HAVING count(*) > 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_spend_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_spend_inserted();
CREATE TRIGGER jobs_spend_updated AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_spend_updated();
