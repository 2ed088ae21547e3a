//! The syncer thread: makes commits durable, many at a time.
//!
//! # Why a thread of its own
//!
//! With `synchronous = FULL`, SQLite syncs the write-ahead log inside every
//! `COMMIT`, and the one writer waits for the disk each time: at width 16 a
//! queue then runs about 16 jobs per disk sync, however fast the disk is
//! otherwise. Here the writer commits with `synchronous = NORMAL` (the log is
//! written, not synced) and this thread calls `fdatasync` on the log file,
//! then answers every durable request committed before that call began. The
//! writer keeps committing meanwhile, so one sync covers many commits and no
//! claim ever waits for the disk.
//!
//! # Why this is as safe as `FULL`
//!
//! A commit has appended its frames to the log file (`-wal`) before the
//! writer hands its answers here, and `fdatasync` on any descriptor of a file
//! flushes all of that file's written data. A checkpoint may copy frames into
//! the database file and let the writer start the log over; but with
//! `NORMAL`, SQLite syncs the log before a checkpoint and the database after
//! it, and only then reuses the log. So an acknowledged request is on disk,
//! in the log or in the database, before its answer leaves.
//!
//! Commits that nobody waits for (claims, outcomes) are synced too, within
//! `sync_interval`, which bounds what a power cut can take back (it can only
//! make a finished job run again, never lose an acknowledged one).
//!
//! # Checkpoints
//!
//! Automatic checkpoints are off on the writer's connection (they would make
//! the writer wait for the disk). This thread checkpoints, `PASSIVE` (never
//! blocking the writer), on its own connection once the log passes a size.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::writer::Done;
use crate::error::StoreError;

/// Log size past which the syncer checkpoints.
const CHECKPOINT_BYTES: u64 = 16 << 20;

pub(crate) enum SyncMsg {
    /// A commit happened; answer these once it is synced.
    Committed(Vec<Done>),
    /// The writer is gone: sync what is left and stop.
    Stop,
}

pub(crate) struct Syncer {
    pub(crate) wal_path: PathBuf,
    pub(crate) conn: Connection,
    pub(crate) msgs: Receiver<SyncMsg>,
    pub(crate) interval: Duration,
    wal: Option<File>,
}

impl Syncer {
    pub(crate) fn new(
        wal_path: PathBuf,
        conn: Connection,
        msgs: Receiver<SyncMsg>,
        interval: Duration,
    ) -> Self {
        Syncer {
            wal_path,
            conn,
            msgs,
            interval,
            wal: None,
        }
    }

    pub(crate) fn run(mut self) {
        let mut waiting: Vec<Done> = Vec::new();
        // When the oldest commit not yet synced happened.
        let mut dirty_since: Option<Instant> = None;
        let mut stopping = false;
        loop {
            let msg = match (dirty_since, waiting.is_empty()) {
                (None, _) => self.msgs.recv().map_err(|_| RecvTimeoutError::Disconnected),
                (Some(_), false) => self.msgs.try_recv().map_err(|_| RecvTimeoutError::Timeout),
                (Some(since), true) => {
                    let left = self.interval.saturating_sub(since.elapsed());
                    self.msgs.recv_timeout(left)
                }
            };
            match msg {
                Ok(SyncMsg::Committed(dones)) => {
                    dirty_since.get_or_insert_with(Instant::now);
                    waiting.extend(dones);
                    continue; // gather everything already queued first
                }
                Ok(SyncMsg::Stop) | Err(RecvTimeoutError::Disconnected) => stopping = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if dirty_since.is_some() {
                let result = self.sync();
                if let Err(e) = &result {
                    tracing::error!(error = %e, "syncing the database log failed");
                }
                for done in waiting.drain(..) {
                    done(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(StoreError::Io {
                            path: self.wal_path.clone(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        }),
                    });
                }
                dirty_since = None;
                self.maybe_checkpoint();
            }
            if stopping {
                return;
            }
        }
    }

    /// `fdatasync` of the log, reopening it if SQLite replaced the file.
    fn sync(&mut self) -> std::io::Result<()> {
        let current = match std::fs::metadata(&self.wal_path) {
            Ok(m) => m.ino(),
            // No log file: nothing has been written to one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if self
            .wal
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.ino())
            != Some(current)
        {
            self.wal = Some(File::open(&self.wal_path)?);
        }
        self.wal.as_ref().expect("opened above").sync_data()
    }

    fn maybe_checkpoint(&mut self) {
        let big = std::fs::metadata(&self.wal_path).is_ok_and(|m| m.len() > CHECKPOINT_BYTES);
        if big {
            if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                tracing::warn!(error = %e, "checkpoint failed; will try again");
            }
        }
    }
}
