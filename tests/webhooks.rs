//! `POST /api/webhooks/site` (guide, section 1): signatures, each event's good and bad
//! payloads, the guide's withdrawal rule, exactly-once delivery, body limits, and the record
//! every attempt leaves.

mod common;
mod webhook_support;

use common::*;
use serde_json::{json, Value};
use webhook_support::*;

const INVALID_SIGNATURE: &str = r#"{"error":"Invalid signature"}"#;

fn no_client(app: &TestApp, email: &str) -> bool {
    app.sqlite()
        .query_row("SELECT COUNT(*) FROM clients WHERE email = ?1", [email], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
        == 0
}

// ---- signatures ---------------------------------------------------------------------------

#[tokio::test]
async fn the_guides_shell_example_is_accepted_byte_for_byte() {
    let app = spawn_app();
    // The guide's "Test Webhook" payload, exactly as printed there.
    let payload = r#"{"event":"client.registered","data":{"clientId":"TEST001","email":"test@example.com","firstName":"Test","lastName":"User","phone":"+1234567890"},"timestamp":"2025-10-13T19:00:00Z"}"#;
    let openssl = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"echo -n "$PAYLOAD" | openssl dgst -sha256 -hmac "$WEBHOOK_SECRET" | awk '{print $2}'"#)
        .env("PAYLOAD", payload)
        .env("WEBHOOK_SECRET", &app.secrets.webhook)
        .output();
    let signature = match openssl {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => {
            let s = String::from_utf8(out.stdout).unwrap().trim().to_string();
            assert_eq!(
                s,
                sign(&app.secrets.webhook, payload.as_bytes()),
                "openssl and HMAC agree"
            );
            s
        }
        _ => sign(&app.secrets.webhook, payload.as_bytes()),
    };
    let (status, body) = app.post_webhook_raw(payload.as_bytes(), Some(&signature)).await;
    assert_eq!((status, body), (200, json!({ "status": "processed" })));
    let (platform_id, first): (String, String) = app
        .sqlite()
        .query_row(
            "SELECT platform_client_id, first_name FROM clients WHERE email = 'test@example.com'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((platform_id.as_str(), first.as_str()), ("TEST001", "Test"));
    assert_eq!(last_attempt(&app)["rawBody"], payload, "the exact bytes are kept");
}

#[tokio::test]
async fn signatures_are_checked_in_every_form_and_anything_else_is_refused() {
    let app = spawn_app();
    let secret = app.secrets.webhook.clone();
    let wrong = random_hex();
    let good = |b: &[u8]| sign(&secret, b);
    type Header<'a> = Box<dyn Fn(&[u8]) -> Option<String> + 'a>;
    let cases: Vec<(&str, Header, bool, u16)> = vec![
        ("plain lower-case hex", Box::new(|b| Some(good(b))), false, 200),
        (
            "sha256= prefix",
            Box::new(|b| Some(format!("sha256={}", good(b)))),
            false,
            200,
        ),
        ("upper-case hex", Box::new(|b| Some(good(b).to_uppercase())), false, 200),
        (
            "spaces and a tab around it",
            Box::new(|b| Some(format!("  {}\t", good(b)))),
            false,
            200,
        ),
        ("missing header", Box::new(|_| None), false, 401),
        ("empty header", Box::new(|_| Some(String::new())), false, 401),
        ("prefix only", Box::new(|_| Some("sha256=".into())), false, 401),
        (
            "a space inside the hex",
            Box::new(|b| Some(format!("{} {}", &good(b)[..10], &good(b)[10..]))),
            false,
            401,
        ),
        ("truncated", Box::new(|b| Some(good(b)[..63].to_string())), false, 401),
        ("not hex", Box::new(|_| Some("z".repeat(64))), false, 401),
        (
            "signed with another secret",
            Box::new(|b| Some(sign(&wrong, b))),
            false,
            401,
        ),
        (
            "one body byte changed after signing",
            Box::new(|b| Some(good(b))),
            true,
            401,
        ),
    ];
    for (i, (why, header, tamper, expected)) in cases.into_iter().enumerate() {
        let email = format!("sig{i}@example.com");
        let body = serde_json::to_vec(&event("client.registered", json!({ "email": email }))).unwrap();
        let signature = header(&body);
        let mut sent = body.clone();
        if tamper {
            // "sig11" becomes "sih11": still valid JSON, but not the bytes that were signed.
            let at = sent.windows(3).position(|w| w == b"sig").unwrap() + 2;
            sent[at] = b'h';
        }
        let (status, reply) = app.post_webhook_raw(&sent, signature.as_deref()).await;
        assert_eq!(status, expected, "{why}: {reply}");
        if expected == 401 {
            assert_eq!(
                reply,
                serde_json::from_str::<Value>(INVALID_SIGNATURE).unwrap(),
                "{why}"
            );
            assert!(
                no_client(&app, &email) && no_client(&app, &format!("sih{i}@example.com")),
                "{why}"
            );
            assert_eq!(last_attempt(&app)["status"], "unauthorized", "{why}");
        } else {
            assert!(!no_client(&app, &email), "{why}: processed");
            assert_eq!(last_attempt(&app)["signature"], "current", "{why}");
        }
    }
}

#[tokio::test]
async fn the_previous_secret_is_accepted_while_set_and_its_use_is_recorded() {
    let previous = random_hex();
    let app = spawn_with(Spawn::default().env("WEBHOOK_SECRET_PREVIOUS", &previous));
    let body = serde_json::to_vec(&event("client.registered", json!({ "email": "old@example.com" }))).unwrap();
    let (status, _) = app.post_webhook_raw(&body, Some(&sign(&previous, &body))).await;
    assert_eq!(status, 200);
    assert_eq!(last_attempt(&app)["signature"], "previous");
    let secret_in_audit: String = app
        .sqlite()
        .query_row(
            "SELECT json_extract(details, '$.secret') FROM audit_log WHERE action = 'webhook.client.registered'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(secret_in_audit, "previous");

    let (status, _) = app.register("new@example.com").await;
    assert_eq!(status, 200);
    assert_eq!(last_attempt(&app)["signature"], "current");

    let body = serde_json::to_vec(&event("client.registered", json!({ "email": "x@example.com" }))).unwrap();
    let (status, _) = app.post_webhook_raw(&body, Some(&sign(&random_hex(), &body))).await;
    assert_eq!(status, 401, "a third secret is not accepted");
}

// ---- client.registered --------------------------------------------------------------------

#[tokio::test]
async fn a_registration_creates_the_client_with_a_primary_account_and_audits_it() {
    let app = spawn_app();
    let (status, body) = app
        .event(
            "client.registered",
            json!({ "clientId": "TP12345", "email": "Client@Example.com", "firstName": "John",
                    "lastName": "Doe", "phone": "+1234567890", "currency": "eur", "leverage": 200 }),
        )
        .await;
    assert_eq!((status, body), (200, json!({ "status": "processed" })));
    let (currency, leverage, real): (String, i64, i64) = app
        .sqlite()
        .query_row(
            "SELECT a.currency, a.leverage, a.real_balance FROM accounts a JOIN clients c ON c.id = a.client_id
             WHERE c.email = 'client@example.com' AND c.platform_client_id = 'TP12345' AND a.parent_id IS NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((currency.as_str(), leverage, real), ("EUR", 200, 0));
    let actions: Vec<String> = {
        let conn = app.sqlite();
        let mut stmt = conn
            .prepare("SELECT action FROM audit_log WHERE actor = 'platform:webhook' ORDER BY seq")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert_eq!(actions, ["client.register", "webhook.client.registered"]);
    let attempt = last_attempt(&app);
    assert_eq!(attempt["status"], "processed");
    assert!(attempt["clientId"].is_string());
}

#[tokio::test]
async fn bad_registrations_are_refused_with_the_field_named_and_nothing_created() {
    let app = spawn_app();
    let long = "x".repeat(101);
    let cases = [
        (json!({ "clientId": "TP1" }), "email", "the email is required"),
        (
            json!({ "email": "not-an-email" }),
            "data.email",
            "the email must be valid",
        ),
        (json!({ "email": 42 }), "data.email", "the email must be a string"),
        (
            json!({ "email": "a@example.com", "firstName": long }),
            "data.firstName",
            "names are bounded",
        ),
        (
            json!({ "email": "a@example.com", "lastName": "Doe\u{0}" }),
            "data.lastName",
            "no control characters",
        ),
        (
            json!({ "email": "a@example.com", "phone": "call me" }),
            "data.phone",
            "phones are digits",
        ),
        (
            json!({ "email": "a@example.com", "currency": "US" }),
            "data.currency",
            "currency is 3 letters",
        ),
        (
            json!({ "email": "a@example.com", "leverage": 0 }),
            "data.leverage",
            "leverage is 1 to 500",
        ),
        (
            json!({ "email": "a@example.com", "leverage": "100" }),
            "data.leverage",
            "leverage is a number",
        ),
        (
            json!({ "email": "a@example.com", "clientId": "TP 1" }),
            "data.clientId",
            "ids have no spaces",
        ),
        (
            json!({ "email": "a@example.com", "clientId": "" }),
            "data.clientId",
            "ids are not empty",
        ),
        (
            json!({ "email": "a@example.com", "clientId": true }),
            "data.clientId",
            "ids are strings",
        ),
    ];
    for (data, field, why) in cases {
        let (status, body) = app.event("client.registered", data.clone()).await;
        assert_eq!(status, 400, "{why}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(field.trim_start_matches("data.")),
            "{why}: {error} names {field}"
        );
        assert_eq!(last_attempt(&app)["status"], "rejected", "{why}");
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM clients"), 0);
}

#[tokio::test]
async fn malformed_envelopes_are_refused_whatever_the_event() {
    let app = spawn_app();
    let cases: [(&str, &str, &str); 10] = [
        ("not json", "{", "invalid JSON"),
        ("an array", "[]", "JSON object"),
        ("empty body", "", "JSON object"),
        ("no event", r#"{"data":{},"timestamp":"2025-10-13T19:00:00Z"}"#, "event"),
        (
            "unknown event",
            r#"{"event":"client.deleted","data":{},"timestamp":"2025-10-13T19:00:00Z"}"#,
            "unknown event",
        ),
        (
            "no data",
            r#"{"event":"kyc.updated","timestamp":"2025-10-13T19:00:00Z"}"#,
            "data",
        ),
        (
            "data not an object",
            r#"{"event":"kyc.updated","data":"x","timestamp":"2025-10-13T19:00:00Z"}"#,
            "data",
        ),
        ("no timestamp", r#"{"event":"kyc.updated","data":{}}"#, "timestamp"),
        (
            "a bad timestamp",
            r#"{"event":"kyc.updated","data":{},"timestamp":"13/10/2025"}"#,
            "timestamp",
        ),
        (
            "trailing garbage",
            r#"{"event":"kyc.updated","data":{},"timestamp":"2025-10-13T19:00:00Z"} x"#,
            "trailing",
        ),
    ];
    for (why, raw, mentions) in cases {
        let (status, body) = app
            .post_webhook_raw(raw.as_bytes(), Some(&sign(&app.secrets.webhook, raw.as_bytes())))
            .await;
        assert_eq!(status, 400, "{why}: {body}");
        assert!(body["error"].as_str().unwrap().contains(mentions), "{why}: {body}");
        let attempt = last_attempt(&app);
        assert_eq!(
            (attempt["status"].as_str(), attempt["rawBody"].as_str()),
            (Some("rejected"), Some(raw))
        );
    }
}

#[tokio::test]
async fn registering_an_email_again_updates_its_contact_fields_and_nothing_else() {
    let app = spawn_app();
    let data = json!({ "clientId": "TP1", "email": "a@example.com", "firstName": "John", "phone": "+1" });
    assert_eq!(app.event("client.registered", data).await.0, 200);
    let again = json!({ "clientId": "TP1", "email": "A@example.com", "firstName": "Johnny", "lastName": "Doe" });
    let (status, body) = app.event("client.registered", again).await;
    assert_eq!((status, body), (200, json!({ "status": "processed" })));
    let (first, last, phone): (String, String, String) = app
        .sqlite()
        .query_row("SELECT first_name, last_name, phone FROM clients", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((first.as_str(), last.as_str(), phone.as_str()), ("Johnny", "Doe", "+1"));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM clients"), 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM accounts"), 1);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM audit_log WHERE action = 'client.update'"),
        1
    );

    let (status, _) = app
        .event(
            "client.registered",
            json!({ "clientId": "TP2", "email": "a@example.com" }),
        )
        .await;
    assert_eq!(status, 409, "the email belongs to another platform client");
    let (status, _) = app
        .event(
            "client.registered",
            json!({ "clientId": "TP1", "email": "b@example.com" }),
        )
        .await;
    assert_eq!(status, 409, "the platform client is registered with another email");
    assert_eq!(last_attempt(&app)["status"], "conflict");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM clients"), 1);
}

#[tokio::test]
async fn registering_again_with_a_client_id_links_it_to_a_client_registered_without_one() {
    let app = spawn_app();
    assert_eq!(
        app.event("client.registered", json!({ "email": "late@example.com" }))
            .await
            .0,
        200
    );
    let again = json!({ "clientId": "TP-LATE", "email": "late@example.com" });
    assert_eq!(app.event("client.registered", again).await.0, 200);
    let linked: Option<String> = app
        .sqlite()
        .query_row("SELECT platform_client_id FROM clients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(linked.as_deref(), Some("TP-LATE"));
    let deposit = json!({ "clientId": "TP-LATE", "amount": "250", "transactionId": "TX-LATE" });
    assert_eq!(app.event("deposit.completed", deposit).await.0, 200);
    let changes: String = app
        .sqlite()
        .query_row(
            "SELECT details FROM audit_log WHERE action = 'client.update'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let changes: Value = serde_json::from_str(&changes).unwrap();
    assert_eq!(
        changes["changes"]["platformClientId"],
        json!({ "from": null, "to": "TP-LATE" })
    );
    // Once linked, the clientId is not replaced.
    let other = json!({ "clientId": "TP-OTHER", "email": "late@example.com" });
    assert_eq!(app.event("client.registered", other).await.0, 409);
    // A clientId another client has: the conflict named as it is.
    assert_eq!(
        app.event("client.registered", json!({ "email": "bare@example.com" }))
            .await
            .0,
        200
    );
    let taken = json!({ "clientId": "TP-LATE", "email": "bare@example.com" });
    let (status, body) = app.event("client.registered", taken).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("This clientId is already registered with another email"))
    );
}

// ---- deposit.completed --------------------------------------------------------------------

#[tokio::test]
async fn a_deposit_credits_real_funds_with_a_ledger_entry_and_audit() {
    let app = spawn_app();
    app.event(
        "client.registered",
        json!({ "clientId": "TP9", "email": "d@example.com" }),
    )
    .await;
    let (status, body) = app.deposit("d@example.com", "100.50", "TX-1").await;
    assert_eq!((status, body), (200, json!({ "status": "processed" })));
    let (status, _) = app
        .event(
            "deposit.completed",
            json!({ "clientId": "TP9", "amount": 0.25, "currency": "USD", "transactionId": 7 }),
        )
        .await;
    assert_eq!(
        status, 200,
        "found by clientId, amount as a JSON number, numeric transactionId"
    );
    assert_eq!(
        balances(&app, "d@example.com"),
        ("100.75".into(), "0.00".into(), "0.00".into())
    );
    let (amount, reason, actor, external): (i64, String, String, String) = app
        .sqlite()
        .query_row(
            "SELECT amount, reason, actor, external_ref FROM ledger_entries ORDER BY seq LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((amount, reason.as_str()), (atoms("100.50"), "deposit"));
    assert_eq!((actor.as_str(), external.as_str()), ("platform:webhook", "TX-1"));
    // One entry per deposit, the balance change, naming the webhook attempt it came from.
    let entries: Vec<(String, String, String)> = {
        let conn = app.sqlite();
        let mut stmt = conn
            .prepare(
                "SELECT action, target, details FROM audit_log
                 WHERE action LIKE 'account.%' OR action LIKE 'webhook.deposit%' ORDER BY seq",
            )
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let attempts: Vec<String> = {
        let conn = app.sqlite();
        let mut stmt = conn
            .prepare("SELECT id FROM webhook_events WHERE event = 'deposit.completed' ORDER BY seq")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let account = app.account_id("d@example.com");
    assert_eq!(entries.len(), 2, "{entries:?}");
    for ((action, target, details), (attempt, tx)) in entries.iter().zip(attempts.iter().zip(["TX-1", "7"])) {
        assert_eq!(
            (action.as_str(), target),
            ("account.deposit", &format!("account:{account}"))
        );
        let details: Value = serde_json::from_str(details).unwrap();
        assert_eq!(details["attemptId"], json!(attempt), "{details}");
        assert_eq!(details["transactionId"], json!(tx), "{details}");
        assert_eq!(details["timestamp"], json!("2025-10-13T19:00:00Z"), "{details}");
    }
    let verify = app.crm(&["verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[tokio::test]
async fn bad_deposits_are_refused_and_change_nothing() {
    let app = spawn_app();
    app.register("d@example.com").await;
    app.register("other@example.com").await;
    let other_account: String = app
        .sqlite()
        .query_row(
            "SELECT a.id FROM accounts a JOIN clients c ON c.id = a.client_id WHERE c.email = 'other@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let base = json!({ "email": "d@example.com", "amount": "10", "transactionId": "T" });
    let with = |k: &str, v: Value| {
        let mut d = base.clone();
        d[k] = v;
        d
    };
    let without = |k: &str| {
        let mut d = base.clone();
        d.as_object_mut().unwrap().remove(k);
        d
    };
    let cases = [
        (with("amount", json!("0")), 400, "amount", "zero moves nothing"),
        (
            with("amount", json!("-5")),
            400,
            "amount",
            "the event says the direction",
        ),
        (with("amount", json!("abc")), 400, "amount", "not a number"),
        (
            with("amount", serde_json::from_str("1e3").unwrap()),
            400,
            "amount",
            "a float literal with an exponent",
        ),
        (
            with("amount", json!("0.000000001")),
            400,
            "amount",
            "more than 8 decimals",
        ),
        (with("amount", json!(null)), 400, "amount", "null"),
        (without("amount"), 400, "amount", "missing amount"),
        (with("currency", json!("EUR")), 400, "currency", "the account is in USD"),
        (
            with("currency", json!("DOLLARS")),
            400,
            "currency",
            "not a currency code",
        ),
        (with("accountId", json!("acc-1")), 400, "accountId", "not a UUID"),
        (
            with("accountId", json!(other_account)),
            404,
            "does not belong",
            "another client's account",
        ),
        (
            with("email", json!("nobody@example.com")),
            404,
            "nobody@example.com",
            "unknown client",
        ),
        (without("email"), 400, "clientId", "no way to find the client"),
        (
            with("clientId", json!("TP-OTHER")),
            400,
            "different clients",
            "clientId and email disagree",
        ),
    ];
    for (i, (data, expected, mentions, why)) in cases.into_iter().enumerate() {
        let mut data = data;
        if data.get("transactionId").is_some() {
            data["transactionId"] = json!(format!("T{i}"));
        }
        let (status, body) = app.event("deposit.completed", data).await;
        assert_eq!(status, expected, "{why}: {body}");
        assert!(body["error"].as_str().unwrap().contains(mentions), "{why}: {body}");
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM ledger_entries"), 0);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM webhook_claims WHERE claim LIKE 'tx:%'"),
        0
    );
    assert_eq!(balances(&app, "d@example.com").0, "0.00");
}

// ---- withdrawal.completed -----------------------------------------------------------------

#[tokio::test]
async fn the_guides_example_withdrawal_beyond_real_funds_is_blocked_and_changes_nothing() {
    let app = spawn_app();
    app.register("w@example.com").await;
    app.deposit("w@example.com", "100", "DEP-1").await;
    set_demo_and_bonus(&app, "w@example.com", "500", "200");
    let ledger_before = count(&app, "SELECT COUNT(*) FROM ledger_entries");

    let (raw, sig) = signed(
        &app,
        &event(
            "withdrawal.completed",
            json!({ "email": "w@example.com", "amount": "150", "transactionId": "WD-1" }),
        ),
    );
    let resp = app
        .http
        .post(app.url("/api/webhooks/site"))
        .header("x-webhook-signature", sig)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        serde_json::from_str::<Value>(
            r#"{"error":"Insufficient real funds for withdrawal","required":150.00,"available":100.00}"#
        )
        .unwrap()
    );
    assert!(
        text.contains(r#""required":150.00"#) && text.contains(r#""available":100.00"#),
        "{text}"
    );

    assert_eq!(
        balances(&app, "w@example.com"),
        ("100.00".into(), "500.00".into(), "200.00".into())
    );
    assert_eq!(count(&app, "SELECT COUNT(*) FROM ledger_entries"), ledger_before);
    let attempt = last_attempt(&app);
    assert_eq!(
        (attempt["status"].as_str(), attempt["httpStatus"].as_i64()),
        (Some("rejected"), Some(400))
    );
    let (outcome, required): (String, String) = app
        .sqlite()
        .query_row(
            "SELECT outcome, json_extract(details, '$.failure.required') FROM audit_log
             WHERE action = 'webhook.withdrawal.completed'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((outcome.as_str(), required.as_str()), ("failure", "150.00"));
}

#[tokio::test]
async fn the_insufficient_funds_body_shows_the_guides_numbers() {
    let app = spawn_app();
    app.register("w@example.com").await;
    app.deposit("w@example.com", "250", "DEP-1").await;
    let (raw, sig) = signed(
        &app,
        &event(
            "withdrawal.completed",
            json!({ "email": "w@example.com", "amount": 500, "transactionId": "WD-1" }),
        ),
    );
    let resp = app
        .http
        .post(app.url("/api/webhooks/site"))
        .header("x-webhook-signature", sig)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#""required":500.00"#) && text.contains(r#""available":250.00"#),
        "{text}"
    );
    assert!(
        text.contains(r#""error":"Insufficient real funds for withdrawal""#),
        "{text}"
    );
}

#[tokio::test]
async fn a_withdrawal_within_real_funds_debits_real_funds_only() {
    let app = spawn_app();
    app.register("w@example.com").await;
    app.deposit("w@example.com", "500", "DEP-1").await;
    set_demo_and_bonus(&app, "w@example.com", "50", "25");
    let (status, body) = app.withdraw("w@example.com", "200", "WD-1").await;
    assert_eq!((status, body), (200, json!({ "status": "processed" })));
    assert_eq!(
        balances(&app, "w@example.com"),
        ("300.00".into(), "50.00".into(), "25.00".into())
    );
    let (amount, external): (i64, String) = app
        .sqlite()
        .query_row(
            "SELECT amount, external_ref FROM ledger_entries WHERE reason = 'withdrawal'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((amount, external.as_str()), (-atoms("200"), "WD-1"));
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'account.withdrawal'"
        ),
        1
    );
    let (status, _) = app.withdraw("w@example.com", "300", "WD-2").await;
    assert_eq!(status, 200, "every last unit of real funds may leave");
    assert_eq!(balances(&app, "w@example.com").0, "0.00");
}

// ---- kyc.updated and account.updated ------------------------------------------------------

#[tokio::test]
async fn a_kyc_update_sets_status_and_notes_and_audits_the_change() {
    let app = spawn_app();
    app.register("k@example.com").await;
    let (status, _) = app
        .event(
            "kyc.updated",
            json!({ "email": "k@example.com", "kycStatus": "approved", "kycNotes": "Documents verified" }),
        )
        .await;
    assert_eq!(status, 200);
    let (kyc, notes): (String, String) = app
        .sqlite()
        .query_row("SELECT kyc_status, kyc_notes FROM clients", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((kyc.as_str(), notes.as_str()), ("approved", "Documents verified"));
    let details: Value = app
        .sqlite()
        .query_row(
            "SELECT details FROM audit_log WHERE action = 'client.kyc_update' AND target LIKE 'client:%'",
            [],
            |r| r.get::<_, String>(0),
        )
        .map(|d| serde_json::from_str(&d).unwrap())
        .unwrap();
    assert_eq!(
        (&details["from"], &details["to"], &details["notes"]),
        (&json!("pending"), &json!("approved"), &json!("Documents verified"))
    );

    let cases = [
        (
            json!({ "email": "k@example.com", "kycStatus": "done" }),
            400,
            "kycStatus",
        ),
        (json!({ "email": "k@example.com" }), 400, "kycStatus"),
        (
            json!({ "email": "k@example.com", "kycStatus": "approved", "kycNotes": "n".repeat(10_001) }),
            400,
            "kycNotes",
        ),
        (
            json!({ "email": "k@example.com", "kycStatus": "approved", "kycNotes": 5 }),
            400,
            "kycNotes",
        ),
        (
            json!({ "email": "ghost@example.com", "kycStatus": "approved" }),
            404,
            "ghost@example.com",
        ),
    ];
    for (data, expected, mentions) in cases {
        let (status, body) = app.event("kyc.updated", data).await;
        assert_eq!(status, expected, "{body}");
        assert!(body["error"].as_str().unwrap().contains(mentions), "{body}");
    }
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'client.kyc_update'"
        ),
        1
    );
}

#[tokio::test]
async fn an_account_update_changes_leverage_currency_and_contact_fields() {
    let app = spawn_app();
    app.event(
        "client.registered",
        json!({ "clientId": "TP5", "email": "u@example.com" }),
    )
    .await;
    app.register("taken@example.com").await;
    let ok = [
        json!({ "email": "u@example.com", "leverage": 500 }),
        json!({ "email": "u@example.com", "currency": "GBP" }),
        json!({ "email": "u@example.com", "firstName": "Ann", "phone": "+44 20 7946 0958" }),
        json!({ "clientId": "TP5", "email": "new@example.com", "lastName": "Lee" }),
    ];
    for data in ok {
        let (status, body) = app.event("account.updated", data.clone()).await;
        assert_eq!(status, 200, "{data}: {body}");
    }
    let row: (String, String, String, String, i64) = app
        .sqlite()
        .query_row(
            "SELECT c.email, c.first_name, c.last_name, a.currency, a.leverage FROM clients c
             JOIN accounts a ON a.client_id = c.id WHERE c.platform_client_id = 'TP5'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        row,
        ("new@example.com".into(), "Ann".into(), "Lee".into(), "GBP".into(), 500)
    );
    for action in ["account.leverage", "account.currency"] {
        assert_eq!(
            count(
                &app,
                &format!("SELECT COUNT(*) FROM audit_log WHERE action = '{action}'")
            ),
            1
        );
    }

    app.deposit("new@example.com", "1", "DEP-1").await;
    let bad = [
        (
            json!({ "email": "new@example.com", "leverage": 501 }),
            400,
            "leverage",
            "above 500",
        ),
        (
            json!({ "email": "new@example.com", "leverage": 1.5 }),
            400,
            "leverage",
            "not whole",
        ),
        (
            json!({ "email": "new@example.com" }),
            400,
            "nothing to update",
            "no field to change",
        ),
        (
            json!({ "email": "new@example.com", "currency": "USD" }),
            409,
            "holds funds",
            "money would be relabelled",
        ),
        (
            json!({ "clientId": "TP5", "email": "taken@example.com" }),
            409,
            "email",
            "the email is someone else's",
        ),
        (
            json!({ "clientId": "TP404", "leverage": 10 }),
            404,
            "TP404",
            "unknown platform client",
        ),
    ];
    for (data, expected, mentions, why) in bad {
        let (status, body) = app.event("account.updated", data).await;
        assert_eq!(status, expected, "{why}: {body}");
        assert!(body["error"].as_str().unwrap().contains(mentions), "{why}: {body}");
    }
    let currency: String = app
        .sqlite()
        .query_row(
            "SELECT currency FROM accounts a JOIN clients c ON c.id = a.client_id WHERE c.email = 'new@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(currency, "GBP");
}

// ---- exactly once -------------------------------------------------------------------------

#[tokio::test]
async fn a_misspelt_field_is_refused_rather_than_money_booked_without_it() {
    let app = spawn_app();
    app.register("m@example.com").await;
    // accountID would send the money to the primary account; transactionID would make a retry
    // with a new timestamp a second deposit.
    let data = json!({ "email": "m@example.com", "amount": "100", "transactionID": "TX-M", "accountID": "x" });
    for timestamp in ["2025-10-13T19:00:00Z", "2025-10-13T19:05:00Z"] {
        let body = json!({ "event": "deposit.completed", "data": data, "timestamp": timestamp });
        let (status, body) = app.post_webhook(&body).await;
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("did you mean"), "{error}");
        assert_eq!(last_attempt(&app)["status"], "rejected");
    }
    let top = json!({ "event": "deposit.completed", "Id": "E-1", "timestamp": "2025-10-13T19:00:00Z",
                      "data": { "email": "m@example.com", "amount": "100" } });
    let (status, body) = app.post_webhook(&top).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("did you mean id"), "{body}");
    assert_eq!(app.account_of("m@example.com").await["realBalance"], "0.00");
    // Keys unlike any field are the platform's own and are ignored.
    let extra = json!({ "email": "m@example.com", "amount": "100", "transactionId": "TX-M", "method": "card" });
    assert_eq!(app.event("deposit.completed", extra).await.0, 200);
    assert_eq!(app.account_of("m@example.com").await["realBalance"], "100.00");
}

#[tokio::test]
async fn a_repeated_deposit_is_a_duplicate_and_credits_once() {
    let app = spawn_app();
    app.register("d@example.com").await;
    let data = json!({ "email": "d@example.com", "amount": "100", "transactionId": "TX-1" });
    assert_eq!(
        app.event("deposit.completed", data.clone()).await,
        (200, json!({ "status": "processed" }))
    );
    assert_eq!(
        app.event("deposit.completed", data.clone()).await,
        (200, json!({ "status": "duplicate" }))
    );
    let retry =
        json!({ "event": "deposit.completed", "data": data, "timestamp": "2025-10-13T19:05:00Z", "id": "evt-9" });
    assert_eq!(
        app.post_webhook(&retry).await,
        (200, json!({ "status": "duplicate" })),
        "a retry with a new timestamp and an event id is still the same deposit"
    );
    assert_eq!(last_attempt(&app)["dedupeKey"], "id:evt-9");
    let same_amount_as_a_number = json!({ "email": "d@example.com", "amount": 100.0, "transactionId": "TX-1" });
    assert_eq!(
        app.event("deposit.completed", same_amount_as_a_number).await,
        (200, json!({ "status": "duplicate" })),
        "the same deposit written another way is still a duplicate, not a conflict"
    );
    assert_eq!(balances(&app, "d@example.com").0, "100.00");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM ledger_entries"), 1);
    assert_eq!(
        statuses(&app)[1..],
        [
            "processed".to_string(),
            "duplicate".into(),
            "duplicate".into(),
            "duplicate".into()
        ]
    );
}

#[tokio::test]
async fn a_transaction_id_reused_with_other_content_is_a_conflict_and_changes_nothing() {
    let app = spawn_app();
    app.register("d@example.com").await;
    app.deposit("d@example.com", "100", "TX-1").await;
    let (status, body) = app.deposit("d@example.com", "999", "TX-1").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"],
        "transactionId TX-1 was already used by a different event"
    );
    let (status, _) = app.withdraw("d@example.com", "100", "TX-1").await;
    assert_eq!(status, 409, "a withdrawal cannot reuse a deposit's transaction id");
    assert_eq!(balances(&app, "d@example.com").0, "100.00");
    assert_eq!(last_attempt(&app)["status"], "conflict");
}

#[tokio::test]
async fn a_deposit_with_an_event_id_claims_both_its_event_id_and_its_transaction_id() {
    let app = spawn_app();
    app.register("d@example.com").await;
    let with_id = |id: &str, amount: &str, tx: &str| {
        json!({ "id": id, "event": "deposit.completed", "timestamp": "2025-10-13T19:00:00Z",
                "data": { "email": "d@example.com", "amount": amount, "transactionId": tx } })
    };
    assert_eq!(
        app.post_webhook(&with_id("evt-1", "100", "TX-1")).await,
        (200, json!({ "status": "processed" }))
    );
    let claims: Vec<String> = {
        let conn = app.sqlite();
        let mut stmt = conn
            .prepare("SELECT claim FROM webhook_claims WHERE claim NOT LIKE 'body:%' ORDER BY claim")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert_eq!(claims, ["id:evt-1", "tx:TX-1"]);
    let cases = [
        (
            app.deposit("d@example.com", "100", "TX-1").await,
            200,
            None,
            "the same deposit without its event id",
        ),
        (
            app.post_webhook(&with_id("evt-2", "100", "TX-1")).await,
            200,
            None,
            "the same deposit under another event id",
        ),
        (
            app.post_webhook(&with_id("evt-3", "5", "TX-1")).await,
            409,
            Some("transactionId TX-1 was already used by a different event"),
            "another amount under the same transaction id",
        ),
        (
            app.post_webhook(&with_id("evt-1", "5", "TX-2")).await,
            409,
            Some("Event id:evt-1 was already received with different content"),
            "another deposit under the same event id",
        ),
    ];
    for ((status, body), expected, error, why) in cases {
        assert_eq!(status, expected, "{why}: {body}");
        if let Some(error) = error {
            assert_eq!(body["error"], error, "{why}");
        }
    }
    assert_eq!(balances(&app, "d@example.com").0, "100.00");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM ledger_entries"), 1);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM webhook_claims WHERE claim NOT LIKE 'body:%'"
        ),
        2
    );
    assert_eq!(
        statuses(&app)[1..],
        ["processed", "duplicate", "duplicate", "conflict", "conflict"].map(String::from)
    );
}

/// `transactionId` is optional (SPEC): a deposit without one is booked, with no external
/// reference, and deduplicated by its event `id` (a retry with a new timestamp is a duplicate),
/// else by its exact body.
#[tokio::test]
async fn a_deposit_without_a_transaction_id_is_booked_and_deduplicated_by_its_id_or_its_body() {
    let app = spawn_app();
    app.register("n@example.com").await;
    let with_id = |timestamp: &str, amount: &str| {
        json!({ "id": "evt-dep-1", "event": "deposit.completed", "timestamp": timestamp,
                "data": { "email": "n@example.com", "amount": amount } })
    };
    assert_eq!(
        app.post_webhook(&with_id("2025-10-13T19:00:00Z", "10")).await.1["status"],
        "processed"
    );
    assert_eq!(
        app.post_webhook(&with_id("2025-10-13T19:05:00Z", "10.00")).await.1["status"],
        "duplicate",
        "the same event id and movement, retried later"
    );
    assert_eq!(
        app.post_webhook(&with_id("2025-10-13T19:05:00Z", "11")).await.0,
        409,
        "the same event id, another amount"
    );
    let raw = br#"{"event":"deposit.completed","data":{"email":"n@example.com","amount":"5"},"timestamp":"2025-10-13T19:00:00Z"}"#;
    let sig = sign(&app.secrets.webhook, raw);
    assert_eq!(app.post_webhook_raw(raw, Some(&sig)).await.1["status"], "processed");
    assert_eq!(app.post_webhook_raw(raw, Some(&sig)).await.1["status"], "duplicate");
    assert!(last_attempt(&app)["dedupeKey"].as_str().unwrap().starts_with("body:"));

    assert_eq!(balances(&app, "n@example.com").0, "15.00");
    let ledger: Vec<(Option<String>, String)> = app
        .sqlite()
        .prepare("SELECT external_ref, notes FROM ledger_entries ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let plain = (None, "Trading Platform deposit".to_string());
    assert_eq!(ledger, [plain.clone(), plain]);
    let verify = app.crm(&["verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[tokio::test]
async fn event_ids_and_identical_bodies_deduplicate_other_events() {
    let app = spawn_app();
    app.register("k@example.com").await;
    let kyc = |status: &str| {
        json!({ "id": "evt-1", "event": "kyc.updated", "timestamp": "2025-10-13T19:00:00Z",
                "data": { "email": "k@example.com", "kycStatus": status } })
    };
    assert_eq!(app.post_webhook(&kyc("approved")).await.1["status"], "processed");
    assert_eq!(app.post_webhook(&kyc("approved")).await.1["status"], "duplicate");
    assert_eq!(
        app.post_webhook(&kyc("rejected")).await.0,
        409,
        "same id, other content"
    );
    let (status, body) = app
        .event("client.registered", json!({ "email": "k@example.com" }))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("processed")),
        "a new body"
    );
    let raw = br#"{"event":"kyc.updated","data":{"email":"k@example.com","kycStatus":"in_review"},"timestamp":"2025-10-13T19:00:00Z"}"#;
    let sig = sign(&app.secrets.webhook, raw);
    assert_eq!(app.post_webhook_raw(raw, Some(&sig)).await.1["status"], "processed");
    assert_eq!(app.post_webhook_raw(raw, Some(&sig)).await.1["status"], "duplicate");
    assert!(last_attempt(&app)["dedupeKey"].as_str().unwrap().starts_with("body:"));
}

// ---- body limits --------------------------------------------------------------------------

#[tokio::test]
async fn a_body_over_the_limit_is_refused_by_its_content_length() {
    let app = spawn_app();
    // Declares one byte more than the default 1 MiB and sends none of it: refused on the header.
    let request = format!(
        "POST /api/webhooks/site HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         x-webhook-signature: 00\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        1024 * 1024 + 1
    );
    let (status, body) = raw_http(&app, request.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("1048576"), "{body}");
    let attempt = last_attempt(&app);
    assert_eq!(
        (attempt["status"].as_str(), attempt["httpStatus"].as_i64()),
        (Some("rejected"), Some(413))
    );
    assert_eq!(
        (attempt["rawLen"].as_i64(), attempt["bodySize"].as_i64()),
        (Some(0), Some(1024 * 1024 + 1))
    );

    let small = spawn_with(Spawn::default().env("CRM_WEBHOOK_MAX_BODY_BYTES", "2048"));
    let body = format!(r#"{{"event":"x","pad":"{}"}}"#, "a".repeat(3000));
    let sig = sign(&small.secrets.webhook, body.as_bytes());
    let (status, _) = small.post_webhook_raw(body.as_bytes(), Some(&sig)).await;
    assert_eq!(status, 413, "a configured limit is honoured");
}

#[tokio::test]
async fn a_chunked_body_without_content_length_is_bounded_too() {
    let app = spawn_with(Spawn::default().env("CRM_WEBHOOK_MAX_BODY_BYTES", "2048"));
    let chunk = [b' '; 1024];
    let (status, body) = raw_http(&app, &chunked_request("00", &[&chunk, &chunk, &chunk], false)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(last_attempt(&app)["status"], "rejected");

    // Within the limit a chunked delivery is processed like any other.
    let raw = serde_json::to_vec(&event("client.registered", json!({ "email": "c@example.com" }))).unwrap();
    let sig = sign(&app.secrets.webhook, &raw);
    let (first, second) = raw.split_at(20);
    let (status, body) = raw_http(&app, &chunked_request(&sig, &[first, second], true)).await;
    assert_eq!((status, body), (200, json!({ "status": "processed" })));
    // A body of exactly the limit is allowed.
    let mut exact = serde_json::to_vec(&event("client.registered", json!({ "email": "e@example.com" }))).unwrap();
    exact.resize(2048, b' ');
    let (status, _) = app
        .post_webhook_raw(&exact, Some(&sign(&app.secrets.webhook, &exact)))
        .await;
    assert_eq!(status, 200);
}

// ---- the record of every attempt ----------------------------------------------------------

#[tokio::test]
async fn every_attempt_is_recorded_with_its_outcome() {
    let app = spawn_app();
    app.register("r@example.com").await; // processed
    app.deposit("r@example.com", "10", "TX-1").await; // processed
    app.deposit("r@example.com", "10", "TX-1").await; // duplicate
    app.deposit("r@example.com", "11", "TX-1").await; // conflict
    app.withdraw("r@example.com", "50", "TX-2").await; // rejected: insufficient
    app.deposit("ghost@example.com", "5", "TX-3").await; // failed: no such client
    let unsigned = format!(r#"{{"event":"deposit.completed","pad":"{}"}}"#, "x".repeat(10_000));
    app.post_webhook_raw(unsigned.as_bytes(), Some("deadbeef")).await; // unauthorized
    app.post_webhook_raw(b"{", Some(&sign(&app.secrets.webhook, b"{")))
        .await; // rejected: bad JSON

    assert_eq!(
        statuses(&app),
        [
            "processed",
            "processed",
            "duplicate",
            "conflict",
            "rejected",
            "failed",
            "unauthorized",
            "rejected"
        ]
    );
    let unauthorized = app
        .sqlite()
        .query_row(
            "SELECT length(raw_body), body_size, body_truncated, event, ip, duration_ms >= 0 FROM webhook_events
             WHERE status = 'unauthorized'",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, bool>(5)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        unauthorized,
        (
            4096,
            unsigned.len() as i64,
            true,
            "deposit.completed".into(),
            "127.0.0.1".into(),
            true
        ),
        "an unsigned body is kept only in part"
    );
    let failed: (String, i64, Option<String>) = app
        .sqlite()
        .query_row(
            "SELECT error, http_status, client_id FROM webhook_events WHERE status = 'failed'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(
        failed.0.contains("ghost@example.com") && failed.1 == 404 && failed.2.is_none(),
        "{failed:?}"
    );
    let rejected_client: Option<String> = app
        .sqlite()
        .query_row(
            "SELECT client_id FROM webhook_events WHERE event = 'withdrawal.completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(rejected_client.is_some(), "a refused withdrawal names its client");
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE outcome = 'failure' AND action LIKE 'webhook.%'"
        ),
        5,
        "conflict, refusal, unknown client, bad signature and bad JSON are audited as failures"
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'webhook.unauthorized' AND actor = 'anonymous'"
        ),
        1
    );
    let verify = app.crm(&["verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[tokio::test]
async fn the_receiver_answers_only_post() {
    let app = spawn_app();
    let (status, body) = app.get("/api/webhooks/site").await;
    assert_eq!(status, 405, "{body}");
    let resp = app.http.put(app.url("/api/webhooks/site")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM webhook_events"),
        0,
        "nothing is recorded"
    );
}
