-- rdq schema version 1 (SQLite).
--
-- Conditions on `state` are written as OR chains, not IN lists: SQLite checks
-- them on every row it writes, and builds a temporary index for each IN list
-- with more than two values, every time.
--
-- Times are microseconds since the Unix epoch (UTC). `run_at` is when a job
-- may run: its put time for an immediate job, later for a scheduled job or a
-- retry. Jobs launch in (priority, run_at, id) order, so among jobs of equal
-- priority the one that became runnable first goes first.

CREATE TABLE rdq_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, even after pruning
    queue         TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    args          TEXT    NOT NULL,                  -- JSON
    priority      INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state = 'scheduled' OR state = 'pending' OR state = 'underway'
                    OR state = 'succeeded' OR state = 'failed' OR state = 'dead' OR state = 'cancelled'),
    attempt       INTEGER NOT NULL DEFAULT 0,        -- runs started so far
    max_attempts  INTEGER NOT NULL,
    run_at        INTEGER NOT NULL,
    queued_at     INTEGER NOT NULL,
    launched_at   INTEGER,                           -- start of the latest attempt
    finished_at   INTEGER,                           -- end of the latest attempt
    key           TEXT,                              -- idempotency key
    timeout_ms    INTEGER,                           -- per-job override
    result        TEXT,                              -- JSON, on success
    error         TEXT,                              -- latest error
    node          TEXT,                              -- who holds it while underway
    lease_until   INTEGER
);

-- Claiming: the next pending jobs of a queue, in launch order.
CREATE INDEX rdq_jobs_ready ON rdq_jobs (queue, priority, run_at, id) WHERE state = 'pending';

-- Promotion: scheduled jobs and retries whose time has come.
CREATE INDEX rdq_jobs_due ON rdq_jobs (queue, run_at) WHERE state = 'scheduled' OR state = 'failed';

-- Idempotency: one live job per (queue, key).
CREATE UNIQUE INDEX rdq_jobs_key ON rdq_jobs (queue, key)
    WHERE key IS NOT NULL AND (state = 'scheduled' OR state = 'pending' OR state = 'underway' OR state = 'failed');

-- Listing by state, newest first, with keyset paging on id.
CREATE INDEX rdq_jobs_state ON rdq_jobs (queue, state, id);

-- Pruning finished jobs past their retention.
CREATE INDEX rdq_jobs_finished ON rdq_jobs (queue, finished_at)
    WHERE state = 'succeeded' OR state = 'dead' OR state = 'cancelled';

-- Queue settings that runtime changes persist (width, rate, paused, ...).
-- `declared` is what the code or config file last said; `settings` is what is
-- in effect. When `declared` changes, the new declaration wins.
CREATE TABLE rdq_queues (
    name       TEXT PRIMARY KEY,
    declared   TEXT NOT NULL, -- JSON
    settings   TEXT NOT NULL, -- JSON
    updated_at INTEGER NOT NULL
);
