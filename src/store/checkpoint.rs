//! WAL checkpoints on a thread of their own.
//!
//! By default SQLite checkpoints inside the commit that pushes the WAL past 1,000 pages, on the
//! connection that committed: the writer would stop taking new batches while it copies pages into
//! the database file and syncs it. Instead the writer's automatic checkpoint is off and, after
//! each commit, it nudges this thread, which runs a PASSIVE checkpoint (one that never waits for
//! or blocks the writer) at most every [`INTERVAL`], on the other core.
//!
//! A passive checkpoint under steady writes never quite finishes (frames keep arriving while it
//! copies), and SQLite starts the WAL over only after one has. So when the WAL has grown past
//! [`RESET_FRAMES`], the thread holds the writer between two batches just long enough to copy the
//! frames the last pass missed; the writer's next transaction then starts the WAL from the top.
//!
//! SQLite syncs the database file only at the end of a pass that copied the whole WAL, which
//! under steady writes is only that held pass: every page the unfinished passes had copied since
//! the last reset was then written to the disk while the writer waited (30-95 ms, measured). So
//! this thread syncs the database file itself after every pass, outside any hold: the disk takes
//! the copied pages a megabyte or two at a time, and the held pass syncs only what it copied.
//! Nothing depends on that extra sync for safety: SQLite still syncs the WAL before copying from
//! it and the database file before the WAL may start over.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::durability::Durability;
use super::retry::{self, Streak};

/// Short, so each pass copies, and the sync after it writes, only a megabyte or two. The WAL's
/// syncs, and so the answers to deposits, wait behind whatever the disk is writing when they are
/// issued: at 50 ms each sync of the database file took about 5 ms, and the slowest deposits were
/// those that waited behind one (p99 about 11 ms at 14,000/s, 7.8-9.8 ms at 10 ms; measured,
/// README, Performance). A longer pause copies a page written many times once instead of several
/// times; at 10 ms the bytes written per request rose by under a tenth, and the thread's CPU by
/// 2-3 µs per deposit.
const INTERVAL: Duration = Duration::from_millis(10);

/// 128 MiB of 4 KiB pages: past this, the WAL is brought back to empty. Each time stalls the
/// writer while the frames the last pass missed are copied and synced: 2-10 ms when passes came
/// every 50 ms, about once a second under full webhook load (measured; README, Performance).
const RESET_FRAMES: i64 = 32 * 1024;

/// Kept when the WAL starts over, so a burst does not leave a large file behind.
pub const WAL_SIZE_LIMIT: i64 = 160 * 1024 * 1024;

/// Tells the checkpoint thread that something was committed. Cheap and never blocks.
#[derive(Clone)]
pub struct Nudge(SyncSender<()>);

impl Nudge {
    pub fn committed(&self) {
        // A nudge already pending covers this commit too; a stopped thread has nothing to do.
        let _ = self.0.try_send(());
    }
}

/// Starts the thread on its own connection to `path`. It ends when every [`Nudge`] is gone.
pub fn spawn(
    path: &Path,
    writer: Arc<Mutex<Connection>>,
    durability: Arc<Durability>,
) -> anyhow::Result<(Nudge, JoinHandle<()>)> {
    let conn = Connection::open(path)?;
    super::configure(&conn)?;
    super::keep_wal_on_close(&conn, true)?;
    let database = File::open(path)?;
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("crm-checkpoint".into())
        .spawn(move || {
            let mut failing = Streak::new("WAL checkpoint");
            while nudged.recv().is_ok() {
                // After a failed write, copying the WAL into the database file would spread what
                // may never have reached the disk (see `durability`).
                if durability.has_failed() {
                    continue;
                }
                let pause = match checkpoint(&conn, &database, &writer) {
                    Ok(()) => {
                        failing.succeeded();
                        INTERVAL
                    }
                    // The copied pages may be lost while the WAL, the next pass finding the
                    // database file "synced", starts over without them.
                    Err(Failed::Write(e)) => {
                        durability.fail("writing the database file", &e);
                        INTERVAL
                    }
                    // The disk is full, or a backup holds a lock: the WAL grows until the next
                    // try, and every committed transaction is already durable in it.
                    Err(Failed::Retry(e)) => {
                        failing.failed(&e);
                        retry::PAUSE
                    }
                };
                std::thread::sleep(pause);
            }
        })?;
    Ok((Nudge(nudge), thread))
}

/// One pass and the sync of what it copied; past [`RESET_FRAMES`], one more pass between two
/// of the writer's batches, so that the WAL starts over.
fn checkpoint(conn: &Connection, database: &File, writer: &Mutex<Connection>) -> Result<(), Failed> {
    let wal_frames = passive(conn)?;
    database.sync_data().map_err(|e| Failed::Write(e.into()))?;
    if wal_frames > RESET_FRAMES {
        let _between_batches = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        passive(conn)?;
    }
    Ok(())
}

/// Why a checkpoint did not finish: a write the disk refused (SQLite's I/O error, a failed sync),
/// or something that passes (the disk is full: nothing was written; a lock).
enum Failed {
    Write(anyhow::Error),
    Retry(anyhow::Error),
}

impl From<rusqlite::Error> for Failed {
    /// Only the I/O errors of writing or syncing mean a page may be lost; a failed read, lock or
    /// shared-memory resize leaves the WAL as it was, for the next pass.
    fn from(e: rusqlite::Error) -> Failed {
        use rusqlite::ffi;
        let lost = [
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_IOERR_DIR_FSYNC,
            ffi::SQLITE_IOERR_TRUNCATE,
        ];
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if lost.contains(&f.extended_code) => Failed::Write(e.into()),
            _ => Failed::Retry(e.into()),
        }
    }
}

/// One passive checkpoint; returns how many frames the WAL holds.
fn passive(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}

#[cfg(test)]
mod tests {
    use crate::store::Db;

    /// Under writes that never pause, a passive checkpoint never finishes on its own, and
    /// without the pause between batches the WAL would hold everything ever written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_writes_never_pause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path).unwrap();
        db.write_sync(|tx| Ok(tx.execute_batch("CREATE TABLE blobs (b BLOB NOT NULL)")?))
            .unwrap();
        // 384 MiB in 16 KiB rows, from eight writers at once: far more than the WAL may hold.
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    for _ in 0..3072 {
                        db.write(|tx| Ok(tx.execute("INSERT INTO blobs (b) VALUES (zeroblob(16384))", [])?))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("t.db-wal")).unwrap().len();
        assert!(wal < 256 * 1024 * 1024, "the WAL grew to {wal} bytes");
    }
}
