//! The Trading Platform's service API (guide, section 2), under `/api/service/`.
//!
//! Every call is authenticated with `Authorization: Bearer <SERVICE_API_TOKEN>` (or the previous
//! token while `SERVICE_API_TOKEN_PREVIOUS` is set), rate limited per caller, and recorded in the
//! audit log as `service.<operation>` whatever its outcome (guide, "Audit Logging"). A change
//! and its audit entries are written in one transaction; a refused call is recorded in its own.

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::json;
use warp::filters::path::FullPath;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

use super::activity::{raw_query, PageRequest};
use super::auth::bearer;
use super::body::{self, parse_json};
use super::error::{respond, ApiError};
use super::ratelimit::Verdict;
use super::refusals::{record, record_after_refusal, recorded_path, refusals_entry};
use super::views::AccountsView;
use super::{client_ip, with_state, AppState};
use crate::config::Secrets;
use crate::domain::{free_text, required_text, Email, KycStatus, MAX_TEXT_CHARS};
use crate::security::secrets_equal;
use crate::store::audit::{self, actions, actors, Audit};
use crate::store::{accounts, activity, clients, notes, StoreResult};

/// How notes left through this API are signed.
pub const NOTE_AUTHOR: &str = "Trading Platform";
/// An authenticated service caller: which token it presented, and from where.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `current` or `previous`: tells the operator when the previous token is no longer used.
    pub token: &'static str,
    pub ip: String,
}

impl Caller {
    fn audit(&self, action: &str, target: String) -> Audit {
        Audit::new(actors::SERVICE, action, target)
            .ip(self.ip.clone())
            .detail("token", self.token)
    }
}

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let get_client = warp::path!("api" / "service" / "clients" / String)
        .and(warp::get())
        .and(caller(state.clone()))
        .and(with_state(state.clone()))
        .then(
            |email: String, caller: Result<Caller, ApiError>, state: AppState| async move {
                respond(get_client(state, caller, email).await)
            },
        );
    let get_accounts = warp::path!("api" / "service" / "accounts" / String)
        .and(warp::get())
        .and(caller(state.clone()))
        .and(with_state(state.clone()))
        .then(
            |email: String, caller: Result<Caller, ApiError>, state: AppState| async move {
                respond(get_accounts(state, caller, email).await)
            },
        );
    let update_kyc = warp::path!("api" / "service" / "clients" / String / "kyc")
        .and(warp::patch())
        .and(caller(state.clone()))
        .and(body::json(body::DEFAULT_LIMIT))
        .and(with_state(state.clone()))
        .then(
            |email: String, caller: Result<Caller, ApiError>, body: Result<Bytes, ApiError>, state: AppState| async move {
                respond(update_kyc(state, caller, email, body).await)
            },
        );
    let add_note = warp::path!("api" / "service" / "clients" / String / "notes")
        .and(warp::post())
        .and(caller(state.clone()))
        .and(body::json(body::DEFAULT_LIMIT))
        .and(with_state(state.clone()))
        .then(
            |email: String, caller: Result<Caller, ApiError>, body: Result<Bytes, ApiError>, state: AppState| async move {
                respond(add_note(state, caller, email, body).await)
            },
        );
    let get_activity = warp::path!("api" / "service" / "clients" / String / "activity")
        .and(warp::get())
        .and(caller(state.clone()))
        .and(raw_query())
        .and(with_state(state))
        .then(
            |email: String, caller: Result<Caller, ApiError>, query: String, state: AppState| async move {
                respond(get_activity(state, caller, email, query).await)
            },
        );
    get_client
        .or(get_accounts)
        .unify()
        .or(update_kyc)
        .unify()
        .or(add_note)
        .unify()
        .or(get_activity)
        .unify()
        .boxed()
}

// ---- handlers ------------------------------------------------------------------------------

async fn get_client(
    state: AppState,
    caller: Result<Caller, ApiError>,
    raw_email: String,
) -> Result<Response, ApiError> {
    let call = Call::new(state, caller?, "get_client", &raw_email);
    let email = call.check(path_email(&raw_email)).await?;
    let client = call
        .read(move |tx, _| {
            let client = clients::by_email(tx, &email)?;
            Ok((client.id.clone(), client))
        })
        .await?;
    Ok(warp::reply::json(&client).into_response())
}

async fn get_accounts(
    state: AppState,
    caller: Result<Caller, ApiError>,
    raw_email: String,
) -> Result<Response, ApiError> {
    let call = Call::new(state, caller?, "get_accounts", &raw_email);
    let email = call.check(path_email(&raw_email)).await?;
    let view = call
        .read(move |tx, _| {
            let client = clients::by_email(tx, &email)?;
            let primary = accounts::primary_for_client(tx, &client.id)?;
            let subaccounts = accounts::subaccounts_for_client(tx, &client.id)?;
            Ok((client.id, AccountsView::new(&primary, &subaccounts)))
        })
        .await?;
    Ok(warp::reply::json(&view).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KycRequest {
    kyc_status: KycStatus,
    /// Absent or null leaves the current notes as they are.
    #[serde(default)]
    kyc_notes: Option<String>,
}

async fn update_kyc(
    state: AppState,
    caller: Result<Caller, ApiError>,
    raw_email: String,
    body: Result<Bytes, ApiError>,
) -> Result<Response, ApiError> {
    let call = Call::new(state, caller?, "update_kyc", &raw_email);
    let (email, req) = call.check(parse_kyc(&raw_email, body)).await?;
    let client = call
        .run(move |tx, caller| {
            let before = clients::by_email(tx, &email)?;
            let after = clients::set_kyc(tx, &before.id, req.kyc_status, req.kyc_notes.as_deref())?;
            let change = caller
                .audit(actions::KYC_UPDATE, audit::target("client", &after.id))
                .detail("from", before.kyc_status)
                .detail("to", after.kyc_status.clone())
                .detail("notes", after.kyc_notes.clone());
            audit::append(tx, &change)?;
            Ok((after.id.clone(), after))
        })
        .await?;
    Ok(warp::reply::json(&client).into_response())
}

fn parse_kyc(raw_email: &str, body: Result<Bytes, ApiError>) -> Result<(Email, KycRequest), ApiError> {
    let email = path_email(raw_email)?;
    let mut req: KycRequest = parse_json(&body?)?;
    if let Some(notes) = &req.kyc_notes {
        req.kyc_notes = Some(free_text("kycNotes", notes, MAX_TEXT_CHARS)?);
    }
    Ok((email, req))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteRequest {
    comment: String,
}

async fn add_note(
    state: AppState,
    caller: Result<Caller, ApiError>,
    raw_email: String,
    body: Result<Bytes, ApiError>,
) -> Result<Response, ApiError> {
    let call = Call::new(state, caller?, "add_note", &raw_email);
    let (email, comment) = call.check(parse_note(&raw_email, body)).await?;
    let note = call
        .run(move |tx, caller| {
            let client = clients::by_email(tx, &email)?;
            let note = notes::insert(tx, &client.id, &comment, NOTE_AUTHOR)?;
            let added = caller
                .audit(actions::NOTE_ADD, audit::target("client", &client.id))
                .detail("noteId", note.id.clone())
                .detail("author", NOTE_AUTHOR);
            audit::append(tx, &added)?;
            Ok((client.id, note))
        })
        .await?;
    Ok(warp::reply::with_status(warp::reply::json(&note), StatusCode::CREATED).into_response())
}

fn parse_note(raw_email: &str, body: Result<Bytes, ApiError>) -> Result<(Email, String), ApiError> {
    let email = path_email(raw_email)?;
    let req: NoteRequest = parse_json(&body?)?;
    Ok((email, required_text("comment", &req.comment, MAX_TEXT_CHARS)?))
}

async fn get_activity(
    state: AppState,
    caller: Result<Caller, ApiError>,
    raw_email: String,
    query: String,
) -> Result<Response, ApiError> {
    let call = Call::new(state, caller?, "get_activity", &raw_email);
    let (email, page) = call
        .check(path_email(&raw_email).and_then(|e| Ok((e, PageRequest::parse(&query)?))))
        .await?;
    let timeline = call
        .read(move |tx, _| {
            let client = clients::by_email(tx, &email)?;
            let timeline = activity::timeline(tx, &client.id, page.before.as_ref(), page.limit)?;
            Ok((client.id, timeline))
        })
        .await?;
    Ok(warp::reply::json(&timeline).into_response())
}

// ---- one audited call ----------------------------------------------------------------------

/// One service call: records its outcome as `service.<operation>`, whatever happens.
struct Call {
    state: AppState,
    caller: Caller,
    action: String,
    /// The email as the caller sent it (decoded, clipped), for failures about unknown clients.
    email: String,
}

impl Call {
    fn new(state: AppState, caller: Caller, operation: &str, raw_email: &str) -> Call {
        let email: String = percent_decode_str(raw_email)
            .decode_utf8_lossy()
            .chars()
            .take(254)
            .collect();
        Call {
            state,
            caller,
            action: format!("{}{operation}", actions::SERVICE_PREFIX),
            email,
        }
    }

    /// Passes a parsed request through, or records why it was refused.
    async fn check<T>(&self, parsed: Result<T, ApiError>) -> Result<T, ApiError> {
        match parsed {
            Ok(value) => Ok(value),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// Runs `f` (which returns the client's id and the answer) in one write transaction that
    /// also records the call. On failure nothing `f` wrote is kept and the failure is recorded.
    /// Answers once the change and its record are durable.
    async fn run<T: Send + 'static>(
        &self,
        f: impl Fn(&rusqlite::Transaction, &Caller) -> StoreResult<(String, T)> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.audited(f, false).await
    }

    /// [`Call::run`] for a read: answers once its record is committed, without waiting for the
    /// WAL sync that follows (see `Db::write_for_read`).
    async fn read<T: Send + 'static>(
        &self,
        f: impl Fn(&rusqlite::Transaction, &Caller) -> StoreResult<(String, T)> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.audited(f, true).await
    }

    async fn audited<T: Send + 'static>(
        &self,
        f: impl Fn(&rusqlite::Transaction, &Caller) -> StoreResult<(String, T)> + Send + 'static,
        read_only: bool,
    ) -> Result<T, ApiError> {
        let (caller, action, email) = (self.caller.clone(), self.action.clone(), self.email.clone());
        let write = move |tx: &rusqlite::Transaction| {
            let (client_id, value) = f(tx, &caller)?;
            let entry = caller
                .audit(&action, audit::target("client", &client_id))
                .detail("email", email.clone());
            audit::append(tx, &entry)?;
            Ok(value)
        };
        let db = &self.state.db;
        let result = if read_only {
            db.write_for_read(write).await
        } else {
            db.write(write).await
        };
        match result {
            Ok(value) => Ok(value),
            Err(e) => Err(self.failed(e.into()).await),
        }
    }

    async fn failed(&self, error: ApiError) -> ApiError {
        let entry = self
            .caller
            .audit(&self.action, String::new())
            .failed()
            .detail("email", self.email.clone())
            .detail("status", error.status().as_u16())
            .detail("error", error.public_message());
        let state = self.state.clone();
        // Boxed, so that every call's future does not carry this rare path's state.
        record_after_refusal(error.status(), Box::pin(async move { record(&state, entry).await })).await;
        error
    }
}

// ---- request parts -------------------------------------------------------------------------

/// An email path segment: percent-decoded (`test%40example.com`), then parsed (which trims and
/// lower-cases it, so `Test@Example.com` finds `test@example.com`).
fn path_email(raw: &str) -> Result<Email, ApiError> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("the email in the path is not valid UTF-8".into()))?;
    Ok(Email::parse(&decoded)?)
}

/// Authenticates and rate-limits the caller, or gives the 401/429 to answer (and records it).
/// Never rejects, so a matched route answers 401 rather than falling through to 404.
fn caller(
    state: AppState,
) -> impl Filter<Extract = (Result<Caller, ApiError>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned()
        .and(warp::method())
        .and(warp::path::full())
        .and(client_ip())
        .and(with_state(state))
        .then(
            |headers: HeaderMap, method: Method, path: FullPath, ip: String, state: AppState| async move {
                let header = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
                authenticate(&state, header, &method, path.as_str(), ip).await
            },
        )
}

async fn authenticate(
    state: &AppState,
    header: Option<&str>,
    method: &Method,
    path: &str,
    ip: String,
) -> Result<Caller, ApiError> {
    let token = which_token(&state.secrets, header);
    // A caller is its token; without one, its address (an IPv6 /64), so guessing tokens is
    // limited too.
    let key = match token {
        Some(t) => format!("token:{t}"),
        None => format!("ip:{}", super::address_key(&ip)),
    };
    let path = recorded_path(path);
    if let Some(limiter) = &state.service_limiter {
        if let Verdict::Limited {
            retry_after_secs,
            notify,
        } = limiter.check(&key)
        {
            if let Some(unrecorded) = notify {
                let actor = if token.is_some() {
                    actors::SERVICE
                } else {
                    actors::ANONYMOUS
                };
                let details =
                    json!({ "method": method.as_str(), "path": path, "token": token, "retryAfter": retry_after_secs });
                let entry = refusals_entry(actor, actions::SERVICE_RATE_LIMITED, "", ip, details, unrecorded);
                record(state, entry).await;
            }
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "Rate limit exceeded: at most {} requests per minute; retry after {retry_after_secs} s",
                    state.settings.service_rate_limit
                ),
                retry_after_secs,
            });
        }
    }
    if let Some(token) = token {
        return Ok(Caller { token, ip });
    }
    let reason = match header {
        None => "no Authorization header",
        Some(h) if bearer(Some(h)).is_none() => "not a Bearer token",
        Some(_) => "wrong token",
    };
    // Bounded per address (an IPv6 /64) even with the rate limit off: refused calls are cheap to
    // send.
    if let Some(unrecorded) = state.service_unauthorized_notices.allow(&super::address_key(&ip)) {
        let details = json!({ "method": method.as_str(), "path": path, "reason": reason });
        let entry = refusals_entry(
            actors::ANONYMOUS,
            actions::SERVICE_UNAUTHORIZED,
            "",
            ip,
            details,
            unrecorded,
        );
        record(state, entry).await;
    }
    Err(ApiError::Unauthorized(
        "Invalid or missing service token: send Authorization: Bearer <SERVICE_API_TOKEN>".into(),
    ))
}

/// Which configured token the header carries, compared in constant time against each.
fn which_token(secrets: &Secrets, header: Option<&str>) -> Option<&'static str> {
    let presented = bearer(header)?.as_bytes();
    let current = secrets_equal(presented, secrets.service_token.bytes());
    let previous = secrets
        .service_token_previous
        .as_ref()
        .is_some_and(|p| secrets_equal(presented, p.bytes()));
    match (current, previous) {
        (true, _) => Some("current"),
        (false, true) => Some("previous"),
        (false, false) => None,
    }
}
