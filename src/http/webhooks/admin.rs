//! The staff webhook log: list and read every attempt (managers and admins), and re-run a stored
//! signed attempt that did not take effect (admins only).

use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::Filter;

use super::process::{self, Delivery, Rerun};
use crate::http::auth::{self, StaffSession};
use crate::http::error::{respond, ApiError};
use crate::http::query::{self, page, Params};
use crate::http::{with_state, AppState};
use crate::store::webhooks::{self, Attempt, Query, Status};
use crate::store::{now, StoreError};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

type Session = Result<StaffSession, ApiError>;

pub fn routes(state: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let list = warp::path!("api" / "webhooks")
        .and(warp::get())
        .and(auth::staff(state.clone()))
        .and(query::params())
        .and(with_state(state.clone()))
        .then(|s: Session, q, st| async move { respond(list(s, q, st).await) });
    // The id is a UUID, so `/api/webhooks/site` never matches here and keeps its 405 for GET.
    let one = warp::path!("api" / "webhooks" / Uuid)
        .and(warp::get())
        .and(auth::staff(state.clone()))
        .and(with_state(state.clone()))
        .then(|id, s: Session, st| async move { respond(one(id, s, st).await) });
    let rerun = warp::path!("api" / "webhooks" / Uuid / "reprocess")
        .and(warp::post())
        .and(auth::staff(state.clone()))
        .and(with_state(state))
        .then(|id, s: Session, st| async move { respond(reprocess(id, s, st).await) });
    list.or(one).unify().or(rerun).unify().boxed()
}

async fn list(
    session: Session,
    params: Result<Params, ApiError>,
    state: AppState,
) -> Result<impl warp::Reply, ApiError> {
    session?.require_log_rights()?;
    let mut query = parse_query(params?)?;
    let limit = query.limit;
    // One row more than shown tells whether an older page exists: the last page has no cursor.
    query.limit += 1;
    let (events, more) = page(state.db.read(move |c| webhooks::list(c, &query)).await?, limit);
    let next_cursor = match events.last() {
        Some(last) if more => Some(last.seq.to_string()),
        _ => None,
    };
    Ok(warp::reply::json(
        &json!({ "events": events, "nextCursor": next_cursor }),
    ))
}

fn parse_query(params: Params) -> Result<Query, ApiError> {
    query::only(&params, &["status", "event", "from", "to", "before", "limit"])?;
    let bad = |m: String| ApiError::BadRequest(m);
    let mut q = Query {
        limit: DEFAULT_LIMIT,
        ..Query::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "status" => {
                let words: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                q.status = Some(
                    Status::parse(&value).ok_or_else(|| bad(format!("status must be one of {}", words.join(", "))))?,
                );
            }
            "event" => q.event = Some(value),
            "from" => q.from = Some(instant(&value, "from")?),
            "to" => q.to = Some(instant(&value, "to")?),
            "before" => {
                q.before = Some(
                    value
                        .parse()
                        .map_err(|_| bad("before must be a nextCursor value".into()))?,
                );
            }
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(format!("limit must be a whole number from 1 to {MAX_LIMIT}")))?;
            }
            // Refused by `query::only` above.
            _ => {}
        }
    }
    Ok(q)
}

/// An RFC 3339 time, rewritten in the stored form (UTC, milliseconds) so text comparison works.
fn instant(value: &str, name: &str) -> Result<String, ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .map_err(|_| ApiError::BadRequest(format!("{name} must be an RFC 3339 time such as 2025-10-13T19:00:00Z")))
}

/// One attempt with its stored body, shown as text.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    #[serde(flatten)]
    attempt: Attempt,
    raw_body: String,
}

async fn one(id: Uuid, session: Session, state: AppState) -> Result<impl warp::Reply, ApiError> {
    session?.require_log_rights()?;
    let attempt = state.db.read(move |c| webhooks::get(c, &id.to_string())).await?;
    let raw_body = String::from_utf8_lossy(&attempt.raw_body).into_owned();
    Ok(warp::reply::json(&Detail { attempt, raw_body }))
}

/// Re-runs a stored attempt through the same processing; the outcome is a new attempt row
/// pointing back at the original (`reprocessOf`), and the original is stamped `reprocessedAt/By`.
async fn reprocess(id: Uuid, session: Session, state: AppState) -> Result<impl warp::Reply, ApiError> {
    let session = session?;
    session.require_admin()?;
    let id = id.to_string();
    let original = state.db.read({
        let id = id.clone();
        move |c| webhooks::get(c, &id)
    });
    let original = original.await?;
    let secret = verified_secret(&original)?;
    let delivery = Delivery {
        raw: Bytes::from(original.raw_body),
        secret,
        ip: session.ip.clone(),
        received_at: now(),
        started: Instant::now(),
        rerun: Some(Rerun {
            original_id: id,
            by: session.actor(),
        }),
    };
    let answer = process::deliver(&state.db, delivery).await;
    if answer.status == warp::http::StatusCode::SERVICE_UNAVAILABLE {
        // The database is busy or full: the re-run changed nothing, and its record is written
        // after the answer (see `process::answer_failure`), so there is no row to show yet.
        return Err(ApiError::Unavailable);
    }
    let attempt_id = answer.attempt_id.clone();
    let attempt = state
        .db
        .read(move |c| webhooks::get(c, &attempt_id))
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::Internal(anyhow::anyhow!("the re-run could not be recorded")),
            other => other.into(),
        })?;
    Ok(warp::reply::json(&json!({
        "attempt": attempt,
        "response": { "status": answer.status.as_u16(), "body": answer.body },
    })))
}

/// Only signed attempts that took no effect may be re-run: an unverified body was never
/// authenticated, and a processed one is already on the books.
fn verified_secret(original: &Attempt) -> Result<&'static str, ApiError> {
    let secret = match original.signature.as_str() {
        "current" => "current",
        "previous" => "previous",
        _ => {
            return Err(ApiError::Conflict(
                "This attempt's signature was never verified; it cannot be re-processed".into(),
            ))
        }
    };
    // The guide: a refused withdrawal is BLOCKED and "no balance changes occur". The platform
    // acts on that answer, so re-running it later (say, after a deposit) would take money the
    // platform never paid out. Only the platform may send a withdrawal again.
    if original.event == "withdrawal.completed" {
        return Err(ApiError::Conflict(
            "A refused withdrawal is never re-processed: the Trading Platform was told it was refused. \
             Ask the platform to send it again if it was really paid out"
                .into(),
        ));
    }
    match Status::parse(&original.status) {
        Some(Status::Failed | Status::Rejected | Status::Conflict) => Ok(secret),
        _ => Err(ApiError::Conflict(format!(
            "This attempt was {}; only failed, rejected or conflicting attempts can be re-processed",
            original.status
        ))),
    }
}
