//! Group commit: every async write goes to one writer thread, which gathers the writes queued
//! while it was busy and runs them in ONE `BEGIN IMMEDIATE` transaction, then commits once. A
//! second thread makes the commit durable (one `fdatasync` of the WAL for the batch, or for
//! several batches that committed meanwhile, see [`WalFile`]) and only then reports back, while
//! the writer goes on with the next batch.
//!
//! Each write still behaves as if it ran alone: it sees every earlier write of the batch, a
//! failing write leaves nothing behind and does not touch the others, and its caller hears back
//! only after the batch's commit is durable — or gets an error if the commit failed. How a
//! failing write is kept out without a savepoint around every write: see [`commit_batch`].
//!
//! The one exception is a write queued with [`Ack::Committed`] (the audit entry of a read): its
//! caller hears back as soon as the batch has committed, and the sync that follows makes it
//! durable. Committed, it survives the CRM crashing or being killed (the WAL is written); only a
//! power cut in the millisecond or so before that sync can lose it. A change never uses it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

use super::checkpoint::Nudge;
use super::durability::Durability;
use super::wal_file::WalFile;
use super::{StoreError, StoreResult};

/// One queued write. The writer may run it a second time, on the same data, after rolling the
/// first run back (see [`commit_batch`]); so it must not depend on having run before. What it
/// changes are rows (INSERT, UPDATE, DELETE, which SQLite counts); the schema changes only in
/// migrations.
pub trait Job: Send {
    /// Runs the write in the batch's transaction; returns whether it succeeded.
    fn run(&mut self, tx: &Transaction) -> bool;
    /// Records that the write did not run (or its run was undone), and why.
    fn refuse(&mut self, error: StoreError);
    /// Reports the write's result, now that the batch's commit is durable (`None`) or failed;
    /// or, for [`Ack::Committed`], as soon as it committed.
    fn settle(self: Box<Self>, failure: Option<&Failure>);
    /// When the caller hears back.
    fn ack(&self) -> Ack;
}

/// When a write's caller hears back: once its commit is durable, or once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Synced,
    Committed,
}

pub type Batch = Vec<Box<dyn Job>>;

/// Where writes are queued for the writer thread.
pub type Queue = mpsc::Sender<Box<dyn Job>>;

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
    jobs: Batch,
    outcome: Result<(), rusqlite::Error>,
}

/// Starts the writer and sync threads; returns the queue and both threads, writer first.
pub fn spawn(
    conn: Arc<Mutex<Connection>>,
    wal: Arc<WalFile>,
    durability: Arc<Durability>,
    checkpoint: Nudge,
) -> std::io::Result<(Queue, [JoinHandle<()>; 2])> {
    let (sender, receiver) = mpsc::channel::<Box<dyn Job>>();
    let (to_sync, committed) = mpsc::channel::<Committed>();
    let sync = std::thread::Builder::new().name("crm-sync".into()).spawn(move || {
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
    let writer = std::thread::Builder::new().name("crm-writer".into()).spawn(move || {
        // Ends when every Db handle (and so every sender) is gone.
        while let Ok(first) = receiver.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            if durability.has_failed() {
                // Nothing more is run on pages that may not be on the disk.
                for mut job in jobs {
                    job.refuse(durability.refusal());
                    job.settle(None);
                }
                continue;
            }
            let outcome = {
                let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                commit_batch(&mut conn, &mut jobs)
            };
            if outcome.as_ref().is_err_and(waited_for_lock) {
                // The writes queued while this batch waited out the busy timeout would each
                // wait it out again, batch after batch: they are refused with it (none has run).
                jobs.extend(receiver.try_iter());
            }
            // A failure flagged while this batch ran (a checkpoint's sync, say): its reads are not
            // answered either, and the sync, which now refuses, fails every write of it. Even
            // with no job left waiting, the batch goes to the sync thread: it makes the answered
            // writes durable too.
            let jobs = if durability.has_failed() {
                jobs
            } else {
                answer_committed(jobs, &outcome)
            };
            if let Err(mpsc::SendError(orphan)) = to_sync.send(Committed { jobs, outcome }) {
                // Only if the sync thread died: never leave a caller without an answer, and never
                // call a write durable that nobody synced.
                let stopped = Failure::Sync(std::io::Error::other("the WAL sync thread has stopped"));
                settle(orphan, Some(&stopped));
            }
        }
    })?;
    Ok((sender, [writer, sync]))
}

/// Whether a batch failed because another process held the database's lock past the busy
/// timeout.
fn waited_for_lock(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Answers the writes of a committed batch that were queued with [`Ack::Committed`]; returns
/// the others, which wait for the sync (all of them if the commit failed).
fn answer_committed(jobs: Batch, outcome: &rusqlite::Result<()>) -> Batch {
    if outcome.is_err() {
        return jobs;
    }
    let (answered, waiting): (Batch, Batch) = jobs.into_iter().partition(|job| job.ack() == Ack::Committed);
    for job in answered {
        job.settle(None);
    }
    waiting
}

/// Runs the batch and commits it, without waiting for the disk.
///
/// A savepoint around every write is costly (SQLite copies each page a write touches first into
/// the savepoint journal, and then keeps a statement journal for every statement too), and nearly
/// every write succeeds. So the batch first runs without them. A write that fails having changed no row (a refusal
/// checked before writing, or a statement SQLite aborted and undid by itself, such as a UNIQUE
/// violation) leaves the transaction exactly as it found it. Only a write that fails after
/// changing rows spoils that pass: then the whole transaction is rolled back and the batch runs
/// again, each write inside a savepoint of its own that is undone if the write fails.
fn commit_batch(conn: &mut Connection, jobs: &mut Batch) -> rusqlite::Result<()> {
    let tx = begin(conn, jobs)?;
    if run_all(&tx, jobs, false) {
        return tx.commit();
    }
    tx.rollback()?;
    let tx = begin(conn, jobs)?;
    run_all(&tx, jobs, true);
    tx.commit()
}

fn begin<'c>(conn: &'c mut Connection, jobs: &mut Batch) -> rusqlite::Result<Transaction<'c>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .inspect_err(|_| {
            for job in jobs.iter_mut() {
                job.refuse(StoreError::Unavailable);
            }
        })
}

/// Runs every job, each in a savepoint if `isolated`. Without savepoints, returns false as soon
/// as a job fails after changing rows: the transaction then holds part of a failed write.
fn run_all(tx: &Transaction, jobs: &mut Batch, isolated: bool) -> bool {
    for job in jobs.iter_mut() {
        // After some errors (disk full, I/O, out of memory) SQLite rolls the whole transaction
        // back by itself. Nothing more may run then: a statement would open a transaction of its
        // own and commit it behind the batch's back. The failed commit then reports every job of
        // the batch as not applied, which is the truth.
        if tx.is_autocommit() {
            job.refuse(StoreError::Unavailable);
        } else if isolated {
            in_savepoint(tx, job.as_mut());
        } else {
            let changes = tx.total_changes();
            if !job.run(tx) && tx.total_changes() != changes {
                return false;
            }
        }
    }
    true
}

fn in_savepoint(tx: &Transaction, job: &mut dyn Job) {
    if let Err(e) = tx.prepare_cached("SAVEPOINT job").and_then(|mut s| s.execute([])) {
        return job.refuse(e.into());
    }
    if job.run(tx) {
        if let Err(e) = tx.prepare_cached("RELEASE job").and_then(|mut s| s.execute([])) {
            job.refuse(e.into());
        }
    } else {
        // If SQLite already rolled everything back, this fails too; the job's own error is the
        // one worth reporting.
        let _ = tx.execute_batch("ROLLBACK TO job; RELEASE job");
    }
}

/// Tells every job of a batch how it ended: its commit failed, or its sync did, or neither.
fn settle(batch: Committed, sync_failure: Option<&Failure>) {
    let commit_failure = batch.outcome.err().map(Failure::Commit);
    let failure = commit_failure.as_ref().or(sync_failure);
    for job in batch.jobs {
        job.settle(failure);
    }
}

/// A write closure, its latest result, and where and when the result goes.
struct Write<T, F> {
    write: F,
    result: StoreResult<T>,
    reply: tokio::sync::oneshot::Sender<StoreResult<T>>,
    ack: Ack,
}

impl<T, F> Job for Write<T, F>
where
    T: Send + 'static,
    F: Fn(&Transaction) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, tx: &Transaction) -> bool {
        self.result = catch_unwind(AssertUnwindSafe(|| (self.write)(tx)))
            .unwrap_or_else(|_| Err(StoreError::Other(anyhow::anyhow!("a database write panicked"))));
        self.result.is_ok()
    }

    fn refuse(&mut self, error: StoreError) {
        self.result = Err(error);
    }

    fn settle(self: Box<Self>, failure: Option<&Failure>) {
        let outcome = match (self.result, failure) {
            (Ok(value), None) => Ok(value),
            (Ok(_), Some(failure)) => Err(failure_error(failure)),
            (Err(e), _) => Err(e),
        };
        // The caller may have gone away (client disconnected); the write stands either way.
        let _ = self.reply.send(outcome);
    }

    fn ack(&self) -> Ack {
        self.ack
    }
}

/// Wraps a write closure into a [`Job`] and a receiver for its result.
pub fn job<T, F>(write: F, ack: Ack) -> (Box<dyn Job>, tokio::sync::oneshot::Receiver<StoreResult<T>>)
where
    T: Send + 'static,
    F: Fn(&Transaction) -> StoreResult<T> + Send + 'static,
{
    let (reply, receiver) = tokio::sync::oneshot::channel();
    let job = Write {
        write,
        result: Err(StoreError::Unavailable),
        reply,
        ack,
    };
    (Box::new(job), receiver)
}

pub(super) fn failure_error(failure: &Failure) -> StoreError {
    match failure {
        Failure::Commit(e) if super::is_unavailable(e) => StoreError::Unavailable,
        Failure::Commit(e) => StoreError::Other(anyhow::anyhow!("commit failed: {e}")),
        Failure::Sync(e) => StoreError::Other(anyhow::anyhow!("the commit could not be made durable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Db;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot::Receiver;

    fn job<T, F>(write: F) -> (Box<dyn Job>, Receiver<StoreResult<T>>)
    where
        T: Send + 'static,
        F: Fn(&Transaction) -> StoreResult<T> + Send + 'static,
    {
        super::job(write, Ack::Synced)
    }

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
                        // Written, then refused: this write only must be undone.
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

    /// Runs `jobs` as one batch, straight on the writer connection, and reports them as durable.
    fn run_batch(db: &Db, jobs: Batch) {
        let mut conn = db.writer.lock().unwrap();
        let mut jobs = jobs;
        let outcome = commit_batch(&mut conn, &mut jobs);
        settle(Committed { jobs, outcome }, None);
    }

    fn rows(db: &Db) -> Vec<i64> {
        db.read_sync(|c| {
            let mut stmt = c.prepare("SELECT n FROM t ORDER BY n")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .unwrap()
    }

    /// An insert of `n` that counts how often it ran.
    fn counted_insert(n: i64) -> (Box<dyn Job>, Arc<AtomicUsize>, Receiver<StoreResult<usize>>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let (job, result) = job(move |tx| {
            tx.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
            Ok(counter.fetch_add(1, Ordering::SeqCst) + 1)
        });
        (job, runs, result)
    }

    #[test]
    fn writes_that_fail_before_changing_anything_leave_the_batch_to_run_once() {
        let (_dir, db) = scratch_db();
        db.write_sync(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (7)", [])?))
            .unwrap();
        let (first, first_runs, first_result) = counted_insert(1);
        // Refused before writing, and a UNIQUE violation that SQLite undoes statement by statement.
        let (refused, refused_result) = job(|_tx| -> StoreResult<()> { Err(StoreError::Conflict("no".into())) });
        let (duplicate, _, duplicate_result) = counted_insert(7);
        let (last, last_runs, last_result) = counted_insert(2);
        run_batch(&db, vec![first, refused, duplicate, last]);
        assert_eq!(first_result.blocking_recv().unwrap().unwrap(), 1);
        assert!(matches!(
            refused_result.blocking_recv().unwrap(),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            duplicate_result.blocking_recv().unwrap(),
            Err(StoreError::Sqlite(_))
        ));
        assert_eq!(last_result.blocking_recv().unwrap().unwrap(), 1);
        assert_eq!(
            (first_runs.load(Ordering::SeqCst), last_runs.load(Ordering::SeqCst)),
            (1, 1),
            "no write ran twice"
        );
        assert_eq!(rows(&db), vec![1, 2, 7]);
    }

    #[test]
    fn a_write_that_fails_after_changing_rows_is_undone_and_the_others_stand() {
        let (_dir, db) = scratch_db();
        let (first, first_runs, first_result) = counted_insert(1);
        let (spoiler, spoiler_result) = job(|tx| -> StoreResult<()> {
            tx.execute("INSERT INTO t (n) VALUES (100)", [])?;
            tx.execute("INSERT INTO t (n) VALUES (101)", [])?;
            Err(StoreError::Conflict("refused after writing".into()))
        });
        let (last, last_runs, last_result) = counted_insert(2);
        run_batch(&db, vec![first, spoiler, last]);
        assert!(matches!(
            spoiler_result.blocking_recv().unwrap(),
            Err(StoreError::Conflict(_))
        ));
        // The batch ran again, each write in a savepoint; the answers are those of that run.
        assert_eq!(first_result.blocking_recv().unwrap().unwrap(), 2);
        assert_eq!(
            last_result.blocking_recv().unwrap().unwrap(),
            1,
            "it never ran in the first pass"
        );
        assert_eq!(
            (first_runs.load(Ordering::SeqCst), last_runs.load(Ordering::SeqCst)),
            (2, 1)
        );
        assert_eq!(
            rows(&db),
            vec![1, 2],
            "nothing of the failed write is kept, once each of the others"
        );
    }

    #[test]
    fn a_write_that_panics_after_changing_rows_is_undone() {
        let (_dir, db) = scratch_db();
        let (first, _, first_result) = counted_insert(1);
        let (panicking, panicking_result) = job(|tx| -> StoreResult<()> {
            tx.execute("INSERT INTO t (n) VALUES (100)", [])?;
            panic!("boom");
        });
        run_batch(&db, vec![first, panicking]);
        assert!(first_result.blocking_recv().unwrap().is_ok());
        assert!(panicking_result.blocking_recv().unwrap().is_err());
        assert_eq!(rows(&db), vec![1]);
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
        run_batch(&db, vec![first, abandon, after]);
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
    fn a_write_for_a_read_is_answered_at_commit_and_a_change_only_after_the_sync() {
        let (_dir, db) = scratch_db();
        let (change, mut change_result) = job(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (1)", [])?));
        let (read_audit, mut read_result) =
            super::job(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (2)", [])?), Ack::Committed);
        let (failed_audit, mut failed_result) = super::job(
            |tx| -> StoreResult<usize> {
                tx.execute("INSERT INTO t (n) VALUES (1)", [])?;
                Ok(0)
            },
            Ack::Committed,
        );
        let mut conn = db.writer.lock().unwrap();
        let mut jobs = vec![change, read_audit, failed_audit];
        let outcome = commit_batch(&mut conn, &mut jobs);
        drop(conn);
        let waiting = answer_committed(jobs, &outcome);
        assert_eq!(read_result.try_recv().unwrap().unwrap(), 1, "answered once committed");
        assert!(
            failed_result.try_recv().unwrap().is_err(),
            "a failed write is answered with its own error"
        );
        assert!(change_result.try_recv().is_err(), "a change waits for the sync");
        assert_eq!(waiting.len(), 1);
        settle(Committed { jobs: waiting, outcome }, None);
        assert_eq!(change_result.try_recv().unwrap().unwrap(), 1);
        assert_eq!(rows(&db), [1, 2]);

        let (late, mut late_result) = super::job(|_tx| Ok(()), Ack::Committed);
        let failed_commit = Err(rusqlite::Error::ExecuteReturnedResults);
        let waiting = answer_committed(vec![late], &failed_commit);
        assert!(
            late_result.try_recv().is_err(),
            "nothing is answered of a batch whose commit failed"
        );
        settle(
            Committed {
                jobs: waiting,
                outcome: failed_commit,
            },
            None,
        );
        assert!(late_result.try_recv().unwrap().is_err());
    }

    #[test]
    fn when_the_sync_fails_no_write_of_the_batch_reports_success() {
        let (_dir, db) = scratch_db();
        let (ok, ok_result) = job(|tx| Ok(tx.execute("INSERT INTO t (n) VALUES (1)", [])?));
        let (refused, refused_result) = job(|_tx| -> StoreResult<()> { Err(StoreError::Conflict("no".into())) });
        let committed = {
            let mut conn = db.writer.lock().unwrap();
            let mut jobs = vec![ok, refused];
            let outcome = commit_batch(&mut conn, &mut jobs);
            Committed { jobs, outcome }
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
