//! Exactly-once under concurrency: the guard and the effect share one write transaction, so
//! parallel deliveries can neither double-credit nor overdraw.

mod common;
mod webhook_support;

use common::*;
use futures_util::future::join_all;
use serde_json::json;
use webhook_support::*;

#[tokio::test]
async fn twenty_parallel_copies_of_one_deposit_credit_it_once() {
    let app = spawn_app();
    app.register("p@example.com").await;
    let copies = (0..20).map(|_| app.deposit("p@example.com", "100", "TX-PAR"));
    let answers = join_all(copies).await;
    let processed = answers
        .iter()
        .filter(|a| **a == (200, json!({ "status": "processed" })))
        .count();
    let duplicates = answers
        .iter()
        .filter(|a| **a == (200, json!({ "status": "duplicate" })))
        .count();
    assert_eq!((processed, duplicates), (1, 19), "{answers:?}");
    assert_eq!(balances(&app, "p@example.com").0, "100.00");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM ledger_entries"), 1);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM webhook_events WHERE event = 'deposit.completed'"
        ),
        20
    );
}

#[tokio::test]
async fn forty_parallel_withdrawals_against_funds_for_ten_succeed_exactly_ten_times() {
    let app = spawn_app();
    app.register("p@example.com").await;
    app.deposit("p@example.com", "100", "DEP").await;
    let withdrawals = (0..40).map(|i| {
        let tx = format!("WD-{i}");
        let app = &app;
        async move { app.withdraw("p@example.com", "10", &tx).await }
    });
    let answers = join_all(withdrawals).await;
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 400).collect();
    assert_eq!((ok, refused.len()), (10, 30), "{answers:?}");
    assert!(refused
        .iter()
        .all(|a| a.1["error"] == "Insufficient real funds for withdrawal"));
    assert_eq!(balances(&app, "p@example.com").0, "0.00");
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM ledger_entries WHERE reason = 'withdrawal'"),
        10
    );
    let verify = app.crm(&["verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}
