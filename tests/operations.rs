//! Operations: backups, restore, verify, doctor, metrics.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn integrity_ok(path: &Path) -> bool {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .unwrap()
        == "ok"
}

#[tokio::test]
async fn verify_passes_on_a_healthy_database_and_fails_when_an_audit_row_is_edited() {
    let app = spawn_app();
    let out = app.crm(&["verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("all checks passed"));
    assert!(stdout(&out).contains("ok    SQLite quick check"), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("holds 0 clients; newest ledger entry none; newest audit entry #1 at "));
    let full = app.crm(&["verify", "--full"]);
    assert!(full.status.success(), "{}", stdout(&full));
    assert!(
        stdout(&full).contains("ok    SQLite integrity check"),
        "{}",
        stdout(&full)
    );

    let conn = app.sqlite();
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_update;
         UPDATE audit_log SET details = '{\"role\":\"agent\"}' WHERE seq = 1;",
    )
    .unwrap();
    let out = app.crm(&["verify"]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("FAIL  audit log hash chain"), "{}", stdout(&out));
}

#[tokio::test]
async fn verify_names_a_claim_whose_webhook_attempt_is_gone() {
    let app = spawn_app();
    app.register("claimed@example.com").await;
    app.sqlite()
        .execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM webhook_events;")
        .unwrap();
    let out = app.crm(&["verify"]);
    assert!(!out.status.success());
    // webhook_claims is WITHOUT ROWID: the row is named without a rowid, not a crash.
    assert!(
        stdout(&out).contains("webhook_claims a row points at a missing webhook_events"),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn verify_fails_when_an_audit_row_is_deleted() {
    let app = spawn_app();
    // Two entries, so deleting the first leaves a gap.
    assert!(app
        .crm(&[
            "user",
            "add",
            "--email",
            "b@broker.example",
            "--name",
            "B",
            "--role",
            "agent"
        ])
        .status
        .success());
    app.sqlite()
        .execute_batch("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = 1;")
        .unwrap();
    let out = app.crm(&["verify"]);
    assert!(!out.status.success(), "{}", stdout(&out));
}

/// Rows cut from the end of the audit log leave an intact chain behind; SQLite's record of the
/// highest `seq` given out shows them, and so for the ledger.
#[tokio::test]
async fn verify_fails_when_the_newest_audit_rows_or_ledger_entries_are_deleted() {
    let app = spawn_app();
    app.register("tail@example.com").await;
    app.deposit("tail@example.com", "10", "T-1").await;
    app.deposit("tail@example.com", "5", "T-2").await;
    assert!(app.crm(&["verify"]).status.success());
    let check = "FAIL  no ledger entry or audit row deleted from the end";

    let copy = app.dir.path().join("copy.db");
    app.sqlite()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    let verify_copy = || app.crm(&["verify", "--database", copy.to_str().unwrap()]);
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_delete;
         DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log);",
    )
    .unwrap();
    let out = verify_copy();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains(check), "{}", stdout(&out));
    assert!(stdout(&out).contains("ok    audit log hash chain"), "{}", stdout(&out));

    // The last deposit taken out of the ledger and off the balance: the totals agree.
    let conn = app.sqlite();
    conn.execute_batch(
        "DELETE FROM ledger_entries WHERE seq = (SELECT max(seq) FROM ledger_entries);
         UPDATE accounts SET real_balance = real_balance - 500000000;",
    )
    .unwrap();
    let out = app.crm(&["verify"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ledger_entries: rows up to seq 2 were written"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("ok    every balance equals the sum of its ledger entries"),
        "{}",
        stdout(&out)
    );
}

/// Each entry's `balance_after` must be its fund's balance after the entries before it: an
/// edited one, or an entry taken out of the middle with the balance made to agree, fails.
#[tokio::test]
async fn verify_fails_when_a_ledger_entry_does_not_follow_from_the_ones_before() {
    let app = spawn_app();
    app.register("run@example.com").await;
    for (amount, tx) in [("10", "R-1"), ("5", "R-2"), ("1", "R-3")] {
        assert_eq!(app.deposit("run@example.com", amount, tx).await.0, 200);
    }
    assert_eq!(app.withdraw("run@example.com", "2", "R-4").await.0, 200);
    assert!(app.crm(&["verify"]).status.success());
    let check = "FAIL  every ledger entry's balance_after follows from the entries before it";
    let conn = app.sqlite();
    for (damage, undo, named) in [
        (
            "UPDATE ledger_entries SET balance_after = balance_after + 1 WHERE seq = 2",
            "UPDATE ledger_entries SET balance_after = balance_after - 1 WHERE seq = 2",
            "ledger entry seq 2 ",
        ),
        (
            "CREATE TABLE kept AS SELECT * FROM ledger_entries WHERE seq = 2;
             DELETE FROM ledger_entries WHERE seq = 2;
             UPDATE accounts SET real_balance = real_balance - 500000000;",
            "INSERT INTO ledger_entries SELECT * FROM kept; DROP TABLE kept;
             UPDATE accounts SET real_balance = real_balance + 500000000;",
            "ledger entry seq 3 ",
        ),
    ] {
        conn.execute_batch(damage).unwrap();
        let out = app.crm(&["verify"]);
        assert!(!out.status.success(), "{damage}: {}", stdout(&out));
        assert!(stdout(&out).contains(check), "{damage}: {}", stdout(&out));
        assert!(stdout(&out).contains(named), "{damage}: {}", stdout(&out));
        conn.execute_batch(undo).unwrap();
        let out = app.crm(&["verify"]);
        assert!(out.status.success(), "{undo}: {}", stdout(&out));
    }
}

/// Every ledger entry is compared with what its hash-chained audit entry recorded (account,
/// fund, amount, balance after): an entry edited together with its balance so that every total
/// and running balance agrees, or one added with a matching balance, still fails.
#[tokio::test]
async fn verify_fails_when_a_ledger_entry_differs_from_its_audit_record() {
    let app = spawn_app();
    app.register("rec@example.com").await;
    assert_eq!(app.deposit("rec@example.com", "10", "REC-1").await.0, 200);
    assert_eq!(app.deposit("rec@example.com", "5", "REC-2").await.0, 200);
    assert!(app.crm(&["verify"]).status.success());
    let check = "FAIL  every ledger entry is the one its audit entry recorded";
    let conn = app.sqlite();
    let account: String = conn
        .query_row("SELECT account_id FROM ledger_entries LIMIT 1", [], |r| r.get(0))
        .unwrap();
    let verify_fails_the_record_check_only = |what: &str| {
        let out = app.crm(&["verify"]);
        assert!(!out.status.success(), "{what}: {}", stdout(&out));
        assert!(stdout(&out).contains(check), "{what}: {}", stdout(&out));
        for passing in [
            "ok    every balance equals the sum of its ledger entries",
            "ok    every ledger entry's balance_after follows from the entries before it",
            "ok    no ledger entry or audit row deleted from the end",
            "ok    audit log hash chain",
        ] {
            assert!(stdout(&out).contains(passing), "{what}: {}", stdout(&out));
        }
    };
    let edit = |sign: &str| {
        format!(
            "UPDATE ledger_entries SET amount = amount {sign} 100000000, balance_after = balance_after {sign} 100000000
             WHERE seq = 2;
             UPDATE accounts SET real_balance = real_balance {sign} 100000000;"
        )
    };
    conn.execute_batch(&edit("+")).unwrap();
    verify_fails_the_record_check_only("the last deposit raised by 1.00 with its balance");
    conn.execute_batch(&edit("-")).unwrap();
    assert!(app.crm(&["verify"]).status.success(), "the edit undone");

    conn.execute(
        "INSERT INTO ledger_entries (id, account_id, fund_type, amount, balance_after, reason, actor, created_at)
         VALUES ('forged', ?1, 'real', 100000000, 1600000000, 'deposit', 'platform:webhook', 'x')",
        [&account],
    )
    .unwrap();
    conn.execute("UPDATE accounts SET real_balance = real_balance + 100000000", [])
        .unwrap();
    verify_fails_the_record_check_only("a deposit added with its balance");
}

/// verify on a CRM taking deposits: the ledger and the audit log are read at different moments
/// by different threads, and a deposit committed in between must not show as a difference.
#[tokio::test]
async fn verify_passes_on_a_crm_taking_deposits_meanwhile() {
    let app = spawn_app();
    app.register("busy@example.com").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = std::sync::Arc::new(app);
    let writer = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let (status, _) = app.deposit("busy@example.com", "1", &format!("BUSY-{n}")).await;
                assert_eq!(status, 200);
            }
            n
        })
    };
    for _ in 0..5 {
        let dir = app.dir.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || crm_command(&dir).arg("verify").output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "{}", stdout(&out));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);
}

#[tokio::test]
async fn the_audit_log_refuses_edits_through_sql() {
    let app = spawn_app();
    let conn = app.sqlite();
    assert!(conn.execute("UPDATE audit_log SET actor = 'someone else'", []).is_err());
    assert!(conn.execute("DELETE FROM audit_log", []).is_err());
}

#[tokio::test]
async fn verify_fails_when_a_balance_disagrees_with_its_ledger() {
    let app = spawn_app();
    let conn = app.sqlite();
    conn.execute_batch(
        "INSERT INTO clients (id, email, created_at, updated_at) VALUES ('c1', 'x@example.com', 'x', 'x');
         INSERT INTO accounts (id, client_id, real_balance, created_at, updated_at) VALUES ('a1', 'c1', 100, 'x', 'x');",
    )
    .unwrap();
    let out = app.crm(&["verify"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("FAIL  every balance equals the sum of its ledger entries"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn verify_fails_when_a_row_points_at_a_missing_one() {
    let app = spawn_app();
    let conn = app.sqlite();
    // A ledger entry whose account is gone: its foreign key is checked in the ledger's pass.
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO ledger_entries (id, account_id, fund_type, amount, balance_after, reason, actor, created_at)
         VALUES ('l1', 'gone', 'real', 100, 100, 'deposit', 'x', 'x');",
    )
    .unwrap();
    let out = app.crm(&["verify"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAIL  foreign keys"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ledger_entries of account gone point at a missing accounts row"),
        "{}",
        stdout(&out)
    );

    // Any other table's foreign keys are SQLite's own check.
    conn.execute_batch(
        "DELETE FROM ledger_entries;
         INSERT INTO accounts (id, client_id, created_at, updated_at) VALUES ('a1', 'nobody', 'x', 'x');",
    )
    .unwrap();
    let out = app.crm(&["verify"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("points at a missing clients"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("ledger_entries of account"), "{}", stdout(&out));
}

#[tokio::test]
async fn a_backup_is_one_consistent_file_and_restoring_it_is_a_copy() {
    let app = spawn_app();
    let backup = app.dir.path().join("snap.db");
    let out = app.crm(&["backup", "--out", backup.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(integrity_ok(&backup));
    assert!(
        !app.dir.path().join("snap.partial").exists(),
        "no temporary file is left behind"
    );

    // A change made after the backup...
    assert!(app
        .crm(&[
            "user",
            "add",
            "--email",
            "late@broker.example",
            "--name",
            "L",
            "--role",
            "agent"
        ])
        .status
        .success());
    let secrets = app.secrets.clone();
    let dir = app.stop();
    // ...is gone once the backup is copied back over the database (and its WAL removed).
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(dir.path().join("crm").with_extension(ext));
    }
    std::fs::copy(&backup, dir.path().join("crm.db")).unwrap();
    let restored = spawn_with(Spawn {
        dir: Some(dir),
        secrets: Some(secrets),
        ..Default::default()
    });
    let count: i64 = restored
        .sqlite()
        .query_row(
            "SELECT COUNT(*) FROM staff_users WHERE email = 'late@broker.example'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 0);
    assert!(restored.crm(&["verify"]).status.success());
}

/// `verify`, `backup` and `doctor` refuse a path that names no database rather than create an
/// empty one there and report it healthy; and a backup is never written over the live database
/// or its WAL, however the path is spelled.
#[tokio::test]
async fn checks_and_backups_refuse_a_missing_database_and_never_overwrite_the_live_one() {
    let app = spawn_app();
    let typo = app.dir.path().join("typo").join("crn.db");
    let commands = [&["verify"][..], &["backup"], &["doctor"], &["user", "list"]];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--database", typo.to_str().unwrap()]);
        let out = app.crm(&args);
        assert!(!out.status.success(), "{command:?}: {}", stdout(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("there is no database at"), "{command:?}: {err}");
        assert!(
            !typo.exists() && !typo.parent().unwrap().exists(),
            "{command:?} created it"
        );
    }
    // A restore whose copy arrived empty, or an older schema: refused, and left as it was.
    let empty = app.dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let old = app.dir.path().join("old.db");
    assert!(app.crm(&["backup", "--out", old.to_str().unwrap()]).status.success());
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.execute(
        "DELETE FROM refinery_schema_history WHERE version = (SELECT max(version) FROM refinery_schema_history)",
        [],
    )
    .unwrap();
    drop(conn);
    let old_bytes = std::fs::read(&old).unwrap();
    for (path, expected) in [(&empty, "is not a CRM database"), (&old, "`crm migrate` upgrades it")] {
        for command in commands {
            let mut args = command.to_vec();
            args.extend(["--database", path.to_str().unwrap()]);
            let out = app.crm(&args);
            assert!(!out.status.success(), "{command:?}: {}", stdout(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(expected), "{command:?}: {err}");
        }
    }
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert_eq!(
        std::fs::read(&old).unwrap(),
        old_bytes,
        "the old schema was left as it was"
    );
    assert!(
        !app.dir.path().join("backups").exists(),
        "no pre-migration copy was made"
    );

    app.register("kept@example.com").await;
    let database = app.dir.path().join("crm.db");
    std::os::unix::fs::symlink(app.dir.path(), app.dir.path().join("link")).unwrap();
    let spellings = [
        database.clone(),
        app.dir.path().join(".").join("crm.db"),
        app.dir.path().join("crm.db-wal"),
        "crm.db".into(),
        app.dir.path().join("not-yet").join("..").join("crm.db"),
        app.dir.path().join("link").join("crm.db"),
    ];
    for out_path in spellings {
        let out = app.crm(&["backup", "--out", out_path.to_str().unwrap()]);
        assert!(!out.status.success(), "{}: {}", out_path.display(), stdout(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is the database itself"), "{err}");
    }
    // The server still writes to the file it opened, and that is still the database.
    app.register("later@example.com").await;
    let clients: i64 = app
        .sqlite()
        .query_row("SELECT COUNT(*) FROM clients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(clients, 2);

    // Another existing file is replaced by the complete snapshot.
    let older = app.dir.path().join("nightly.db");
    std::fs::write(&older, b"yesterday").unwrap();
    let out = app.crm(&["backup", "--out", older.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(integrity_ok(&older));
}

/// The database, its WAL and its backups hold password hashes and personal data: private to the
/// CRM's user whatever the umask, like `secrets.env`.
#[tokio::test]
async fn the_database_and_its_backups_are_private_to_the_crms_user() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_with(Spawn::default().env("CRM_DATABASE", "data/new/crm.db"));
    app.register("private@example.com").await;
    let data = app.dir.path().join("data");
    let out = crm_command(app.dir.path())
        .env("CRM_DATABASE", "data/new/crm.db")
        .args(["backup"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let backup = crm::ops::backup::list(&data.join("new").join("backups")).remove(0);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for dir in [data.clone(), data.join("new"), data.join("new").join("backups")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        data.join("new/crm.db"),
        data.join("new/crm.db-wal"),
        data.join("new/crm.db-shm"),
        backup,
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

/// The first scheduled backup is due one interval after the newest one, not after start-up, so
/// restarts more frequent than the interval cannot put it off for ever.
#[tokio::test]
async fn the_first_scheduled_backup_is_due_from_the_newest_one_not_from_start_up() {
    let hourly = || Spawn::default().env("CRM_BACKUP_INTERVAL", "1h");
    let backups = |dir: &Path| crm::ops::backup::list(&dir.join("backups"));
    let app = spawn_with(hourly());
    let deadline = Instant::now() + Duration::from_secs(30);
    while backups(app.dir.path()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        backups(app.dir.path()).len(),
        1,
        "none existed: one is taken at start-up"
    );
    // Restarted with a fresh backup in place: nothing is due for an hour.
    let dir = app.stop();
    let again = spawn_with(Spawn {
        dir: Some(dir),
        ..hourly()
    });
    assert_eq!(again.get("/healthz").await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(backups(again.dir.path()).len(), 1);
}

#[tokio::test]
async fn serve_writes_scheduled_backups_and_keeps_only_the_newest() {
    let app = spawn_with(
        Spawn::default()
            .env("CRM_BACKUP_INTERVAL", "1s")
            .env("CRM_BACKUP_KEEP", "2"),
    );
    let dir = app.dir.path().join("backups");
    let names = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Bounded wait until at least four scheduled backups have been written (not a timing assertion).
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 4 && Instant::now() < deadline {
        seen.extend(
            names()
                .into_iter()
                .filter(|n| n.starts_with("crm-backup-") && n.ends_with(".db")),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.len() >= 4, "the schedule keeps writing backups: {seen:?}");
    // Between writing a new one and pruning, three may exist for a moment; then two remain.
    let mut kept = names().len();
    while kept != 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        kept = names().len();
    }
    assert_eq!(kept, 2, "only the two newest backups are kept");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        assert!(integrity_ok(&entry.path()));
    }
}

#[test]
fn a_backup_is_taken_before_migrating_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    assert!(crm_command(dir.path()).arg("migrate").status().unwrap().success());
    // Pretend the database predates the search index (V3) and everything after it.
    let conn = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    let latest: i64 = conn
        .query_row("SELECT MAX(version) FROM refinery_schema_history", [], |r| r.get(0))
        .unwrap();
    assert_eq!(latest, 11, "update this test when a migration is added");
    conn.execute(
        "INSERT INTO clients (id, email, first_name, last_name, created_at, updated_at)
         VALUES ('c1', 'early.bird@example.com', 'Early', 'Bird', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z')",
        [],
    )
    .unwrap();
    conn.execute_batch(
        "DELETE FROM refinery_schema_history WHERE version >= 3;
         DROP TRIGGER clients_search_insert; DROP TRIGGER clients_search_update; DROP TRIGGER clients_search_delete;
         DROP TABLE clients_search; DROP VIEW clients_search_source;
         DROP TABLE webhook_claims;
         CREATE TABLE processed_webhooks (dedupe_key TEXT PRIMARY KEY, transaction_id TEXT UNIQUE,
             content_hash TEXT NOT NULL, event_id TEXT NOT NULL REFERENCES webhook_events (id),
             processed_at TEXT NOT NULL);
         DROP TABLE audit_targets; DROP TABLE audit_index_progress; DROP INDEX audit_kyc_by_target;
         CREATE INDEX audit_by_target ON audit_log (target, seq);
         ALTER TABLE staff_users DROP COLUMN session_generation;
         DROP TABLE staff_idempotency_keys;
         DROP INDEX audit_account_changes_by_target;
         ALTER TABLE clients DROP COLUMN email_as_sent;
         DROP TRIGGER clients_phone_search_insert; DROP TRIGGER clients_phone_search_update;
         DROP TRIGGER clients_phone_search_delete; DROP TABLE clients_phone_search; DROP VIEW clients_phone_source;",
    )
    .unwrap();
    drop(conn);

    let out = crm_command(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("migrated from V2 to V11"), "{}", stdout(&out));
    let backups: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(backups.len(), 1);
    let name = backups[0].file_name().to_string_lossy().into_owned();
    assert!(name.starts_with("crm-pre-migration-v2-"), "{name}");
    // The copy is the database as it was: without the new index.
    let old = rusqlite::Connection::open(backups[0].path()).unwrap();
    assert!(old.prepare("SELECT * FROM clients_search").is_err());
    // The migrated database's index covers the clients that were there before it.
    let new = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    let found: String = new
        .query_row(
            "SELECT c.email FROM clients c JOIN clients_search s ON s.rowid = c.rowid
             WHERE clients_search MATCH '\"ly bi\"'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(found, "early.bird@example.com");

    // Nothing pending: no further backup.
    assert!(crm_command(dir.path()).arg("migrate").status().unwrap().success());
    assert_eq!(std::fs::read_dir(dir.path().join("backups")).unwrap().count(), 1);
}

#[tokio::test]
async fn doctor_checks_the_guides_checklist_one_line_per_item() {
    let app = spawn_app();
    let out = crm_command(app.dir.path())
        .arg("doctor")
        .env("JWT_SECRET", &app.secrets.jwt)
        .env("WEBHOOK_SECRET", &app.secrets.webhook)
        .env("SERVICE_API_TOKEN", &app.secrets.service)
        .env("SSO_SECRET", &app.secrets.sso)
        .env("TRADING_PLATFORM_URL", PLATFORM_URL)
        .env("CRM_PUBLIC_URL", "https://crm.broker.example")
        .env("SERVICE_API_TOKEN_PREVIOUS", random_hex())
        .output()
        .unwrap();
    let text = stdout(&out);
    for expected in [
        "ok    JWT_SECRET is configured",
        "ok    the four secrets are distinct",
        "ok    TRADING_PLATFORM_URL is https://trading.test",
        "ok    served over HTTPS at https://crm.broker.example",
        "ok    WEBHOOK_SECRET in use for 0 days",
        "ok    SERVICE_API_TOKEN_PREVIOUS is set and has not been used",
        "warn  no backup in",
        "ok    audit log is written",
        "ok    the database, its backups and the files with secrets are readable by their owner only",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(out.status.success(), "no FAIL line:\n{text}");
    // A database from before the CRM made its files private.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(app.db_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    // And a `.env` written with the default umask.
    let dotenv = app.dir.path().join(".env");
    std::fs::write(&dotenv, "TRADING_PLATFORM_URL=https://trading.test\n").unwrap();
    std::fs::set_permissions(&dotenv, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = stdout(&crm_command(app.dir.path()).arg("doctor").output().unwrap());
    assert!(
        text.contains("warn  readable by other users: ")
            && text.contains("crm.db (644)")
            && text.contains(".env (644)"),
        "{text}"
    );
    for item in [
        "todo  Secrets shared with the Trading Platform team via a secure channel",
        "todo  Security team review completed",
        "todo  Secrets documented in a password manager",
    ] {
        assert!(text.contains(item), "missing {item:?} in:\n{text}");
    }
    for line in text.lines() {
        assert!(
            ["ok  ", "warn", "FAIL", "todo"].iter().any(|t| line.starts_with(t)),
            "{line}"
        );
    }
    assert!(!text.contains(&app.secrets.jwt), "secrets are never printed");
}

#[tokio::test]
async fn doctor_fails_on_shared_short_or_plain_http_settings() {
    let app = spawn_app();
    let out = crm_command(app.dir.path())
        .arg("doctor")
        .env("JWT_SECRET", "same-value-for-two-secrets")
        .env("WEBHOOK_SECRET", "same-value-for-two-secrets")
        .env("SERVICE_API_TOKEN_PREVIOUS", "same-value-for-two-secrets")
        .env("TRADING_PLATFORM_URL", "http://trading.test")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(!out.status.success());
    for pair in [
        "JWT_SECRET and WEBHOOK_SECRET",
        "JWT_SECRET and SERVICE_API_TOKEN_PREVIOUS",
    ] {
        assert!(text.contains(&format!("FAIL  {pair} are the same value")), "{text}");
    }
    assert!(text.contains("FAIL  JWT_SECRET is only 26 characters"), "{text}");
    assert!(
        text.contains("FAIL  TRADING_PLATFORM_URL is http://trading.test (not https)"),
        "{text}"
    );
    assert!(text.contains("FAIL  SSO_SECRET is not set"), "{text}");
}

/// Secrets typed by hand or pasted from the guide's placeholders are not "generated using a
/// secure random method"; nor is the guide's example address the platform's.
#[tokio::test]
async fn doctor_fails_on_placeholder_or_hand_typed_secrets_and_the_example_url() {
    let app = spawn_app();
    let out = crm_command(app.dir.path())
        .arg("doctor")
        .env("JWT_SECRET", "a".repeat(64))
        .env("WEBHOOK_SECRET", "<your-generated-webhook-secret>")
        .env("SERVICE_API_TOKEN", "correct-horse-correct-horse-correct-horse")
        .env("SSO_SECRET", crm::security::random_secret_hex())
        .env("TRADING_PLATFORM_URL", "https://trading.yourcompany.com")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(!out.status.success());
    for expected in [
        "FAIL  JWT_SECRET is too regular to be random (about 0 bits)",
        "FAIL  WEBHOOK_SECRET is the guide's placeholder text",
        "FAIL  SERVICE_API_TOKEN is too regular to be random (it repeats itself)",
        "FAIL  TRADING_PLATFORM_URL is the guide's example https://trading.yourcompany.com",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("SSO_SECRET is too regular"), "{text}");
    assert!(!text.contains("SSO_SECRET is the guide"), "{text}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app();
    for _ in 0..3 {
        assert_eq!(app.get("/healthz").await.0, 200);
    }
    app.get("/no/such").await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("crm_http_requests_total{route=\"/healthz\",status=\"200\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("crm_http_requests_total{route=\"unmatched\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("crm_http_request_duration_seconds_count{route=\"/healthz\"} 3"),
        "{text}"
    );
    assert!(text.contains("crm_db_pool_connections"), "{text}");
    // Only the exact path: a proxy that blocks /metrics must not leak them through /metrics/.
    assert_eq!(app.get("/metrics/").await.0, 404);
}

#[tokio::test]
async fn a_backup_taken_during_a_write_load_is_consistent_and_verifies() {
    let app = std::sync::Arc::new(spawn_app());
    for i in 0..8 {
        app.register(&format!("load{i}@example.com")).await;
    }
    // Deposits keep arriving from several senders while backups are taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..4 {
        let (app, stop) = (app.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 2_000 {
                let (status, body) = app
                    .deposit(&format!("load{}@example.com", n % 8), "1.25", &format!("S{s}-{n}"))
                    .await;
                assert_eq!(status, 200, "{body}");
                n += 1;
            }
            n
        }));
    }
    let mut backups = Vec::new();
    for b in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let path = app.dir.path().join(format!("under-load-{b}.db"));
        let app2 = app.clone();
        let out_path = path.clone();
        let out = tokio::task::spawn_blocking(move || app2.crm(&["backup", "--out", out_path.to_str().unwrap()]))
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        backups.push(path);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for s in senders {
        sent += s.await.unwrap();
    }
    assert!(sent > 0);
    for path in &backups {
        assert!(integrity_ok(path), "{}", path.display());
        let out = crm_command(app.dir.path())
            .args(["verify", "--database", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), stdout(&out));
    }
    // The live database is sound too, and holds every acknowledged deposit.
    assert!(app.crm(&["verify"]).status.success());
    let ledger: i64 = app
        .sqlite()
        .query_row(
            "SELECT COUNT(*) FROM ledger_entries WHERE reason = 'deposit'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ledger, sent as i64);
}

#[tokio::test]
async fn doctor_says_when_a_previous_jwt_secret_was_last_used() {
    let old_secret = random_hex();
    let app = spawn_with(Spawn::default().env("JWT_SECRET_PREVIOUS", &old_secret));
    let doctor = || {
        let out = crm_command(app.dir.path())
            .arg("doctor")
            .env("JWT_SECRET", &app.secrets.jwt)
            .env("JWT_SECRET_PREVIOUS", &old_secret)
            .output()
            .unwrap();
        stdout(&out)
    };
    assert!(doctor().contains("ok    JWT_SECRET_PREVIOUS is set and has not been used"));

    // A session issued before the rotation, still signed with the old secret, changes something.
    let admin_id: String = app
        .sqlite()
        .query_row("SELECT id FROM staff_users WHERE email = 'admin@crm.local'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let (old_token, _) =
        crm::security::tokens::issue_staff(old_secret.as_bytes(), &admin_id, crm::domain::Role::Admin, 0).unwrap();
    let body = serde_json::json!({ "email": "rotation@broker.example", "name": "R", "role": "agent" });
    let (status, created) = app
        .staff(reqwest::Method::POST, "/api/staff", &old_token, Some(body))
        .await;
    assert_eq!(status, 201, "{created}");

    let text = doctor();
    assert!(
        text.contains("warn  JWT_SECRET_PREVIOUS is set and was last used at"),
        "{text}"
    );
}

/// The running server indexes the audit log by target on its own, a moment after the rows are
/// written; the target filter finds a client's rows before and after, and `crm verify` checks the
/// index against the log.
#[tokio::test]
async fn the_server_indexes_the_audit_log_by_target_and_verify_checks_it() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let email = format!("indexed{n}@example.com");
        assert_eq!(app.register(&email).await.0, 200);
        let mut client = Value::Null;
        for _ in 0..4 {
            let (status, body) = app
                .service(reqwest::Method::GET, &format!("/api/service/clients/{email}"), None)
                .await;
            assert_eq!(status, 200, "{body}");
            client = body;
        }
        ids.push(client["id"].as_str().unwrap().to_string());
    }
    let by_target = |id: &str| format!("/api/audit?target=client:{id}&limit=500");
    let (status, before) = app.staff(reqwest::Method::GET, &by_target(&ids[1]), &admin, None).await;
    assert_eq!(status, 200, "{before}");

    let conn = app.sqlite();
    let unindexed = || -> i64 {
        conn.query_row(
            "SELECT (SELECT max(seq) FROM audit_log) - indexed_through FROM audit_index_progress",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let waiting = Instant::now();
    while unindexed() > 0 {
        assert!(waiting.elapsed() < Duration::from_secs(20), "never indexed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows_of = |table: &str| -> i64 {
        let sql = format!("SELECT count(*) FROM {table} WHERE target = ?1");
        conn.query_row(&sql, [format!("client:{}", ids[1])], |r| r.get(0))
            .unwrap()
    };
    let expected = rows_of("audit_log");
    assert_eq!(rows_of("audit_targets"), expected);
    let (_, after) = app.staff(reqwest::Method::GET, &by_target(&ids[1]), &admin, None).await;
    let entries = after["entries"].as_array().unwrap();
    assert!(
        entries.len() as i64 >= expected && expected >= 5,
        "registered, four reads: {after}"
    );
    // The earlier answer, taken before indexing, held the same rows (and the staff read since).
    assert_eq!(
        entries[entries.len() - before["entries"].as_array().unwrap().len()..],
        before["entries"].as_array().unwrap()[..]
    );
    assert!(entries.iter().all(|e| e["target"] == format!("client:{}", ids[1])));

    let out = app.crm(&["verify"]);
    assert!(
        stdout(&out).contains("ok    audit log index by target"),
        "{}",
        stdout(&out)
    );
    conn.execute(
        "DELETE FROM audit_targets WHERE target = ?1",
        [format!("client:{}", ids[1])],
    )
    .unwrap();
    let out = app.crm(&["verify"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("FAIL  audit log index by target"),
        "{}",
        stdout(&out)
    );
}
