//! `crm verify`: the database checks an operator runs after a crash, a restore or a suspicion.

use std::borrow::Cow;
use std::fmt;

use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;

use crate::domain::Money;
use crate::store::accounts::LedgerDigest;
use crate::store::audit_index::{self, Digest};
use crate::store::{accounts, audit, Db, StoreError, StoreResult};

#[derive(Debug, Default)]
pub struct Report {
    /// What the database holds, so a restored copy can be told from an empty one at a glance.
    pub contents: String,
    pub checks: Vec<(String, Vec<String>)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|(_, problems)| problems.is_empty())
    }

    fn add(&mut self, name: &str, problems: Vec<String>) {
        self.checks.push((name.to_string(), problems));
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "holds {}", self.contents)?;
        for (name, problems) in &self.checks {
            if problems.is_empty() {
                writeln!(f, "ok    {name}")?;
            } else {
                writeln!(f, "FAIL  {name}")?;
                for p in problems.iter().take(20) {
                    writeln!(f, "      - {p}")?;
                }
                if problems.len() > 20 {
                    writeln!(f, "      ... and {} more", problems.len() - 20)?;
                }
            }
        }
        writeln!(
            f,
            "{}",
            if self.ok() {
                "verify: all checks passed"
            } else {
                "verify: FAILED"
            }
        )
    }
}

/// How thoroughly SQLite checks its own file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// `PRAGMA quick_check`: every page, B-tree and record, NOT NULL and CHECK constraints. In
    /// time linear in the file (most of the half minute `crm verify` takes on a 12 GB database
    /// here).
    Quick,
    /// `PRAGMA integrity_check`: also that every index entry matches its row and UNIQUE holds,
    /// one index search per row per index (2-2.5 minutes for the same file).
    Full,
}

/// Runs every check. They only read, each on its own connection, so they run side by side, and
/// the audit chain, the longest walk after SQLite's own check, in one stretch per core.
pub fn run(db: &Db, depth: Depth) -> anyhow::Result<Report> {
    let bounds = db.read_sync(Bounds::read)?;
    let (integrity, books, chain) = std::thread::scope(|scope| {
        let integrity = scope.spawn(|| db.read_sync(|conn| mapped(conn, |conn| sqlite_integrity(conn, depth))));
        let books = scope.spawn(|| db.read_sync(|conn| mapped(conn, |conn| books(conn, bounds))));
        let chain = audit_chain(db, bounds);
        (join(integrity), join(books), chain)
    });
    let mut report = Report {
        contents: db.read_sync(|conn| contents(conn, bounds))?,
        ..Report::default()
    };
    let name = match depth {
        Depth::Quick => "SQLite quick check (--full for the index-by-index integrity check)",
        Depth::Full => "SQLite integrity check",
    };
    report.add(name, integrity?);
    let (books, in_ledger) = books?;
    for (name, problems) in books {
        report.add(name, problems);
    }
    let (chain, index, in_audit) = chain?;
    let broken = chain.is_some();
    report.add("audit log hash chain", chain.into_iter().collect());
    report.add("audit log index by target", index);
    report.add(
        "every ledger entry is the one its audit entry recorded",
        recorded_problems(in_ledger, in_audit, broken),
    );
    Ok(report)
}

/// Clients, and the newest ledger entry and audit row with their times.
fn contents(conn: &Connection, bounds: Bounds) -> StoreResult<String> {
    let clients: i64 = conn.query_row("SELECT count(*) FROM clients", [], |r| r.get(0))?;
    let at = |sql: &str, seq: i64| -> StoreResult<String> {
        let at: Option<String> = conn.query_row(sql, [seq], |r| r.get(0)).optional()?;
        Ok(at.map_or_else(|| "none".to_string(), |at| format!("#{seq} at {at}")))
    };
    Ok(format!(
        "{clients} clients; newest ledger entry {}; newest audit entry {}",
        at("SELECT created_at FROM ledger_entries WHERE seq = ?1", bounds.ledger)?,
        at("SELECT at FROM audit_log WHERE seq = ?1", bounds.audit)?,
    ))
}

/// The newest ledger entry and audit row at one moment. Each ledger entry and the audit entry
/// that records it are committed together, so the entries up to the one bound are exactly those
/// recorded by the rows up to the other, whatever a running CRM commits while verify reads.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    ledger: i64,
    audit: i64,
}

impl Bounds {
    fn read(conn: &Connection) -> StoreResult<Bounds> {
        Ok(conn.query_row(
            "SELECT (SELECT coalesce(max(seq), 0) FROM ledger_entries), (SELECT coalesce(max(seq), 0) FROM audit_log)",
            [],
            |r| {
                Ok(Bounds {
                    ledger: r.get(0)?,
                    audit: r.get(1)?,
                })
            },
        )?)
    }
}

/// What the audit entry of a balance change says of its ledger entry (see
/// `accounts::apply_balance_change`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recorded<'a> {
    #[serde(borrow)]
    ledger_entry_id: Cow<'a, str>,
    #[serde(borrow)]
    account_id: Cow<'a, str>,
    #[serde(borrow)]
    fund_type: Cow<'a, str>,
    #[serde(borrow)]
    amount: Cow<'a, str>,
    #[serde(borrow)]
    balance_after: Cow<'a, str>,
}

/// Adds the ledger entry an audit row records, if it records one; false if it names a ledger
/// entry but cannot be read as one.
fn add_recorded(digest: &mut LedgerDigest, details: &str) -> bool {
    // Most rows record no balance change: only those that name an entry are decoded.
    if !details.contains("\"ledgerEntryId\"") {
        return true;
    }
    let Ok(r) = serde_json::from_str::<Recorded>(details) else {
        return false;
    };
    let (Ok(amount), Ok(after)) = (Money::parse(&r.amount), Money::parse(&r.balance_after)) else {
        return false;
    };
    digest.add(
        &r.ledger_entry_id,
        &r.account_id,
        &r.fund_type,
        amount.atoms(),
        after.atoms(),
    );
    true
}

/// The ledger's digest against the audit log's (and how many of its rows could not be read).
fn recorded_problems(
    in_ledger: LedgerDigest,
    (in_audit, unreadable): (LedgerDigest, u64),
    broken: bool,
) -> Vec<String> {
    if broken {
        return vec!["not checked: the hash chain is broken".to_string()];
    }
    let mut problems = Vec::new();
    if unreadable > 0 {
        problems.push(format!(
            "{unreadable} audit rows name a ledger entry but do not say what it was"
        ));
    }
    if in_ledger != in_audit {
        problems.push(format!(
            "the ledger holds {} entries and the audit log records {}, or they differ: an entry was \
             added, removed or edited outside the CRM",
            in_ledger.entries, in_audit.entries
        ));
    }
    problems
}

/// Runs `f` on a connection that reads the database file through a memory map rather than one
/// `pread` per page: the checks read nearly every page of the file, and copying each one out of
/// the kernel was a third of `crm verify`'s time (52 s down to 34 s at 1M clients and 10M ledger
/// entries). SQLite maps at most its compile-time limit (2 GiB in the bundled build) from the
/// start of the file and reads the rest as before. The connection is left unmapped, like the
/// pool's others. A mapped file that another program truncates meanwhile (a backup copied over
/// it by hand) ends the process with SIGBUS rather than an error: verify fails either way.
fn mapped<T>(conn: &Connection, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    conn.pragma_update(None, "mmap_size", i64::MAX)?;
    let result = f(conn);
    let unmapped = conn.pragma_update(None, "mmap_size", 0);
    let value = result?;
    unmapped?;
    Ok(value)
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, StoreResult<T>>) -> StoreResult<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(StoreError::Other(anyhow::anyhow!("a verify check panicked"))))
}

fn sqlite_integrity(conn: &Connection, depth: Depth) -> StoreResult<Vec<String>> {
    let pragma = match depth {
        Depth::Quick => "PRAGMA quick_check",
        Depth::Full => "PRAGMA integrity_check",
    };
    Ok(conn
        .prepare(pragma)?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|line| line != "ok")
        .collect())
}

/// Foreign keys, and every balance against its ledger. All in one read transaction, so they see
/// one moment of the books: on a running CRM a deposit committed between reading the ledger and
/// reading the balances would otherwise show as a balance that disagrees with its ledger.
/// Also returns the digest of the ledger entries up to `bounds.ledger`.
#[allow(clippy::type_complexity)]
fn books(conn: &Connection, bounds: Bounds) -> StoreResult<(Vec<(&'static str, Vec<String>)>, LedgerDigest)> {
    // Only reads: dropping it at the end rolls nothing back.
    let snapshot = conn.unchecked_transaction()?;
    let conn: &Connection = &snapshot;
    let ledger = accounts::check_ledger(conn, bounds.ledger)?;
    let mut fk = foreign_key_problems(conn)?;
    fk.extend(ledger.missing_accounts);
    let negative: Vec<String> = conn
        .prepare("SELECT id FROM accounts WHERE real_balance < 0 OR demo_balance < 0 OR bonus_balance < 0")?
        .query_map([], |r| {
            Ok(format!("account {} has a negative fund", r.get::<_, String>(0)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut truncated = Vec::new();
    for table in ["ledger_entries", "audit_log"] {
        truncated.extend(newest_rows_missing(conn, table)?);
    }
    let checks = vec![
        ("foreign keys", fk),
        ("every balance equals the sum of its ledger entries", ledger.mismatches),
        (
            "every ledger entry's balance_after follows from the entries before it",
            ledger.running,
        ),
        ("no negative funds", negative),
        ("no ledger entry or audit row deleted from the end", truncated),
    ];
    Ok((checks, ledger.digest))
}

/// The ledger and the audit log are append-only, and SQLite keeps the highest `seq` each has
/// ever given out (`AUTOINCREMENT`, rolled back with a transaction that rolls back): rows cut
/// from the end leave that number above the newest row. The hash chain cannot show it, since
/// what is left of the chain is intact.
fn newest_rows_missing(conn: &Connection, table: &str) -> StoreResult<Option<String>> {
    let (given, newest): (Option<i64>, Option<i64>) = conn.query_row(
        &format!("SELECT (SELECT seq FROM sqlite_sequence WHERE name = ?1), (SELECT max(seq) FROM {table})"),
        [table],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (given, newest) = (given.unwrap_or(0), newest.unwrap_or(0));
    Ok((given > newest)
        .then(|| format!("{table}: rows up to seq {given} were written but the newest left is seq {newest}")))
}

/// `PRAGMA foreign_key_check` on every table but the ledger, whose one foreign key (its account)
/// `accounts::check_ledger` checks in the pass it makes anyway: SQLite's check searches the
/// accounts index once per entry, 15 s of `crm verify` at 10M entries.
fn foreign_key_problems(conn: &Connection) -> StoreResult<Vec<String>> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name <> 'ledger_entries' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut check = conn.prepare("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check(?1)")?;
    let mut problems = Vec::new();
    for table in &tables {
        let found = check.query_map([table], |r| {
            // A table WITHOUT ROWID (webhook_claims) has no rowid to name the row by.
            let row = match r.get::<_, Option<i64>>(1)? {
                Some(rowid) => format!("row {rowid}"),
                None => "a row".into(),
            };
            Ok(format!(
                "{} {row} points at a missing {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(2)?
            ))
        })?;
        for problem in found {
            problems.push(problem?);
        }
    }
    Ok(problems)
}

/// The hash chain, walked in stretches of consecutive rows side by side, then joined; and on
/// the way, whether the index by target holds exactly the rows its progress says it has indexed
/// (a digest of each side compared: one more read of the index, none of the log), and the digest
/// of the ledger entries the rows up to `bounds.audit` record, with how many could not be read.
#[allow(clippy::type_complexity)]
fn audit_chain(db: &Db, bounds: Bounds) -> StoreResult<(Option<String>, Vec<String>, (LedgerDigest, u64))> {
    // The progress is read first: the rows it covers are then all at or below `last`.
    let (progress, indexed) = db.read_sync(|conn| mapped(conn, audit_index::indexed))?;
    let (first, last): (Option<i64>, Option<i64>) = db.read_sync(|conn| {
        Ok(conn.query_row("SELECT min(seq), max(seq) FROM audit_log", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?)
    })?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok((None, index_problems(Digest::default(), indexed), Default::default()));
    };
    let parts = std::thread::available_parallelism().map_or(2, |n| n.get()) as i64;
    let size = ((last - first) / parts).max(1) + 1;
    let stretches: Vec<(i64, i64)> = (0..parts)
        .map(|i| (first + i * size, (first + (i + 1) * size - 1).min(last)))
        .filter(|(from, _)| *from <= last)
        .collect();
    let progress = &progress;
    let walked = std::thread::scope(|scope| {
        let walks: Vec<_> = stretches
            .iter()
            .map(|&(from, to)| {
                scope.spawn(move || {
                    let mut expected = Digest::default();
                    let (mut recorded, mut unreadable) = (LedgerDigest::default(), 0u64);
                    let stretch = db.read_sync(|conn| {
                        mapped(conn, |conn| {
                            audit::walk_chain(conn, from, to, |row| {
                                if progress.covers(row.target, row.seq) {
                                    expected.add(row.target, row.seq);
                                }
                                if row.seq <= bounds.audit && !add_recorded(&mut recorded, row.details) {
                                    unreadable += 1;
                                }
                            })
                        })
                    })?;
                    Ok((stretch, expected, (recorded, unreadable)))
                })
            })
            .collect();
        walks.into_iter().map(join).collect::<StoreResult<Vec<_>>>()
    })?;
    let mut walks = Vec::new();
    let (mut expected, mut recorded, mut unreadable) = (Digest::default(), LedgerDigest::default(), 0);
    for (stretch, index_digest, (ledger_digest, unread)) in walked {
        walks.push(stretch);
        expected = expected.merge(index_digest);
        recorded = recorded.merge(ledger_digest);
        unreadable += unread;
    }
    let broken = audit::stitch(&walks);
    let index = match broken {
        // A walk stops at its first broken link, so it has not seen every row.
        Some(_) => vec!["not checked: the hash chain is broken".to_string()],
        None => index_problems(expected, indexed),
    };
    Ok((broken, index, (recorded, unreadable)))
}

fn index_problems(expected: Digest, indexed: Digest) -> Vec<String> {
    if expected == indexed {
        return Vec::new();
    }
    vec![format!(
        "the index holds {} entries where the log has {} rows indexed, or they differ: \
         the audit log's target filter may miss rows",
        indexed.entries, expected.entries
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `foreign_key_problems` leaves the ledger to `accounts::check_ledger`, which knows of one
    /// foreign key only; a new one must be checked too.
    #[test]
    fn the_ledger_pass_covers_every_foreign_key_of_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        let keys: Vec<(String, String, String)> = db
            .read_sync(|conn| {
                Ok(conn
                    .prepare("SELECT \"from\", \"table\", \"to\" FROM pragma_foreign_key_list('ledger_entries')")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert_eq!(keys, [("account_id".into(), "accounts".into(), "id".into())]);
    }

    /// Deposits committing while the books are checked (each a ledger entry and its balance in
    /// one transaction) never show as a mismatch: the ledger and the balances are read at one
    /// moment, so `crm verify` on a running CRM reports only what is wrong.
    #[test]
    fn the_books_are_read_at_one_moment_while_deposits_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path).unwrap();
        db.write_sync(|tx| {
            Ok(tx.execute_batch(
                "INSERT INTO clients (id, email, created_at, updated_at) VALUES ('c1', 'x@example.com', 'x', 'x');
                 INSERT INTO accounts (id, client_id, created_at, updated_at) VALUES ('a1', 'c1', 'x', 'x');",
            )?)
        })
        .unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // Another connection, unsynced, so that commits come many times per check.
                let conn = Connection::open(&path).unwrap();
                conn.execute_batch("PRAGMA synchronous = OFF").unwrap();
                for n in 1.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    conn.execute_batch(&format!(
                        "BEGIN;
                         INSERT INTO ledger_entries (id, account_id, fund_type, amount, balance_after, reason, actor, created_at)
                         VALUES ('l{n}', 'a1', 'real', 100, {}, 'deposit', 'x', 'x');
                         UPDATE accounts SET real_balance = real_balance + 100 WHERE id = 'a1';
                         COMMIT;",
                        n * 100
                    ))
                    .unwrap();
                }
            });
            let none = Bounds { ledger: 0, audit: 0 };
            let checked = (0..200).map(|_| db.read_sync(|c| books(c, none))).collect::<Vec<_>>();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for checks in checked {
                for (name, problems) in checks.unwrap().0 {
                    assert!(problems.is_empty(), "{name}: {problems:?}");
                }
            }
        });
    }

    /// The index by target must hold exactly the rows its progress says are indexed: one
    /// missing, one too many or one under the wrong target fails the check; a half-done epoch
    /// does not.
    #[test]
    fn the_index_by_target_is_checked_against_the_log() {
        use crate::store::audit::Audit;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write_sync(|tx| {
            for i in 0..600 {
                audit::append(tx, &Audit::new("cli", "test", format!("client:{}", i % 7)))?;
            }
            Ok(())
        })
        .unwrap();
        let index_check = |db: &Db| {
            let report = run(db, Depth::Quick).unwrap();
            let (_, problems) = report
                .checks
                .iter()
                .find(|(name, _)| name.contains("by target"))
                .unwrap();
            assert!(
                report.checks.iter().filter(|(_, p)| !p.is_empty()).count() <= 1,
                "{report}"
            );
            problems.clone()
        };
        let mut indexer = audit_index::Indexer::load(&db).unwrap();
        indexer.step(&db, true).unwrap();
        indexer.step(&db, true).unwrap();
        assert_eq!(index_check(&db), Vec::<String>::new(), "half an epoch indexed");
        while indexer.step(&db, true).unwrap() {}
        assert_eq!(index_check(&db), Vec::<String>::new(), "all indexed");
        for (damage, undo) in [
            (
                "DELETE FROM audit_targets WHERE seq = 17",
                "INSERT INTO audit_targets VALUES ('client:2', 17)",
            ),
            (
                "INSERT INTO audit_targets VALUES ('client:2', 18)",
                "DELETE FROM audit_targets WHERE target = 'client:2' AND seq = 18",
            ),
            (
                "UPDATE audit_targets SET target = 'client:3' WHERE seq = 17",
                "UPDATE audit_targets SET target = 'client:2' WHERE seq = 17",
            ),
        ] {
            db.write_sync(|tx| Ok(tx.execute_batch(damage)?)).unwrap();
            assert_eq!(index_check(&db).len(), 1, "{damage}");
            db.write_sync(|tx| Ok(tx.execute_batch(undo)?)).unwrap();
            assert_eq!(index_check(&db), Vec::<String>::new(), "{undo}");
        }
    }

    #[test]
    fn a_mapped_check_leaves_its_connection_unmapped() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        let mmap_size =
            |conn: &Connection| -> StoreResult<i64> { Ok(conn.query_row("PRAGMA mmap_size", [], |r| r.get(0))?) };
        assert!(mapped(&conn, mmap_size).unwrap() > 0, "mapped while the check runs");
        assert_eq!(mmap_size(&conn).unwrap(), 0, "and not after");
    }
}
