//! Group commit: every async write goes to one writer thread, which gathers the writes queued
//! while it was busy and runs them in ONE `BEGIN IMMEDIATE` transaction, each inside its own
//! savepoint, then commits once. A second thread makes the commit durable (one `fdatasync` of the
//! WAL for the batch, or for several batches that committed meanwhile, see [`WalFile`]) and only
//! then reports back, while the writer goes on with the next batch.
//!
//! Each write still behaves as if it ran alone: it sees every earlier write of the batch, a
//! failing write rolls back to its savepoint without touching the others, and its caller hears
//! back only after the batch's commit is durable — or gets an error if the commit failed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

use super::checkpoint::Nudge;
use super::wal_file::WalFile;
use super::{StoreError, StoreResult};

/// Runs in the batch's transaction (`None` if the transaction could not be started) and returns
/// what to do once the outcome of the commit is known (`None` = committed and durable).
pub type Job = Box<dyn FnOnce(Option<&Transaction>) -> Completion + Send>;
pub type Completion = Box<dyn FnOnce(Option<&Failure>) + Send>;

/// Why a batch's writes did not take effect, or may not have.
#[derive(Debug)]
pub enum Failure {
    Commit(rusqlite::Error),
    Sync(std::io::Error),
}

/// More than enough to turn thousands of commits per second into a few dozen syncs.
const MAX_BATCH: usize = 512;

/// A batch the writer has finished with, on its way to the sync thread.
struct Committed {
    completions: Vec<Completion>,
    outcome: Result<(), rusqlite::Error>,
}

pub fn spawn(conn: Arc<Mutex<Connection>>, wal: Arc<WalFile>, checkpoint: Nudge) -> std::io::Result<mpsc::Sender<Job>> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let (to_sync, committed) = mpsc::channel::<Committed>();
    std::thread::Builder::new().name("crm-sync".into()).spawn(move || {
        // Ends when the writer thread has ended and everything it committed is reported.
        while let Ok(first) = committed.recv() {
            let mut batches = vec![first];
            batches.extend(committed.try_iter());
            let synced = if batches.iter().any(|b| b.outcome.is_ok()) {
                wal.sync().map_err(|e| {
                    tracing::error!(error = %e, "syncing the WAL failed: the last commits may not survive a power loss");
                    Failure::Sync(e)
                })
            } else {
                Ok(())
            };
            for batch in batches {
                settle(batch, synced.as_ref().err());
            }
            checkpoint.committed();
        }
    })?;
    std::thread::Builder::new().name("crm-writer".into()).spawn(move || {
        // Ends when every Db handle (and so every sender) is gone.
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let committed = {
                let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                commit_batch(&mut conn, batch)
            };
            if let Err(mpsc::SendError(orphan)) = to_sync.send(committed) {
                // Only if the sync thread died: never leave a caller without an answer, and never
                // call a write durable that nobody synced.
                let stopped = Failure::Sync(std::io::Error::other("the WAL sync thread has stopped"));
                settle(orphan, Some(&stopped));
            }
        }
    })?;
    Ok(sender)
}

/// Runs the batch and commits it, without waiting for the disk.
fn commit_batch(conn: &mut Connection, batch: Vec<Job>) -> Committed {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let completions = batch.into_iter().map(|job| job(None)).collect();
            return Committed {
                completions,
                outcome: Err(e),
            };
        }
    };
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    for job in batch {
        // After some errors (disk full, I/O, out of memory) SQLite rolls the whole transaction
        // back by itself. Nothing more may run then: a job's SAVEPOINT would open a transaction
        // of its own and its RELEASE would commit it behind the batch's back. The failed commit
        // below then reports every job of the batch as not applied, which is the truth.
        let usable = !tx.is_autocommit();
        completions.push(job(usable.then_some(&tx)));
    }
    Committed {
        completions,
        outcome: tx.commit(),
    }
}

/// Tells every job of a batch how it ended: its commit failed, or its sync did, or neither.
fn settle(batch: Committed, sync_failure: Option<&Failure>) {
    let commit_failure = batch.outcome.err().map(Failure::Commit);
    let failure = commit_failure.as_ref().or(sync_failure);
    for done in batch.completions {
        done(failure);
    }
}

/// Wraps a write closure into a [`Job`] and a receiver for its result.
pub fn job<T, F>(f: F) -> (Job, tokio::sync::oneshot::Receiver<StoreResult<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Transaction) -> StoreResult<T> + Send + 'static,
{
    let (reply, receiver) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |tx: Option<&Transaction>| -> Completion {
        let result = match tx {
            Some(tx) => in_savepoint(tx, f),
            None => Err(StoreError::Unavailable),
        };
        Box::new(move |failure: Option<&Failure>| {
            let outcome = match (result, failure) {
                (Ok(value), None) => Ok(value),
                (Ok(_), Some(failure)) => Err(failure_error(failure)),
                (Err(e), _) => Err(e),
            };
            // The caller may have gone away (client disconnected); the write stands either way.
            let _ = reply.send(outcome);
        })
    });
    (job, receiver)
}

fn in_savepoint<T>(tx: &Transaction, f: impl FnOnce(&Transaction) -> StoreResult<T>) -> StoreResult<T> {
    tx.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = catch_unwind(AssertUnwindSafe(|| f(tx)))
        .unwrap_or_else(|_| Err(StoreError::Other(anyhow::anyhow!("a database write panicked"))));
    match result {
        Ok(value) => {
            tx.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(e) => {
            // If SQLite already rolled everything back, this fails too; the job's own error is
            // the one worth reporting.
            let _ = tx.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

pub(super) fn failure_error(failure: &Failure) -> StoreError {
    match failure {
        Failure::Commit(e) => match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull) => StoreError::Unavailable,
            _ => StoreError::Other(anyhow::anyhow!("commit failed: {e}")),
        },
        Failure::Sync(e) => StoreError::Other(anyhow::anyhow!("the commit could not be made durable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Db;
    use super::*;

    fn scratch_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write_sync(|tx| Ok(tx.execute_batch("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")?))
            .unwrap();
        (dir, db)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_each_apply_once_and_a_failing_one_touches_nothing_else() {
        let (_dir, db) = scratch_db();
        let mut handles = Vec::new();
        for i in 0..300i64 {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                db.write(move |tx| {
                    tx.execute("INSERT INTO t (n) VALUES (?1)", [i])?;
                    if i % 3 == 0 {
                        // Written, then refused: the savepoint must undo this write only.
                        return Err(StoreError::Conflict("refused".into()));
                    }
                    Ok(i)
                })
                .await
            }));
        }
        let mut ok = 0;
        for h in handles {
            if h.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 200);
        let rows: i64 = db
            .read_sync(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(rows, 200);
        let refused: i64 = db
            .read_sync(|c| Ok(c.query_row("SELECT COUNT(*) FROM t WHERE n % 3 = 0", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(refused, 0);
    }

    #[test]
    fn when_sqlite_abandons_the_transaction_no_later_write_runs_or_reports_success() {
        let (_dir, db) = scratch_db();
        let insert = |n: i64| job(move |tx| Ok(tx.execute("INSERT INTO t (n) VALUES (?1)", [n])?));
        let (first, first_result) = insert(1);
        // Stands in for SQLite's own rollback after SQLITE_FULL or an I/O error.
        let (abandon, abandon_result) = job(|tx| {
            tx.execute_batch("ROLLBACK")?;
            Ok(())
        });
        let (after, after_result) = insert(2);
        {
            let mut conn = db.writer.lock().unwrap();
            settle(commit_batch(&mut conn, vec![first, abandon, after]), None);
        }
        assert!(
            first_result.blocking_recv().unwrap().is_err(),
            "its write was rolled back with the batch"
        );
        assert!(abandon_result.blocking_recv().unwrap().is_err());
        assert!(matches!(
            after_result.blocking_recv().unwrap(),
            Err(StoreError::Unavailable)
        ));
        let rows: i64 = db
            .read_sync(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(rows, 0, "nothing of the abandoned batch was committed");
    }

    #[test]
    fn when_the_sync_fails_no_write_of_the_batch_reports_success() {
        let (_dir, db) = scratch_db();
        let (ok, ok_result) = job(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (1)", [])?));
        let (refused, refused_result) = job(|_tx| -> StoreResult<()> { Err(StoreError::Conflict("no".into())) });
        let committed = {
            let mut conn = db.writer.lock().unwrap();
            commit_batch(&mut conn, vec![ok, refused])
        };
        let sync_failure = Failure::Sync(std::io::Error::other("EIO"));
        settle(committed, Some(&sync_failure));
        let ok_error = ok_result.blocking_recv().unwrap().unwrap_err();
        assert!(ok_error.to_string().contains("durable"), "{ok_error}");
        assert!(
            matches!(refused_result.blocking_recv().unwrap(), Err(StoreError::Conflict(_))),
            "a write that failed on its own keeps its own error"
        );
    }

    #[tokio::test]
    async fn a_panicking_write_is_an_error_and_the_writer_keeps_going() {
        let (_dir, db) = scratch_db();
        let panicked = db.write(|_tx| -> StoreResult<()> { panic!("boom") }).await;
        assert!(panicked.is_err());
        db.write(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (1)", [])?))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_constraint_violation_inside_one_write_leaves_the_batch_usable() {
        let (_dir, db) = scratch_db();
        db.write(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (7)", [])?))
            .await
            .unwrap();
        let dup = db.write(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (7)", [])?)).await;
        assert!(matches!(dup, Err(StoreError::Sqlite(_))));
        db.write(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (8)", [])?))
            .await
            .unwrap();
    }
}
