//! Helpers for the webhook tests: reading the books straight from SQLite, staff tokens, raw
//! HTTP for bodies reqwest cannot shape (chunked, lying Content-Length).
#![allow(dead_code)]

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{sign, TestApp};
use crm::domain::{Money, Role};

/// A hundred-millionths count from SQLite as the API writes money.
pub fn money(atoms: i64) -> String {
    Money::from_atoms(atoms).unwrap().to_string()
}

pub fn atoms(amount: &str) -> i64 {
    Money::parse(amount).unwrap().atoms()
}

/// (real, demo, bonus) of the client's primary account.
pub fn balances(app: &TestApp, email: &str) -> (String, String, String) {
    app.sqlite()
        .query_row(
            "SELECT a.real_balance, a.demo_balance, a.bonus_balance FROM accounts a
             JOIN clients c ON c.id = a.client_id WHERE c.email = ?1 AND a.parent_id IS NULL",
            [email],
            |r| Ok((money(r.get(0)?), money(r.get(1)?), money(r.get(2)?))),
        )
        .unwrap()
}

pub fn count(app: &TestApp, sql: &str) -> i64 {
    app.sqlite().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// `status` of every attempt, oldest first.
pub fn statuses(app: &TestApp) -> Vec<String> {
    let conn = app.sqlite();
    let mut stmt = conn.prepare("SELECT status FROM webhook_events ORDER BY seq").unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

/// The newest attempt row as JSON-ish fields the tests look at.
pub fn last_attempt(app: &TestApp) -> Value {
    app.sqlite()
        .query_row(
            "SELECT status, http_status, error, signature, raw_body, body_size, body_truncated, client_id, event,
                    dedupe_key
             FROM webhook_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                let raw: Vec<u8> = r.get(4)?;
                Ok(json!({
                    "status": r.get::<_, String>(0)?,
                    "httpStatus": r.get::<_, i64>(1)?,
                    "error": r.get::<_, String>(2)?,
                    "signature": r.get::<_, String>(3)?,
                    "rawBody": String::from_utf8_lossy(&raw),
                    "rawLen": raw.len(),
                    "bodySize": r.get::<_, i64>(5)?,
                    "bodyTruncated": r.get::<_, bool>(6)?,
                    "clientId": r.get::<_, Option<String>>(7)?,
                    "event": r.get::<_, String>(8)?,
                    "dedupeKey": r.get::<_, Option<String>>(9)?,
                }))
            },
        )
        .unwrap()
}

/// Gives the client's primary account demo and bonus funds the way an admin adjustment does:
/// through the CRM's own balance change, so the balance, its ledger entry and the audit entry
/// recording it agree and `crm verify` passes.
pub fn set_demo_and_bonus(app: &TestApp, email: &str, demo: &str, bonus: &str) {
    use crm::domain::FundType;
    use crm::store::accounts::{apply_balance_change, BalanceChange, Reason};
    use crm::store::audit::Audit;
    let conn = app.sqlite();
    let account: String = conn
        .query_row(
            "SELECT a.id FROM accounts a JOIN clients c ON c.id = a.client_id
             WHERE c.email = ?1 AND a.parent_id IS NULL",
            [email],
            |r| r.get(0),
        )
        .unwrap();
    for (fund, amount) in [(FundType::Demo, demo), (FundType::Bonus, bonus)] {
        let change = BalanceChange {
            account_id: account.clone(),
            fund,
            amount: Money::parse(amount).unwrap(),
            reason: Reason::Adjustment,
            notes: String::new(),
            actor: "staff:test".into(),
            external_ref: None,
        };
        let tx = conn.unchecked_transaction().unwrap();
        apply_balance_change(&tx, &change, Audit::new("staff:test", "account.adjust_balance", "test")).unwrap();
        tx.commit().unwrap();
    }
}

/// A staff bearer token for a new user of `role` (or the first-run admin for `Admin`), signed
/// with the app's JWT secret exactly as a login would issue it.
pub fn staff_token(app: &TestApp, role: Role) -> String {
    let email = if role == Role::Admin {
        app.admin_email.clone()
    } else {
        let email = format!("{}-{}@crm.test", role.as_str(), &crate::common::random_hex()[..6]);
        let out = app.crm(&[
            "user",
            "add",
            "--email",
            &email,
            "--name",
            "Staff",
            "--role",
            role.as_str(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        email
    };
    let (id, generation): (String, i64) = app
        .sqlite()
        .query_row(
            "SELECT id, session_generation FROM staff_users WHERE email = ?1",
            [&email],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    crm::security::tokens::issue_staff(app.secrets.jwt.as_bytes(), &id, role, generation)
        .unwrap()
        .0
}

/// A signed body as the platform would send it.
pub fn signed(app: &TestApp, body: &Value) -> (Vec<u8>, String) {
    let raw = serde_json::to_vec(body).unwrap();
    let sig = sign(&app.secrets.webhook, &raw);
    (raw, sig)
}

pub fn event(name: &str, data: Value) -> Value {
    json!({ "event": name, "data": data, "timestamp": "2025-10-13T19:00:00Z" })
}

/// Sends bytes as they are over a fresh connection and reads the answer: for requests reqwest
/// will not produce (chunked bodies, a Content-Length the body does not match).
pub async fn raw_http(app: &TestApp, request: &[u8]) -> (u16, Value) {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    // The server may close without reading an incomplete body; what it answered is still there.
    let _ = stream.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.into())))
}

/// A POST to the webhook endpoint with a chunked body split into `chunks`; `finish` sends the
/// terminating chunk.
pub fn chunked_request(signature: &str, chunks: &[&[u8]], finish: bool) -> Vec<u8> {
    let mut req = format!(
        "POST /api/webhooks/site HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         x-webhook-signature: {signature}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    if finish {
        req.extend_from_slice(b"0\r\n\r\n");
    }
    req
}
