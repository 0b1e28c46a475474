//! The WAL copied back into the database file on a thread of its own, not by the writer.
//!
//! SQLite's default has the connection whose commit takes the WAL past
//! `wal_autocheckpoint` pages copy it back (a checkpoint), inside that commit's call.
//! On the engine's one writer of payments that copy was a tenth to a fifth of the
//! thread's CPU (benches/RESULTS.md, "The batch commit without its savepoint, and the
//! checkpoint off the writer"), and every batch queued behind it waited.
//!
//! Here the writer's connection reports each commit's WAL size to a `Checkpointer`
//! (SQLite's WAL hook), which wakes its thread once `BACKGROUND_PAGES` frames are not
//! yet copied. That thread runs a PASSIVE checkpoint on its own connection: it copies
//! what no reader still needs, taking no lock the writer waits for, while the writer
//! goes on appending. What it leaves behind is at most the batch committed while it
//! ran. The WAL starts again from its beginning only when a write transaction begins
//! with every frame copied, which a writer busy back to back rarely sees; so the
//! writer's own commit copies the little left, inline, once the WAL holds
//! `INLINE_PAGES` frames (SQLite's own path, at the store's mark from before the
//! thread), and the next transaction restarts the WAL. That also bounds the WAL should
//! the thread fall behind or fail.
//!
//! Durability does not depend on any of it: a commit is in the WAL and fsynced
//! (synchronous=FULL) before it returns; a checkpoint only moves committed pages into
//! the database file, and SQLite makes a checkpoint cut short by a crash harmless.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::{ffi, Connection};

use super::sqlite::{open_wal, Synchronous};

/// Frames not yet copied past which the writer's commit wakes the checkpoint thread:
/// 1,000 (4 MiB of 4 KiB pages, about a batch of 500), so that by the inline mark the
/// thread has copied three quarters of the WAL.
pub const BACKGROUND_PAGES: u32 = 1_000;

/// WAL frames past which the writer's own commit checkpoints, inline (SQLite's
/// `wal_autocheckpoint` on every other connection to the file, see
/// `quickpay_engine.store.sqlite`). The WAL file grows to about this times 4 KiB:
/// 16 MiB, the store's bound before this thread. At 64 MiB the WAL alone filled a
/// 32 MiB data dir that had just been freed from full (the chaos suite's disk-full
/// scenario): a data dir on a small volume must not need more than that for a file
/// that only holds what waits to be copied.
pub const INLINE_PAGES: u32 = 4_000;

/// The thread's OS name (`top -H`, perf, benches/thread_cpu.py).
const THREAD_NAME: &str = "sqlite_checkpoint";

#[derive(Default)]
struct Wake {
    /// (a checkpoint is asked for, the thread is to stop)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

/// The checkpoints a thread ran, and those that failed (a full disk, an I/O error):
/// kept apart from the writer, so that reading them never waits for a commit.
#[derive(Debug, Default)]
pub struct Counts {
    runs: AtomicU64,
    failures: AtomicU64,
}

impl Counts {
    /// (checkpoints run, of which failed)
    pub fn get(&self) -> (u64, u64) {
        (
            self.runs.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// What the writer's hook and the thread share.
#[derive(Default)]
struct Shared {
    wake: Wake,
    /// The WAL frames the last checkpoint had copied (0 once the WAL started again).
    copied: AtomicU32,
    /// The frames the last commit left in the WAL (the hook's own, on the writer's
    /// thread): fewer after a commit means the WAL started again.
    seen: AtomicU32,
    counts: Arc<Counts>,
}

impl Shared {
    fn ask(&self) {
        let mut state = self.wake.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.0 {
            state.0 = true;
            self.wake.changed.notify_one();
        }
    }

    /// Waits to be asked; false once the thread is to stop.
    fn asked(&self) -> bool {
        let mut state = self.wake.state.lock().unwrap_or_else(|p| p.into_inner());
        while !state.0 && !state.1 {
            state = self
                .wake
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state.0 = false;
        !state.1
    }
}

/// The checkpoint thread of one database file, and the hook that wakes it. Dropped after
/// the connection it is installed on (it owns what the hook points to).
pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread for the file at `path`, counting into `counts`; it opens its
    /// connection on the first checkpoint.
    pub fn start(path: &Path, counts: Arc<Counts>) -> std::io::Result<Checkpointer> {
        let shared = Arc::new(Shared {
            counts,
            ..Shared::default()
        });
        let path = path.to_path_buf();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || run(&path, &shared))?
        };
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// Makes `db`'s commits report to this checkpointer. It replaces SQLite's automatic
    /// checkpoint on `db` (a `wal_autocheckpoint` pragma on it afterwards would undo
    /// this). `db` must be closed before `self` is dropped.
    pub fn install(&self, db: &Connection) {
        // SAFETY: the hook's data is `self.shared`, which lives as long as `self`, and
        // `self` outlives `db` (the caller's promise, kept by `Writer`'s field order).
        unsafe {
            ffi::sqlite3_wal_hook(
                db.handle(),
                Some(hook),
                Arc::as_ptr(&self.shared) as *mut c_void,
            );
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            let mut state = self
                .shared
                .wake
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            state.1 = true;
            self.shared.wake.changed.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// SQLite's WAL hook: called after each commit of the connection, outside any
/// transaction, with the frames the WAL now holds.
unsafe extern "C" fn hook(
    data: *mut c_void,
    db: *mut ffi::sqlite3,
    name: *const c_char,
    frames: c_int,
) -> c_int {
    // SAFETY: `data` is the `Shared` that `install` gave, alive while the connection is.
    let shared = unsafe { &*(data as *const Shared) };
    let frames = u32::try_from(frames).unwrap_or(0);
    if frames >= INLINE_PAGES {
        // The copy left behind, and the WAL starts again at the next transaction. A
        // checkpoint under way on the thread makes this one busy: the next commit tries
        // again. Its result is the commit's no more than in SQLite's own hook.
        // SAFETY: `db` and `name` are the ones SQLite passed to this hook.
        unsafe {
            ffi::sqlite3_wal_checkpoint_v2(
                db,
                name,
                ffi::SQLITE_CHECKPOINT_PASSIVE,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
        shared.copied.store(0, Ordering::Relaxed);
        shared.seen.store(frames, Ordering::Relaxed);
        return ffi::SQLITE_OK;
    }
    if frames < shared.seen.swap(frames, Ordering::Relaxed) {
        shared.copied.store(0, Ordering::Relaxed); // the WAL started again
    }
    if frames.saturating_sub(shared.copied.load(Ordering::Relaxed)) >= BACKGROUND_PAGES {
        shared.ask();
    }
    ffi::SQLITE_OK
}

fn run(path: &Path, shared: &Shared) {
    let mut db: Option<Connection> = None;
    while shared.asked() {
        if db.is_none() {
            match open_wal(path, Synchronous::Full) {
                Ok(opened) => db = Some(opened),
                Err(_) => {
                    shared.counts.failures.fetch_add(1, Ordering::Relaxed);
                    continue; // the next commit asks again
                }
            }
        }
        let connection = db.as_ref().expect("opened above");
        shared.counts.runs.fetch_add(1, Ordering::Relaxed);
        match connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(2)) {
            Ok(copied) => shared
                .copied
                .store(u32::try_from(copied).unwrap_or(0), Ordering::Relaxed),
            Err(_) => {
                // A full disk, an I/O error: the connection is opened afresh next time,
                // and the writer's inline checkpoint bounds the WAL meanwhile.
                shared.counts.failures.fetch_add(1, Ordering::Relaxed);
                db = None;
            }
        }
    }
}
