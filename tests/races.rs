//! Races on one account: withdrawals, duplicate deliveries, admin balance adjustments and
//! webhook deposits all at once. Whatever order the writes land in, every answer must agree with
//! the books: each 200 is one ledger entry, each refusal none, no fund goes negative, each
//! transaction is applied once, and `crm verify` passes.

mod common;

use common::*;
use crm::domain::Money;
use futures_util::future::{join_all, BoxFuture, FutureExt};
use serde_json::{json, Value};

const ROUNDS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fund {
    Real,
    Demo,
    Bonus,
}

impl Fund {
    fn as_str(self) -> &'static str {
        match self {
            Fund::Real => "real",
            Fund::Demo => "demo",
            Fund::Bonus => "bonus",
        }
    }
}

/// One racing request and what it moves if it is applied.
#[derive(Debug, Clone)]
enum Op {
    Deposit { tx: String, amount: &'static str },
    Withdraw { tx: String, amount: &'static str },
    Adjust { fund: Fund, amount: &'static str },
}

impl Op {
    fn fund(&self) -> Fund {
        match self {
            Op::Adjust { fund, .. } => *fund,
            _ => Fund::Real,
        }
    }

    /// The signed change to its fund when applied.
    fn delta(&self) -> i64 {
        let atoms = |a: &str| Money::parse(a).unwrap().atoms();
        match self {
            Op::Deposit { amount, .. } | Op::Adjust { amount, .. } => atoms(amount),
            Op::Withdraw { amount, .. } => -atoms(amount),
        }
    }

    fn tx(&self) -> Option<&str> {
        match self {
            Op::Deposit { tx, .. } | Op::Withdraw { tx, .. } => Some(tx),
            Op::Adjust { .. } => None,
        }
    }
}

/// The mix of one round: more debits than the funds can cover, so some must be refused, and
/// several deliveries of the same deposit and the same withdrawal.
fn ops(round: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..30 {
        ops.push(Op::Withdraw {
            tx: format!("R{round}-WD-{i}"),
            amount: "50",
        });
    }
    for i in 0..10 {
        ops.push(Op::Deposit {
            tx: format!("R{round}-DEP-{i}"),
            amount: "25.5",
        });
        ops.push(Op::Deposit {
            tx: format!("R{round}-DUP-DEP"),
            amount: "100",
        });
        ops.push(Op::Withdraw {
            tx: format!("R{round}-DUP-WD"),
            amount: "10",
        });
        ops.push(Op::Adjust {
            fund: Fund::Real,
            amount: "20",
        });
        ops.push(Op::Adjust {
            fund: Fund::Real,
            amount: "-30.25",
        });
        ops.push(Op::Adjust {
            fund: Fund::Demo,
            amount: if i % 2 == 0 { "15" } else { "-40" },
        });
        ops.push(Op::Adjust {
            fund: Fund::Bonus,
            amount: if i % 3 == 0 { "12.12345678" } else { "-5" },
        });
    }
    // A fixed interleaving (stride through the list) so kinds are mixed on the wire.
    let n = ops.len();
    (0..n).map(|k| ops[(k * 37) % n].clone()).collect()
}

async fn run(app: &TestApp, token: &str, email: &str, account: &str, op: &Op) -> (u16, Value) {
    match op {
        Op::Deposit { tx, amount } => app.deposit(email, amount, tx).await,
        Op::Withdraw { tx, amount } => app.withdraw(email, amount, tx).await,
        Op::Adjust { fund, amount } => {
            let body = json!({ "amount": amount, "fundType": fund.as_str(), "notes": "race" });
            let path = format!("/api/accounts/{account}/adjust-balance");
            app.staff(reqwest::Method::POST, &path, token, Some(body)).await
        }
    }
}

/// Whether an answer means "applied now" (true), "not applied" (false); anything else fails.
fn applied(op: &Op, status: u16, body: &Value) -> bool {
    match (op, status) {
        (Op::Deposit { .. } | Op::Withdraw { .. }, 200) => match body["status"].as_str() {
            Some("processed") => true,
            Some("duplicate") => false,
            _ => panic!("{op:?}: {body}"),
        },
        (Op::Adjust { .. }, 200) => {
            assert!(body["realBalance"].is_string(), "{op:?}: {body}");
            true
        }
        (Op::Withdraw { .. } | Op::Adjust { .. }, 400) => {
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.starts_with("Insufficient"), "{op:?}: {body}");
            assert!(body["required"].is_number() && body["available"].is_number(), "{body}");
            false
        }
        _ => panic!("{op:?} answered {status} {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn withdrawals_duplicates_adjustments_and_deposits_racing_on_one_account_keep_the_books_exact() {
    let app = spawn_app();
    let token = app.admin_token().await;
    for round in 0..ROUNDS {
        let email = format!("race{round}@example.com");
        assert_eq!(app.register(&email).await.0, 200);
        assert_eq!(app.deposit(&email, "1000", &format!("R{round}-INIT")).await.0, 200);
        let account = app.account_id(&email);

        let ops = ops(round);
        let requests: Vec<BoxFuture<'_, (u16, Value)>> = ops
            .iter()
            .map(|op| run(&app, &token, &email, &account, op).boxed())
            .collect();
        let answers = join_all(requests).await;

        // The model: the opening deposit plus every change the server said it applied.
        let mut expected = [Money::parse("1000").unwrap().atoms(), 0, 0];
        let mut entries = 1;
        for (op, (status, body)) in ops.iter().zip(&answers) {
            if applied(op, *status, body) {
                expected[op.fund() as usize] += op.delta();
                entries += 1;
            }
        }
        let ledger = app.ledger(&account);
        assert_eq!(
            ledger.len(),
            entries,
            "round {round}: one ledger entry per applied change"
        );
        assert_eq!(
            app.funds(&account),
            (expected[0], expected[1], expected[2]),
            "round {round}"
        );
        for fund in [Fund::Real, Fund::Demo, Fund::Bonus] {
            let sum: i64 = ledger
                .iter()
                .filter(|e| e.fund == fund.as_str())
                .map(|e| e.amount)
                .sum();
            assert_eq!(sum, expected[fund as usize], "round {round}: {fund:?} ledger sum");
        }
        // Each duplicated delivery was applied exactly once; every other transaction at most once.
        for tx in [format!("R{round}-DUP-DEP"), format!("R{round}-DUP-WD")] {
            let n = ledger.iter().filter(|e| e.external_ref.as_deref() == Some(&tx)).count();
            let processed = ops
                .iter()
                .zip(&answers)
                .filter(|(op, (_, body))| op.tx() == Some(tx.as_str()) && body["status"] == "processed")
                .count();
            assert_eq!(n, processed, "{tx}");
        }
        let dup_deposit = format!("R{round}-DUP-DEP");
        assert_eq!(
            ledger
                .iter()
                .filter(|e| e.external_ref.as_deref() == Some(dup_deposit.as_str()))
                .count(),
            1,
            "the duplicated deposit is on the books once"
        );
        // Some debits had to be refused: the round really raced against the funds.
        assert!(
            answers.iter().any(|(status, _)| *status == 400),
            "round {round}: nothing was refused"
        );
        app.assert_books_balance();
    }
}
