//! The Trading Platform's service API (guide, section 2): its five calls, bearer-token
//! authentication, the per-caller rate limit, the activity timeline, and the audit trail every
//! call leaves.
//!
//! Clients are seeded through the store (as the webhook would create them), so these tests do not
//! depend on the webhook surface.

mod common;

use common::*;
use crm::domain::{Email, FundType, Leverage, Money, Role};
use crm::store::accounts::{self, BalanceChange, Reason};
use crm::store::audit::{self, actions, actors, Audit};
use crm::store::{clients, staff, Db};
use reqwest::Method;
use serde_json::{json, Value};

// ---- seeding -------------------------------------------------------------------------------

struct Seeded {
    client_id: String,
    account_id: String,
}

fn db(app: &TestApp) -> Db {
    Db::open(&app.db_path()).unwrap()
}

/// A registered client with its primary account, as `client.registered` leaves it.
fn seed_client(db: &Db, email: &str) -> Seeded {
    db.write_sync(|tx| {
        let contact = clients::Contact {
            first_name: Some("John".into()),
            last_name: Some("Doe".into()),
            phone: Some("+1234567890".into()),
        };
        let platform_id = format!("TP{}", &random_hex()[..8]);
        let client = clients::insert(tx, &Email::parse(email)?, Some(&platform_id), &contact)?;
        let account = accounts::insert(tx, &client.id, None, "USD", Leverage::DEFAULT)?;
        audit::append(
            tx,
            &Audit::new(
                actors::WEBHOOK,
                actions::CLIENT_REGISTER,
                audit::target("client", &client.id),
            ),
        )?;
        Ok(Seeded {
            client_id: client.id,
            account_id: account.id,
        })
    })
    .unwrap()
}

fn seed_credit(db: &Db, account_id: &str, fund: FundType, amount: &str) {
    let change = BalanceChange {
        account_id: account_id.into(),
        fund,
        amount: Money::parse(amount).unwrap(),
        reason: Reason::Deposit,
        notes: String::new(),
        actor: actors::WEBHOOK.into(),
        external_ref: Some(format!("tx-{}", &random_hex()[..8])),
    };
    db.write_sync(|tx| {
        let entry = Audit::new(
            actors::WEBHOOK,
            actions::BALANCE_DEPOSIT,
            audit::target("account", account_id),
        );
        accounts::apply_balance_change(tx, &change, entry)
    })
    .unwrap();
}

/// A received webhook about the client, as the webhook log keeps it.
fn seed_webhook_event(app: &TestApp, client_id: &str, event: &str) {
    app.sqlite()
        .execute(
            "INSERT INTO webhook_events (id, received_at, event, signature, raw_body, body_size, status, http_status, client_id)
             VALUES (?1, ?2, ?3, 'current', X'7B7D', 2, 'processed', 200, ?4)",
            rusqlite::params![uuid(), crm::store::now(), event, client_id],
        )
        .unwrap();
}

/// An impersonation session started by the first-run admin.
fn seed_sso_session(app: &TestApp, client_id: &str) {
    let conn = app.sqlite();
    let admin_id: String = conn
        .query_row("SELECT id FROM staff_users WHERE email = 'admin@crm.local'", [], |r| {
            r.get(0)
        })
        .unwrap();
    conn.execute(
        "INSERT INTO sso_sessions (id, client_id, staff_id, staff_email, issued_at, expires_at)
         VALUES (?1, ?2, ?3, 'admin@crm.local', ?4, '2099-01-01T00:00:00.000Z')",
        rusqlite::params![uuid(), client_id, admin_id, crm::store::now()],
    )
    .unwrap();
}

fn uuid() -> String {
    crm::domain::ClientId::new().to_string()
}

/// A staff token for a user of `role`, minted with the app's JWT secret (as login would).
fn staff_token(app: &TestApp, db: &Db, role: Role) -> String {
    let email = format!("{}@staff.test", &random_hex()[..8]);
    let user = db
        .write_sync(|tx| staff::insert(tx, &Email::parse(&email)?, "Staff", role, "not-a-hash"))
        .unwrap();
    crm::security::tokens::issue_staff(app.secrets.jwt.as_bytes(), &user.id, role, user.session_generation)
        .unwrap()
        .0
}

/// Milliseconds are the timeline's resolution; steps a test wants ordered must not share one.
async fn next_millisecond() {
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
}

// ---- reading the audit log -----------------------------------------------------------------

#[derive(Debug)]
struct Row {
    actor: String,
    action: String,
    target: String,
    outcome: String,
    ip: String,
    details: Value,
}

fn audit_rows(app: &TestApp, action_like: &str) -> Vec<Row> {
    let conn = app.sqlite();
    let mut stmt = conn
        .prepare("SELECT actor, action, target, outcome, ip, details FROM audit_log WHERE action LIKE ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([action_like], |r| {
        let details: String = r.get(5)?;
        Ok(Row {
            actor: r.get(0)?,
            action: r.get(1)?,
            target: r.get(2)?,
            outcome: r.get(3)?,
            ip: r.get(4)?,
            details: serde_json::from_str(&details).unwrap(),
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

async fn send(app: &TestApp, method: Method, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = app.http.request(method, app.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

/// Sends a raw body with the service token.
async fn send_body(app: &TestApp, method: Method, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let resp = app
        .http
        .request(method, app.url(path))
        .bearer_auth(&app.secrets.service)
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    into_parts(resp).await
}

// ---- the five calls ------------------------------------------------------------------------

#[tokio::test]
async fn get_client_answers_the_client_in_the_spec_shape() {
    let app = spawn_app();
    let seeded = seed_client(&db(&app), "test@example.com");

    let (status, body) = app
        .service(Method::GET, "/api/service/clients/test@example.com", None)
        .await;

    assert_eq!(status, 200, "{body}");
    let fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "id",
        "platformClientId",
        "email",
        "firstName",
        "lastName",
        "phone",
        "kycStatus",
        "kycNotes",
        "createdAt",
        "updatedAt",
    ];
    expected.sort();
    let mut fields = fields;
    fields.sort();
    assert_eq!(fields, expected);
    assert_eq!(body["id"], seeded.client_id.as_str());
    assert_eq!(body["email"], "test@example.com");
    assert_eq!(body["firstName"], "John");
    assert_eq!(body["kycStatus"], "pending");
}

#[tokio::test]
async fn emails_match_whatever_their_case_and_may_be_percent_encoded() {
    let app = spawn_app();
    seed_client(&db(&app), "test@example.com");
    for spelling in [
        "test@example.com",
        "Test@Example.COM",
        "test%40example.com",
        "TEST%40EXAMPLE.COM",
        "%74est@example.com",
    ] {
        for path in [
            format!("/api/service/clients/{spelling}"),
            format!("/api/service/accounts/{spelling}"),
            format!("/api/service/clients/{spelling}/activity"),
        ] {
            let (status, body) = app.service(Method::GET, &path, None).await;
            assert_eq!(status, 200, "{path}: {body}");
        }
    }
}

#[tokio::test]
async fn an_unknown_email_is_404_and_an_invalid_one_is_400_on_every_call() {
    let app = spawn_app();
    let kyc = json!({ "kycStatus": "approved" });
    let note = json!({ "comment": "hello" });
    for (email, expected, why) in [
        ("nobody@example.com", 404, "no such client"),
        ("not-an-email", 400, "no @"),
        ("a@b", 400, "no domain dot"),
        ("a%20b@example.com", 400, "a space once decoded"),
        ("%FF@example.com", 400, "not UTF-8 once decoded"),
    ] {
        let calls = [
            (Method::GET, format!("/api/service/clients/{email}"), None),
            (Method::GET, format!("/api/service/accounts/{email}"), None),
            (
                Method::PATCH,
                format!("/api/service/clients/{email}/kyc"),
                Some(kyc.clone()),
            ),
            (
                Method::POST,
                format!("/api/service/clients/{email}/notes"),
                Some(note.clone()),
            ),
            (Method::GET, format!("/api/service/clients/{email}/activity"), None),
        ];
        for (method, path, body) in calls {
            let (status, reply) = app.service(method.clone(), &path, body).await;
            assert_eq!(status, expected, "{method} {path} ({why}): {reply}");
            assert!(reply["error"].is_string(), "{reply}");
        }
    }
}

#[tokio::test]
async fn accounts_answer_the_primary_account_and_its_subaccounts_in_the_guides_shape() {
    let app = spawn_app();
    let db = db(&app);
    let seeded = seed_client(&db, "trader@example.com");
    seed_credit(&db, &seeded.account_id, FundType::Real, "100");
    seed_credit(&db, &seeded.account_id, FundType::Demo, "500.5");
    let sub = db
        .write_sync(|tx| {
            accounts::insert(
                tx,
                &seeded.client_id,
                Some(&seeded.account_id),
                "EUR",
                Leverage::new(50)?,
            )
        })
        .unwrap();

    let (status, body) = app
        .service(Method::GET, "/api/service/accounts/trader@example.com", None)
        .await;

    assert_eq!(status, 200, "{body}");
    let account = &body["account"];
    for (field, value) in [
        ("id", json!(seeded.account_id)),
        ("clientId", json!(seeded.client_id)),
        ("parentId", Value::Null),
        ("realBalance", json!("100.00")),
        ("demoBalance", json!("500.50")),
        ("bonusBalance", json!("0.00")),
        ("balance", json!("600.50")),
        ("leverage", json!(100)),
        ("currency", json!("USD")),
        ("equity", json!("600.50")),
        ("margin", json!("0.00")),
        ("marginLevel", json!("0.00")),
    ] {
        assert_eq!(account[field], value, "account.{field}");
    }
    assert!(account["createdAt"].is_string() && account["updatedAt"].is_string());
    let subs = body["subaccounts"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["id"], sub.id.as_str());
    assert_eq!(subs[0]["parentId"], seeded.account_id.as_str());
    assert_eq!(subs[0]["currency"], "EUR");
    assert_eq!(subs[0]["leverage"], 50);
    assert_eq!(subs[0]["balance"], "0.00");
}

#[tokio::test]
async fn a_kyc_update_changes_the_client_and_is_audited_with_from_and_to() {
    let app = spawn_app();
    let seeded = seed_client(&db(&app), "kyc@example.com");

    let (status, body) = app
        .service(
            Method::PATCH,
            "/api/service/clients/KYC%40example.com/kyc",
            Some(json!({ "kycStatus": "approved", "kycNotes": "Documents verified" })),
        )
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kycStatus"], "approved");
    assert_eq!(body["kycNotes"], "Documents verified");
    assert_eq!(body["id"], seeded.client_id.as_str());
    let (_, again) = app
        .service(Method::GET, "/api/service/clients/kyc@example.com", None)
        .await;
    assert_eq!(again["kycStatus"], "approved");

    let changes = audit_rows(&app, actions::KYC_UPDATE);
    assert_eq!(changes.len(), 1);
    let change = &changes[0];
    assert_eq!(change.actor, actors::SERVICE);
    assert_eq!(change.target, format!("client:{}", seeded.client_id));
    assert_eq!(change.outcome, "success");
    assert_eq!(change.details["from"], "pending");
    assert_eq!(change.details["to"], "approved");
    assert_eq!(change.details["notes"], "Documents verified");

    // Without kycNotes the notes stay as they were.
    let (status, body) = app
        .service(
            Method::PATCH,
            "/api/service/clients/kyc@example.com/kyc",
            Some(json!({ "kycStatus": "in_review" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kycStatus"], "in_review");
    assert_eq!(body["kycNotes"], "Documents verified");
}

#[tokio::test]
async fn bad_kyc_requests_are_refused_and_change_nothing() {
    let app = spawn_app();
    seed_client(&db(&app), "kyc@example.com");
    let json = "application/json";
    let long_notes = json!({ "kycStatus": "approved", "kycNotes": "x".repeat(10_001) }).to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        (json, r#"{"kycStatus":"verified"}"#.into(), "not a KYC status"),
        (json, r#"{"kycStatus":"APPROVED"}"#.into(), "statuses are lower case"),
        (json, r#"{"kycStatus":"in-review"}"#.into(), "the status is in_review"),
        (json, r#"{"kycStatus":1}"#.into(), "not a string"),
        (json, r#"{"kycNotes":"x"}"#.into(), "kycStatus is required"),
        (
            json,
            r#"{"kycStatus":"approved","kycNote":"x"}"#.into(),
            "a misspelt field",
        ),
        (json, r#"{"kycStatus":"approved""#.into(), "malformed JSON"),
        (json, r#"["approved"]"#.into(), "not an object"),
        (json, String::new(), "no body"),
        (json, long_notes, "notes over 10,000 characters"),
        (
            "text/plain",
            r#"{"kycStatus":"approved"}"#.into(),
            "not declared as JSON",
        ),
        (
            "application/x-www-form-urlencoded",
            "kycStatus=approved".into(),
            "a form, as curl -d sends without -H",
        ),
    ];
    for (content_type, body, why) in cases {
        let (status, reply) = send_body(
            &app,
            Method::PATCH,
            "/api/service/clients/kyc@example.com/kyc",
            content_type,
            &body,
        )
        .await;
        assert_eq!(status, 400, "{why}: {reply}");
        assert!(reply["error"].is_string(), "{why}: {reply}");
    }
    let (_, client) = app
        .service(Method::GET, "/api/service/clients/kyc@example.com", None)
        .await;
    assert_eq!(client["kycStatus"], "pending");
    assert!(audit_rows(&app, actions::KYC_UPDATE).is_empty());
}

#[tokio::test]
async fn a_note_is_added_with_201_and_signed_by_the_trading_platform() {
    let app = spawn_app();
    let seeded = seed_client(&db(&app), "notes@example.com");

    let (status, note) = app
        .service(
            Method::POST,
            "/api/service/clients/Notes@Example.com/notes",
            Some(json!({ "comment": "  Client contacted regarding account verification  " })),
        )
        .await;

    assert_eq!(status, 201, "{note}");
    assert_eq!(note["comment"], "Client contacted regarding account verification");
    assert_eq!(note["author"], "Trading Platform");
    assert!(note["id"].is_string() && note["createdAt"].is_string());
    let mut keys: Vec<&String> = note.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["author", "comment", "createdAt", "id"]);

    let stored: (String, String) = app
        .sqlite()
        .query_row(
            "SELECT client_id, comment FROM notes WHERE id = ?1",
            [note["id"].as_str().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(stored.0, seeded.client_id);
    let added = audit_rows(&app, actions::NOTE_ADD);
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].target, format!("client:{}", seeded.client_id));
    assert_eq!(added[0].details["noteId"], note["id"]);

    // 10,000 characters is the most a note may hold.
    let (status, _) = app
        .service(
            Method::POST,
            "/api/service/clients/notes@example.com/notes",
            Some(json!({ "comment": "é".repeat(10_000) })),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn bad_notes_are_refused_and_change_nothing() {
    let app = spawn_app();
    seed_client(&db(&app), "notes@example.com");
    let json = "application/json";
    let cases: Vec<(&str, String, &str)> = vec![
        (json, r#"{"comment":""}"#.into(), "empty"),
        (json, r#"{"comment":" \n\t "}"#.into(), "only whitespace"),
        (
            json,
            json!({ "comment": "x".repeat(10_001) }).to_string(),
            "over 10,000 characters",
        ),
        (json, r#"{}"#.into(), "comment is required"),
        (json, r#"{"comment":42}"#.into(), "not a string"),
        (
            json,
            r#"{"comment":"hi","author":"me"}"#.into(),
            "the author is not the caller's to choose",
        ),
        (json, r#"{"comment":"#.into(), "malformed JSON"),
        (json, "null".into(), "not an object"),
        ("text/plain", r#"{"comment":"hi"}"#.into(), "not declared as JSON"),
    ];
    for (content_type, body, why) in cases {
        let (status, reply) = send_body(
            &app,
            Method::POST,
            "/api/service/clients/notes@example.com/notes",
            content_type,
            &body,
        )
        .await;
        assert_eq!(status, 400, "{why}: {reply}");
        assert!(reply["error"].is_string(), "{why}: {reply}");
    }
    let notes: i64 = app
        .sqlite()
        .query_row("SELECT COUNT(*) FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(notes, 0);
}

// ---- authentication ------------------------------------------------------------------------

#[tokio::test]
async fn calls_without_the_service_token_are_refused_with_401_and_audited() {
    let app = spawn_app();
    seed_client(&db(&app), "test@example.com");
    let token = app.secrets.service.clone();
    let cases = [
        (None, "no Authorization header"),
        (Some(format!("Bearer {}", random_hex())), "a wrong token"),
        (
            Some(format!("Bearer {}", &token[..token.len() - 1])),
            "the token minus its last character",
        ),
        (Some(format!("Bearer {token}x")), "the token plus a character"),
        (Some(format!("Basic {token}")), "the Basic scheme"),
        (Some(token.clone()), "no scheme at all"),
        (Some("Bearer ".into()), "an empty bearer token"),
        (
            Some(format!("Bearer {}", app.secrets.jwt)),
            "another of the CRM's secrets",
        ),
    ];
    for (header, why) in &cases {
        let resp = send(
            &app,
            Method::GET,
            "/api/service/clients/test@example.com",
            header.as_deref(),
        )
        .await;
        let (status, body) = into_parts(resp).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert!(body["error"].is_string(), "{why}: {body}");
        assert!(!body.to_string().contains(&token), "the token is never echoed");
    }
    let refused = audit_rows(&app, actions::SERVICE_UNAUTHORIZED);
    assert_eq!(refused.len(), cases.len());
    for row in &refused {
        assert_eq!(row.actor, actors::ANONYMOUS);
        assert_eq!(row.outcome, "failure");
        assert_eq!(row.ip, "127.0.0.1");
        assert!(
            !row.details.to_string().contains(&token[..16]),
            "no secret in the audit log"
        );
    }
    assert!(
        audit_rows(&app, "service.get_client").is_empty(),
        "a refused caller reaches no operation"
    );

    // The scheme is case-insensitive, as HTTP says.
    let resp = send(
        &app,
        Method::GET,
        "/api/service/clients/test@example.com",
        Some(&format!("bearer {token}")),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_previous_token_is_accepted_while_set_and_the_audit_says_which_token_was_used() {
    let previous = random_hex();
    let app = spawn_with(Spawn::default().env("SERVICE_API_TOKEN_PREVIOUS", &previous));
    seed_client(&db(&app), "test@example.com");
    for token in [&app.secrets.service, &previous] {
        let resp = send(
            &app,
            Method::GET,
            "/api/service/clients/test@example.com",
            Some(&format!("Bearer {token}")),
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    let used: Vec<Value> = audit_rows(&app, "service.get_client")
        .into_iter()
        .map(|r| r.details["token"].clone())
        .collect();
    assert_eq!(used, [json!("current"), json!("previous")]);
}

#[tokio::test]
async fn without_a_previous_token_configured_only_the_current_one_works() {
    let app = spawn_app();
    let resp = send(
        &app,
        Method::GET,
        "/api/service/clients/test@example.com",
        Some("Bearer "),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let (status, _) = app
        .service(Method::GET, "/api/service/clients/test@example.com", None)
        .await;
    assert_eq!(status, 404, "authenticated, and the client is unknown");
}

#[tokio::test]
async fn a_wrong_method_on_a_service_path_is_405() {
    let app = spawn_app();
    for (method, path) in [
        (Method::DELETE, "/api/service/clients/test@example.com"),
        (Method::POST, "/api/service/accounts/test@example.com"),
        (Method::GET, "/api/service/clients/test@example.com/kyc"),
        (Method::PUT, "/api/service/clients/test@example.com/notes"),
    ] {
        let (status, body) = app.service(method.clone(), path, None).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
    }
}

// ---- rate limit ----------------------------------------------------------------------------

#[tokio::test]
async fn a_caller_beyond_the_rate_limit_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_with(Spawn::default().env("CRM_SERVICE_RATE_LIMIT", "5"));
    for _ in 0..5 {
        let (status, _) = app
            .service(Method::GET, "/api/service/clients/test@example.com", None)
            .await;
        assert_eq!(status, 404, "within the limit: answered (the client is unknown)");
    }
    let resp = send(
        &app,
        Method::GET,
        "/api/service/clients/test@example.com",
        Some(&format!("Bearer {}", app.secrets.service)),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    // At 5 per minute one call comes back every 12 seconds.
    assert!((1..=12).contains(&retry), "Retry-After: {retry}");
    let (_, body) = into_parts(resp).await;
    assert!(
        body["error"].as_str().unwrap().contains("5 requests per minute"),
        "{body}"
    );

    // Callers without the token are limited by address, apart from the token's allowance, so
    // guessing the token is limited too.
    for attempt in 0..5 {
        let resp = send(
            &app,
            Method::GET,
            "/api/service/clients/test@example.com",
            Some("Bearer guess"),
        )
        .await;
        assert_eq!(resp.status(), 401, "guess {attempt}");
    }
    let resp = send(
        &app,
        Method::GET,
        "/api/service/clients/test@example.com",
        Some("Bearer guess"),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));

    // Each limited caller is noted once in the audit log, not once per refused request.
    let _ = send(
        &app,
        Method::GET,
        "/api/service/clients/test@example.com",
        Some("Bearer guess"),
    )
    .await;
    let limited = audit_rows(&app, actions::SERVICE_RATE_LIMITED);
    assert_eq!(limited.len(), 2, "{limited:?}");
    assert_eq!(limited[0].actor, actors::SERVICE);
    assert_eq!(limited[1].actor, actors::ANONYMOUS);
    assert_eq!(audit_rows(&app, actions::SERVICE_UNAUTHORIZED).len(), 5);
}

#[tokio::test]
async fn a_rate_limit_of_zero_switches_the_limit_off() {
    let app = spawn_with(Spawn::default().env("CRM_SERVICE_RATE_LIMIT", "0"));
    // More than the default 100 a minute.
    for call in 0..110 {
        let (status, body) = app
            .service(Method::GET, "/api/service/clients/test@example.com", None)
            .await;
        assert_eq!(status, 404, "call {call}: {body}");
    }
}

/// Emails match in any case, but a client's record shows the address as the platform sent it:
/// the platform's SSO handler looks up `clientEmail` as it registered it.
#[tokio::test]
async fn a_client_email_is_matched_in_any_case_and_shown_as_the_platform_sent_it() {
    use base64::Engine;
    let app = spawn_app();
    let register = json!({ "event": "client.registered", "timestamp": "2025-10-13T19:00:00Z",
        "data": { "clientId": "MC1", "email": "Mixed.Case@Example.com" } });
    assert_eq!(app.post_webhook(&register).await.0, 200);
    // The same address in another case is the same client, and keeps the first spelling.
    let again = json!({ "event": "client.registered", "timestamp": "2025-10-13T19:00:01Z",
        "data": { "email": "mixed.case@example.com", "firstName": "Mia" } });
    assert_eq!(app.post_webhook(&again).await.0, 200);
    let (status, client) = app
        .service(Method::GET, "/api/service/clients/MIXED.CASE@example.COM", None)
        .await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(
        (&client["email"], &client["firstName"]),
        (&json!("Mixed.Case@Example.com"), &json!("Mia"))
    );
    let count: i64 = app
        .sqlite()
        .query_row("SELECT COUNT(*) FROM clients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
    // A clash names the address as it was sent.
    let clash = json!({ "event": "client.registered", "timestamp": "2025-10-13T19:00:01Z",
        "data": { "clientId": "MC2", "email": "MIXED.case@example.com" } });
    let (status, body) = app.post_webhook(&clash).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"],
        "MIXED.case@example.com is already registered under another clientId"
    );

    let admin = app.admin_token().await;
    let id = client["id"].as_str().unwrap();
    let (status, sso) = app
        .staff(Method::POST, &format!("/api/clients/{id}/impersonate"), &admin, None)
        .await;
    assert_eq!(status, 200, "{sso}");
    let payload = sso["ssoToken"].as_str().unwrap().split('.').nth(1).unwrap().to_string();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["clientEmail"], "Mixed.Case@Example.com");
    let (_, found) = app.staff(Method::GET, "/api/clients?q=mixed.case", &admin, None).await;
    assert_eq!(found["clients"][0]["email"], "Mixed.Case@Example.com", "{found}");

    // A new address (even a new spelling of the same one) is shown as sent from then on.
    let moved = json!({ "event": "account.updated", "timestamp": "2025-10-13T19:00:02Z",
        "data": { "clientId": "MC1", "email": "MIXED.case@example.com" } });
    assert_eq!(app.post_webhook(&moved).await.0, 200);
    let (_, client) = app
        .service(Method::GET, "/api/service/clients/mixed.case@example.com", None)
        .await;
    assert_eq!(client["email"], "MIXED.case@example.com");
    let moved = json!({ "event": "account.updated", "timestamp": "2025-10-13T19:00:03Z",
        "data": { "clientId": "MC1", "email": "mia@example.com" } });
    assert_eq!(app.post_webhook(&moved).await.0, 200);
    let (_, client) = app
        .service(Method::GET, "/api/service/clients/mia@example.com", None)
        .await;
    assert_eq!(client["email"], "mia@example.com");
}

// ---- activity ------------------------------------------------------------------------------

#[tokio::test]
async fn the_timeline_lists_every_kind_of_activity_newest_first() {
    let app = spawn_app();
    let db = db(&app);
    let seeded = seed_client(&db, "active@example.com");
    seed_webhook_event(&app, &seeded.client_id, "client.registered");
    next_millisecond().await;
    seed_credit(&db, &seeded.account_id, FundType::Real, "100");
    next_millisecond().await;
    seed_webhook_event(&app, &seeded.client_id, "deposit.completed");
    next_millisecond().await;
    let (status, _) = app
        .service(
            Method::POST,
            "/api/service/clients/active@example.com/notes",
            Some(json!({ "comment": "Called the client" })),
        )
        .await;
    assert_eq!(status, 201);
    next_millisecond().await;
    let (status, _) = app
        .service(
            Method::PATCH,
            "/api/service/clients/active@example.com/kyc",
            Some(json!({ "kycStatus": "approved", "kycNotes": "Passport" })),
        )
        .await;
    assert_eq!(status, 200);
    next_millisecond().await;
    seed_sso_session(&app, &seeded.client_id);
    next_millisecond().await;
    let admin = app.admin_token().await;
    let (status, sub) = app
        .staff(
            Method::POST,
            &format!("/api/clients/{}/subaccounts", seeded.client_id),
            &admin,
            Some(json!({ "currency": "EUR", "leverage": 50 })),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    next_millisecond().await;
    let leverage = format!("/api/accounts/{}/leverage", seeded.account_id);
    let (status, _) = app
        .staff(Method::PATCH, &leverage, &admin, Some(json!({ "leverage": 200 })))
        .await;
    assert_eq!(status, 200);
    // A refused change, or one to the leverage it has, is in the audit log, not in the client's
    // history.
    let (status, _) = app
        .staff(Method::PATCH, &leverage, &admin, Some(json!({ "leverage": 0 })))
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .staff(Method::PATCH, &leverage, &admin, Some(json!({ "leverage": 200 })))
        .await;
    assert_eq!(status, 200);
    // Someone else's activity never shows.
    let other = seed_client(&db, "other@example.com");
    seed_credit(&db, &other.account_id, FundType::Real, "5");
    seed_webhook_event(&app, &other.client_id, "deposit.completed");

    let (status, body) = app
        .service(Method::GET, "/api/service/clients/active@example.com/activity", None)
        .await;

    assert_eq!(status, 200, "{body}");
    let items = body["activity"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["account", "account", "sso", "kyc", "note", "webhook", "ledger", "webhook"]
    );
    assert_eq!(body["nextCursor"], Value::Null);
    let at: Vec<&str> = items.iter().map(|i| i["at"].as_str().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "newest first: {at:?}");

    let [leverage, subaccount, sso, kyc, note, deposit_event, ledger, register_event] = &items[..] else {
        unreachable!()
    };
    assert_eq!(
        leverage["summary"],
        format!("Leverage changed from 1:100 to 1:200 by staff:{}", app.admin_email)
    );
    assert_eq!(
        (
            &leverage["details"]["accountId"],
            &leverage["details"]["from"],
            &leverage["details"]["to"]
        ),
        (&json!(seeded.account_id), &json!(100), &json!(200))
    );
    assert_eq!(
        subaccount["summary"],
        format!("Subaccount opened (EUR, leverage 1:50) by staff:{}", app.admin_email)
    );
    assert_eq!(subaccount["details"]["accountId"], sub["id"]);
    assert_eq!(sso["details"]["staffEmail"], "admin@crm.local");
    assert_eq!(kyc["details"]["from"], "pending");
    assert_eq!(kyc["details"]["to"], "approved");
    assert_eq!(kyc["details"]["notes"], "Passport");
    assert_eq!(kyc["details"]["actor"], actors::SERVICE);
    assert_eq!(note["details"]["comment"], "Called the client");
    assert_eq!(note["details"]["author"], "Trading Platform");
    assert_eq!(deposit_event["details"]["event"], "deposit.completed");
    assert_eq!(ledger["details"]["amount"], "100.00");
    assert_eq!(ledger["details"]["fundType"], "real");
    assert_eq!(ledger["details"]["balanceAfter"], "100.00");
    assert_eq!(ledger["details"]["accountId"], seeded.account_id.as_str());
    assert_eq!(register_event["details"]["event"], "client.registered");
    for item in items {
        assert!(!item["summary"].as_str().unwrap().is_empty(), "{item}");
    }
    assert!(ledger["summary"].as_str().unwrap().contains("100.00 USD"), "{ledger}");
    assert!(kyc["summary"].as_str().unwrap().contains("approved"), "{kyc}");
}

#[tokio::test]
async fn the_timeline_pages_with_limit_and_cursor_without_repeating_or_skipping() {
    let app = spawn_app();
    let db = db(&app);
    let seeded = seed_client(&db, "pages@example.com");
    for n in 1..=7 {
        seed_credit(&db, &seeded.account_id, FundType::Demo, &n.to_string());
    }
    let (_, all) = app
        .service(Method::GET, "/api/service/clients/pages@example.com/activity", None)
        .await;
    let all = all["activity"].as_array().unwrap().clone();
    assert_eq!(all.len(), 7);

    let mut paged = Vec::new();
    let mut path = "/api/service/clients/pages@example.com/activity?limit=3".to_string();
    let mut pages = 0;
    loop {
        let (status, body) = app.service(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        paged.extend(body["activity"].as_array().unwrap().iter().cloned());
        match body["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/service/clients/pages@example.com/activity?limit=3&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all);
    // Newest first: the last credit (7.00) leads.
    assert_eq!(all[0]["details"]["amount"], "7.00");
}

#[tokio::test]
async fn bad_paging_parameters_are_refused() {
    let app = spawn_app();
    seed_client(&db(&app), "pages@example.com");
    for (query, why) in [
        ("limit=0", "an empty page"),
        ("limit=201", "over the maximum of 200"),
        ("limit=abc", "not a number"),
        ("limit=-5", "negative"),
        ("before=nonsense", "not a cursor this endpoint gave"),
        ("cursor=abc", "unknown parameter"),
    ] {
        let (status, body) = app
            .service(
                Method::GET,
                &format!("/api/service/clients/pages@example.com/activity?{query}"),
                None,
            )
            .await;
        assert_eq!(status, 400, "{query} ({why}): {body}");
    }
    let (status, body) = app
        .service(
            Method::GET,
            "/api/service/clients/pages@example.com/activity?limit=200",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn staff_read_the_same_timeline_by_client_id() {
    let app = spawn_app();
    let db = db(&app);
    let seeded = seed_client(&db, "staffview@example.com");
    seed_credit(&db, &seeded.account_id, FundType::Bonus, "20");
    let agent = staff_token(&app, &db, Role::Agent);

    let path = format!("/api/clients/{}/activity", seeded.client_id);
    let (status, body) = app.staff(Method::GET, &path, &agent, None).await;
    assert_eq!(status, 200, "{body}");
    let (_, service) = app
        .service(Method::GET, "/api/service/clients/staffview@example.com/activity", None)
        .await;
    assert_eq!(body, service);

    let (status, _) = app.staff(Method::GET, &path, "not-a-token", None).await;
    assert_eq!(status, 401);
    let (status, _) = app.staff(Method::GET, &path, &app.secrets.service, None).await;
    assert_eq!(status, 401, "the service token is not a staff token");
    let (status, _) = app
        .staff(Method::GET, "/api/clients/not-a-uuid/activity", &agent, None)
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .staff(Method::GET, &format!("/api/clients/{}/activity", uuid()), &agent, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.staff(Method::GET, &format!("{path}?limit=0"), &agent, None).await;
    assert_eq!(status, 400);
}

// ---- audit ---------------------------------------------------------------------------------

#[tokio::test]
async fn every_service_call_leaves_an_audit_row_with_its_outcome() {
    let app = spawn_app();
    let seeded = seed_client(&db(&app), "audited@example.com");
    let calls: Vec<(Method, &str, Option<Value>, &str, &str)> = vec![
        (
            Method::GET,
            "/api/service/clients/audited@example.com",
            None,
            "service.get_client",
            "success",
        ),
        (
            Method::GET,
            "/api/service/clients/nobody@example.com",
            None,
            "service.get_client",
            "failure",
        ),
        (
            Method::GET,
            "/api/service/clients/bad-email",
            None,
            "service.get_client",
            "failure",
        ),
        (
            Method::GET,
            "/api/service/accounts/audited@example.com",
            None,
            "service.get_accounts",
            "success",
        ),
        (
            Method::GET,
            "/api/service/accounts/nobody@example.com",
            None,
            "service.get_accounts",
            "failure",
        ),
        (
            Method::PATCH,
            "/api/service/clients/audited@example.com/kyc",
            Some(json!({ "kycStatus": "rejected" })),
            "service.update_kyc",
            "success",
        ),
        (
            Method::PATCH,
            "/api/service/clients/audited@example.com/kyc",
            Some(json!({ "kycStatus": "nope" })),
            "service.update_kyc",
            "failure",
        ),
        (
            Method::POST,
            "/api/service/clients/audited@example.com/notes",
            Some(json!({ "comment": "hi" })),
            "service.add_note",
            "success",
        ),
        (
            Method::POST,
            "/api/service/clients/nobody@example.com/notes",
            Some(json!({ "comment": "hi" })),
            "service.add_note",
            "failure",
        ),
        (
            Method::GET,
            "/api/service/clients/audited@example.com/activity",
            None,
            "service.get_activity",
            "success",
        ),
        (
            Method::GET,
            "/api/service/clients/audited@example.com/activity?limit=0",
            None,
            "service.get_activity",
            "failure",
        ),
    ];
    for (method, path, body, _, _) in &calls {
        app.service(method.clone(), path, body.clone()).await;
    }

    let rows: Vec<Row> = audit_rows(&app, "service.%")
        .into_iter()
        .filter(|r| r.actor == actors::SERVICE)
        .collect();
    let seen: Vec<(&str, &str)> = rows.iter().map(|r| (r.action.as_str(), r.outcome.as_str())).collect();
    let expected: Vec<(&str, &str)> = calls.iter().map(|c| (c.3, c.4)).collect();
    assert_eq!(seen, expected);
    let client_target = format!("client:{}", seeded.client_id);
    for row in &rows {
        assert_eq!(row.ip, "127.0.0.1");
        assert_eq!(row.details["token"], "current");
        if row.outcome == "success" {
            assert_eq!(row.target, client_target);
        } else {
            assert!(row.details["status"].as_u64().unwrap() >= 400, "{row:?}");
            assert!(row.details["error"].is_string(), "{row:?}");
        }
    }
    let verify = app.crm(&["verify"]);
    assert!(
        verify.status.success(),
        "the audit chain and ledger still verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
