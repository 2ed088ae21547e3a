//! The writer thread: every write, in few transactions.
//!
//! # Group commit
//!
//! Requests queue on a channel. The writer opens a transaction at the first
//! request and keeps running requests in it while more arrive, then commits
//! once. It commits as soon as a request that waits for durability (a put, a
//! cancel, a settings change) or a flush is in the transaction and nothing
//! else is queued; otherwise after [`IDLE`] without a request, or when the
//! transaction is [`MAX_AGE`] old or holds [`MAX_BATCH`] requests. So the
//! busier the store, the more each commit carries: under load a commit
//! serves hundreds of puts, claims and outcomes.
//!
//! # Order
//!
//! Requests run in the order they were sent, with one exception: requests
//! answered at once ([`Ack::Now`]: claims, heartbeats, promotions) and
//! outcomes go ahead of the other requests already waiting (puts, settings,
//! flushes). A claim is what lets a freed worker start its next job, and it
//! must come after the outcomes sent before it: they free the width it
//! counts (see [`Store::claim`](crate::Store::claim)). Nothing else depends
//! on the order between the two lines: the caller of each request awaits
//! its answer before sending the next, outcomes are guarded by attempt and
//! state, and a flush still comes after every outcome sent before it.
//!
//! # Answers
//!
//! Each request says when it may be answered ([`Ack`]):
//!
//! * [`Ack::Now`]: right after it ran inside the open transaction, before the
//!   commit (claims, heartbeats, promotions). Claims thus never wait for a
//!   commit, let alone the disk. The writer is the only writer, so later
//!   requests see its effect at once. If the commit then fails (full disk,
//!   I/O error), its effect is void: a job claimed from it is still pending
//!   and may run again — at-least-once, never lost.
//! * [`Ack::Sync`]: after the commit is on disk. The connection runs
//!   `synchronous = NORMAL` (a commit writes the log but does not wait for
//!   the disk), and the [syncer](super::syncer) thread syncs the log and then
//!   answers: many commits share one `fsync`, and the writer never waits for
//!   the disk.
//!
//! # Failure
//!
//! Each request runs in its own savepoint, so one that fails (a constraint, a
//! bad value) is rolled back alone and the rest of the transaction commits.
//! If SQLite aborts the whole transaction (full disk, I/O error), every
//! request not yet answered gets the error, and nothing half-done remains.
//!
//! If another program holds SQLite's write lock on the file, the writer
//! warns at once and waits up to `lock_wait` for it at the start of a
//! transaction; then the requests of that transaction fail with
//! [`StoreError::Busy`], naming the file, and the next transaction tries
//! again.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::broadcast;

use super::queries;
use super::syncer::SyncMsg;
use crate::error::{Result, StoreError};
use crate::row::{Completion, JobId};

/// Most requests in one transaction.
const MAX_BATCH: usize = 8192;

/// Commit after this long without a request.
const IDLE: Duration = Duration::from_micros(200);

/// Commit a transaction at the latest this long after it began.
const MAX_AGE: Duration = Duration::from_millis(10);

/// Most requests taken off the channel at a time (see [`Inbox`]).
const TAKE: usize = 1024;

/// Answers a request: `Ok` when its [`Ack`] point is reached, or the error
/// that stopped its transaction.
pub(crate) type Done = Box<dyn FnOnce(Result<()>) + Send>;

/// A request's work and how to answer it.
pub(crate) struct Reply {
    /// Whether its statements succeeded (else its savepoint is rolled back).
    pub(crate) ok: bool,
    pub(crate) done: Done,
}

/// A request's work. Called with the connection inside the transaction; or
/// with `None` when its transaction failed before it ran, to get its answer
/// for that failure.
pub(crate) type Work = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// When a request may be answered; see the [module docs](self#answers).
/// (A flush is answered at commit.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ack {
    Now,
    Sync,
}

pub(crate) enum Op {
    /// Work, answered at its [`Ack`] point.
    Write { ack: Ack, work: Work },
    /// An outcome: no answer, written with the rest.
    Complete(Completion),
    /// Answer once everything before it is committed.
    Flush(Done),
    /// Answer once everything before it is committed and synced to disk,
    /// whatever the sync level.
    Sync(Done),
    /// Commit what came before, then stop: later requests fail as closed.
    Shutdown,
}

/// Requests taken off the channel, in two lines: those answered at once
/// first (see [Order](self#order)), the rest in order.
#[derive(Default)]
struct Inbox {
    now: VecDeque<Op>,
    rest: VecDeque<Op>,
}

/// How [`Inbox::next`] waits when nothing is queued.
enum Wait {
    No,
    For(Duration),
    Forever,
}

impl Inbox {
    fn push(&mut self, op: Op) {
        match op {
            Op::Write { ack: Ack::Now, .. } | Op::Complete(_) => self.now.push_back(op),
            op => self.rest.push_back(op),
        }
    }

    fn pop(&mut self) -> Option<Op> {
        self.now.pop_front().or_else(|| self.rest.pop_front())
    }

    /// The next request: takes what the channel holds, then picks; waits as
    /// told when there is none. `Err(())` once every sender is gone and
    /// nothing is left.
    fn next(&mut self, ops: &Receiver<Op>, wait: Wait) -> Result<Option<Op>, ()> {
        let mut disconnected = false;
        for _ in 0..TAKE {
            match ops.try_recv() {
                Ok(op) => self.push(op),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if let Some(op) = self.pop() {
            return Ok(Some(op));
        }
        if disconnected {
            return Err(());
        }
        match wait {
            Wait::No => Ok(None),
            Wait::For(d) => match ops.recv_timeout(d) {
                Ok(op) => Ok(Some(op)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(()),
            },
            Wait::Forever => ops.recv().map(Some).map_err(|_| ()),
        }
    }

    /// Everything still queued, for failing it.
    fn drain(&mut self) -> Vec<Op> {
        self.now.drain(..).chain(self.rest.drain(..)).collect()
    }
}

pub(crate) struct Writer {
    /// The database file, for errors.
    pub(crate) path: PathBuf,
    /// See [`super::SqliteOptions::lock_wait`].
    pub(crate) lock_wait: Duration,
    /// Its busy timeout is 0: waits for a lock go through
    /// [`super::with_lock_wait`], which says so at once.
    pub(crate) conn: Connection,
    pub(crate) ops: Receiver<Op>,
    pub(crate) syncer: Sender<SyncMsg>,
    pub(crate) finished: broadcast::Sender<JobId>,
    /// Answer `Ack::Sync` requests at commit (sync level `Normal`).
    pub(crate) ack_at_commit: bool,
}

/// An open transaction's bookkeeping.
struct Txn {
    started: Instant,
    requests: usize,
    /// Someone waits for this commit: commit as soon as the queue is empty.
    urgent: bool,
    at_commit: Vec<Done>,
    at_sync: Vec<Done>,
    finished: Vec<JobId>,
    /// The transaction as a hold the stall watchdog reports if it lasts
    /// (transactions commit within milliseconds; one open for seconds is a
    /// stuck disk).
    /// Ended as soon as the transaction is (see [`Txn::end`]).
    #[cfg(feature = "watchdog")]
    held: Option<rdq_watchdog::Hold>,
}

impl Txn {
    /// The transaction has committed or rolled back: its hold ends now,
    /// before anyone is answered, so that a caller who reads the holds
    /// after its answer (`rdq dump`) never sees a transaction that is over.
    fn end(&mut self) {
        #[cfg(feature = "watchdog")]
        {
            self.held = None;
        }
    }
}

impl Writer {
    /// Runs until shut down (or every sender is gone), then checkpoints and
    /// returns.
    pub(crate) fn run(mut self) {
        let mut stop = false;
        let mut inbox = Inbox::default();
        while !stop {
            let Ok(Some(first)) = inbox.next(&self.ops, Wait::Forever) else {
                break;
            };
            if matches!(first, Op::Shutdown) {
                break;
            }
            let path = &self.path;
            let begun = super::with_lock_wait(&mut self.conn, path, self.lock_wait, |c| {
                c.execute_batch("BEGIN IMMEDIATE")
                    .map_err(|e| StoreError::sqlite(path, e))
            });
            if let Err(e) = begun {
                fail(unanswered(vec![first]), e);
                continue;
            }
            let mut txn = Txn {
                started: Instant::now(),
                requests: 0,
                urgent: false,
                at_commit: Vec::new(),
                at_sync: Vec::new(),
                finished: Vec::new(),
                #[cfg(feature = "watchdog")]
                held: Some(rdq_watchdog::hold("sqlite write transaction")),
            };
            let mut next = Some(first);
            let mut failed = None;
            while let Some(op) = next.take() {
                if matches!(op, Op::Shutdown) {
                    stop = true;
                    break;
                }
                if let Err(e) = self.apply(op, &mut txn) {
                    failed = Some(e);
                    break;
                }
                if txn.requests >= MAX_BATCH || txn.started.elapsed() >= MAX_AGE {
                    break;
                }
                let wait = if txn.urgent {
                    Wait::No
                } else {
                    Wait::For(IDLE)
                };
                next = inbox.next(&self.ops, wait).ok().flatten();
            }
            match failed {
                Some(e) => self.abort(txn, e),
                None => self.commit(txn),
            }
        }
        // Drop the receiver first, so that requests sent from now on fail at
        // once as closed instead of waiting for an answer that never comes;
        // those already taken off it fail as closed too.
        drop(std::mem::replace(
            &mut self.ops,
            std::sync::mpsc::channel().1,
        ));
        fail(unanswered(inbox.drain()), StoreError::Closed);
        // Clean shutdown: fold the log into the database (waiting, as
        // SQLite does for this, for readers to finish).
        let _ = self.conn.busy_timeout(self.lock_wait);
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "final checkpoint failed; the log will be replayed at next open");
        }
        let _ = self.syncer.send(SyncMsg::Stop);
    }

    /// Runs one request in the open transaction. An error means SQLite gave
    /// up the whole transaction.
    fn apply(&mut self, op: Op, txn: &mut Txn) -> Result<()> {
        txn.requests += 1;
        match op {
            Op::Write { ack, work } => {
                run_cached(&self.conn, "SAVEPOINT op")?;
                let reply = work(Some(&self.conn));
                let cleanup = if reply.ok {
                    run_cached(&self.conn, "RELEASE op")
                } else {
                    run_cached(&self.conn, "ROLLBACK TO op")
                        .and_then(|()| run_cached(&self.conn, "RELEASE op"))
                };
                match ack {
                    // An op whose own statements failed answers with its own
                    // error whenever it is called; do it now.
                    Ack::Now => (reply.done)(Ok(())),
                    _ if !reply.ok => (reply.done)(Ok(())),
                    Ack::Sync => {
                        txn.urgent = true;
                        if self.ack_at_commit {
                            txn.at_commit.push(reply.done);
                        } else {
                            txn.at_sync.push(reply.done);
                        }
                    }
                }
                cleanup.map_err(|e| StoreError::sqlite(&self.path, e))?;
            }
            Op::Complete(c) => match queries::complete(&self.conn, &c) {
                Ok(Some(id)) => txn.finished.push(id),
                Ok(None) => {}
                Err(e) if self.conn.is_autocommit() => return Err(e),
                Err(e) => {
                    // The job stays underway; it is rescued and runs again
                    // (at-least-once), nothing is lost.
                    tracing::error!(job = %c.id, error = %e, "could not record a job's outcome");
                }
            },
            Op::Flush(done) => {
                txn.urgent = true;
                txn.at_commit.push(done);
            }
            Op::Sync(done) => {
                txn.urgent = true;
                txn.at_sync.push(done);
            }
            Op::Shutdown => {}
        }
        Ok(())
    }

    fn commit(&mut self, mut txn: Txn) {
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let e = StoreError::sqlite(&self.path, e);
            return self.abort(txn, e);
        }
        txn.end();
        for done in txn.at_commit.drain(..) {
            done(Ok(()));
        }
        for id in txn.finished.drain(..) {
            let _ = self.finished.send(id);
        }
        // The syncer answers durable requests after its next fsync, and
        // syncs plain commits soon anyway.
        let _ = self.syncer.send(SyncMsg::Committed(txn.at_sync));
    }

    fn abort(&mut self, mut txn: Txn, error: StoreError) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        txn.end();
        if !txn.finished.is_empty() {
            tracing::error!(
                outcomes = txn.finished.len(),
                "job outcomes were not recorded; those jobs will run again"
            );
        }
        let mut dones = std::mem::take(&mut txn.at_commit);
        dones.append(&mut txn.at_sync);
        tracing::warn!(%error, waiting = dones.len(), "a write transaction failed; nothing of it was committed");
        fail(dones, error);
    }
}

/// Runs a statement prepared once per connection (no parsing per request).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The answers owed by requests that never ran.
fn unanswered(ops: Vec<Op>) -> Vec<Done> {
    ops.into_iter()
        .filter_map(|op| match op {
            Op::Write { work, .. } => Some(work(None).done),
            Op::Complete(c) => {
                tracing::error!(job = %c.id, "a job's outcome was not recorded; it will run again");
                None
            }
            Op::Flush(done) | Op::Sync(done) => Some(done),
            Op::Shutdown => None,
        })
        .collect()
}

fn fail(dones: Vec<Done>, error: StoreError) {
    for done in dones {
        done(Err(copy(&error)));
    }
}

/// The same error again, for every request it failed (`StoreError` is not
/// `Clone`: an I/O error is not).
fn copy(error: &StoreError) -> StoreError {
    match error {
        StoreError::DiskFull(m) => StoreError::DiskFull(m.clone()),
        StoreError::Busy { path, waited } => StoreError::Busy {
            path: path.clone(),
            waited: *waited,
        },
        StoreError::Io { path, source } => StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        StoreError::Closed => StoreError::Closed,
        // A bug stays a bug (its text is for the log, not for clients).
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
        other => StoreError::Database(other.to_string()),
    }
}
