//! The server's store: one SQLite file (the default) or a PostgreSQL schema
//! that several `rdq serve` processes share, as one type,
//! [`AnyStore`]; a queue is a
//! [`DurableQueue<AnyStore>`](rdq_store::DurableQueue) whichever backend
//! runs below it. [`open`](crate::open) chooses it from the configuration.

use rdq_store::{JobId, Result, Store as _};

pub use rdq_store::AnyStore;

/// Whether the store answers now (for `/readyz`): a read on SQLite, a
/// `SELECT 1` on PostgreSQL.
pub async fn ping(store: &AnyStore) -> Result<()> {
    match store {
        AnyStore::Sqlite(s) => s.get(JobId(0)).await.map(drop),
        AnyStore::Postgres(s) => s.ping().await,
    }
}
