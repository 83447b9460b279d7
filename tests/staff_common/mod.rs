//! Helpers shared by the staff API tests: clients inserted straight into the database (the
//! webhook receiver is another surface), staff users of each role, and hand-made JWTs.
#![allow(dead_code)]

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::TestApp;

pub use reqwest::Method;

pub const PASSWORD: &str = "correct horse battery staple";

/// Now, as the server writes timestamps (RFC 3339, UTC, milliseconds).
pub fn now_ms() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

pub struct Client {
    pub id: String,
    pub account: String,
    pub email: String,
}

/// A client and its primary account, written the way the webhook receiver would.
pub fn insert_client(app: &TestApp, email: &str, first: &str, last: &str, created_at: &str) -> Client {
    let conn = app.sqlite();
    conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let account = uuid::Uuid::new_v4().to_string();
    let platform = format!("TP{}", &id[..8]);
    conn.execute(
        "INSERT INTO clients (id, platform_client_id, email, first_name, last_name, phone, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, '+1234567890', ?6, ?6)",
        rusqlite::params![id, platform, email, first, last, created_at],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO accounts (id, client_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        rusqlite::params![account, id, created_at],
    )
    .unwrap();
    Client {
        id,
        account,
        email: email.to_string(),
    }
}

pub fn client(app: &TestApp, email: &str) -> Client {
    insert_client(app, email, "John", "Doe", &now_ms())
}

pub async fn login(app: &TestApp, email: &str, password: &str) -> String {
    let (status, body) = app.login_as(email, password).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// Creates a staff user through the API as the admin and logs them in: (id, token).
pub async fn staff_user(app: &TestApp, admin: &str, email: &str, role: &str) -> (String, String) {
    let (status, body) = app
        .staff(
            Method::POST,
            "/api/staff",
            admin,
            Some(json!({ "email": email, "name": role, "role": role, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["user"]["id"].as_str().unwrap().to_string();
    (id, login(app, email, PASSWORD).await)
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
}

pub fn hs256(secret: &[u8], signing_input: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    b64(&mac.finalize().into_bytes())
}

/// A JWT with the given header and claims, HS256-signed with `secret`.
pub fn jwt(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = hs256(secret, &input);
    format!("{input}.{sig}")
}

/// Staff claims as the server issues them, for a user whose sessions were never ended
/// (session generation 0).
pub fn staff_claims(sub: &str, role: &str, iat: i64, exp: i64) -> Value {
    json!({ "sub": sub, "role": role, "iat": iat, "exp": exp, "iss": "crm", "typ": "staff", "gen": 0 })
}

pub fn hs256_header() -> Value {
    json!({ "alg": "HS256", "typ": "JWT" })
}

pub fn audit_rows(app: &TestApp, action: &str) -> Vec<(String, String, String, Value)> {
    let conn = app.sqlite();
    let mut stmt = conn
        .prepare("SELECT actor, target, outcome, details FROM audit_log WHERE action = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([action], |r| {
        let details: String = r.get(3)?;
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, serde_json::from_str(&details).unwrap()))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}
