//! The audit log's index by target (`audit_targets`), which the audit log's target filter reads.
//!
//! SQLite would keep such an index in the commit of every audit entry, at a random place (targets
//! are random ids): one more dirty page per service read or deposit, 1.3 of the 1.85 pages a
//! service read wrote (README, Performance). Instead a thread of the server adds the entries
//! later, in *epochs*: it takes the rows written since the last epoch, sorts them by (target,
//! seq) and indexes them a slice of [`SLICE`] neighbouring keys at a time, each slice in a write
//! of its own that joins a group-commit batch. Neighbouring keys share pages, so a page takes
//! many entries in one commit instead of one entry in each of many.
//!
//! `audit_index_progress` says what is indexed, and is updated in the same transaction as the
//! entries: every row up to `indexed_through`, and every row up to `epoch_end` whose (target,
//! seq) sorts before (`next_target`, `next_seq`), the slice to come. A reader finds the rest of a
//! target's rows, which are few and recent, in the newest rows of the log ([`ROWS_OF_TARGET`]),
//! in the same statement, so its answer is complete whatever the indexer has done.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::retry::{self, Streak};
use super::{Db, StoreError, StoreResult};

/// The audit rows `a` not indexed yet, read from the newest rows of the log: the one place the
/// progress row's meaning is written in SQL ([`Progress::covers`] is the same in Rust).
macro_rules! not_indexed {
    () => {
        "FROM audit_index_progress p CROSS JOIN audit_log a
         WHERE a.seq > p.indexed_through
           AND (a.seq > p.epoch_end OR (a.target, a.seq) >= (p.next_target, p.next_seq))"
    };
}

/// Every column of every audit row of the target bound to `?1`, as a compound SELECT: the
/// indexed rows, then those not indexed yet. Both parts come in `seq` order (the first takes its
/// `seq` from the index for that), so an `ORDER BY seq` with a `LIMIT` around it merges them and
/// stops early. `CROSS JOIN` makes SQLite read the one progress row first, and then only the
/// newest rows of the log.
pub const ROWS_OF_TARGET: &str = concat!(
    "SELECT t.seq, a.id, a.at, a.actor, a.action, a.target, a.outcome, a.ip, a.details, a.prev_hash, a.hash
       FROM audit_targets t JOIN audit_log a ON a.seq = t.seq WHERE t.target = ?1
     UNION ALL
     SELECT a.* ",
    not_indexed!(),
    " AND a.target = ?1"
);

/// Entries per slice: a write of a few tenths of a millisecond, so that the batch it joins, and
/// the requests in it, are barely held up.
const SLICE: usize = 256;

/// The pause after each slice. Slices back to back took a share of the writer in bursts, one
/// epoch at a time, and requests sent at a steady rate queued behind them (p99 of tens of
/// milliseconds); paced, the work is spread evenly. Still 50,000 rows a second at most.
const PACE: Duration = Duration::from_millis(5);

/// An epoch starts once this many rows wait, or once the oldest has waited [`MAX_WAIT`]. The
/// more rows an epoch sorts, the more of them share a page; the longer they wait, the more rows
/// the target filter reads from the log itself.
const MIN_EPOCH: usize = 16 * 1024;
const MAX_WAIT: Duration = Duration::from_secs(1);
/// At most this many rows wait in memory (about 90 bytes each), and at most this many are read
/// at a time.
const MAX_WAITING: usize = 32 * 1024;
const READ_AT_ONCE: usize = 4 * 1024;

/// How often the thread looks for new rows when it has nothing to do.
const TICK: Duration = Duration::from_millis(20);

/// What is indexed (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub indexed_through: i64,
    pub epoch_end: i64,
    /// The first (target, seq) of the epoch not indexed yet; `None` between epochs.
    pub next: Option<(String, i64)>,
}

impl Progress {
    pub fn read(conn: &Connection) -> StoreResult<Progress> {
        let (indexed_through, epoch_end, target, seq): (i64, i64, Option<String>, Option<i64>) = conn
            .prepare_cached(
                "SELECT indexed_through, epoch_end, next_target, next_seq FROM audit_index_progress WHERE id = 1",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(Progress {
            indexed_through,
            epoch_end,
            next: target.zip(seq),
        })
    }

    /// Whether the audit row (`target`, `seq`) is indexed.
    pub fn covers(&self, target: &str, seq: i64) -> bool {
        seq <= self.indexed_through
            || (seq <= self.epoch_end
                && self
                    .next
                    .as_ref()
                    .is_some_and(|(t, s)| (target, seq) < (t.as_str(), *s)))
    }

    fn write(&self, conn: &Connection) -> StoreResult<()> {
        let (target, seq) = self.next.clone().unzip();
        conn.prepare_cached(
            "UPDATE audit_index_progress SET indexed_through = ?1, epoch_end = ?2, next_target = ?3, next_seq = ?4
             WHERE id = 1",
        )?
        .execute(params![self.indexed_through, self.epoch_end, target, seq])?;
        Ok(())
    }
}

/// The thread's state: its connection, the progress as last committed, the epoch in hand and
/// the rows read since, which wait for the next epoch.
pub struct Indexer {
    /// A connection of its own with a small cache: it reads each new row once, in order.
    conn: Connection,
    committed: Progress,
    /// The last row of the epoch in hand (of the last epoch, between epochs).
    epoch_end: i64,
    /// The epoch's rows not indexed yet, sorted by (target, seq); `pending[done..]` remain.
    pending: Vec<(String, i64)>,
    done: usize,
    /// The rows after `epoch_end` read so far, in `seq` order, and when the first arrived.
    waiting: Vec<(String, i64)>,
    waiting_since: Option<Instant>,
}

impl Indexer {
    /// Picks up where the last run left off, half-done epoch included.
    pub fn load(db: &Db) -> StoreResult<Indexer> {
        let conn = Connection::open(db.path())?;
        super::configure(&conn)?;
        super::keep_wal_on_close(&conn, true)?;
        conn.pragma_update(None, "cache_size", -256)?;
        let tx = conn.unchecked_transaction()?;
        let committed = Progress::read(&tx)?;
        let mut pending = Vec::new();
        if committed.next.is_some() {
            let epoch = (committed.epoch_end - committed.indexed_through) as usize;
            pending = rows_after(&tx, committed.indexed_through, epoch)?;
            pending.retain(|(target, seq)| *seq <= committed.epoch_end && !committed.covers(target, *seq));
            pending.sort_unstable();
        }
        drop(tx);
        Ok(Indexer {
            conn,
            epoch_end: committed.epoch_end,
            committed,
            pending,
            done: 0,
            waiting: Vec::new(),
            waiting_since: None,
        })
    }

    /// Does what is due: reads the rows written since it last looked, starts an epoch once
    /// enough of them have waited long enough (with `force`, as soon as one waits), and indexes
    /// the next slice of the epoch in hand. Returns whether more is due already. After an
    /// error, start over from [`Indexer::load`].
    pub fn step(&mut self, db: &Db, force: bool) -> StoreResult<bool> {
        if self.waiting.len() < MAX_WAITING {
            let last = self.waiting.last().map_or(self.epoch_end, |(_, seq)| *seq);
            let room = READ_AT_ONCE.min(MAX_WAITING - self.waiting.len());
            let new = rows_after(&self.conn, last, room)?;
            if !new.is_empty() {
                self.waiting_since.get_or_insert_with(Instant::now);
            }
            self.waiting.extend(new);
        }
        if self.done == self.pending.len() && self.epoch_due(force) {
            let mut epoch = std::mem::take(&mut self.waiting);
            // Recorded with the first slice: until it commits, the epoch's rows count as not
            // indexed, which they are.
            self.epoch_end = epoch.last().map_or(self.epoch_end, |(_, seq)| *seq);
            epoch.sort_unstable();
            self.pending = epoch;
            self.done = 0;
            self.waiting_since = None;
        }
        if self.done < self.pending.len() {
            self.index_slice(db)?;
        }
        Ok(self.done < self.pending.len() || self.epoch_due(force))
    }

    fn epoch_due(&self, force: bool) -> bool {
        self.waiting_since
            .is_some_and(|since| force || self.waiting.len() >= MIN_EPOCH || since.elapsed() >= MAX_WAIT)
    }

    fn index_slice(&mut self, db: &Db) -> StoreResult<()> {
        let end = (self.done + SLICE).min(self.pending.len());
        let slice = self.pending[self.done..end].to_vec();
        let next = self.pending.get(end).cloned();
        let after = Progress {
            indexed_through: if next.is_none() {
                self.epoch_end
            } else {
                self.committed.indexed_through
            },
            epoch_end: self.epoch_end,
            next,
        };
        let (before, write_after) = (self.committed.clone(), after.clone());
        db.write_in_background(move |tx| {
            // Only one indexer may move the progress on: another (a second server on the same
            // file) makes this one start over from what is recorded.
            if Progress::read(tx)? != before {
                return Err(StoreError::Conflict("the audit index moved on elsewhere".into()));
            }
            let mut insert = tx.prepare_cached("INSERT INTO audit_targets (target, seq) VALUES (?1, ?2)")?;
            for (target, seq) in &slice {
                insert.execute(params![target, seq])?;
            }
            write_after.write(tx)
        })?;
        self.committed = after;
        self.done = end;
        if self.done == self.pending.len() {
            self.pending = Vec::new();
            self.done = 0;
        }
        Ok(())
    }
}

/// Indexes every row not indexed yet in one statement: for a database filled outside the CRM
/// (the data generator), in its transaction. The server's thread does the same a slice at a time.
pub fn index_all(tx: &rusqlite::Transaction) -> StoreResult<()> {
    tx.execute_batch(concat!(
        "INSERT INTO audit_targets (target, seq) SELECT a.target, a.seq ",
        not_indexed!(),
        " ORDER BY a.target, a.seq;
         UPDATE audit_index_progress
            SET (indexed_through, epoch_end, next_target, next_seq) =
                (SELECT coalesce(max(seq), 0), coalesce(max(seq), 0), NULL, NULL FROM audit_log);"
    ))?;
    Ok(())
}

/// The (target, seq) of the first `count` rows after `after`, in `seq` order.
fn rows_after(conn: &Connection, after: i64, count: usize) -> StoreResult<Vec<(String, i64)>> {
    let rows = conn
        .prepare_cached("SELECT target, seq FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
        .query_map(params![after, count as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The indexing thread. Dropping the handle without [`Handle::stop`] stops it too, unjoined.
pub struct Handle {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Handle {
    /// Stops the thread after the slice in progress; what it indexed is committed.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the audit index thread panicked");
        }
    }
}

/// Starts the thread. A failure is logged and retried later; meanwhile the target filter reads
/// more of the log itself, and nothing else depends on the index.
pub fn spawn(db: Db) -> std::io::Result<Handle> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("crm-audit-index".into())
        .spawn(move || {
            let mut indexer: Option<Indexer> = None;
            let mut failing = Streak::new("indexing the audit log by target");
            loop {
                // After a failed write nothing is read or written any more (see `durability`).
                if db.sync_failed() {
                    match stopped.recv_timeout(Duration::from_secs(60)) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        _ => return,
                    }
                }
                let more = match indexer.as_mut() {
                    Some(i) => {
                        let before = i.committed.clone();
                        let more = i.step(&db, false);
                        // Only a step that wrote ends a streak of failures: loading, and a step
                        // that only reads, succeed while every write fails.
                        if more.is_ok() && i.committed != before {
                            failing.succeeded();
                        }
                        more
                    }
                    None => Indexer::load(&db).map(|loaded| indexer = Some(loaded)).map(|()| true),
                };
                let pause = match more {
                    Ok(true) => PACE,
                    Ok(false) => TICK,
                    Err(e) => {
                        failing.failed(&e);
                        indexer = None;
                        retry::PAUSE
                    }
                };
                match stopped.recv_timeout(pause) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })?;
    Ok(Handle { stop, thread })
}

/// An order-independent digest of (target, seq) pairs: the same set gives the same digest
/// however it is read, so `crm verify` can compare the index with the log in one pass over each.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub entries: u64,
    sum: u64,
}

impl Digest {
    pub fn add(&mut self, target: &str, seq: i64) {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the same in both passes of one run, which is all it needs.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (target, seq).hash(&mut h);
        self.entries += 1;
        self.sum = self.sum.wrapping_add(h.finish());
    }

    pub fn merge(mut self, other: Digest) -> Digest {
        self.entries += other.entries;
        self.sum = self.sum.wrapping_add(other.sum);
        self
    }
}

/// The progress and the digest of every index entry, read at one moment.
pub fn indexed(conn: &Connection) -> StoreResult<(Progress, Digest)> {
    let tx = conn.unchecked_transaction()?;
    let progress = Progress::read(&tx)?;
    let mut digest = Digest::default();
    let mut stmt = tx.prepare("SELECT target, seq FROM audit_targets")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        digest.add(super::text_column(r, 0)?, r.get(1)?);
    }
    Ok((progress, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::{self, Audit, AuditQuery};

    const TARGETS: i64 = 7;

    fn scratch() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        (dir, db)
    }

    /// `n` more audit rows, their targets taking turns.
    fn append(db: &Db, n: i64) {
        db.write_sync(|tx| {
            for i in 0..n {
                audit::append(tx, &Audit::new("cli", "test", format!("client:{}", i % TARGETS)))?;
            }
            Ok(())
        })
        .unwrap();
    }

    /// Every target's rows, read through the target filter (whole and page by page), are exactly
    /// its rows in the log.
    fn every_row_is_found(db: &Db, when: &str) {
        db.read_sync(|conn| {
            for t in (0..=TARGETS).map(|i| format!("client:{i}")) {
                let expected: Vec<i64> = conn
                    .prepare("SELECT seq FROM audit_log WHERE target = ?1 ORDER BY seq DESC")?
                    .query_map([&t], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let query = |before: Option<i64>, limit: u32| {
                    let q = AuditQuery {
                        target: Some(t.clone()),
                        before,
                        limit,
                        ..AuditQuery::default()
                    };
                    audit::query(conn, &q).map(|rows| rows.iter().map(|r| r.seq).collect::<Vec<_>>())
                };
                assert_eq!(query(None, 1000)?, expected, "{t}, {when}");
                let mut paged = Vec::new();
                loop {
                    let page = query(paged.last().copied(), 9)?;
                    if page.is_empty() {
                        break;
                    }
                    paged.extend(page);
                }
                assert_eq!(paged, expected, "{t} page by page, {when}");
            }
            Ok(())
        })
        .unwrap();
    }

    fn indexed_entries(db: &Db) -> i64 {
        db.read_sync(|conn| Ok(conn.query_row("SELECT count(*) FROM audit_targets", [], |r| r.get(0))?))
            .unwrap()
    }

    fn progress(db: &Db) -> Progress {
        db.read_sync(Progress::read).unwrap()
    }

    #[test]
    fn a_targets_rows_are_all_found_before_while_and_after_they_are_indexed() {
        let (_dir, db) = scratch();
        append(&db, 700);
        every_row_is_found(&db, "none indexed");
        let mut indexer = Indexer::load(&db).unwrap();
        assert!(
            !indexer.step(&db, false).unwrap(),
            "700 rows that just arrived wait for more"
        );
        let mut slices = 1;
        while indexer.step(&db, true).unwrap() {
            every_row_is_found(&db, &format!("after slice {slices}"));
            slices += 1;
        }
        assert_eq!(slices, 700usize.div_ceil(SLICE));
        assert_eq!(indexed_entries(&db), 700);
        let p = progress(&db);
        assert_eq!((p.indexed_through, p.epoch_end, p.next), (700, 700, None));

        // Rows arrive while a second epoch is half done; the indexer is restarted meanwhile.
        append(&db, 600);
        assert!(indexer.step(&db, true).unwrap());
        assert!(indexer.step(&db, true).unwrap());
        append(&db, 50);
        every_row_is_found(&db, "second epoch half done");
        let p = progress(&db);
        assert_eq!((p.indexed_through, p.epoch_end), (700, 1300));
        assert!(p.next.is_some());
        let mut restarted = Indexer::load(&db).unwrap();
        while restarted.step(&db, true).unwrap() {
            every_row_is_found(&db, "after the restart");
        }
        assert_eq!(indexed_entries(&db), 1350);
        let p = progress(&db);
        assert_eq!((p.indexed_through, p.epoch_end, p.next), (1350, 1350, None));
        every_row_is_found(&db, "all indexed");
    }

    #[test]
    fn a_second_indexer_on_the_same_file_makes_the_other_start_over_instead_of_indexing_twice() {
        let (_dir, db) = scratch();
        append(&db, 600);
        let mut first = Indexer::load(&db).unwrap();
        let mut second = Indexer::load(&db).unwrap();
        assert!(first.step(&db, true).unwrap());
        assert!(matches!(second.step(&db, true), Err(StoreError::Conflict(_))));
        let mut second = Indexer::load(&db).unwrap();
        while second.step(&db, true).unwrap() {}
        assert_eq!(indexed_entries(&db), 600);
        every_row_is_found(&db, "all indexed");
    }

    #[test]
    fn index_all_finishes_a_half_done_epoch() {
        let (_dir, db) = scratch();
        append(&db, 600);
        let mut indexer = Indexer::load(&db).unwrap();
        indexer.step(&db, true).unwrap();
        indexer.step(&db, true).unwrap();
        append(&db, 10);
        db.write_sync(index_all).unwrap();
        assert_eq!(indexed_entries(&db), 610);
        let p = progress(&db);
        assert_eq!((p.indexed_through, p.epoch_end, p.next), (610, 610, None));
    }

    /// The rows not indexed yet are found by reading the log from the first of them, not all of it.
    #[test]
    fn the_target_filter_reads_the_index_and_only_the_newest_rows_of_the_log() {
        let (_dir, db) = scratch();
        let plan: Vec<String> = db
            .read_sync(|conn| {
                let sql = format!("EXPLAIN QUERY PLAN SELECT * FROM ({ROWS_OF_TARGET}) ORDER BY seq DESC LIMIT 100");
                Ok(conn
                    .prepare(&sql)?
                    .query_map(["client:1"], |r| r.get(3))?
                    .collect::<Result<_, _>>()?)
            })
            .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("SEARCH t USING PRIMARY KEY (target=?)"), "{plan}");
        assert!(plan.contains("SEARCH a USING INTEGER PRIMARY KEY (rowid>?)"), "{plan}");
        assert!(!plan.contains("SCAN a"), "{plan}");
    }
}
