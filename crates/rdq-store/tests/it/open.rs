//! Opening a SQLite store: one process per database *file*, whatever path
//! leads to it, and open errors that name the path, the cause and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{is_root, job, now};
use rdq_store::sqlite::{SqliteOptions, SqliteStore};
use rdq_store::{Store, StoreError};

async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(path, SqliteOptions::default()).await
}

/// The error a second opener gets: `Locked`, naming this process (the
/// holder; flock locks conflict between two opens in one process too).
fn assert_refused_with_our_pid(err: StoreError) {
    let pid = std::process::id();
    assert!(
        matches!(err, StoreError::Locked { pid: Some(p), .. } if p == pid),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
}

/// A symlink is another path to the same file: a second store through it
/// is refused, and would otherwise re-queue the first one's running jobs.
#[tokio::test]
async fn a_symlink_to_a_held_file_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.db");
    let first = open(&real).await.unwrap();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_refused_with_our_pid(open(&link).await.unwrap_err());
    // A symlinked directory on the way is the same case.
    let dir_link = dir.path().join("dirlink");
    std::os::unix::fs::symlink(dir.path(), &dir_link).unwrap();
    assert_refused_with_our_pid(open(&dir_link.join("real.db")).await.unwrap_err());
    first.close().await.unwrap();
}

/// A hard link is the same file under another name. SQLite keeps its log
/// beside the name it opened, so a second store through a hard link would
/// get a log of its own: the same ids handed out twice, and the jobs it
/// acknowledged gone afterwards. It must be refused before SQLite opens it.
#[tokio::test]
async fn a_hard_link_to_a_held_file_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.db");
    let first = open(&real).await.unwrap();
    first.insert_many(vec![job()], now()).await.unwrap();
    let other = dir.path().join("sub");
    std::fs::create_dir(&other).unwrap();
    let hard = other.join("hard.db");
    std::fs::hard_link(&real, &hard).unwrap();
    assert_refused_with_our_pid(open(&hard).await.unwrap_err());
    assert!(
        !Path::new(&format!("{}-wal", hard.display())).exists(),
        "refused before SQLite opened the file (no log beside the link)"
    );
    first.close().await.unwrap();
    drop(first);
    // Released: the hard link now opens, and sees the same jobs.
    let again = open(&hard).await.unwrap();
    assert!(again.get(rdq_store::JobId(1)).await.unwrap().is_some());
    again.close().await.unwrap();
}

/// Openers racing to create a file that does not exist yet: exactly one
/// wins, the others are refused with its pid, and the file is a sound
/// database afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openers_racing_to_create_a_file_one_wins() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("race{round}.db"));
        let opens = (0..4).map(|_| {
            let path = path.clone();
            tokio::spawn(async move { open(&path).await })
        });
        let mut won = Vec::new();
        for result in futures_join(opens).await {
            match result {
                Ok(store) => won.push(store),
                Err(e) => assert_refused_with_our_pid(e),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one opener wins");
        let store = won.pop().unwrap();
        store.insert_many(vec![job()], now()).await.unwrap();
        store.close().await.unwrap();
    }
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("open finishes")
                .unwrap(),
        );
    }
    out
}

/// Through a symlink, the store works on the real file: its path is the
/// real one, and the log it syncs is the one SQLite writes (beside the
/// real file, not beside the link).
#[tokio::test]
async fn a_store_opened_through_a_symlink_works_on_the_real_file() {
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().join("data");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("real.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // The target does not exist yet: opening through the link creates it.
    let store = open(&link).await.unwrap();
    store.insert_many(vec![job()], now()).await.unwrap();
    let canonical: PathBuf = std::fs::canonicalize(&real).unwrap();
    assert_eq!(store.path(), canonical);
    assert!(Path::new(&format!("{}-wal", canonical.display())).exists());
    assert!(!Path::new(&format!("{}-wal", link.display())).exists());
    store.close().await.unwrap();
}

// Errors that say what to fix.

/// Another program (not rdq) holds SQLite's lock on the file: the open
/// fails with the path, the cause and the fix (and a warning was logged at
/// once, see `with_lock_wait`), instead of "database is locked".
#[tokio::test]
async fn a_file_locked_by_another_program_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_database(dir.path()).await;
    // `sqlite3 x.db 'BEGIN EXCLUSIVE;'` left open. (In one process SQLite
    // does not wait for a lock its other connection holds on a file in
    // rollback mode; the server's tests cover that case across processes.)
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    let err = SqliteStore::open(&path, waiting(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it waited: {err:?}"
    );
    assert_busy(&err, &path);
    other.execute_batch("COMMIT").unwrap();
    drop(other);
    open(&path).await.unwrap().close().await.unwrap();
}

/// The same while the store runs: a write waits `lock_wait`, then fails
/// naming the file; once the other program lets go, writes go on.
#[tokio::test]
async fn a_write_blocked_by_another_program_says_so_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let store = SqliteStore::open(&path, waiting(Duration::from_millis(300)))
        .await
        .unwrap();
    store.insert_many(vec![job()], now()).await.unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        store.insert_many(vec![job()], now()),
    )
    .await
    .expect("the put is answered")
    .unwrap_err();
    assert_busy(&err, store.path());
    assert!(err.is_unavailable(), "a server answers 503");
    other.execute_batch("ROLLBACK").unwrap();
    store.insert_many(vec![job()], now()).await.unwrap();
    store.close().await.unwrap();
}

fn waiting(lock_wait: Duration) -> SqliteOptions {
    SqliteOptions {
        lock_wait,
        ..SqliteOptions::default()
    }
}

fn assert_busy(err: &StoreError, path: &Path) {
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("locked by another program")
            && msg.contains("stop that program"),
        "{msg}"
    );
}

/// A file or directory nobody may write, undone when dropped. Mode bits do
/// not stop root (CI runs as root), so as root it is made immutable
/// (`chattr +i`, which stops root too); elsewhere its mode is cleared of
/// write bits. `None` (and a note) where neither can be done; under
/// `CI=true` that fails instead.
struct Unwritable {
    path: PathBuf,
    root: bool,
    mode: u32,
}

impl Unwritable {
    fn make(path: &Path) -> Option<Unwritable> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        let root = is_root();
        if root {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let why = "cannot make a file immutable (chattr +i) as root here";
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{why}: this test must run in CI"
                );
                eprintln!("not run here: {why}");
                return None;
            }
        } else {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o222)).unwrap();
        }
        Some(Unwritable {
            path: path.to_owned(),
            root,
            mode,
        })
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.root {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.path)
                .status();
        } else {
            let _ =
                std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(self.mode));
        }
    }
}

/// An existing database that was closed cleanly (no log files left).
async fn closed_database(dir: &Path) -> PathBuf {
    let path = dir.join("x.db");
    let store = open(&path).await.unwrap();
    store.insert_many(vec![job()], now()).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    path
}

/// A read-only database file: the message names it and says how to make it
/// writable, instead of "attempt to write a readonly database".
#[tokio::test]
async fn a_read_only_file_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_database(dir.path()).await;
    let Some(_ro) = Unwritable::make(&path) else {
        return;
    };
    let err = open(&path).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        msg.contains(&format!("cannot open {}", path.display())),
        "{msg}"
    );
    assert!(
        msg.contains("chattr -i") || msg.contains("give the user rdq runs as write permission"),
        "says how to make it writable: {msg}"
    );
}

/// A writable file in a directory where SQLite cannot create its log files
/// (`-wal`, `-shm`): the message names the directory and those files.
#[tokio::test]
async fn a_directory_where_the_log_cannot_be_created_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("data");
    std::fs::create_dir(&sub).unwrap();
    let path = closed_database(&sub).await;
    // A clean close leaves no log, except when a child process of this
    // test binary (other tests spawn some) held a copy of SQLite's
    // descriptors at that instant: SQLite then keeps the log, which is
    // harmless (the next open reads it) but would let this open succeed.
    // Open and close again until it is gone.
    for _ in 0..20 {
        if !sub.join("x.db-wal").exists() {
            break;
        }
        open(&path).await.unwrap().close().await.unwrap();
    }
    assert!(
        !sub.join("x.db-wal").exists(),
        "a clean close leaves no log"
    );
    let Some(_ro) = Unwritable::make(&sub) else {
        return;
    };
    let err = open(&path).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("x.db-wal")
            && msg.contains(&format!("the directory {} must be writable", sub.display())),
        "{msg}"
    );
}

/// A new database in a directory where no file can be created.
#[tokio::test]
async fn a_directory_where_the_file_cannot_be_created_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("data");
    std::fs::create_dir(&sub).unwrap();
    let Some(_ro) = Unwritable::make(&sub) else {
        return;
    };
    let path = sub.join("new.db");
    let msg = open(&path).await.unwrap_err().to_string();
    assert!(
        msg.contains(&format!("cannot open {}", path.display()))
            && (msg.contains("chattr -i")
                || msg.contains(&format!("the directory {} must be writable", sub.display()))),
        "{msg}"
    );
}

/// Not a database: the message names the file and what to do.
#[tokio::test]
async fn a_file_that_is_not_a_database_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "dear diary, ".repeat(1000)).unwrap();
    let msg = open(&path).await.unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("not an rdq database")
            && msg.contains("choose another path"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "dear diary, ".repeat(1000),
        "left as it was"
    );
}

/// A child process holds a copy of every descriptor of its parent between
/// its `fork` and its `exec`, the lock's too, so a store closed while its
/// process spawns children (the server's command executor does) could be
/// refused on reopening, by its own process. Regression: 2 of 300 reopens
/// were refused before `LockFile` learned to tell such a leftover from a
/// second store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_reopened_while_its_process_spawns_children_is_not_refused() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawning = stop.clone();
    let spawner = std::thread::spawn(move || {
        let mut spawned = 0;
        while !spawning.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::process::Command::new("true").status();
            spawned += 1;
        }
        spawned
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut refused = Vec::new();
    for round in 0..300 {
        match open(&path).await {
            Ok(store) => store.close().await.unwrap(),
            Err(e) => refused.push(format!("round {round}: {e}")),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        spawner.join().unwrap() > 0,
        "children were spawned meanwhile"
    );
    assert!(refused.is_empty(), "{refused:#?}");
}
