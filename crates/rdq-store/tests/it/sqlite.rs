//! What is particular to the SQLite backend: opening, locking, recovery.

use std::os::unix::fs::PermissionsExt;

use crate::support::{is_root, job, now};
use rdq_store::sqlite::{SqliteOptions, SqliteStore, SyncLevel};
use rdq_store::{ClaimParams, JobState, NewJob, Store, StoreError};

#[tokio::test]
async fn a_missing_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope/sub/x.db");
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoDirectory { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("nope/sub") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unwritable_directory_says_permission_denied() {
    // As root, mode bits do not stop writes; sysfs refuses new files to all.
    let (path, _keep) = if is_root() {
        (std::path::PathBuf::from("/sys/rdq-test.db"), None)
    } else {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        (dir.path().join("x.db"), Some(dir))
    };
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cannot open") && msg.to_lowercase().contains("permission denied"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_second_opener_learns_who_holds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let first = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Locked { pid: Some(p), .. } if p == std::process::id()),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains(&format!("pid {}", std::process::id())));
    assert!(
        err.to_string()
            .contains("already open by another store of this process"),
        "{err}"
    );
    first.close().await.unwrap();
    drop(first);
    SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused_not_guessed_at() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade rdq"));
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not an rdq database"), "{err}");
}

/// Jobs left underway (their process died) go back to pending at open, or
/// to dead on their last attempt; finished jobs stay finished.
#[tokio::test]
async fn open_recovers_jobs_a_dead_process_left_underway() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let mut last = job();
    last.max_attempts = 1;
    store
        .insert_many(vec![job(), job(), last, job()], now())
        .await
        .unwrap();
    let claimed = store
        .claim(ClaimParams {
            queue: "q".into(),
            max: 3,
            node: "gone".into(),
            now: now(),
            lease: std::time::Duration::from_secs(3600),
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(claimed.len(), 3);
    store.complete(rdq_store::Completion {
        id: claimed[0].id,
        attempt: 1,
        finish: rdq_store::Finish::Succeeded { result: None },
        at: now(),
    });
    // "Die" without finishing the other two: close flushes what was
    // written, as the kernel would keep it after kill -9.
    store.close().await.unwrap();
    drop(store);
    let store = reopen(&path).await;
    let report = store.recovered();
    assert_eq!((report.requeued, report.dead), (1, 1));
    let state = |i: usize| {
        let store = store.clone();
        let id = claimed[i].id;
        async move { store.get(id).await.unwrap().unwrap() }
    };
    assert_eq!(state(0).await.state, JobState::Succeeded);
    let requeued = state(1).await;
    assert_eq!((requeued.state, requeued.attempt), (JobState::Pending, 1));
    assert_eq!(state(2).await.state, JobState::Dead);
}

async fn reopen(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn recovery_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    store.insert_many(vec![job(), job()], now()).await.unwrap();
    store
        .claim(ClaimParams {
            queue: "q".into(),
            max: 2,
            node: "gone".into(),
            now: now(),
            lease: std::time::Duration::from_secs(3600),
        })
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = reopen(&path).await;
    assert_eq!(store.recovered().requeued, 2);
    let counts = store.counts("q").await.unwrap();
    assert_eq!(counts.get(&JobState::Pending), Some(&2));
}

#[tokio::test]
async fn normal_sync_level_acknowledges_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        sync: SyncLevel::Normal,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("x.db"), options)
        .await
        .unwrap();
    let ids = store.insert_many(vec![job(); 100], now()).await.unwrap();
    assert_eq!(ids.len(), 100);
    assert_eq!(
        store.counts("q").await.unwrap().get(&JobState::Pending),
        Some(&100)
    );
}

/// `sync` is answered by the syncer after its `fdatasync`, not at the next
/// `sync_interval` (an hour here), and at either sync level.
#[tokio::test]
async fn sync_waits_for_the_disk_not_for_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        sync: SyncLevel::Normal,
        sync_interval: std::time::Duration::from_secs(3600),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("x.db"), options)
        .await
        .unwrap();
    store.insert_many(vec![job(); 10], now()).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), store.sync())
        .await
        .expect("sync answered long before the interval")
        .unwrap();
    store.close().await.unwrap();
    assert!(matches!(store.sync().await, Err(StoreError::Closed)));
}

#[tokio::test]
async fn a_closed_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("x.db"), SqliteOptions::default())
        .await
        .unwrap();
    store.close().await.unwrap();
    let err = store.insert_many(vec![job()], now()).await.unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    assert!(store.get(rdq_store::JobId(1)).await.is_err());
}

#[tokio::test]
async fn close_releases_the_file_even_while_clones_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let clone = store.clone();
    store.close().await.unwrap();
    let again = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        clone.get(rdq_store::JobId(1)).await,
        Err(StoreError::Closed)
    ));
    drop(again);
}

/// A small tmpfs, unmounted when dropped. Needs root (CI runs as root);
/// elsewhere the test says why it cannot run, and under `CI=true` fails.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(bytes: usize) -> Option<TinyFs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(TinyFs { dir });
        }
        let why = "cannot mount a tmpfs to fill (needs root)";
        assert!(
            std::env::var_os("CI").is_none(),
            "{why}: this test must run in CI"
        );
        eprintln!("not run here: {why}");
        None
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// A full disk: puts fail with `DiskFull` (the server answers 503), every
/// job acknowledged before is intact, and once there is room again the
/// store carries on.
#[tokio::test]
async fn a_full_disk_refuses_puts_and_corrupts_nothing() {
    let Some(fs) = TinyFs::mount(4 << 20) else {
        return;
    };
    let path = fs.dir.path().join("full.db");
    let filler = fs.dir.path().join("filler");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let big = |i: usize| NewJob {
        args: format!("\"{i}:{}\"", "x".repeat(4000)),
        ..job()
    };
    // Most of the room goes to a filler file, so the database fills fast.
    std::fs::write(&filler, vec![0u8; 2 << 20]).unwrap();
    let mut acked = Vec::new();
    let err = loop {
        match store
            .insert_many((0..20).map(|i| big(acked.len() + i)).collect(), now())
            .await
        {
            Ok(ids) => acked.extend(ids.into_iter().map(|i| i.id)),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "the disk never filled");
    };
    assert!(matches!(err, StoreError::DiskFull(_)), "{err:?}");
    assert!(err.is_unavailable());
    assert!(
        err.to_string().contains("disk is full") && err.to_string().contains("full.db"),
        "names the file: {err}"
    );
    assert!(!acked.is_empty());
    // Room again: the same store goes on, and nothing acknowledged is gone.
    std::fs::remove_file(&filler).unwrap();
    store.insert_many(vec![job()], now()).await.unwrap();
    for id in &acked {
        assert!(
            store.get(*id).await.unwrap().is_some(),
            "acknowledged job {id} lost"
        );
    }
    store.close().await.unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// A database on a file system mounted read-only (as root too): the
/// message names the file and says to remount, instead of "attempt to
/// write a readonly database".
#[tokio::test]
async fn a_read_only_file_system_is_named_with_the_fix() {
    let Some(fs) = TinyFs::mount(4 << 20) else {
        return;
    };
    let path = fs.dir.path().join("ro.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    store.insert_many(vec![job()], now()).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    // A child of this test binary (other tests spawn some) holds a copy of
    // every descriptor between its fork and its exec, and a file open for
    // writing makes the remount busy: try again for a while.
    let remount = || {
        std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(fs.dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !remount() {
        assert!(std::time::Instant::now() < deadline, "remount read-only");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("cannot open {}", path.display())) && msg.contains("remount"),
        "{msg}"
    );
}

/// While a store is open, its process holds SQLite's shared lock on the
/// database file (a POSIX lock, seen in `/proc/locks`). SQLite's last
/// connection to close a file deletes its log, and it knows it is the last
/// when it gets an exclusive lock on the database file, which every other
/// connection's shared lock prevents. The store once dropped its process's
/// shared lock at open: it synced the file through a descriptor of its own
/// and closed it, and closing any descriptor of a file drops every POSIX
/// lock the process holds on it. Then another program that read the file
/// and closed (a `sqlite3` shell, Python's `sqlite3`, a backup tool, built
/// on an SQLite without a guard against this: 3.40 has none, the bundled
/// one has) deleted the log under the running store, which went on
/// committing into the deleted file: every put acknowledged from then on
/// was gone at the next open.
#[tokio::test]
async fn an_open_store_holds_sqlites_shared_lock_on_its_file() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    store.insert_many(vec![job()], now()).await.unwrap();
    let ino = std::fs::metadata(&path).unwrap().ino();
    let pid = std::process::id().to_string();
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    // "2: POSIX  ADVISORY  READ 4242 fe:00:5333005 1073741826 1073742335"
    let ours: Vec<&str> = locks
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            matches!(fields.as_slice(), [_, "POSIX", _, _, p, id, ..]
                if *p == pid && id.rsplit(':').next() == Some(&ino.to_string()))
        })
        .collect();
    assert!(
        !ours.is_empty(),
        "this process holds no POSIX lock on the open store's file; /proc/locks:\n{locks}"
    );
    store.close().await.unwrap();
}
