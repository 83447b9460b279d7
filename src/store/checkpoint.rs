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

use std::path::Path;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Long enough for a page written many times under load to be copied once, short enough that
/// the WAL stays a few megabytes.
const INTERVAL: Duration = Duration::from_millis(200);

/// 128 MiB of 4 KiB pages: past this, the WAL is brought back to empty. Each time stalls the
/// writer while the frames the last pass missed are copied and the database file is synced:
/// 30-80 ms, about once a second under full webhook load (measured; README, Performance).
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
pub fn spawn(path: &Path, writer: Arc<Mutex<Connection>>) -> anyhow::Result<(Nudge, JoinHandle<()>)> {
    let conn = Connection::open(path)?;
    super::configure(&conn)?;
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("crm-checkpoint".into())
        .spawn(move || {
            while nudged.recv().is_ok() {
                // A failure (the disk is full, a backup holds a lock) leaves the WAL to grow until the
                // next try; every committed transaction is already durable in it.
                let outcome = passive(&conn).and_then(|wal_frames| {
                    if wal_frames <= RESET_FRAMES {
                        return Ok(());
                    }
                    let _between_batches = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    passive(&conn).map(drop)
                });
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
                std::thread::sleep(INTERVAL);
            }
        })?;
    Ok((Nudge(nudge), thread))
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
