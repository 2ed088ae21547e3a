//! Embedded, versioned migrations, applied in one transaction under an
//! advisory lock, so that nodes starting at once migrate once.

use tokio_postgres::Client;

use super::pg_error;
use crate::error::{Result, StoreError};

/// Every migration, in order; version N is the N-th.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/001_init.sql")];

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings `schema` (created if missing) to [`VERSION`]. The connection's
/// `search_path` is `schema`. Refuses a schema a newer build migrated.
pub(super) async fn migrate(client: &mut Client, schema: &str) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    // One lock per schema, for this transaction: a second node starting now
    // waits here, then finds the schema migrated.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('rdq migrate ' || $1::text))",
        &[&schema],
    )
    .await
    .map_err(pg_error)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS \"{schema}\".rdq_schema_version (
             version    bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(pg_error)?;
    let found: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM rdq_schema_version",
            &[],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if found > VERSION {
        return Err(StoreError::NewerSchema {
            schema: schema.to_owned(),
            found,
            known: VERSION,
        });
    }
    if found == VERSION {
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO rdq_schema_version (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    tracing::info!(
        schema,
        from = found,
        to = VERSION,
        "migrated the rdq schema"
    );
    Ok(())
}
