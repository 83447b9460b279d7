//! WAL checkpoints on a thread of their own.
//!
//! By default SQLite checkpoints inside the commit that pushes the WAL past 1,000 pages, on the
//! connection that committed: the writer would stop taking new batches while it copies pages into
//! the database file and syncs it. Instead the writer's automatic checkpoint is off and, after
//! each commit, it nudges this thread, which runs a PASSIVE checkpoint (one that never waits for
//! or blocks the writer) at most every [`INTERVAL`], on the other core.

use std::path::Path;
use std::sync::mpsc::{self, SyncSender};
use std::time::Duration;

use rusqlite::Connection;

/// Long enough for a page written many times under load to be copied once, short enough that
/// the WAL stays a few megabytes.
const INTERVAL: Duration = Duration::from_millis(200);

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
pub fn spawn(path: &Path) -> anyhow::Result<Nudge> {
    let conn = Connection::open(path)?;
    super::configure(&conn)?;
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("crm-checkpoint".into())
        .spawn(move || {
            while nudged.recv().is_ok() {
                // A failure (the disk is full, a backup holds a lock) leaves the WAL to grow until the
                // next try; every committed transaction is already durable in it.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
                std::thread::sleep(INTERVAL);
            }
        })?;
    Ok(Nudge(nudge))
}
