//! Who may call what: every staff route against every role and no token, and tokens that must
//! never be accepted.

mod common;
mod staff_common;

use common::*;
use serde_json::{json, Value};
use staff_common::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Admin,
    Manager,
    Agent,
}

const ALL: &[Who] = &[Who::Admin, Who::Manager, Who::Agent];
const ADMIN: &[Who] = &[Who::Admin];
const KYC: &[Who] = &[Who::Admin, Who::Manager];

struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    allowed: &'static [Who],
    /// The status an allowed role gets.
    ok: u16,
}

fn route(method: Method, path: String, body: Option<Value>, allowed: &'static [Who], ok: u16) -> Route {
    Route {
        method,
        path,
        body,
        allowed,
        ok,
    }
}

#[tokio::test]
async fn every_staff_route_answers_each_role_as_the_spec_says() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (_, manager) = staff_user(&app, &admin, "manager@broker.example", "manager").await;
    let (_, agent) = staff_user(&app, &admin, "agent@broker.example", "agent").await;
    // Staff-management calls act on a bystander, so the role users keep their sessions.
    let (bystander, _) = staff_user(&app, &admin, "bystander@broker.example", "agent").await;
    let c = client(&app, "client@example.com");
    let (cid, aid) = (&c.id, &c.account);

    let routes = vec![
        route(Method::GET, "/api/auth/me".into(), None, ALL, 200),
        // A wrong current password: the call is allowed, the change refused, no session lost.
        route(
            Method::POST,
            "/api/auth/password".into(),
            Some(json!({ "currentPassword": "not my password", "newPassword": "a brand new password" })),
            ALL,
            400,
        ),
        route(Method::GET, "/api/clients".into(), None, ALL, 200),
        route(Method::GET, format!("/api/clients/{cid}"), None, ALL, 200),
        route(Method::GET, format!("/api/clients/{cid}/notes"), None, ALL, 200),
        route(
            Method::POST,
            format!("/api/clients/{cid}/notes"),
            Some(json!({ "comment": "called the client" })),
            ALL,
            201,
        ),
        route(
            Method::PATCH,
            format!("/api/clients/{cid}/kyc"),
            Some(json!({ "kycStatus": "in_review" })),
            KYC,
            200,
        ),
        route(
            Method::POST,
            format!("/api/clients/{cid}/subaccounts"),
            Some(json!({})),
            ADMIN,
            201,
        ),
        route(
            Method::POST,
            format!("/api/clients/{cid}/impersonate"),
            None,
            ADMIN,
            200,
        ),
        route(Method::GET, format!("/api/accounts/{aid}"), None, ALL, 200),
        route(Method::GET, format!("/api/accounts/{aid}/ledger"), None, ALL, 200),
        route(
            Method::POST,
            format!("/api/accounts/{aid}/adjust-balance"),
            Some(json!({ "amount": "1.00", "fundType": "demo" })),
            ADMIN,
            200,
        ),
        route(
            Method::PATCH,
            format!("/api/accounts/{aid}/leverage"),
            Some(json!({ "leverage": 200 })),
            ADMIN,
            200,
        ),
        route(Method::GET, "/api/audit".into(), None, KYC, 200),
        route(Method::GET, "/api/audit.csv".into(), None, KYC, 200),
        // The webhook log shows every client's raw data: the same readers as the audit log.
        route(Method::GET, "/api/webhooks".into(), None, KYC, 200),
        route(Method::GET, format!("/api/clients/{cid}/activity"), None, ALL, 200),
        route(Method::GET, "/api/staff".into(), None, ADMIN, 200),
        route(
            Method::POST,
            "/api/staff".into(),
            Some(json!({ "email": "new@broker.example", "name": "New", "role": "agent" })),
            ADMIN,
            201,
        ),
        route(
            Method::PATCH,
            format!("/api/staff/{bystander}"),
            Some(json!({ "role": "manager" })),
            ADMIN,
            200,
        ),
        route(
            Method::POST,
            format!("/api/staff/{bystander}/reset-password"),
            None,
            ADMIN,
            200,
        ),
    ];

    for r in &routes {
        let (status, body) = call(&app, r, None).await;
        assert_eq!(status, 401, "{} {} without a token: {body}", r.method, r.path);
        for who in [Who::Admin, Who::Manager, Who::Agent] {
            let token = match who {
                Who::Admin => &admin,
                Who::Manager => &manager,
                Who::Agent => &agent,
            };
            let (status, body) = call(&app, r, Some(token)).await;
            let expected = if r.allowed.contains(&who) { r.ok } else { 403 };
            assert_eq!(status, expected, "{} {} as {who:?}: {body}", r.method, r.path);
            if status >= 400 {
                assert!(body["error"].is_string(), "{body}");
            }
        }
    }
}

async fn call(app: &TestApp, r: &Route, token: Option<&str>) -> (u16, Value) {
    let mut req = app.http.request(r.method.clone(), app.url(&r.path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = &r.body {
        req = req.json(b);
    }
    into_parts(req.send().await.unwrap()).await
}

#[tokio::test]
async fn refused_admin_actions_are_audited_as_failures() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (_, manager) = staff_user(&app, &admin, "manager@broker.example", "manager").await;
    let c = client(&app, "client@example.com");
    let path = format!("/api/clients/{}/impersonate", c.id);
    assert_eq!(app.staff(Method::POST, &path, &manager, None).await.0, 403);
    let rows = audit_rows(&app, "sso.impersonate");
    assert_eq!(rows.len(), 1);
    let (actor, target, outcome, details) = &rows[0];
    assert_eq!(actor, "staff:manager@broker.example");
    assert_eq!(target, &format!("client:{}", c.id));
    assert_eq!(outcome, "failure");
    assert_eq!(details["status"], 403);
}

/// An admin-only action with a malformed id in its path: another role is told 403 (the role is
/// checked first), an admin 400; both refusals are audited under the id as sent.
#[tokio::test]
async fn admin_actions_on_malformed_ids_are_refused_by_role_first_and_audited() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (_, manager) = staff_user(&app, &admin, "manager@broker.example", "manager").await;
    let cases = [
        (
            Method::POST,
            "/api/clients/not-a-uuid/impersonate",
            None,
            "sso.impersonate",
            "client:not-a-uuid",
        ),
        (
            Method::POST,
            "/api/accounts/not-a-uuid/adjust-balance",
            Some(json!({ "amount": "5", "fundType": "real" })),
            "account.adjust_balance",
            "account:not-a-uuid",
        ),
        (
            Method::PATCH,
            "/api/accounts/not-a-uuid/leverage",
            Some(json!({ "leverage": 50 })),
            "account.leverage",
            "account:not-a-uuid",
        ),
        (
            Method::POST,
            "/api/clients/not-a-uuid/subaccounts",
            None,
            "account.open_subaccount",
            "client:not-a-uuid",
        ),
        (
            Method::PATCH,
            "/api/staff/not-a-uuid",
            Some(json!({ "disabled": true })),
            "staff.update",
            "staff:not-a-uuid",
        ),
        (
            Method::POST,
            "/api/staff/not-a-uuid/reset-password",
            None,
            "staff.reset_password",
            "staff:not-a-uuid",
        ),
    ];
    for (method, path, body, action, target) in cases {
        let (status, resp) = app.staff(method.clone(), path, &manager, body.clone()).await;
        assert_eq!(status, 403, "{path}: {resp}");
        let (status, resp) = app.staff(method, path, &admin, body).await;
        assert_eq!(status, 400, "{path}: {resp}");
        let rows = audit_rows(&app, action);
        let statuses: Vec<(&str, &str, &Value)> = rows
            .iter()
            .map(|(_, t, outcome, details)| (t.as_str(), outcome.as_str(), &details["status"]))
            .collect();
        assert_eq!(
            statuses,
            [(target, "failure", &json!(403)), (target, "failure", &json!(400))],
            "{path}"
        );
    }
}

/// Every refused staff token is an authentication attempt the audit log records (the guide:
/// "all authentication attempts"), with the reason and never the token, at most ten entries per
/// address and minute so that a flood cannot grow the log.
#[tokio::test]
async fn refused_staff_tokens_are_audited_with_their_reason_and_bounded_per_address() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (user_id, user) = staff_user(&app, &admin, "leaver@broker.example", "agent").await;
    let forged = jwt(
        &hs256_header(),
        &staff_claims(&user_id, "agent", now_secs(), now_secs() + 60),
        b"not the secret",
    );
    let me = |token: Option<String>| {
        let app = &app;
        async move {
            let mut req = app.http.get(app.url("/api/auth/me"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            into_parts(req.send().await.unwrap()).await.0
        }
    };
    let started = std::time::Instant::now();
    assert_eq!(me(None).await, 401);
    assert_eq!(me(Some(forged.clone())).await, 401);
    let path = format!("/api/staff/{user_id}");
    let disable = |disabled: bool| {
        let (app, admin, path) = (&app, &admin, &path);
        async move {
            let body = Some(json!({ "disabled": disabled }));
            assert_eq!(app.staff(Method::PATCH, path, admin, body).await.0, 200);
        }
    };
    // Genuine, but from before tokens carried the session generation.
    let mut claims = staff_claims(&user_id, "agent", now_secs(), now_secs() + 60);
    claims.as_object_mut().unwrap().remove("gen");
    let before_upgrade = jwt(&hs256_header(), &claims, app.secrets.jwt.as_bytes());
    assert_eq!(me(Some(before_upgrade)).await, 401);
    disable(true).await;
    assert_eq!(me(Some(user.clone())).await, 401);
    disable(false).await;
    assert_eq!(me(Some(user.clone())).await, 401);

    let rows = audit_rows(&app, "auth.unauthorized");
    let seen: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|(actor, target, outcome, d)| {
            (
                actor.as_str(),
                target.as_str(),
                outcome.as_str(),
                d["reason"].as_str().unwrap(),
            )
        })
        .collect();
    let leaver = "staff:leaver@broker.example";
    assert_eq!(
        seen,
        [
            ("anonymous", "", "failure", "no Authorization header"),
            (
                "anonymous",
                "",
                "failure",
                "a token that is malformed, forged or expired"
            ),
            (
                "anonymous",
                leaver,
                "failure",
                "a session from before session generations (V7)"
            ),
            ("anonymous", leaver, "failure", "a disabled user"),
            ("anonymous", leaver, "failure", "a session that has ended"),
        ]
    );
    assert_eq!(rows[0].3["path"], "/api/auth/me");
    assert_eq!(rows[0].3["method"], "GET");
    let text = serde_json::to_string(&rows.iter().map(|r| &r.3).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains(&forged) && !text.contains(&user), "no token is recorded");

    // A long path is recorded cut to 512 characters.
    let long = format!("/api/clients/{}/notes", "a".repeat(20_000));
    assert_eq!(app.staff(Method::GET, &long, &forged, None).await.0, 401);
    let rows = audit_rows(&app, "auth.unauthorized");
    assert_eq!(rows.last().unwrap().3["path"].as_str().unwrap().chars().count(), 512);

    for _ in 0..20 {
        assert_eq!(me(Some(forged.clone())).await, 401);
    }
    // Ten per address and minute: the allowance comes back at one every six seconds, which a
    // slow machine may have taken since the first refusal.
    // (Per address and target: the three about the leaver's genuine token have their own.)
    let rows = audit_rows(&app, "auth.unauthorized")
        .iter()
        .filter(|r| r.1.is_empty())
        .count() as u64;
    let allowance = 10 + started.elapsed().as_secs() / 6;
    assert!((10..=allowance).contains(&rows), "{rows} entries, {allowance} allowed");

    // The refusals not written are counted, and the address's next entry says how many: the log
    // accounts for all 27 attempts.
    tokio::time::sleep(std::time::Duration::from_millis(6500)).await;
    assert_eq!(me(Some(forged.clone())).await, 401);
    let rows = audit_rows(&app, "auth.unauthorized");
    let accounted: u64 = rows
        .iter()
        .map(|r| 1 + r.3.get("unrecordedBefore").map_or(0, |n| n.as_u64().unwrap()))
        .sum();
    assert_eq!(accounted, 27, "{rows:?}");
    assert!(rows.last().unwrap().3["unrecordedBefore"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_all_refused() {
    let app = spawn_app();
    let admin = app.admin_token().await;
    let (_, me) = app.login_as(&app.admin_email, &app.admin_password).await;
    let admin_id = me["user"]["id"].as_str().unwrap().to_string();
    let now = now_secs();
    let valid_claims = staff_claims(&admin_id, "admin", now, now + 3600);
    let jwt_secret = app.secrets.jwt.as_bytes();

    // The control: a token made exactly like the server's is accepted, so the refusals below
    // are about what was changed, not about the test's own signing.
    let control = jwt(&hs256_header(), &valid_claims, jwt_secret);
    assert_eq!(app.staff(Method::GET, "/api/auth/me", &control, None).await.0, 200);

    let c = client(&app, "client@example.com");
    let (_, sso) = app
        .staff(
            Method::POST,
            &format!("/api/clients/{}/impersonate", c.id),
            &admin,
            None,
        )
        .await;
    let sso_token = sso["ssoToken"].as_str().unwrap().to_string();

    let (agent_id, agent) = staff_user(&app, &admin, "agent@broker.example", "agent").await;
    let (status, _) = app
        .staff(
            Method::PATCH,
            &format!("/api/staff/{agent_id}"),
            &admin,
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, 200);

    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let none_body = b64(valid_claims.to_string().as_bytes());
    let random_key = random_hex();
    let mut wrong_issuer = valid_claims.clone();
    wrong_issuer["iss"] = json!("someone-else");
    let mut not_staff = valid_claims.clone();
    not_staff["typ"] = json!("sso");
    let mut escalated = valid_claims.clone();
    escalated["role"] = json!("manager");

    let cases: Vec<(String, &str)> = vec![
        (format!("{none_header}.{none_body}."), "alg none, unsigned"),
        (
            jwt(&json!({ "alg": "none", "typ": "JWT" }), &valid_claims, jwt_secret),
            "alg none with a signature",
        ),
        (
            jwt(&hs256_header(), &valid_claims, app.secrets.sso.as_bytes()),
            "signed with the SSO secret",
        ),
        (
            jwt(
                &hs256_header(),
                &staff_claims(&admin_id, "admin", now - 7200, now - 1),
                jwt_secret,
            ),
            "expired",
        ),
        (sso_token, "an SSO token presented as a staff token"),
        (agent, "token of a disabled user"),
        (
            jwt(&hs256_header(), &valid_claims, random_key.as_bytes()),
            "signed with a random key",
        ),
        (jwt(&hs256_header(), &wrong_issuer, jwt_secret), "another issuer"),
        (jwt(&hs256_header(), &not_staff, jwt_secret), "not a staff token type"),
        (
            jwt(&hs256_header(), &escalated, jwt_secret),
            "a role the user does not have",
        ),
        (
            jwt(
                &hs256_header(),
                &staff_claims(&uuid::Uuid::new_v4().to_string(), "admin", now, now + 60),
                jwt_secret,
            ),
            "a user who does not exist",
        ),
        (control[..control.len() - 2].to_string(), "a truncated signature"),
        ("not.a.token".into(), "garbage"),
    ];
    for (token, why) in cases {
        for path in ["/api/auth/me", "/api/staff"] {
            let (status, body) = app.staff(Method::GET, path, &token, None).await;
            assert_eq!(status, 401, "{why} on {path}: {body}");
            assert_eq!(body["error"], "Authentication required: log in again");
        }
    }
    for header in ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", &control] {
        let resp = app
            .http
            .get(app.url("/api/auth/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            401,
            "{header:?}: the token must follow the Bearer scheme"
        );
    }
}

#[tokio::test]
async fn tokens_signed_with_the_previous_jwt_secret_work_during_rotation() {
    let old = random_hex();
    let app = spawn_with(Spawn::default().env("JWT_SECRET_PREVIOUS", &old));
    let (_, me) = app.login_as(&app.admin_email, &app.admin_password).await;
    let id = me["user"]["id"].as_str().unwrap();
    let now = now_secs();
    let token = jwt(
        &hs256_header(),
        &staff_claims(id, "admin", now, now + 60),
        old.as_bytes(),
    );
    let (status, body) = app.staff(Method::GET, "/api/auth/me", &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["email"], "admin@crm.local");
}
