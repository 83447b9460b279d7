//! The staff API as the admin page and the guide (sections 3, 4 and 5) use it.

mod common;
mod staff_common;

use std::collections::HashSet;

use common::*;
use serde_json::{json, Value};
use staff_common::*;

fn adjust_path(account: &str) -> String {
    format!("/api/accounts/{account}/adjust-balance")
}

async fn adjust(app: &TestApp, token: &str, account: &str, body: Value) -> (u16, Value) {
    app.staff(Method::POST, &adjust_path(account), token, Some(body)).await
}

/// A staff POST's answer as text, for checks on its key order (a `Value` sorts its keys).
async fn post_text(app: &TestApp, token: &str, path: &str, body: Option<Value>) -> String {
    let mut req = app.http.post(app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap().text().await.unwrap()
}

/// The keys of a JSON object's text, in the order written.
fn keys_in_order(text: &str) -> Vec<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(key);
            }
            Ok(keys)
        }
    }
    use serde::Deserializer;
    serde_json::Deserializer::from_str(text).deserialize_map(Keys).unwrap()
}

async fn post_raw(app: &TestApp, token: &str, path: &str, raw: &str) -> (u16, Value) {
    let resp = app
        .http
        .post(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(raw.to_string())
        .send()
        .await
        .unwrap();
    into_parts(resp).await
}

fn ledger_count(app: &TestApp, account: &str) -> i64 {
    app.sqlite()
        .query_row(
            "SELECT COUNT(*) FROM ledger_entries WHERE account_id = ?1",
            [account],
            |r| r.get(0),
        )
        .unwrap()
}

// ---- login ---------------------------------------------------------------------------------

#[tokio::test]
async fn login_returns_a_token_its_lifetime_and_the_user() {
    let app = spawn_app();
    let (status, body) = app.login_as("  ADMIN@crm.local ", &app.admin_password).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["token"].as_str().unwrap().split('.').count() == 3);
    assert_eq!(body["expiresIn"], 8 * 3600);
    let user = body["user"].as_object().unwrap();
    let mut keys: Vec<_> = user.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["email", "id", "name", "role"]);
    assert_eq!(body["user"]["role"], "admin");

    let token = body["token"].as_str().unwrap();
    let (status, me) = app.staff(Method::GET, "/api/auth/me", token, None).await;
    assert_eq!((status, &me), (200, &body["user"]));
    let rows = audit_rows(&app, "auth.login");
    assert_eq!(rows.last().unwrap().0, "staff:admin@crm.local");
    assert_eq!(rows.last().unwrap().2, "success");
}

#[tokio::test]
async fn wrong_password_unknown_email_and_disabled_user_get_the_same_401() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (agent_id, _) = staff_user(&app, &admin, "agent@broker.example", "agent").await;
    app.staff(
        Method::PATCH,
        &format!("/api/staff/{agent_id}"),
        &admin,
        Some(json!({ "disabled": true })),
    )
    .await;
    let cases = [
        (app.admin_email.as_str(), "wrong password 123", "wrong password"),
        ("nobody@broker.example", "whatever password", "unknown email"),
        ("not an email", "whatever password", "not even an email"),
        (
            "agent@broker.example",
            PASSWORD,
            "disabled user with the right password",
        ),
    ];
    for (email, password, why) in cases {
        let (status, body) = app.login_as(email, password).await;
        assert_eq!(status, 401, "{why}");
        assert_eq!(body, json!({ "error": "Invalid email or password" }), "{why}");
    }
    let rows = audit_rows(&app, "auth.login");
    let failures: Vec<_> = rows.iter().filter(|r| r.2 == "failure").collect();
    assert_eq!(failures.len(), 4);
    assert_eq!(failures[0].0, "staff:admin@crm.local");
    assert_eq!(failures[1].0, "anonymous");
    assert_eq!(failures[1].3["email"], "nobody@broker.example");
    assert_eq!(failures[3].3["reason"], "disabled");
    let ips: HashSet<_> = app
        .sqlite()
        .prepare("SELECT ip FROM audit_log WHERE action = 'auth.login'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ips, HashSet::from(["127.0.0.1".to_string()]));
}

#[tokio::test]
async fn malformed_login_bodies_are_400() {
    let app = spawn_app();
    for (raw, why) in [
        ("", "empty"),
        ("{", "broken JSON"),
        (r#"{"email":"a@b.co"}"#, "no password"),
        (r#"{"password":"x"}"#, "no email"),
        (r#"{"email":1,"password":"x"}"#, "email not a string"),
    ] {
        let resp = app
            .http
            .post(app.url("/api/auth/login"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{why}");
    }
}

#[tokio::test]
async fn repeated_failures_for_one_email_are_throttled_with_retry_after() {
    let app = spawn_app();
    for _ in 0..5 {
        assert_eq!(app.login_as(&app.admin_email, "wrong password!").await.0, 401);
    }
    // Even the right password waits: otherwise the throttle would only slow guessing down.
    let resp = app
        .http
        .post(app.url("/api/auth/login"))
        .json(&json!({ "email": app.admin_email, "password": app.admin_password }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().starts_with("Too many failed attempts"));
    let throttled = audit_rows(&app, "auth.login")
        .into_iter()
        .filter(|r| r.3["reason"] == "throttled")
        .count();
    assert_eq!(throttled, 1);
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_throttled_across_emails() {
    let app = spawn_app();
    for i in 0..20 {
        let (status, _) = app
            .login_as(&format!("guess{i}@broker.example"), "password guess")
            .await;
        assert_eq!(status, 401);
    }
    let (status, _) = app.login_as("guess99@broker.example", "password guess").await;
    assert_eq!(status, 429);
}

/// What another website can make a visiting browser send without a preflight: a `text/plain`
/// or form body. Such logins are refused before they count, so they cannot lock the office out.
#[tokio::test]
async fn logins_that_are_not_json_are_refused_and_not_counted() {
    let app = spawn_app();
    for (i, content_type) in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
        .iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let body = json!({ "email": format!("guess{i}@broker.example"), "password": "guess" });
        let resp = app
            .http
            .post(app.url("/api/auth/login"))
            .header("content-type", *content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let (status, body) = into_parts(resp).await;
        assert_eq!(status, 400, "{content_type}: {body}");
        assert_eq!(body["error"], "Content-Type must be application/json");
    }
    // A body too large is that first, whatever its type. The server closes that connection
    // without reading the body and says so, so the pooled client's next request still works.
    let resp = app
        .http
        .post(app.url("/api/auth/login"))
        .header("content-type", "text/plain")
        .body("x".repeat(100 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["connection"], "close");
    let (status, body) = app.login_as(&app.admin_email, &app.admin_password).await;
    assert_eq!(status, 200, "{body}");
}

/// "Log out" ends the session on the server: a token copied before it is refused afterwards, and
/// so is the same user's other tab; other staff stay signed in, and logging in again works.
#[tokio::test]
async fn logging_out_ends_the_users_sessions_on_the_server() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (_, agent) = staff_user(&app, &admin, "leaver@broker.example", "agent").await;
    let other_tab = login(&app, "leaver@broker.example", PASSWORD).await;
    let me = |token: String| {
        let app = &app;
        async move { app.staff(Method::GET, "/api/auth/me", &token, None).await.0 }
    };
    let resp = app
        .http
        .post(app.url("/api/auth/logout"))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(me(agent.clone()).await, 401, "the copied token");
    assert_eq!(me(other_tab).await, 401, "the other tab");
    assert_eq!(me(admin.clone()).await, 200, "other staff");
    let again = login(&app, "leaver@broker.example", PASSWORD).await;
    assert_eq!(me(again).await, 200);
    // Without a valid session there is nothing to end.
    assert_eq!(app.staff(Method::POST, "/api/auth/logout", &agent, None).await.0, 401);
    let rows = audit_rows(&app, "auth.logout");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2.as_str()),
        ("staff:leaver@broker.example", "staff:leaver@broker.example", "success")
    );
}

#[tokio::test]
async fn a_password_change_ends_earlier_sessions_and_keeps_the_new_one() {
    let app = spawn_app();
    let (_, login) = app.login_as(&app.admin_email, &app.admin_password).await;
    let id = login["user"]["id"].as_str().unwrap();
    // A session from ten seconds ago, made the way the server makes them: it must end.
    let now = now_secs();
    let earlier = jwt(
        &hs256_header(),
        &staff_claims(id, "admin", now - 10, now + 3600),
        app.secrets.jwt.as_bytes(),
    );
    assert_eq!(app.staff(Method::GET, "/api/auth/me", &earlier, None).await.0, 200);

    let change = |current: &str, new: &str| json!({ "currentPassword": current, "newPassword": new });
    let bad = [
        (
            change("wrong current pw", "a new long password"),
            "wrong current password",
        ),
        (change(&app.admin_password, "short"), "new password too short"),
        (change(&app.admin_password, &app.admin_password), "unchanged"),
        (json!({ "newPassword": "a new long password" }), "no current password"),
    ];
    for (body, why) in bad {
        let (status, resp) = app
            .staff(Method::POST, "/api/auth/password", &earlier, Some(body))
            .await;
        assert_eq!(status, 400, "{why}: {resp}");
    }

    let (status, body) = app
        .staff(
            Method::POST,
            "/api/auth/password",
            &earlier,
            Some(change(&app.admin_password, "a new long password")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["token"].as_str().unwrap();
    assert_eq!(app.staff(Method::GET, "/api/auth/me", &earlier, None).await.0, 401);
    // Issued in the same second as the change, and valid.
    assert_eq!(app.staff(Method::GET, "/api/auth/me", fresh, None).await.0, 200);
    assert_eq!(app.login_as(&app.admin_email, &app.admin_password).await.0, 401);
    let (status, body) = app.login_as(&app.admin_email, "a new long password").await;
    assert_eq!(status, 200);
    let token = body["token"].as_str().unwrap();
    assert_eq!(app.staff(Method::GET, "/api/auth/me", token, None).await.0, 200);
    let rows = audit_rows(&app, "auth.change_password");
    assert_eq!(rows.iter().filter(|r| r.2 == "success").count(), 1);
    assert_eq!(rows.iter().filter(|r| r.2 == "failure").count(), 1);
}

// ---- guide section 4: adjust balance -------------------------------------------------------

#[tokio::test]
async fn the_guides_adjustment_examples_give_the_guides_balances() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    let steps = [
        json!({ "amount": "100.00", "fundType": "real", "notes": "Client deposit via wire transfer" }),
        json!({ "amount": "500.00", "fundType": "demo", "notes": "Demo account setup for new trader training" }),
        json!({ "amount": "-50.00", "fundType": "real", "notes": "Fee deduction" }),
    ];
    let mut text = String::new();
    for body in steps {
        text = post_text(&app, &admin, &adjust_path(&c.account), Some(body)).await;
        assert!(!text.contains("\"error\""), "{text}");
    }
    let last: Value = serde_json::from_str(&text).unwrap();
    let expected = [
        ("id", json!(c.account)),
        ("clientId", json!(c.id)),
        ("parentId", Value::Null),
        ("realBalance", json!("50.00")),
        ("demoBalance", json!("500.00")),
        ("bonusBalance", json!("0.00")),
        ("balance", json!("550.00")),
        ("leverage", json!(100)),
        ("currency", json!("USD")),
        ("equity", json!("550.00")),
        ("margin", json!("0.00")),
        ("marginLevel", json!("0.00")),
    ];
    for (key, value) in expected {
        assert_eq!(last[key], value, "{key} in {last}");
    }
    assert_eq!(
        keys_in_order(&text),
        [
            "id",
            "realBalance",
            "demoBalance",
            "bonusBalance",
            "balance",
            "leverage",
            "currency",
            "equity",
            "margin",
            "marginLevel",
            "clientId",
            "parentId",
            "createdAt",
            "updatedAt"
        ],
        "the guide's fields in its order, then ours"
    );
    // The same order wherever an account is shown (`Value` keeps it: serde_json's preserve_order).
    let (_, detail) = app
        .staff(Method::GET, &format!("/api/clients/{}", c.id), &admin, None)
        .await;
    let keys: Vec<&String> = detail["account"].as_object().unwrap().keys().collect();
    assert_eq!(keys, keys_in_order(&text).iter().collect::<Vec<_>>(), "{detail}");

    // The ledger explains every change, newest first, with the notes and the staff member.
    let (status, ledger) = app
        .staff(
            Method::GET,
            &format!("/api/accounts/{}/ledger", c.account),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let entries = ledger["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["amount"], "-50.00");
    assert_eq!(entries[0]["balanceAfter"], "50.00");
    assert_eq!(entries[0]["notes"], "Fee deduction");
    assert_eq!(entries[0]["actor"], "staff:admin@crm.local");
    assert_eq!(entries[0]["reason"], "adjustment");
    assert_eq!(ledger["nextCursor"], Value::Null);

    let audits = audit_rows(&app, "account.adjust_balance");
    assert_eq!(audits.len(), 3);
    let (actor, target, outcome, details) = &audits[2];
    assert_eq!((actor.as_str(), outcome.as_str()), ("staff:admin@crm.local", "success"));
    assert_eq!(target, &format!("account:{}", c.account));
    assert_eq!(details["notes"], "Fee deduction");
    assert_eq!(details["balanceBefore"], "100.00");
    assert_eq!(details["balanceAfter"], "50.00");
}

#[tokio::test]
async fn amounts_as_json_numbers_are_exact() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    let (status, body) = adjust(&app, &admin, &c.account, json!({ "amount": 0.1, "fundType": "bonus" })).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = post_raw(
        &app,
        &admin,
        &adjust_path(&c.account),
        r#"{"amount": 0.2, "fundType": "bonus"}"#,
    )
    .await;
    assert_eq!(body["bonusBalance"], "0.30");
    assert_eq!(body["balance"], "0.30");
}

#[tokio::test]
async fn a_debit_beyond_the_fund_is_refused_and_changes_nothing() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    adjust(
        &app,
        &admin,
        &c.account,
        json!({ "amount": "50.00", "fundType": "real" }),
    )
    .await;
    adjust(&app, &admin, &c.account, json!({ "amount": "500", "fundType": "demo" })).await;
    let before = app
        .staff(Method::GET, &format!("/api/accounts/{}", c.account), &admin, None)
        .await
        .1;

    let (status, body) = adjust(
        &app,
        &admin,
        &c.account,
        json!({ "amount": "-100.00", "fundType": "real" }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Insufficient real funds");
    assert_eq!(body["required"].to_string(), "100.00");
    assert_eq!(body["available"].to_string(), "50.00");
    let (status, body) = adjust(
        &app,
        &admin,
        &c.account,
        json!({ "amount": "-0.01", "fundType": "bonus" }),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("Insufficient bonus funds"))
    );

    let after = app
        .staff(Method::GET, &format!("/api/accounts/{}", c.account), &admin, None)
        .await
        .1;
    assert_eq!(before, after);
    assert_eq!(ledger_count(&app, &c.account), 2);
    let failures: Vec<_> = audit_rows(&app, "account.adjust_balance")
        .into_iter()
        .filter(|r| r.2 == "failure")
        .collect();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].3["required"], "100.00");
    assert_eq!(failures[0].3["available"], "50.00");
}

/// An adjustment sent under an `Idempotency-Key`: (status, body, whether it was a replay).
async fn adjust_once(app: &TestApp, token: &str, account: &str, key: &str, body: Value) -> (u16, Value, bool) {
    let resp = app
        .http
        .post(app.url(&adjust_path(account)))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let replayed = resp.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    let (status, body) = into_parts(resp).await;
    (status, body, replayed)
}

#[tokio::test]
async fn an_adjustment_sent_again_under_its_idempotency_key_is_booked_once() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (_, other_admin) = staff_user(&app, &admin, "second@crm.local", "admin").await;
    let c = client(&app, "client@example.com");
    let credit = json!({ "amount": "100", "fundType": "real", "notes": "goodwill" });

    let (status, first, replayed) = adjust_once(&app, &admin, &c.account, "key-1", credit.clone()).await;
    assert_eq!((status, replayed), (200, false), "{first}");
    assert_eq!(first["realBalance"], "100.00");
    // The same request (the amount spelt differently, the key quoted as the IETF draft writes it).
    let same = json!({ "amount": 100.0, "fundType": "real", "notes": " goodwill " });
    let (status, again, replayed) = adjust_once(&app, &admin, &c.account, "\"key-1\"", same).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again["realBalance"], "100.00");
    assert_eq!(ledger_count(&app, &c.account), 1);

    // The key with another request is refused and changes nothing; the key is the sender's own.
    let other = json!({ "amount": "99", "fundType": "real", "notes": "goodwill" });
    let (status, body, _) = adjust_once(&app, &admin, &c.account, "key-1", other).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Idempotency-Key"), "{body}");
    let (status, body, replayed) = adjust_once(&app, &other_admin, &c.account, "key-1", credit).await;
    assert_eq!((status, replayed), (200, false), "{body}");
    assert_eq!(body["realBalance"], "200.00");

    // A refusal claims nothing: once the funds are there, the same key books the debit.
    let debit = json!({ "amount": "-250", "fundType": "real" });
    let (status, body, _) = adjust_once(&app, &admin, &c.account, "key-2", debit.clone()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("Insufficient real funds")));
    adjust(&app, &admin, &c.account, json!({ "amount": "50", "fundType": "real" })).await;
    let (status, body, replayed) = adjust_once(&app, &admin, &c.account, "key-2", debit.clone()).await;
    assert_eq!(
        (status, replayed, body["realBalance"].as_str()),
        (200, false, Some("0.00")),
        "{body}"
    );
    let (status, body, replayed) = adjust_once(&app, &admin, &c.account, "key-2", debit).await;
    assert_eq!(
        (status, replayed, body["realBalance"].as_str()),
        (200, true, Some("0.00")),
        "{body}"
    );
    assert_eq!(ledger_count(&app, &c.account), 4);

    // Each replay is audited with the entry it stands for; the books still verify.
    let rows = audit_rows(&app, "account.adjust_balance");
    let replays: Vec<_> = rows.iter().filter(|r| r.3.get("duplicateOf").is_some()).collect();
    assert_eq!(replays.len(), 2);
    assert!(replays
        .iter()
        .all(|r| r.2 == "success" && r.3.get("ledgerEntryId").is_none()));
    assert_eq!(replays[0].3["idempotencyKey"], "key-1");
    let original = rows.iter().find(|r| r.3.get("ledgerEntryId").is_some()).unwrap();
    assert_eq!(replays[0].3["duplicateOf"], original.3["ledgerEntryId"]);
    app.assert_books_balance();
}

#[tokio::test]
async fn notes_keep_line_breaks_and_tabs_on_every_surface() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    let text = "first line\r\n\tindented";
    let (status, note) = app
        .staff(
            Method::POST,
            &format!("/api/clients/{}/notes", c.id),
            &admin,
            Some(json!({ "comment": text })),
        )
        .await;
    assert_eq!((status, note["comment"].as_str()), (201, Some(text)), "{note}");
    let (status, note) = app
        .service(
            Method::POST,
            "/api/service/clients/client@example.com/notes",
            Some(json!({ "comment": text })),
        )
        .await;
    assert_eq!((status, note["comment"].as_str()), (201, Some(text)), "{note}");
    let kyc = json!({ "kycStatus": "approved", "kycNotes": text });
    let (status, client) = app
        .service(Method::PATCH, "/api/service/clients/client@example.com/kyc", Some(kyc))
        .await;
    assert_eq!((status, client["kycNotes"].as_str()), (200, Some(text)), "{client}");
    let credit = json!({ "amount": "1", "fundType": "real", "notes": text });
    assert_eq!(adjust(&app, &admin, &c.account, credit).await.0, 200);
}

#[tokio::test]
async fn bad_idempotency_keys_are_400_and_change_nothing() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    let credit = json!({ "amount": "1", "fundType": "real" });
    for key in ["", "\"\"", "with space", "\"unbalanced", "in\"side", &"k".repeat(256)] {
        let (status, body, _) = adjust_once(&app, &admin, &c.account, key, credit.clone()).await;
        assert_eq!(status, 400, "{key:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("Idempotency-Key"), "{body}");
    }
    let resp = app
        .http
        .post(app.url(&adjust_path(&c.account)))
        .bearer_auth(&admin)
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&credit)
        .send()
        .await
        .unwrap();
    let (status, body) = into_parts(resp).await;
    assert_eq!(status, 400, "{body}");
    let resp = app
        .http
        .post(app.url(&adjust_path(&c.account)))
        .bearer_auth(&admin)
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .json(&credit)
        .send()
        .await
        .unwrap();
    assert_eq!(into_parts(resp).await.0, 400);
    assert_eq!(ledger_count(&app, &c.account), 0);
    let (status, _, _) = adjust_once(&app, &admin, &c.account, &"k".repeat(255), credit).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn each_fund_has_the_whole_range_so_play_money_never_blocks_real_money() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    for fund in ["demo", "bonus"] {
        let grant = json!({ "amount": "10000000000", "fundType": fund });
        assert_eq!(adjust(&app, &admin, &c.account, grant).await.0, 200);
    }
    let (status, account) = adjust(&app, &admin, &c.account, json!({ "amount": "5", "fundType": "real" })).await;
    assert_eq!(status, 200, "{account}");
    assert_eq!(account["balance"], "20000000005.00");
    // A fund still stops at the range on its own.
    let over = json!({ "amount": "0.00000001", "fundType": "demo" });
    let (status, body) = adjust(&app, &admin, &c.account, over).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "the resulting demo balance would be out of range: the supported range is -10,000,000,000 to 10,000,000,000"
    );
    app.assert_books_balance();
}

#[tokio::test]
async fn bad_adjustments_are_400_and_change_nothing() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    let raw_cases = [
        (r#"{"amount": 1e5, "fundType": "real"}"#, "exponent number"),
        (r#"{"amount": "1e5", "fundType": "real"}"#, "exponent string"),
        (r#"{"amount": "abc", "fundType": "real"}"#, "not a number"),
        (r#"{"amount": 0.123456789, "fundType": "real"}"#, "nine decimals"),
        (
            r#"{"amount": "0.123456789", "fundType": "real"}"#,
            "nine decimals as text",
        ),
        (r#"{"amount": "", "fundType": "real"}"#, "empty string"),
        (r#"{"amount": null, "fundType": "real"}"#, "null"),
        (r#"{"amount": NaN, "fundType": "real"}"#, "NaN is not JSON"),
        (r#"{"amount": "NaN", "fundType": "real"}"#, "NaN as text"),
        (r#"{"amount": "Infinity", "fundType": "real"}"#, "infinity"),
        (r#"{"amount": 0, "fundType": "real"}"#, "zero"),
        (r#"{"amount": "0.00", "fundType": "real"}"#, "zero as text"),
        (r#"{"amount": "-0", "fundType": "real"}"#, "negative zero"),
        (r#"{"amount": true, "fundType": "real"}"#, "boolean"),
        (r#"{"amount": ["1"], "fundType": "real"}"#, "array"),
        (r#"{"amount": " 5", "fundType": "real"}"#, "whitespace"),
        (r#"{"amount": "1,000", "fundType": "real"}"#, "thousands separator"),
        (
            r#"{"amount": "10000000001", "fundType": "real"}"#,
            "beyond the supported range",
        ),
        (r#"{"fundType": "real"}"#, "no amount"),
        (r#"{"amount": "10"}"#, "no fund type"),
        (r#"{"amount": "10", "fundType": "Real"}"#, "fund type in the wrong case"),
        (r#"{"amount": "10", "fundType": "cash"}"#, "unknown fund type"),
        (r#"{"amount": "10", "fundType": "real", "notes": 5}"#, "notes not text"),
        (
            r#"{"amount": "10", "fundType": "real", "note": "why"}"#,
            "a misspelt field",
        ),
        (r#"{"amount": "10", "fundType": "real"} x"#, "trailing garbage"),
        (r#"[]"#, "not an object"),
        ("", "empty body"),
    ];
    for (raw, why) in raw_cases {
        let (status, body) = post_raw(&app, &admin, &adjust_path(&c.account), raw).await;
        assert_eq!(status, 400, "{why}: {body}");
        assert!(body["error"].is_string(), "{why}: {body}");
    }
    let long_notes = json!({ "amount": "1", "fundType": "real", "notes": "x".repeat(1001) });
    assert_eq!(adjust(&app, &admin, &c.account, long_notes).await.0, 400);
    assert_eq!(ledger_count(&app, &c.account), 0);
    let (_, account) = app
        .staff(Method::GET, &format!("/api/accounts/{}", c.account), &admin, None)
        .await;
    assert_eq!(account["balance"], "0.00");
}

#[tokio::test]
async fn unknown_and_malformed_account_ids_are_404_and_400() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let body = json!({ "amount": "1", "fundType": "real" });
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(adjust(&app, &admin, &unknown.to_string(), body.clone()).await.0, 404);
    for bad in ["123", "not-a-uuid", "%27%20OR%201=1"] {
        assert_eq!(adjust(&app, &admin, bad, body.clone()).await.0, 400, "{bad}");
        assert_eq!(
            app.staff(Method::GET, &format!("/api/accounts/{bad}"), &admin, None)
                .await
                .0,
            400
        );
        assert_eq!(
            app.staff(Method::GET, &format!("/api/clients/{bad}"), &admin, None)
                .await
                .0,
            400
        );
    }
    assert_eq!(
        app.staff(Method::GET, &format!("/api/clients/{unknown}"), &admin, None)
            .await
            .0,
        404
    );
    let (status, body) = app
        .staff(Method::DELETE, &format!("/api/accounts/{unknown}"), &admin, None)
        .await;
    assert_eq!(status, 405, "a known path with the wrong method: {body}");
}

// ---- guide section 5: leverage -------------------------------------------------------------

#[tokio::test]
async fn leverage_is_set_as_the_guide_shows_and_audited_with_from_and_to() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    let path = format!("/api/accounts/{}/leverage", c.account);
    let (status, body) = app
        .staff(Method::PATCH, &path, &admin, Some(json!({ "leverage": 200 })))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["leverage"], 200);
    let (status, body) = app
        .staff(Method::PATCH, &path, &admin, Some(json!({ "leverage": 100 })))
        .await;
    assert_eq!(status, 200);
    for key in [
        "id",
        "leverage",
        "balance",
        "realBalance",
        "demoBalance",
        "bonusBalance",
        "currency",
        "clientId",
    ] {
        assert!(body.get(key).is_some(), "{key} missing from {body}");
    }
    assert_eq!(
        (body["leverage"].clone(), body["clientId"].clone()),
        (json!(100), json!(c.id))
    );
    let audits = audit_rows(&app, "account.leverage");
    assert_eq!(audits[1].3["from"], 200);
    assert_eq!(audits[1].3["to"], 100);

    for (raw, why) in [
        (r#"{"leverage": 0}"#, "below 1"),
        (r#"{"leverage": 501}"#, "above 500"),
        (r#"{"leverage": 100.5}"#, "not whole"),
        (r#"{"leverage": "100"}"#, "a string"),
        (r#"{"leverage": -1}"#, "negative"),
        (r#"{"leverage": null}"#, "null"),
        (r#"{"leverage": 1e2}"#, "exponent"),
        (r#"{}"#, "missing"),
    ] {
        let resp = app
            .http
            .patch(app.url(&path))
            .bearer_auth(&admin)
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{why}");
    }
    let leverage: i64 = app
        .sqlite()
        .query_row("SELECT leverage FROM accounts WHERE id = ?1", [&c.account], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(leverage, 100);
}

// ---- guide section 3: impersonation --------------------------------------------------------

#[tokio::test]
async fn impersonation_gives_the_guides_sso_token_and_url() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    let text = post_text(&app, &admin, &format!("/api/clients/{}/impersonate", c.id), None).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        keys_in_order(&text),
        ["ssoToken", "ssoUrl", "expiresIn"],
        "the guide's order"
    );
    assert_eq!(body["expiresIn"], 900);
    let token = body["ssoToken"].as_str().unwrap();
    assert_eq!(
        body["ssoUrl"].as_str().unwrap(),
        format!("https://trading.test/sso/impersonate?token={token}")
    );

    // What the Trading Platform's jwt.verify(token, SSO_SECRET) does.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let input = format!("{}.{}", parts[0], parts[1]);
    assert_eq!(
        hs256(app.secrets.sso.as_bytes(), &input),
        parts[2],
        "signed with SSO_SECRET"
    );
    let header: Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    assert_eq!(header["alg"], "HS256");
    let payload: Value = serde_json::from_slice(&unb64(parts[1])).unwrap();
    let mut keys: Vec<_> = payload.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["clientEmail", "exp", "iat", "impersonatedBy"]);
    assert_eq!(payload["clientEmail"], "client@example.com");
    assert_eq!(payload["impersonatedBy"], "admin@crm.local");
    assert_eq!(payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(), 900);

    let conn = app.sqlite();
    let (client_id, staff_email): (String, String) = conn
        .query_row("SELECT client_id, staff_email FROM sso_sessions", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((client_id, staff_email.as_str()), (c.id.clone(), "admin@crm.local"));
    let audits = audit_rows(&app, "sso.impersonate");
    assert_eq!(audits.len(), 1);
    let (actor, target, outcome, details) = &audits[0];
    assert_eq!((actor.as_str(), outcome.as_str()), ("staff:admin@crm.local", "success"));
    assert_eq!(target, &format!("client:{}", c.id));
    assert_eq!(details["clientEmail"], "client@example.com");
    assert_eq!(details["staffEmail"], "admin@crm.local");
    assert!(!details.to_string().contains(token), "the token is never stored");

    let unknown = uuid::Uuid::new_v4();
    let (status, _) = app
        .staff(
            Method::POST,
            &format!("/api/clients/{unknown}/impersonate"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let sessions: i64 = conn
        .query_row("SELECT COUNT(*) FROM sso_sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 1);
}

// ---- clients for the admin page ------------------------------------------------------------

#[tokio::test]
async fn keyset_pagination_returns_every_client_exactly_once() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let mut expected = HashSet::new();
    // Several clients share a creation time, so the cursor must break ties by id.
    for i in 0..23 {
        let at = format!("2025-10-13T19:00:{:02}.000Z", i / 4);
        let c = insert_client(&app, &format!("c{i}@example.com"), "Ann", &format!("Lee{i}"), &at);
        expected.insert(c.id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/clients?limit=5&after={c}"),
            None => "/api/clients?limit=5".to_string(),
        };
        let (status, body) = app.staff(Method::GET, &path, &admin, None).await;
        assert_eq!(status, 200, "{body}");
        for c in body["clients"].as_array().unwrap() {
            seen.push(c["id"].as_str().unwrap().to_string());
        }
        pages += 1;
        match body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23, "no client twice");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), expected);

    for bad in [
        "/api/clients?limit=0",
        "/api/clients?limit=101",
        "/api/clients?after=zz",
        "/api/clients?after=00",
    ] {
        assert_eq!(app.staff(Method::GET, bad, &admin, None).await.0, 400, "{bad}");
    }
}

#[tokio::test]
async fn search_matches_email_names_and_platform_id() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let ann = insert_client(&app, "ann.smith@example.com", "Ann", "Smith", &now_ms());
    insert_client(&app, "bob@example.org", "Bob", "Jones", &now_ms());
    insert_client(&app, "c_100%@example.net", "Carl", "Percent", &now_ms());
    let platform = format!("tp{}", &ann.id[..8]);
    let cases = [
        ("ANN.SMITH", vec!["ann.smith@example.com"]),
        ("jones", vec!["bob@example.org"]),
        ("ann%20smith", vec!["ann.smith@example.com"]),
        (platform.as_str(), vec!["ann.smith@example.com"]),
        ("100%25", vec!["c_100%@example.net"]),
        ("%25", vec!["c_100%@example.net"]),
        ("_", vec!["c_100%@example.net"]),
        ("nobody", vec![]),
    ];
    for (q, want) in cases {
        assert_eq!(search_emails(&app, &admin, q).await, want, "q={q}");
    }
}

/// The emails of the first page `GET /api/clients?q=` answers, in its order.
async fn search_emails(app: &TestApp, token: &str, q: &str) -> Vec<String> {
    let (status, body) = app
        .staff(Method::GET, &format!("/api/clients?q={q}"), token, None)
        .await;
    assert_eq!(status, 200, "q={q}: {body}");
    body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["email"].as_str().unwrap().to_string())
        .collect()
}

/// Phones are kept as the platform sent them; a term written like a phone number finds them by
/// their digits, however either side spaces or punctuates them.
#[tokio::test]
async fn search_finds_clients_by_phone_digits_as_registered_or_updated() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    for (email, phone) in [
        ("ann@example.com", "+44 (20) 7946-0958"),
        ("bob@example.com", "555.0100"),
    ] {
        let data = json!({ "email": email, "firstName": "Test", "lastName": "User", "phone": phone });
        assert_eq!(app.event("client.registered", data).await.0, 200);
    }
    let update = json!({ "email": "bob@example.com", "phone": "+1 212 555 0142" });
    assert_eq!(app.event("account.updated", update).await.0, 200);
    let cases = [
        ("%2B44%2020%207946", vec!["ann@example.com"]),
        ("(20)7946-0958", vec!["ann@example.com"]),
        ("0958", vec!["ann@example.com"]),
        ("212-555", vec!["bob@example.com"]),
        ("0100", vec![]),
        ("55", vec!["bob@example.com"]),
        // Not written like a phone: names, emails and platform ids only.
        ("x0958", vec![]),
    ];
    for (q, want) in cases {
        assert_eq!(search_emails(&app, &admin, q).await, want, "q={q}");
    }
    let (_, found) = app.staff(Method::GET, "/api/clients?q=7946", &admin, None).await;
    assert_eq!(found["clients"][0]["phone"], "+44 (20) 7946-0958", "shown as sent");
}

#[tokio::test]
async fn client_detail_notes_kyc_and_subaccounts_work_for_the_admin_page() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (_, manager) = staff_user(&app, &admin, "manager@broker.example", "manager").await;
    let c = client(&app, "client@example.com");
    let base = format!("/api/clients/{}", c.id);

    let (status, note) = app
        .staff(
            Method::POST,
            &format!("{base}/notes"),
            &manager,
            Some(json!({ "comment": "  Client contacted regarding account verification " })),
        )
        .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(note["comment"], "Client contacted regarding account verification");
    assert_eq!(note["author"], "staff:manager@broker.example");
    for bad in [
        json!({ "comment": "   " }),
        json!({}),
        json!({ "comment": "x".repeat(10_001) }),
    ] {
        assert_eq!(
            app.staff(Method::POST, &format!("{base}/notes"), &manager, Some(bad))
                .await
                .0,
            400
        );
    }
    let (_, notes) = app.staff(Method::GET, &format!("{base}/notes"), &manager, None).await;
    assert_eq!(notes["notes"].as_array().unwrap().len(), 1);
    assert_eq!(notes["notes"][0]["id"], note["id"]);
    assert_eq!(audit_rows(&app, "client.note_add")[0].3["noteId"], note["id"]);

    let (status, client) = app
        .staff(
            Method::PATCH,
            &format!("{base}/kyc"),
            &manager,
            Some(json!({ "kycStatus": "approved", "kycNotes": "Documents verified" })),
        )
        .await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(
        (client["kycStatus"].as_str(), client["kycNotes"].as_str()),
        (Some("approved"), Some("Documents verified"))
    );
    let kyc = audit_rows(&app, "client.kyc_update");
    assert_eq!(
        kyc[0].3,
        json!({ "from": "pending", "to": "approved", "notes": "Documents verified" })
    );
    for bad in [
        json!({ "kycStatus": "verified" }),
        json!({ "kycNotes": "x" }),
        json!({ "kycStatus": null }),
    ] {
        assert_eq!(
            app.staff(Method::PATCH, &format!("{base}/kyc"), &manager, Some(bad))
                .await
                .0,
            400
        );
    }

    let (status, sub) = app
        .staff(
            Method::POST,
            &format!("{base}/subaccounts"),
            &admin,
            Some(json!({ "currency": "eur", "leverage": 50 })),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    assert_eq!(
        (sub["parentId"].as_str(), sub["currency"].as_str()),
        (Some(c.account.as_str()), Some("EUR"))
    );
    assert_eq!(
        (sub["leverage"].clone(), sub["balance"].clone()),
        (json!(50), json!("0.00"))
    );
    let (status, defaulted) = app
        .staff(Method::POST, &format!("{base}/subaccounts"), &admin, None)
        .await;
    assert_eq!(status, 201, "no body asks for the defaults: {defaulted}");
    let blank = app
        .http
        .post(app.url(&format!("{base}/subaccounts")))
        .bearer_auth(&admin)
        .body(" \n")
        .send()
        .await
        .unwrap();
    assert_eq!(blank.status(), 201, "nor does a blank one, with no Content-Type");
    assert_eq!(
        (defaulted["currency"].as_str(), defaulted["leverage"].clone()),
        (Some("USD"), json!(100))
    );
    for bad in [
        json!({ "currency": "EURO" }),
        json!({ "currency": "U$D" }),
        json!({ "leverage": 0 }),
    ] {
        assert_eq!(
            app.staff(Method::POST, &format!("{base}/subaccounts"), &admin, Some(bad))
                .await
                .0,
            400
        );
    }
    assert_eq!(
        audit_rows(&app, "account.open_subaccount")
            .iter()
            .filter(|r| r.2 == "success")
            .count(),
        3
    );

    let (status, detail) = app.staff(Method::GET, &base, &manager, None).await;
    assert_eq!(status, 200);
    assert_eq!(detail["client"]["email"], "client@example.com");
    assert_eq!(detail["client"]["kycStatus"], "approved");
    assert_eq!(detail["account"]["id"], json!(c.account));
    let subs = detail["subaccounts"].as_array().unwrap();
    assert_eq!(subs.len(), 3);
    assert_eq!(subs[0]["id"], sub["id"]);
}

/// Every read of a client lists all its subaccounts, some inside the writer's transaction: a
/// client with thousands would slow every other write, so one client holds at most 100.
#[tokio::test]
async fn a_client_holds_at_most_a_hundred_subaccounts() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "many@example.com");
    let path = format!("/api/clients/{}/subaccounts", c.id);
    for i in 0..100 {
        let (status, body) = app.staff(Method::POST, &path, &admin, None).await;
        assert_eq!(status, 201, "subaccount {i}: {body}");
    }
    let (status, body) = app.staff(Method::POST, &path, &admin, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"],
        "The client already has 100 subaccounts, the most one client may have"
    );
    let (_, detail) = app
        .staff(Method::GET, &format!("/api/clients/{}", c.id), &admin, None)
        .await;
    assert_eq!(detail["subaccounts"].as_array().unwrap().len(), 100);
    let refused = audit_rows(&app, "account.open_subaccount")
        .into_iter()
        .filter(|r| r.2 == "failure")
        .count();
    assert_eq!(refused, 1);
}

// ---- audit log -----------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_log_filters_pages_and_exports_csv() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "client@example.com");
    for i in 0..5 {
        let note = json!({ "comment": format!("note \"{i}\", with a comma") });
        app.staff(
            Method::POST,
            &format!("/api/clients/{}/notes", c.id),
            &admin,
            Some(note),
        )
        .await;
    }
    app.login_as("nobody@example.com", "bad password").await;

    let mut ids = Vec::new();
    let mut path = "/api/audit?action=client.note_add&limit=2".to_string();
    loop {
        let (status, body) = app.staff(Method::GET, &path, &admin, None).await;
        assert_eq!(status, 200, "{body}");
        for e in body["entries"].as_array().unwrap() {
            assert_eq!(e["action"], "client.note_add");
            assert_eq!(e["actor"], "staff:admin@crm.local");
            assert_eq!(e["target"], format!("client:{}", c.id));
            for key in ["id", "at", "outcome", "ip", "details"] {
                assert!(e.get(key).is_some(), "{key}");
            }
            ids.push(e["id"].as_str().unwrap().to_string());
        }
        match body["nextCursor"].as_str() {
            Some(next) => path = format!("/api/audit?action=client.note_add&limit=2&before={next}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), 5);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 5);

    let (_, failures) = app
        .staff(Method::GET, "/api/audit?outcome=failure&actor=anonymous", &admin, None)
        .await;
    let failures = failures["entries"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["action"], "auth.login");
    let (_, none) = app.staff(Method::GET, "/api/audit?from=2999-01-01", &admin, None).await;
    assert_eq!(none["entries"], json!([]));
    let (_, today) = app
        .staff(
            Method::GET,
            "/api/audit?from=2000-01-01&to=2999-12-31T00:00:00Z",
            &admin,
            None,
        )
        .await;
    assert!(today["entries"].as_array().unwrap().len() >= 7);
    for bad in ["outcome=maybe", "from=yesterday", "before=abc", "limit=501"] {
        assert_eq!(
            app.staff(Method::GET, &format!("/api/audit?{bad}"), &admin, None)
                .await
                .0,
            400,
            "{bad}"
        );
    }

    let resp = app
        .http
        .get(app.url("/api/audit.csv?action=client.note_add"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"audit-log.csv\""
    );
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "id,at,actor,action,target,outcome,ip,details");
    assert_eq!(lines.len(), 6, "{csv}");
    for (line, id) in lines[1..].iter().zip(&ids) {
        assert!(line.starts_with(&format!("\"{id}\",")), "{line}");
        assert!(line.contains("\"staff:admin@crm.local\",\"client.note_add\""), "{line}");
        assert!(
            line.contains("\"\"noteId\"\""),
            "quotes inside cells are doubled: {line}"
        );
    }
}

// ---- staff management ----------------------------------------------------------------------

#[tokio::test]
async fn admins_create_list_change_and_reset_staff() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (status, body) = app
        .staff(
            Method::POST,
            "/api/staff",
            &admin,
            Some(json!({ "email": "Ann@Broker.example", "name": " Ann ", "role": "agent" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let generated = body["password"].as_str().unwrap().to_string();
    assert!(generated.len() >= 16);
    let ann_id = body["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["user"]["email"], "ann@broker.example");
    assert_eq!(body["user"]["name"], "Ann");
    assert!(body["user"].get("passwordHash").is_none());
    let ann = login(&app, "ann@broker.example", &generated).await;

    let (status, body) = app
        .staff(
            Method::POST,
            "/api/staff",
            &admin,
            Some(json!({ "email": "bob@broker.example", "name": "Bob", "role": "manager", "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, 201);
    assert!(body.get("password").is_none(), "a chosen password is never echoed");

    let bad = [
        (
            json!({ "email": "ann@broker.example", "name": "Ann", "role": "agent" }),
            409,
            "duplicate email",
        ),
        (
            json!({ "email": "x@broker.example", "name": "X", "role": "root" }),
            400,
            "unknown role",
        ),
        (
            json!({ "email": "not-an-email", "name": "X", "role": "agent" }),
            400,
            "bad email",
        ),
        (
            json!({ "email": "x@broker.example", "name": " ", "role": "agent" }),
            400,
            "blank name",
        ),
        (
            json!({ "email": "x@broker.example", "name": "X", "role": "agent", "password": "short" }),
            400,
            "weak password",
        ),
    ];
    for (body, want, why) in bad {
        let (status, resp) = app.staff(Method::POST, "/api/staff", &admin, Some(body)).await;
        assert_eq!(status, want, "{why}: {resp}");
    }

    let (_, list) = app.staff(Method::GET, "/api/staff", &admin, None).await;
    let emails: Vec<_> = list["staff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].clone())
        .collect();
    assert_eq!(
        emails,
        [
            json!("admin@crm.local"),
            json!("ann@broker.example"),
            json!("bob@broker.example")
        ]
    );

    // A role change ends the user's sessions: the token carried the old role.
    let (status, body) = app
        .staff(
            Method::PATCH,
            &format!("/api/staff/{ann_id}"),
            &admin,
            Some(json!({ "role": "manager" })),
        )
        .await;
    assert_eq!((status, body["user"]["role"].as_str()), (200, Some("manager")));
    assert_eq!(app.staff(Method::GET, "/api/auth/me", &ann, None).await.0, 401);
    let update = &audit_rows(&app, "staff.update")[0];
    assert_eq!(update.1, "staff:ann@broker.example");
    assert_eq!(update.3["role"], json!({ "from": "agent", "to": "manager" }));

    let (status, body) = app
        .staff(
            Method::POST,
            &format!("/api/staff/{ann_id}/reset-password"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let reset = body["password"].as_str().unwrap();
    assert_eq!(app.login_as("ann@broker.example", &generated).await.0, 401);
    login(&app, "ann@broker.example", reset).await;
    assert_eq!(audit_rows(&app, "staff.reset_password").len(), 1);

    let unknown = uuid::Uuid::new_v4();
    let cases = [
        (format!("/api/staff/{unknown}"), json!({ "role": "agent" }), 404),
        ("/api/staff/garbage".to_string(), json!({ "role": "agent" }), 400),
        (format!("/api/staff/{ann_id}"), json!({}), 400),
        (format!("/api/staff/{ann_id}"), json!({ "disabled": "yes" }), 400),
    ];
    for (path, body, want) in cases {
        assert_eq!(
            app.staff(Method::PATCH, &path, &admin, Some(body)).await.0,
            want,
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_admin_cannot_disable_or_demote_themselves() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (_, me) = app.staff(Method::GET, "/api/auth/me", &admin, None).await;
    let my_id = me["id"].as_str().unwrap();
    for change in [
        json!({ "disabled": true }),
        json!({ "role": "manager" }),
        json!({ "role": "agent", "disabled": false }),
    ] {
        let (status, body) = app
            .staff(Method::PATCH, &format!("/api/staff/{my_id}"), &admin, Some(change))
            .await;
        assert_eq!(status, 409, "{body}");
    }
    assert_eq!(app.staff(Method::GET, "/api/auth/me", &admin, None).await.0, 200);

    // With a second admin, one may disable the other; the second then holds the CRM.
    let (other_id, other) = staff_user(&app, &admin, "second@broker.example", "admin").await;
    let (status, _) = app
        .staff(
            Method::PATCH,
            &format!("/api/staff/{my_id}"),
            &other,
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.staff(Method::GET, "/api/auth/me", &admin, None).await.0, 401);
    let (status, _) = app
        .staff(
            Method::PATCH,
            &format!("/api/staff/{other_id}"),
            &other,
            Some(json!({ "role": "agent" })),
        )
        .await;
    assert_eq!(status, 409);
    let failures = audit_rows(&app, "staff.update")
        .into_iter()
        .filter(|r| r.2 == "failure")
        .count();
    assert_eq!(failures, 4);
}

/// Undoing the change that ended a session does not bring the session back: re-enabling a user
/// or giving back their role leaves every token issued before the change refused, while a new
/// login works, and a change to the same value ends nothing.
#[tokio::test]
async fn ended_sessions_stay_ended_when_the_change_is_undone() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (id, _) = staff_user(&app, &admin, "undo@broker.example", "agent").await;
    let patch = |body: Value| {
        let (app, admin, path) = (&app, &admin, format!("/api/staff/{id}"));
        async move {
            let (status, resp) = app.staff(Method::PATCH, &path, admin, Some(body)).await;
            assert_eq!(status, 200, "{resp}");
        }
    };
    let me = |token: String| {
        let app = &app;
        async move { app.staff(Method::GET, "/api/auth/me", &token, None).await.0 }
    };
    let (status, body) = app.login_as("undo@broker.example", PASSWORD).await;
    assert_eq!(status, 200);
    let before_disabling = body["token"].as_str().unwrap().to_string();
    patch(json!({ "disabled": false })).await;
    assert_eq!(
        me(before_disabling.clone()).await,
        200,
        "already enabled: nothing ended"
    );
    patch(json!({ "role": "agent" })).await;
    assert_eq!(me(before_disabling.clone()).await, 200, "the same role: nothing ended");

    patch(json!({ "disabled": true })).await;
    assert_eq!(me(before_disabling.clone()).await, 401);
    patch(json!({ "disabled": false })).await;
    assert_eq!(
        me(before_disabling).await,
        401,
        "re-enabled, the old session stays ended"
    );

    let (_, body) = app.login_as("undo@broker.example", PASSWORD).await;
    let before_role_change = body["token"].as_str().unwrap().to_string();
    assert_eq!(me(before_role_change.clone()).await, 200);
    patch(json!({ "role": "manager" })).await;
    patch(json!({ "role": "agent" })).await;
    assert_eq!(
        me(before_role_change).await,
        401,
        "the role given back, the old session stays ended"
    );
    let (status, body) = app.login_as("undo@broker.example", PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!(me(body["token"].as_str().unwrap().to_string()).await, 200);
}

/// A misspelt field is a 400 that names it, and changes nothing, as on the service API: a
/// script that writes `kycnotes` must not set the status and silently drop the notes.
#[tokio::test]
async fn misspelt_fields_are_refused_and_change_nothing() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (staff_id, _) = staff_user(&app, &admin, "spell@broker.example", "agent").await;
    let c = client(&app, "spell@example.com");
    let cases = [
        (
            Method::PATCH,
            format!("/api/clients/{}/kyc", c.id),
            json!({ "kycStatus": "approved", "kycnotes": "typo" }),
            "kycnotes",
        ),
        (
            Method::PATCH,
            format!("/api/staff/{staff_id}"),
            json!({ "disabled": true, "rol": "admin" }),
            "rol",
        ),
        (
            Method::PATCH,
            format!("/api/accounts/{}/leverage", c.account),
            json!({ "leverage": 50, "currency": "EUR" }),
            "currency",
        ),
        (
            Method::POST,
            format!("/api/clients/{}/notes", c.id),
            json!({ "comment": "hello", "author": "someone else" }),
            "author",
        ),
    ];
    for (method, path, body, field) in cases {
        let (status, resp) = app.staff(method, &path, &admin, Some(body)).await;
        assert_eq!(status, 400, "{path}: {resp}");
        assert!(resp["error"].as_str().unwrap().contains(field), "{path}: {resp}");
    }
    let (_, client) = app
        .staff(Method::GET, &format!("/api/clients/{}", c.id), &admin, None)
        .await;
    assert_eq!(client["client"]["kycStatus"], "pending", "{client}");
    let (_, account) = app
        .staff(Method::GET, &format!("/api/accounts/{}", c.account), &admin, None)
        .await;
    assert_eq!(account["leverage"], 100, "{account}");
    assert!(!app
        .staff(Method::GET, "/api/staff", &admin, None)
        .await
        .1
        .to_string()
        .contains("\"disabled\":true"));
    let (_, notes) = app
        .staff(Method::GET, &format!("/api/clients/{}/notes", c.id), &admin, None)
        .await;
    assert_eq!(notes["notes"], json!([]), "{notes}");
}

/// A list or export given a parameter it does not take answers 400 naming it, rather than
/// ignoring it: `audit.csv?targt=` meant for one client must not export every client.
#[tokio::test]
async fn list_endpoints_refuse_unknown_query_parameters() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let c = client(&app, "params@example.com");
    for (path, unknown) in [
        (format!("/api/audit?targt=client:{}", c.id), "targt"),
        (format!("/api/audit.csv?targt=client:{}", c.id), "targt"),
        ("/api/clients?query=params".to_string(), "query"),
        (format!("/api/accounts/{}/ledger?page=2", c.account), "page"),
    ] {
        let (status, body) = app.staff(Method::GET, &path, &admin, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains(unknown), "{path}: {body}");
    }
    let target = format!("/api/audit.csv?target=client:{}", c.id);
    assert_eq!(app.staff(Method::GET, &target, &admin, None).await.0, 200);
}
