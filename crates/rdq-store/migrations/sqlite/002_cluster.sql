-- rdq schema version 2 (SQLite): limits kept by the store, cancel requests.
--
-- A claim obeys the queue's settings itself (width, paused, rate, hold), as
-- the PostgreSQL store must across nodes; the token bucket and the hold live
-- on the queue's row.

-- Someone asked to cancel this underway job; its node carries it out.
ALTER TABLE rdq_jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;

-- No launches before this time (a throttled target), microseconds.
ALTER TABLE rdq_queues ADD COLUMN held_until INTEGER;
-- The rate's token bucket: tokens left at `refilled_at` (NULL: full).
ALTER TABLE rdq_queues ADD COLUMN tokens REAL;
ALTER TABLE rdq_queues ADD COLUMN refilled_at INTEGER;
