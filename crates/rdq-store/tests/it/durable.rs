//! DurableQueue end to end, on each backend: SQLite files, and
//! PostgreSQL schemas (on the caller's clock, so that manual clocks work).
//! The cases are in `durable_cases.rs`, included once per backend. Time-dependent behaviour
//! (backoff, scheduling, pruning) runs on a manual clock that only the test
//! moves; nothing here sleeps to wait for a time to pass. That something
//! did *not* happen is checked after the queue has provably looked:
//! [`DurableQueue::settled`] waits for a producer round that began after the
//! change, and its `claimed` count says what that round took.

mod sqlite {
    use crate::support::TempStore;

    type Queue = rdq_store::DurableQueue<rdq_store::AnyStore>;

    async fn fresh() -> Option<TempStore> {
        Some(TempStore::new().await)
    }

    include!("durable_cases.rs");
}

mod postgres {
    use crate::support::TempStore;

    type Queue = rdq_store::DurableQueue<rdq_store::AnyStore>;

    /// `None`: PostgreSQL is unreachable outside CI (skipped, said why).
    async fn fresh() -> Option<TempStore> {
        TempStore::postgres().await
    }

    include!("durable_cases.rs");
}
