-- rdq schema version 1 (PostgreSQL).
--
-- Runs with `search_path` set to the store's schema (default `rdq`), inside
-- the migration's transaction, under its advisory lock.
--
-- Times are microseconds since the Unix epoch (UTC), as in SQLite. `run_at`
-- is when a job may run; jobs launch in (priority, run_at, id) order.

CREATE TABLE rdq_jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- never reused
    queue            text    NOT NULL,
    kind             text    NOT NULL,
    args             text    NOT NULL,                   -- JSON
    priority         integer NOT NULL,
    state            text    NOT NULL CHECK (state IN ('scheduled', 'pending', 'underway',
                       'succeeded', 'failed', 'dead', 'cancelled')),
    attempt          integer NOT NULL DEFAULT 0,         -- runs started so far
    max_attempts     integer NOT NULL,
    run_at           bigint  NOT NULL,
    queued_at        bigint  NOT NULL,
    launched_at      bigint,                             -- start of the latest attempt
    finished_at      bigint,                             -- end of the latest attempt
    key              text,                               -- idempotency key
    timeout_ms       bigint,                             -- per-job override
    result           text,                               -- JSON, on success
    error            text,                               -- latest error
    node             text,                               -- who holds it while underway
    lease_until      bigint,
    cancel_requested boolean NOT NULL DEFAULT false      -- someone asked to cancel it while underway
);

-- Claiming: the next pending jobs of a queue, in launch order.
CREATE INDEX rdq_jobs_ready ON rdq_jobs (queue, priority, run_at, id) WHERE state = 'pending';

-- Promotion: scheduled jobs and retries whose time has come.
CREATE INDEX rdq_jobs_due ON rdq_jobs (queue, run_at) WHERE state IN ('scheduled', 'failed');

-- Idempotency: one live job per (queue, key).
CREATE UNIQUE INDEX rdq_jobs_key ON rdq_jobs (queue, key)
    WHERE key IS NOT NULL AND state IN ('scheduled', 'pending', 'underway', 'failed');

-- Listing by state, newest first, with keyset paging on id; counting the
-- jobs underway (the width).
CREATE INDEX rdq_jobs_state ON rdq_jobs (queue, state, id);

-- Pruning finished jobs past their retention.
CREATE INDEX rdq_jobs_finished ON rdq_jobs (queue, finished_at)
    WHERE state IN ('succeeded', 'dead', 'cancelled');

-- Rescue: underway jobs by lease.
CREATE INDEX rdq_jobs_leases ON rdq_jobs (lease_until) WHERE state = 'underway';

-- Queue settings that runtime changes persist (width, rate, paused, ...), and
-- the cluster-wide limit state every claim reads and updates under the row's
-- lock. `declared` and `settings` are NULL on a row that only a hold made
-- (no node saved the queue yet): such a row is not a saved queue.
CREATE TABLE rdq_queues (
    name        text PRIMARY KEY,
    declared    jsonb,
    settings    jsonb,
    updated_at  bigint NOT NULL,
    held_until  bigint,            -- launches held until then (Store::hold)
    tokens      double precision,  -- the rate's token bucket; NULL: full
    refilled_at bigint             -- when the bucket was last refilled
);

-- The server's clock, in microseconds since the epoch.
CREATE FUNCTION rdq_now() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint $$;

-- One claim: the queue's limits, counted over every node, then up to that
-- many pending jobs, marked underway. Returns the claimed jobs (o_id not
-- NULL) and, when a limit cut the claim short, one last row with o_id NULL
-- naming it (o_limited: 'paused', 'width', 'held' or 'rate'; o_limit_at:
-- when a hold ends or the next token comes).
--
-- p_now NULL: the server's clock. p_async: this transaction commits with
-- synchronous_commit off.
CREATE FUNCTION rdq_claim(p_queue text, p_max integer, p_node text, p_now bigint,
                          p_lease_us bigint, p_async boolean)
RETURNS TABLE (o_id bigint, o_queue text, o_kind text, o_args text, o_priority integer,
               o_state text, o_attempt integer, o_max_attempts integer, o_run_at bigint,
               o_queued_at bigint, o_launched_at bigint, o_finished_at bigint, o_key text,
               o_timeout_ms bigint, o_result text, o_error text, o_node text,
               o_lease_until bigint, o_limited text, o_limit_at bigint)
LANGUAGE plpgsql VOLATILE AS
$$
DECLARE
    v_now       bigint := coalesce(p_now, rdq_now());
    v_found     boolean;
    v_settings  jsonb;
    v_held      bigint;
    v_tokens    double precision;
    v_refilled  bigint;
    v_width     bigint;
    v_rate      jsonb;
    v_count     double precision;
    v_period_us double precision;
    v_burst     double precision;
    v_free      bigint;
    v_take      bigint := p_max;
    v_by_width  bigint;
    v_by_rate   bigint;
    v_got       bigint;
    v_next      bigint;
BEGIN
    IF p_async THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF p_max <= 0 THEN
        RETURN;
    END IF;

    SELECT q.settings, q.held_until, q.tokens, q.refilled_at
      INTO v_settings, v_held, v_tokens, v_refilled
      FROM rdq_queues q WHERE q.name = p_queue FOR UPDATE;
    v_found := FOUND;

    IF v_found THEN
        IF coalesce((v_settings ->> 'paused')::boolean, false) THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::integer,
                NULL::text, NULL::integer, NULL::integer, NULL::bigint, NULL::bigint, NULL::bigint,
                NULL::bigint, NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::text,
                NULL::bigint, 'paused'::text, NULL::bigint;
            RETURN;
        END IF;
        IF v_held IS NOT NULL AND v_held > v_now THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::integer,
                NULL::text, NULL::integer, NULL::integer, NULL::bigint, NULL::bigint, NULL::bigint,
                NULL::bigint, NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::text,
                NULL::bigint, 'held'::text, v_held;
            RETURN;
        END IF;

        v_rate := v_settings -> 'rate';
        IF v_rate IS NOT NULL AND jsonb_typeof(v_rate) = 'object' THEN
            v_count := (v_rate ->> 'count')::double precision;
            v_period_us := (v_rate ->> 'period_ms')::double precision * 1000;
            v_burst := greatest(coalesce((v_rate ->> 'burst')::double precision, 1), 1);
            IF v_count IS NULL OR v_count <= 0 OR v_period_us IS NULL OR v_period_us <= 0 THEN
                v_rate := NULL;
            ELSIF v_tokens IS NULL OR v_refilled IS NULL THEN
                v_tokens := v_burst;
            ELSE
                v_tokens := least(v_burst,
                    v_tokens + greatest(v_now - v_refilled, 0) * v_count / v_period_us);
            END IF;
        ELSE
            v_rate := NULL;
        END IF;
        IF v_rate IS NOT NULL THEN
            v_by_rate := floor(v_tokens)::bigint;
            v_take := least(v_take, v_by_rate);
        END IF;

        IF jsonb_typeof(v_settings -> 'width') = 'number' THEN
            v_width := least((v_settings ->> 'width')::numeric, 1e18)::bigint; -- usize::MAX: no limit
            -- A statement of its own, started after the row lock: it sees
            -- every claim and outcome committed before the lock was granted.
            SELECT count(*) INTO v_free FROM rdq_jobs j
             WHERE j.queue = p_queue AND j.state = 'underway';
            v_by_width := greatest(v_width - v_free, 0);
            v_take := least(v_take, v_by_width);
        END IF;
    END IF;

    RETURN QUERY
    WITH picked AS (
        SELECT j.id FROM rdq_jobs j
         WHERE j.queue = p_queue AND j.state = 'pending'
         ORDER BY j.priority, j.run_at, j.id
         LIMIT greatest(v_take, 0)
         FOR UPDATE SKIP LOCKED
    )
    UPDATE rdq_jobs j SET state = 'underway', attempt = j.attempt + 1,
           launched_at = greatest(v_now, j.queued_at), finished_at = NULL, node = p_node,
           lease_until = v_now + p_lease_us, cancel_requested = false
      FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.queue, j.kind, j.args, j.priority, j.state, j.attempt, j.max_attempts,
              j.run_at, j.queued_at, j.launched_at, j.finished_at, j.key, j.timeout_ms,
              j.result, j.error, j.node, j.lease_until, NULL::text, NULL::bigint;
    GET DIAGNOSTICS v_got = ROW_COUNT;

    IF v_rate IS NOT NULL THEN
        v_tokens := v_tokens - v_got;
        UPDATE rdq_queues q SET tokens = v_tokens, refilled_at = v_now WHERE q.name = p_queue;
    END IF;

    IF v_got >= p_max OR v_got < v_take THEN
        RETURN; -- all it asked for, or the queue ran out
    END IF;
    -- v_got = v_take < p_max: a limit bound, unless nothing more is pending.
    IF NOT EXISTS (SELECT 1 FROM rdq_jobs j WHERE j.queue = p_queue AND j.state = 'pending') THEN
        RETURN;
    END IF;
    IF v_by_width IS NOT NULL AND v_take = v_by_width THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::integer, NULL::integer, NULL::bigint, NULL::bigint, NULL::bigint,
            NULL::bigint, NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::text,
            NULL::bigint, 'width'::text, NULL::bigint;
    ELSIF v_by_rate IS NOT NULL AND v_take = v_by_rate THEN
        v_next := v_now + ceil(greatest(1 - v_tokens, 0) * v_period_us / v_count)::bigint;
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::integer, NULL::integer, NULL::bigint, NULL::bigint, NULL::bigint,
            NULL::bigint, NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::text,
            NULL::bigint, 'rate'::text, v_next;
    END IF;
END
$$;
