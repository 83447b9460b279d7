//! Staff sign-in: `POST /api/auth/login`, `GET /api/auth/me`, `POST /api/auth/password`
//! (SPEC "Staff API"; the guide's "All authentication attempts (success/failure)" are audited).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use super::auth::{self, StaffSession};
use super::body::{self, parse_json};
use super::error::{respond, ApiError};
use super::throttle::Refused;
use super::{client_ip, with_state, AppState};
use crate::domain::{Email, Role};
use crate::security::{password, tokens};
use crate::store::audit::{self, actions, actors, Audit};
use crate::store::run_blocking;
use crate::store::staff::{self, StaffUser};

const INVALID_LOGIN: &str = "Invalid email or password";

pub fn routes(state: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    // The decoy hash is made once; making it now keeps the first unknown-email login as fast
    // as the others.
    let _ = password::decoy_hash();
    let login = warp::path!("api" / "auth" / "login")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(client_ip())
        .and(body::json(body::DEFAULT_LIMIT))
        .then(|state, ip, body| async move { respond(login(state, ip, body).await) });
    let me = warp::path!("api" / "auth" / "me")
        .and(warp::get())
        .and(auth::staff(state.clone()))
        .then(|session| async move { respond(me(session)) });
    let change = warp::path!("api" / "auth" / "password")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(auth::staff(state.clone()))
        .and(body::json(body::DEFAULT_LIMIT))
        .then(|state, session, body| async move { respond(change_password(state, session, body).await) });
    let logout = warp::path!("api" / "auth" / "logout")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(auth::staff(state))
        .then(|state, session| async move { respond(logout(state, session).await) });
    login.or(me).unify().or(change).unify().or(logout).unify().boxed()
}

/// The user as the login answer and `/me` show it.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
}

impl From<&StaffUser> for UserView {
    fn from(u: &StaffUser) -> UserView {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
}

async fn login(state: AppState, ip: String, body: Result<Bytes, ApiError>) -> Result<impl Reply, ApiError> {
    let req: LoginRequest = parse_json(&body?)?;
    let key = throttle_key(&req.email);
    let attempt = match state.login_throttle.try_attempt(&key, &ip) {
        Ok(attempt) => attempt,
        Err(refused) => {
            // Refused attempts skip argon2 and cost nothing to send: audit only the first one of
            // each throttle window, or a flood would grow the append-only audit log without end.
            if refused.first {
                record_login(&state, None, &key, &ip, Err("throttled")).await?;
            }
            return Err(too_many(refused));
        }
    };
    let user = find_user(&state, &req.email).await?;
    let matches = verify_password(req.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let user = match user {
        Some(u) if matches && !u.disabled => u,
        Some(u) => {
            let why = if matches { "disabled" } else { "wrong password" };
            record_login(&state, Some(&u), &key, &ip, Err(why)).await?;
            return Err(ApiError::Unauthorized(INVALID_LOGIN.into()));
        }
        None => {
            record_login(&state, None, &key, &ip, Err("unknown email")).await?;
            return Err(ApiError::Unauthorized(INVALID_LOGIN.into()));
        }
    };
    state.login_throttle.record_success(&key, &ip, attempt);
    record_login(&state, Some(&user), &key, &ip, Ok(())).await?;
    session_reply(&state, &user)
}

fn me(session: Result<StaffSession, ApiError>) -> Result<impl Reply, ApiError> {
    let session = session?;
    Ok(warp::reply::json(&UserView::from(&session.user)))
}

/// Ends the caller's sessions on the server, so a token copied before "Log out" (from the
/// browser's storage, a proxy's log) is worth nothing afterwards. 204.
async fn logout(state: AppState, session: Result<StaffSession, ApiError>) -> Result<impl Reply, ApiError> {
    let session = session?;
    let entry = session.audit(actions::LOGOUT, target(&session.user));
    let id = session.user.id.clone();
    state
        .db
        .write(move |tx| {
            staff::end_sessions(tx, &id)?;
            audit::append(tx, &entry)
        })
        .await?;
    Ok(warp::http::StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the caller's own password. Every earlier token stops working (see `auth.rs`); the
/// answer carries a fresh one so the page stays signed in.
async fn change_password(
    state: AppState,
    session: Result<StaffSession, ApiError>,
    body: Result<Bytes, ApiError>,
) -> Result<impl Reply, ApiError> {
    let session = session?;
    let req: PasswordChange = parse_json(&body?)?;
    password::check_strength(&req.new_password).map_err(ApiError::BadRequest)?;
    if req.new_password == req.current_password {
        return Err(ApiError::BadRequest(
            "the new password must differ from the current one".into(),
        ));
    }
    let (user, ip) = (session.user.clone(), session.ip.clone());
    // Guessing the current password with a stolen token is throttled like logins.
    let attempt = state.login_throttle.try_attempt(&user.email, &ip).map_err(too_many)?;
    if !verify_password(req.current_password, Some(user.password_hash.clone())).await? {
        let failed = session.audit(actions::PASSWORD_CHANGE, target(&user)).failed();
        state.db.write(move |tx| audit::append(tx, &failed)).await?;
        return Err(ApiError::BadRequest("the current password is incorrect".into()));
    }
    state.login_throttle.record_success(&user.email, &ip, attempt);
    let new_password = req.new_password;
    let hash = run_blocking(move || Ok(password::hash(&new_password)?)).await?;
    let entry = session.audit(actions::PASSWORD_CHANGE, target(&user));
    let user = state
        .db
        .write(move |tx| {
            let user = staff::set_password_hash(tx, &user.id, &hash)?;
            audit::append(tx, &entry)?;
            Ok(user)
        })
        .await?;
    session_reply(&state, &user)
}

/// `{"token", "expiresIn", "user"}` with a freshly issued staff token.
fn session_reply(state: &AppState, user: &StaffUser) -> Result<warp::reply::Response, ApiError> {
    let (token, claims) = tokens::issue_staff(state.secrets.jwt.bytes(), &user.id, user.role, user.session_generation)?;
    let body = json!({ "token": token, "expiresIn": claims.exp - claims.iat, "user": UserView::from(user) });
    Ok(warp::reply::json(&body).into_response())
}

async fn find_user(state: &AppState, raw_email: &str) -> Result<Option<StaffUser>, ApiError> {
    let Ok(email) = Email::parse(raw_email) else {
        return Ok(None);
    };
    Ok(state.db.read(move |conn| staff::find_by_email(conn, &email)).await?)
}

/// Verifies off the async runtime; an unknown user is checked against the decoy hash so the
/// answer takes as long as for a known one.
async fn verify_password(candidate: String, hash: Option<String>) -> Result<bool, ApiError> {
    Ok(run_blocking(move || {
        let hash = hash.as_deref().unwrap_or_else(|| password::decoy_hash());
        Ok(password::verify(&candidate, hash))
    })
    .await?)
}

/// Audits one login attempt in its own transaction.
async fn record_login(
    state: &AppState,
    user: Option<&StaffUser>,
    attempted: &str,
    ip: &str,
    outcome: Result<(), &str>,
) -> Result<(), ApiError> {
    let mut entry = match user {
        Some(u) => Audit::new(format!("staff:{}", u.email), actions::LOGIN, target(u)),
        None => Audit::new(actors::ANONYMOUS, actions::LOGIN, "").detail("email", attempted),
    }
    .ip(ip);
    if let Err(reason) = outcome {
        entry = entry.failed().detail("reason", reason);
    }
    state.db.write(move |tx| audit::append(tx, &entry)).await?;
    Ok(())
}

fn target(user: &StaffUser) -> String {
    audit::target("staff", &user.email)
}

/// The email as typed, normalised the way `Email` does, and cut short so a hostile caller
/// cannot make the throttle or the audit log hold long strings.
fn throttle_key(raw: &str) -> String {
    raw.trim().to_lowercase().chars().take(254).collect()
}

fn too_many(refused: Refused) -> ApiError {
    let retry_after_secs = refused.retry_after_secs;
    ApiError::TooManyRequests {
        message: format!("Too many failed attempts: try again in {retry_after_secs} seconds"),
        retry_after_secs,
    }
}
