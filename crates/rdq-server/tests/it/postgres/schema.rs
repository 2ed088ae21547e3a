//! A fresh PostgreSQL schema per test, in the database at
//! `RDQ_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! dropped when the test ends.
//!
//! When that server cannot be reached, a test is skipped with a message;
//! under `CI=true` it fails instead, saying how to start PostgreSQL: CI must
//! never pass by skipping.

use std::str::FromStr as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio_postgres::NoTls;

/// The database the tests use unless `RDQ_TEST_DATABASE_URL` names another.
pub(crate) const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of its own, dropped (with everything in it) on drop.
pub(crate) struct Schema {
    /// The database's URL.
    pub(crate) url: String,
    /// The schema's name.
    pub(crate) name: String,
}

/// The test database's URL.
pub(crate) fn database_url() -> String {
    std::env::var("RDQ_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// A new, empty schema for `test`, or `None` (after saying why) when
/// PostgreSQL cannot be reached outside CI.
pub(crate) async fn fresh(test: &str) -> Option<Schema> {
    let url = database_url();
    let client = match connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            let how = format!(
                "PostgreSQL at {} cannot be reached ({e}). Start it (`sudo service postgresql start`), \
                 create the database (`sudo -u postgres createdb test`), or set RDQ_TEST_DATABASE_URL",
                rdq_server::config::database::redact(&url)
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{how}; under CI=true the PostgreSQL tests must run");
            }
            eprintln!("skipping {test}: {how}");
            return None;
        }
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "rdq_t_{}_{}_{:04x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u16(..)
    );
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .await
        .expect("drop a leftover schema");
    Some(Schema { url, name })
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::from_str(url)?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl Schema {
    /// Runs statements in this schema's database.
    pub(crate) async fn execute(&self, sql: &str) {
        let client = connect(&self.url).await.expect("connect");
        client.batch_execute(sql).await.expect(sql);
    }

    /// Runs `sql` in this schema's database (for what the API cannot show).
    pub(crate) async fn query_one(&self, sql: &str) -> tokio_postgres::Row {
        let client = connect(&self.url).await.expect("connect");
        client.query_one(sql, &[]).await.expect(sql)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Dropped inside a runtime: a thread with its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = connect(&url).await.ok()?;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
                    .ok()
            })
        });
        let _ = dropped.join();
    }
}
