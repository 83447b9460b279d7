//! Crash safety: the server is killed with SIGKILL while several senders stream signed deposits
//! at it, then restarted on the same database. Every deposit that got a 200 must be on the books,
//! none twice; deposits whose answer was lost in the kill may or may not be there, and resending
//! everything afterwards must leave exactly the full set on the books, each once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use crm::domain::Money;
use futures_util::future::join_all;

const CYCLES: usize = 3;
const SENDERS: usize = 4;
/// The kill comes once this many deposits of the cycle have been acknowledged: far enough into
/// the stream that writes are queued and syncing when it lands.
const KILL_AFTER_ACKS: usize = 30;
const EMAIL: &str = "crash@example.com";

/// What one sender did before the server went away.
#[derive(Default)]
struct Sent {
    /// Every deposit it sent (answered or not), with its amount.
    attempted: Vec<(String, Money)>,
    /// The ones answered 200.
    acknowledged: Vec<String>,
}

/// Sends deposits one after another until the server stops answering.
async fn stream_deposits(platform: Platform, cycle: usize, sender: usize, acks: Arc<AtomicUsize>) -> Sent {
    let mut sent = Sent::default();
    for i in 0.. {
        let tx = format!("C{cycle}-S{sender}-{i:04}");
        // Odd amounts with all eight decimals in use, so a lost or doubled one shows in the sum.
        let amount =
            Money::from_atoms(100_000_000 + ((cycle * 7919 + sender * 104_729 + i * 15_485_863) % 99_999_999) as i64)
                .unwrap();
        sent.attempted.push((tx.clone(), amount));
        match platform.deposit(EMAIL, &amount.to_string(), &tx).await {
            Ok((200, body)) => {
                assert_eq!(body["status"], "processed", "a first delivery of {tx}: {body}");
                sent.acknowledged.push(tx);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Ok((status, body)) => panic!("deposit {tx} answered {status} {body}"),
            // Connection refused or cut: the server is gone.
            Err(_) => break,
        }
    }
    sent
}

/// (transaction id → amount) of every deposit on the client's ledger; panics on one seen twice.
fn deposits_on_the_books(app: &TestApp, account: &str) -> BTreeMap<String, i64> {
    let mut books = BTreeMap::new();
    for entry in app.ledger(account) {
        let tx = entry.external_ref.expect("every entry here is a webhook deposit");
        assert_eq!(entry.fund, "real");
        assert!(
            books.insert(tx.clone(), entry.amount).is_none(),
            "{tx} is on the books twice"
        );
    }
    books
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_deposits_survive_sigkill_and_a_full_resend_applies_each_exactly_once() {
    let mut app = spawn_app();
    assert_eq!(app.register(EMAIL).await.0, 200);
    let account = app.account_id(EMAIL);
    let mut attempted: BTreeMap<String, Money> = BTreeMap::new();

    for cycle in 0..CYCLES {
        let acks = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| tokio::spawn(stream_deposits(app.platform(), cycle, s, acks.clone())))
            .collect();
        let started = Instant::now();
        while acks.load(Ordering::SeqCst) < KILL_AFTER_ACKS {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the senders made no progress"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        app.kill(); // SIGKILL: no shutdown, no final sync, requests in flight are cut.

        let mut acknowledged = BTreeSet::new();
        for sent in join_all(senders).await {
            let sent = sent.unwrap();
            attempted.extend(sent.attempted);
            acknowledged.extend(sent.acknowledged);
        }
        let secrets = app.secrets.clone();
        app = spawn_with(Spawn {
            dir: Some(app.stop()),
            secrets: Some(secrets),
            ..Spawn::default()
        });

        // After the restart: everything acknowledged is there once; anything else there was at
        // least sent (its answer was lost in the kill).
        let books = deposits_on_the_books(&app, &account);
        let missing: Vec<_> = acknowledged.iter().filter(|tx| !books.contains_key(*tx)).collect();
        assert!(missing.is_empty(), "cycle {cycle}: acknowledged but lost: {missing:?}");
        for (tx, amount) in &books {
            assert_eq!(
                Some(*amount),
                attempted.get(tx).map(|m| m.atoms()),
                "{tx} was never sent so"
            );
        }
        let sum: i64 = books.values().sum();
        assert_eq!(
            app.funds(&account),
            (sum, 0, 0),
            "cycle {cycle}: balance is not the sum of the books"
        );
        app.assert_books_balance();

        // The platform resends everything it has no answer for (and, to be sure, the rest too).
        let platform = app.platform();
        let resends = attempted.iter().map(|(tx, amount)| {
            let platform = platform.clone();
            async move {
                (
                    tx.clone(),
                    platform.deposit(EMAIL, &amount.to_string(), tx).await.unwrap(),
                )
            }
        });
        for (tx, (status, body)) in join_all(resends).await {
            let expected = if books.contains_key(&tx) {
                "duplicate"
            } else {
                "processed"
            };
            assert_eq!(
                (status, body["status"].as_str()),
                (200, Some(expected)),
                "resent {tx}: {body}"
            );
        }
        let books = deposits_on_the_books(&app, &account);
        let expected: BTreeMap<String, i64> = attempted.iter().map(|(tx, m)| (tx.clone(), m.atoms())).collect();
        assert_eq!(
            books, expected,
            "cycle {cycle}: after the resend the books must hold every deposit once"
        );
        let total: i64 = attempted.values().map(|m| m.atoms()).sum();
        assert_eq!(app.funds(&account), (total, 0, 0));
        app.assert_books_balance();
    }
}

/// When the WAL can no longer be synced (here: its file replaced under the running CRM, which
/// goes on writing to the one it opened), nothing is served from the database any more, not even
/// after the file is back, and the health check says so. The system may still show data that
/// never reached the disk (README, Durability): no command opens the database again until the
/// machine has rebooted and `crm verify` has passed.
#[tokio::test]
async fn once_a_wal_sync_fails_nothing_is_served_until_a_reboot_and_a_verify() {
    let app = spawn_app();
    app.register("sync@example.com").await;
    assert_eq!(app.deposit("sync@example.com", "1", "SYNC-1").await.0, 200);
    assert_eq!(app.get("/healthz").await.0, 200);
    let wal = app.dir.path().join("crm.db-wal");
    let moved = app.dir.path().join("moved-wal");
    std::fs::rename(&wal, &moved).unwrap();
    std::fs::write(&wal, b"").unwrap();
    let (status, body) = app.deposit("sync@example.com", "1", "SYNC-2").await;
    assert_eq!(status, 500, "{body}");
    std::fs::remove_file(&wal).unwrap();
    std::fs::rename(&moved, &wal).unwrap();
    let (status, body) = app.deposit("sync@example.com", "1", "SYNC-3").await;
    assert_eq!(status, 500, "still refused once the file is back: {body}");
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = app
        .service(reqwest::Method::GET, "/api/service/clients/sync@example.com", None)
        .await;
    assert_eq!(
        status, 500,
        "reads too: they could show what its caller was told failed: {body}"
    );

    let marker = app.dir.path().join("crm.db-write-failed");
    let written = std::fs::read_to_string(&marker).unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert!(written.contains(&format!("boot_id={}", boot.trim())), "{written}");
    let mut app = app;
    assert!(!app.terminate().success(), "the stop says the run ended refused");
    // In the same boot, nothing opens the database.
    for command in [&["serve"][..], &["verify"], &["backup"], &["user", "list"]] {
        let out = app.crm(command);
        assert!(!out.status.success(), "{command:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("has not been rebooted"), "{command:?}: {stderr}");
    }
    // A marker whose text never reached the disk cannot tell: the operator decides.
    std::fs::write(&marker, "").unwrap();
    let out = app.crm(&["verify"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot tell whether"),
        "{out:?}"
    );
    // After a reboot, `crm verify` first; its pass removes the marker.
    std::fs::write(&marker, written.replace(boot.trim(), "another-boot")).unwrap();
    let out = app.crm(&["serve"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run `crm verify`"),
        "{out:?}"
    );
    let out = app.crm(&["verify"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!marker.exists());
    let restarted = spawn_with(Spawn {
        dir: Some(app.stop()),
        ..Spawn::default()
    });
    let books = deposits_on_the_books(&restarted, &restarted.account_id("sync@example.com"));
    assert!(
        books.contains_key("SYNC-1") && !books.contains_key("SYNC-3"),
        "{books:?}"
    );
    restarted.assert_books_balance();
}
