//! Properties over random histories: registrations, deposits, withdrawals, admin adjustments,
//! replays of earlier deliveries and reuses of a transaction id, sent to one running server.
//! After every step the answer must be the one a simple exact model predicts, and after every
//! history the balances must equal the model's, real funds never go negative, each balance is
//! the sum of its ledger, each transaction is applied at most once and the audit chain is valid.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use crm::domain::Money;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{json, Value};

/// Clients per history: few, so operations pile up on the same accounts.
const CLIENTS: usize = 3;
const FUNDS: [&str; 3] = ["real", "demo", "bonus"];

#[derive(Debug, Clone)]
enum Step {
    Register(usize),
    Deposit(usize, i64),
    Withdraw(usize, i64),
    /// Fund index and a signed, non-zero amount.
    Adjust(usize, usize, i64),
    /// Resends the n-th earlier webhook (modulo how many there were), byte for byte.
    Replay(usize),
    /// Sends an earlier money event's transaction id again with another amount.
    Reuse(usize, i64),
}

/// Amounts in hundred-millionths: whole units and odd fractions, up to 500 units, so debits
/// sometimes fit and sometimes do not.
fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        (1i64..=500).prop_map(|units| units * 100_000_000),
        1i64..=50_000_000_000,
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let client = 0..CLIENTS;
    prop_oneof![
        2 => client.clone().prop_map(Step::Register),
        4 => (client.clone(), amount()).prop_map(|(c, a)| Step::Deposit(c, a)),
        3 => (client.clone(), amount()).prop_map(|(c, a)| Step::Withdraw(c, a)),
        3 => (client, 0..FUNDS.len(), amount(), any::<bool>())
            .prop_map(|(c, f, a, debit)| Step::Adjust(c, f, if debit { -a } else { a })),
        2 => any::<usize>().prop_map(Step::Replay),
        1 => (any::<usize>(), amount()).prop_map(|(n, a)| Step::Reuse(n, a)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deposit,
    Withdraw,
}

/// A money webhook as sent: the body is kept so a replay is byte-for-byte the same.
#[derive(Debug, Clone)]
struct Sent {
    body: Value,
    money: Option<(Kind, usize, String, i64)>,
}

/// What the books must be: exact integers of hundred-millionths, as `Money` stores them.
#[derive(Debug, Default)]
struct Model {
    registered: [bool; CLIENTS],
    funds: [[i64; 3]; CLIENTS],
    /// Transaction id → (client, signed real-fund change) of every money event applied.
    applied: BTreeMap<String, (usize, i64)>,
    sent: Vec<Sent>,
}

/// One history against the server, checked step by step.
struct History<'a> {
    app: &'a TestApp,
    token: &'a str,
    case: usize,
    model: Model,
    next_tx: usize,
}

impl History<'_> {
    fn email(&self, c: usize) -> String {
        format!("case{}-client{c}@example.com", self.case)
    }

    fn registration(&self, c: usize) -> Value {
        let data = json!({ "clientId": format!("P{}-{c}", self.case), "email": self.email(c), "firstName": "Prop" });
        json!({ "event": "client.registered", "data": data, "timestamp": "2025-10-13T19:00:00Z" })
    }

    fn money(&self, kind: Kind, c: usize, tx: &str, atoms: i64) -> Value {
        let event = match kind {
            Kind::Deposit => "deposit.completed",
            Kind::Withdraw => "withdrawal.completed",
        };
        let amount = Money::from_atoms(atoms).unwrap().to_string();
        let data = json!({ "email": self.email(c), "amount": amount, "transactionId": tx });
        json!({ "event": event, "data": data, "timestamp": "2025-10-13T19:00:00Z" })
    }

    async fn send_money(&mut self, kind: Kind, c: usize, tx: String, atoms: i64) {
        let body = self.money(kind, c, &tx, atoms);
        let (status, answer) = self.app.post_webhook(&body).await;
        self.model.sent.push(Sent {
            body: body.clone(),
            money: Some((kind, c, tx.clone(), atoms)),
        });
        self.expect_money(kind, c, &tx, atoms, status, &answer);
    }

    /// Checks a money webhook's answer against the model, and applies it to the model.
    fn expect_money(&mut self, kind: Kind, c: usize, tx: &str, atoms: i64, status: u16, answer: &Value) {
        let delta = if kind == Kind::Deposit { atoms } else { -atoms };
        let got = (status, answer["status"].as_str().unwrap_or_default());
        if let Some(&(client, change)) = self.model.applied.get(tx) {
            // The same content is a duplicate; other content under a used transaction id a 409.
            if (client, change) == (c, delta) {
                assert_eq!(got, (200, "duplicate"), "{tx} again: {answer}");
            } else {
                assert_eq!(status, 409, "{tx} reused with other content: {answer}");
            }
            return;
        }
        if !self.model.registered[c] {
            assert_eq!(status, 404, "{tx} for an unknown client: {answer}");
            return;
        }
        if self.model.funds[c][0] + delta < 0 {
            assert_eq!(status, 400, "{tx} beyond real funds: {answer}");
            assert_eq!(answer["error"], "Insufficient real funds for withdrawal");
            return;
        }
        assert_eq!(got, (200, "processed"), "{tx}: {answer}");
        self.model.funds[c][0] += delta;
        self.model.applied.insert(tx.to_string(), (c, delta));
    }

    async fn step(&mut self, step: &Step) {
        match *step {
            Step::Register(c) => {
                let body = self.registration(c);
                let (status, answer) = self.app.post_webhook(&body).await;
                assert_eq!(status, 200, "{answer}");
                assert!(
                    matches!(answer["status"].as_str(), Some("processed" | "duplicate")),
                    "{answer}"
                );
                self.model.registered[c] = true;
                self.model.sent.push(Sent { body, money: None });
            }
            Step::Deposit(c, atoms) | Step::Withdraw(c, atoms) => {
                let kind = if matches!(step, Step::Deposit(..)) {
                    Kind::Deposit
                } else {
                    Kind::Withdraw
                };
                self.next_tx += 1;
                let tx = format!("P{}-TX{}", self.case, self.next_tx);
                self.send_money(kind, c, tx, atoms).await;
            }
            Step::Adjust(c, fund, atoms) => self.adjust(c, fund, atoms).await,
            Step::Replay(n) => {
                if self.model.sent.is_empty() {
                    return;
                }
                let sent = self.model.sent[n % self.model.sent.len()].clone();
                let (status, answer) = self.app.post_webhook(&sent.body).await;
                match sent.money {
                    Some((kind, c, tx, atoms)) => self.expect_money(kind, c, &tx, atoms, status, &answer),
                    None => assert_eq!((status, &answer["status"]), (200, &json!("duplicate")), "{answer}"),
                }
            }
            Step::Reuse(n, atoms) => {
                let earlier: Vec<_> = self.model.sent.iter().filter_map(|s| s.money.clone()).collect();
                if earlier.is_empty() {
                    return;
                }
                let (kind, c, tx, _) = earlier[n % earlier.len()].clone();
                self.send_money(kind, c, tx, atoms).await;
            }
        }
    }

    async fn adjust(&mut self, c: usize, fund: usize, atoms: i64) {
        if !self.model.registered[c] {
            return; // no account to adjust yet
        }
        let account = self.app.account_id(&self.email(c));
        let amount = Money::from_atoms(atoms).unwrap().to_string();
        let body = json!({ "amount": amount, "fundType": FUNDS[fund], "notes": "property" });
        let path = format!("/api/accounts/{account}/adjust-balance");
        let (status, answer) = self
            .app
            .staff(reqwest::Method::POST, &path, self.token, Some(body))
            .await;
        if self.model.funds[c][fund] + atoms < 0 {
            assert_eq!(status, 400, "debit beyond {} funds: {answer}", FUNDS[fund]);
            assert_eq!(answer["error"], format!("Insufficient {} funds", FUNDS[fund]));
        } else {
            assert_eq!(status, 200, "{answer}");
            self.model.funds[c][fund] += atoms;
        }
    }

    /// The books after the whole history, from the staff API and from SQLite.
    async fn check_books(&self) {
        for c in (0..CLIENTS).filter(|c| self.model.registered[*c]) {
            let account = self.app.account_id(&self.email(c));
            let (status, view) = self
                .app
                .staff(
                    reqwest::Method::GET,
                    &format!("/api/accounts/{account}"),
                    self.token,
                    None,
                )
                .await;
            assert_eq!(status, 200, "{view}");
            let [real, demo, bonus] = self.model.funds[c];
            let money = |atoms: i64| json!(Money::from_atoms(atoms).unwrap().to_string());
            assert_eq!(view["realBalance"], money(real), "client {c}: {view}");
            assert_eq!(view["demoBalance"], money(demo), "client {c}: {view}");
            assert_eq!(view["bonusBalance"], money(bonus), "client {c}: {view}");
            assert_eq!(view["balance"], money(real + demo + bonus), "client {c}: {view}");
            assert!(real >= 0 && demo >= 0 && bonus >= 0);

            let ledger = self.app.ledger(&account);
            for (f, fund) in FUNDS.iter().enumerate() {
                let sum: i64 = ledger.iter().filter(|e| e.fund == *fund).map(|e| e.amount).sum();
                assert_eq!(sum, self.model.funds[c][f], "client {c}: {fund} ledger");
            }
            let mut on_books: Vec<(String, i64)> = ledger
                .iter()
                .filter_map(|e| e.external_ref.clone().map(|tx| (tx, e.amount)))
                .collect();
            on_books.sort();
            let expected: Vec<(String, i64)> = self
                .model
                .applied
                .iter()
                .filter(|(_, (client, _))| *client == c)
                .map(|(tx, (_, delta))| (tx.clone(), *delta))
                .collect();
            assert_eq!(
                on_books, expected,
                "client {c}: each applied transaction once, no other"
            );
        }
        self.app.assert_books_balance();
    }
}

#[test]
fn random_histories_of_money_events_replays_and_adjustments_match_an_exact_model() {
    let app = spawn_with(Spawn::default().env("CRM_SERVICE_RATE_LIMIT", "0"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let token = runtime.block_on(app.admin_token());
    let cases = AtomicUsize::new(0);
    let config = Config {
        cases: 48,
        // Shrinking reruns a failing history many times against the live server; a few dozen
        // attempts find a short counterexample without stretching a failing CI run.
        max_shrink_iters: 64,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x0c4d_2025),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(step(), 1..=30), |steps| {
        let case = cases.fetch_add(1, Ordering::SeqCst);
        runtime.block_on(async {
            let mut history = History {
                app: &app,
                token: &token,
                case,
                model: Model::default(),
                next_tx: 0,
            };
            for step in &steps {
                history.step(step).await;
            }
            history.check_books().await;
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
