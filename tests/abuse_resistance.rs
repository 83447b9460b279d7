//! Staff login and service API under abuse: which address a request is counted and audited
//! under (the TCP peer, or behind a trusted proxy the forwarded client), the login throttle, and
//! audit entries for refused requests staying bounded however many are sent.

mod common;
mod staff_common;

use common::*;
use serde_json::{json, Value};
use staff_common::*;

const FORWARDED_A: &str = "203.0.113.7";
const FORWARDED_B: &str = "198.51.100.23";

async fn login_from(app: &TestApp, forwarded_for: &str, email: &str, password: &str) -> (u16, Value) {
    let resp = app
        .http
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    into_parts(resp).await
}

/// A service call with a wrong token, as if forwarded for `forwarded_for`.
async fn unauthorized_service_call(app: &TestApp, forwarded_for: &str) -> u16 {
    app.http
        .get(app.url("/api/service/clients/test@example.com"))
        .header("x-forwarded-for", forwarded_for)
        .bearer_auth("a wrong token")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The addresses recorded for `action`, oldest first.
fn audited_ips(app: &TestApp, action: &str) -> Vec<String> {
    let conn = app.sqlite();
    let mut stmt = conn
        .prepare("SELECT ip FROM audit_log WHERE action = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([action], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn audit_count(app: &TestApp) -> i64 {
    app.sqlite()
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap()
}

fn throttled_logins(app: &TestApp) -> usize {
    audit_rows(app, "auth.login")
        .into_iter()
        .filter(|r| r.3["reason"] == "throttled")
        .count()
}

// ---- the client address --------------------------------------------------------------------

#[tokio::test]
async fn without_trusted_proxies_a_forwarded_for_header_is_ignored() {
    let app = spawn_app();
    assert_eq!(
        login_from(&app, FORWARDED_A, &app.admin_email, "wrong password!")
            .await
            .0,
        401
    );
    assert_eq!(unauthorized_service_call(&app, FORWARDED_A).await, 401);
    assert_eq!(audited_ips(&app, "auth.login"), ["127.0.0.1"]);
    assert_eq!(audited_ips(&app, "service.unauthorized"), ["127.0.0.1"]);

    // Nor does a new header each time escape the per-address limit.
    for i in 0..19 {
        let (status, _) = login_from(&app, &format!("10.0.0.{i}"), &format!("u{i}@broker.example"), "guess").await;
        assert_eq!(status, 401);
    }
    let (status, _) = login_from(&app, "10.9.9.9", "another@broker.example", "guess").await;
    assert_eq!(status, 429);
}

/// Decision (README, Staff API): an address that has used up its failures is refused even the
/// right password. Otherwise 200 against 429 would tell a credential-stuffing run which of its
/// email/password pairs works, and the per-address limit would protect nothing.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_is_audited_and_throttled_on_its_own() {
    let app = spawn_with(
        Spawn::default()
            .env("CRM_TRUSTED_PROXIES", "127.0.0.1")
            .env("CRM_SERVICE_RATE_LIMIT", "3"),
    );
    // A client cannot hide behind a forged left part: the proxy appended what it saw.
    let chain = format!("6.6.6.6, {FORWARDED_A}");
    for i in 0..20 {
        let (status, _) = login_from(&app, &chain, &format!("u{i}@broker.example"), "guess").await;
        assert_eq!(status, 401);
    }
    let ips = audited_ips(&app, "auth.login");
    assert!(ips.len() == 20 && ips.iter().all(|ip| ip == FORWARDED_A), "{ips:?}");

    let (status, _) = login_from(&app, FORWARDED_A, &app.admin_email, &app.admin_password).await;
    assert_eq!(
        status, 429,
        "the address that guessed is refused, even the right password"
    );
    let (status, body) = login_from(&app, FORWARDED_B, &app.admin_email, &app.admin_password).await;
    assert_eq!(status, 200, "another client behind the same proxy signs in: {body}");
    assert_eq!(audited_ips(&app, "auth.login").last().unwrap(), FORWARDED_B);

    // The service rate limit counts per forwarded client too.
    for _ in 0..3 {
        assert_eq!(unauthorized_service_call(&app, FORWARDED_A).await, 401);
    }
    assert_eq!(unauthorized_service_call(&app, FORWARDED_A).await, 429);
    assert_eq!(unauthorized_service_call(&app, FORWARDED_B).await, 401);
    assert_eq!(
        audited_ips(&app, "service.unauthorized"),
        [FORWARDED_A, FORWARDED_A, FORWARDED_A, FORWARDED_B]
    );
}

/// An IPv6 client holds a whole /64 and can send from any address in it: it is one caller for
/// the service rate limit and for the caps on audit entries for unauthenticated calls, as it is
/// for the login throttle.
#[tokio::test]
async fn addresses_of_one_ipv6_slash_64_count_as_one_caller() {
    let app = spawn_with(
        Spawn::default()
            .env("CRM_TRUSTED_PROXIES", "127.0.0.1")
            .env("CRM_SERVICE_RATE_LIMIT", "3"),
    );
    let address = |i: usize| format!("2001:db8:7:7::{:x}", i + 1);
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|i| {
        let (app, ip) = (&app, address(i));
        async move { unauthorized_service_call(app, &ip).await }
    }))
    .await;
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [401, 401, 401, 429], "{statuses:?}");
    assert_eq!(
        unauthorized_service_call(&app, "2001:db8:7:8::1").await,
        401,
        "the next /64 is another caller"
    );

    // Staff calls without a valid token: at most ten entries a minute for the /64.
    for i in 0..15 {
        let resp = app
            .http
            .get(app.url("/api/auth/me"))
            .header("x-forwarded-for", address(100 + i))
            .bearer_auth("not.a.token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let entries = audited_ips(&app, "auth.unauthorized").len();
    assert!((10..=11).contains(&entries), "{entries} entries for one /64");
}

// ---- the login throttle ---------------------------------------------------------------------

#[tokio::test]
async fn a_success_does_not_erase_the_addresses_earlier_failures() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    staff_user(&app, &admin, "insider@broker.example", "agent").await;
    // Guess someone else's password, sign in to one's own account, again and again: the
    // guesses still add up to the per-address limit of 20.
    for i in 0..20 {
        let (status, _) = app.login_as(&format!("victim{i}@broker.example"), "guess").await;
        assert_eq!(status, 401, "guess {i}");
        if i < 19 {
            login(&app, "insider@broker.example", PASSWORD).await;
        }
    }
    let (status, _) = app.login_as("insider@broker.example", PASSWORD).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn hammering_login_adds_a_bounded_number_of_audit_rows() {
    let app = spawn_app();
    let before = audit_count(&app);
    let mut refused = 0;
    for _ in 0..100 {
        match app.login_as(&app.admin_email, "wrong password!").await.0 {
            401 => {}
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(refused, 95, "5 failures per email, then the throttle");
    let added = audit_count(&app) - before;
    assert_eq!(added, 5 + 1, "each failure, and the throttling once");
    assert_eq!(throttled_logins(&app), 1);

    // Many emails from one address: refused once the address is used up, and noted once.
    let before = audit_count(&app);
    for i in 0..100 {
        let _ = app.login_as(&format!("u{i}@broker.example"), "guess").await;
    }
    let added = audit_count(&app) - before;
    assert_eq!(
        added,
        15 + 1,
        "the address had 15 failures left, then is throttled once"
    );
    assert_eq!(throttled_logins(&app), 2);
}

// ---- the service API ------------------------------------------------------------------------

#[tokio::test]
async fn unauthenticated_service_calls_are_audited_boundedly_even_without_a_rate_limit() {
    let app = spawn_with(Spawn::default().env("CRM_SERVICE_RATE_LIMIT", "0"));
    for _ in 0..100 {
        assert_eq!(unauthorized_service_call(&app, FORWARDED_A).await, 401);
    }
    let audited = audited_ips(&app, "service.unauthorized").len();
    // 10 at once per address, then one more every 6 seconds: 20 leaves room for a slow machine.
    assert!((10..=20).contains(&audited), "{audited} rows for 100 refused calls");
}
