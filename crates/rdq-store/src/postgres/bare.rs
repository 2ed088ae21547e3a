//! What benchmarks need from a [`PgStore`] beyond the [`Store`] trait: a
//! wait until everything is on disk, and the baseline of B5, the store's own
//! claim and outcome statements in a bare loop.
//!
//! [`Store`]: crate::Store

use std::time::Duration;

use super::{pg_error, pipelined, queries, PgStore};
use crate::error::Result;
use crate::Store;

impl PgStore {
    /// Waits until every outcome enqueued before the call is committed and
    /// the server's write-ahead log is flushed to disk up to that point.
    ///
    /// Claims and outcomes commit with `synchronous_commit = off` (unless
    /// [`PgOptions::synchronous_outcomes`](super::PgOptions::synchronous_outcomes)):
    /// the server flushes them within a few hundred milliseconds. This ends
    /// with one synchronous commit, which flushes the log up to itself, so
    /// every earlier commit too. For a caller that must know the work is
    /// durable now (a benchmark's clock).
    pub async fn sync(&self) -> Result<()> {
        self.flush().await?;
        let client = self.core().bookkeeping_client().await?;
        client
            .batch_execute(
                "BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT",
            )
            .await
            .map_err(pg_error)
    }

    /// B5's baseline, not an API: drains `queue` on one connection with the
    /// store's own statements and nothing else. Each round trip records the
    /// previous claim's jobs as succeeded and claims up to `width` more
    /// (with the queue's cluster-wide limits, as a node's claim does), in one
    /// pipelined transaction, committed as the store commits claims. Returns
    /// the jobs it ran.
    #[doc(hidden)]
    pub async fn bench_bare_loop(&self, queue: &str, width: usize, node: &str) -> Result<u64> {
        let core = self.core();
        let client = core.bookkeeping_client().await?;
        let claim = client
            .prepare_cached(queries::CLAIM)
            .await
            .map_err(pg_error)?;
        let complete = client
            .prepare_cached(queries::COMPLETE)
            .await
            .map_err(pg_error)?;
        let async_commit = core.async_commit();
        let max = i32::try_from(width).unwrap_or(i32::MAX);
        let lease = i64::try_from(Duration::from_secs(60).as_micros()).unwrap_or(i64::MAX);
        let now: Option<i64> = None;
        let mut done = 0u64;
        let (mut ids, mut attempts): (Vec<i64>, Vec<i32>) = (Vec::new(), Vec::new());
        loop {
            let n = ids.len();
            let kinds = vec!["succeeded"; n];
            let texts: Vec<Option<String>> = vec![None; n];
            let times: Vec<Option<i64>> = vec![None; n];
            let outcome_args: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                [&ids, &attempts, &kinds, &texts, &texts, &times, &times];
            let claim_args: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&queue, &max, &node, &now, &lease, &async_commit];
            let rows = pipelined(&client, async_commit, async {
                let outcomes = client.query(&complete, &outcome_args);
                let claimed = client.query(&claim, &claim_args);
                let (o, c) = tokio::join!(outcomes, claimed);
                o?;
                c
            })
            .await?;
            done += n as u64;
            let (jobs, _) = queries::claimed(&rows)?;
            if jobs.is_empty() && n == 0 {
                return Ok(done);
            }
            ids = jobs.iter().map(|j| j.id.0).collect();
            attempts = jobs
                .iter()
                .map(|j| i32::try_from(j.attempt).unwrap_or(i32::MAX))
                .collect();
        }
    }
}
