//! `POST /api/webhooks/site`, the Trading Platform's signed webhooks (guide, section 1), and
//! the staff webhook log (`/api/webhooks`, `/api/webhooks/:id`, `/api/webhooks/:id/reprocess`).
//!
//! Every attempt is recorded in `webhook_events`, whatever became of it; see README "Webhooks".

mod admin;
mod effects;
mod fields;
pub mod payload;
mod process;

use std::num::NonZeroU32;
use std::time::Instant;

use bytes::Bytes;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::Filter;

use super::error::ApiError;
use super::refusals::{record, refusals_entry};
use super::{body, client_ip, ratelimit, with_state, AppState};
use crate::domain::new_uuid;
use crate::security::signature;
use crate::store::audit::{self, actions, actors, Audit};
use crate::store::webhooks::{self, NewAttempt, Status};
use crate::store::{now, Db};
use process::Delivery;

/// Unverified attempts audited per minute at most; beyond it a flood still lands in the
/// (capped) attempt log but no longer grows the append-only audit log.
const UNVERIFIED_AUDITS_PER_MINUTE: i64 = 100;
/// Unverified attempts (bad signature, refused body) accepted per minute per address. Each one
/// costs a write and a disk sync to record; beyond this an address gets 429 and nothing is
/// written. Signed deliveries are never limited, so a flood cannot delay the platform's events.
pub const UNVERIFIED_PER_MINUTE_PER_IP: NonZeroU32 = NonZeroU32::new(60).unwrap();

pub fn routes(state: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let limit = state.settings.webhook_max_body_bytes;
    let receive = warp::path!("api" / "webhooks" / "site")
        .and(warp::post())
        .and(arrival())
        .and(warp::header::headers_cloned())
        .and(body::raw(limit))
        .and(with_state(state.clone()))
        .then(
            |arrival: Arrival, headers: HeaderMap, body: Result<Bytes, ApiError>, state: AppState| async move {
                receive(state, arrival, headers, body).await
            },
        );
    receive.or(admin::routes(state)).unify().boxed()
}

/// When and from where a request came, taken before its body is read.
#[derive(Debug, Clone)]
struct Arrival {
    started: Instant,
    received_at: String,
    ip: String,
}

fn arrival() -> impl Filter<Extract = (Arrival,), Error = std::convert::Infallible> + Clone {
    client_ip().map(|ip| Arrival {
        started: Instant::now(),
        received_at: now(),
        ip,
    })
}

async fn receive(
    state: AppState,
    arrival: Arrival,
    headers: HeaderMap,
    body: Result<Bytes, ApiError>,
) -> warp::reply::Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            if let Some(mut refusal) = over_unverified_limit(&state, &arrival.ip).await {
                // The refused body is still on the connection, as for the 413 it replaces.
                super::error::close_connection(&mut refusal);
                return refusal;
            }
            let declared = header(&headers, "content-length").and_then(|v| v.parse().ok());
            return Box::pin(record_unverified(&state.db, arrival, Bytes::new(), declared, e)).await;
        }
    };
    let secrets = &state.secrets;
    let verified = signature::verify(
        header(&headers, "x-webhook-signature"),
        &body,
        secrets.webhook.bytes(),
        secrets.webhook_previous.as_ref().map(|s| s.bytes()),
    );
    let Some(secret) = verified else {
        if let Some(refusal) = over_unverified_limit(&state, &arrival.ip).await {
            return refusal;
        }
        let e = ApiError::Unauthorized("Invalid signature".into());
        return Box::pin(record_unverified(&state.db, arrival, body, None, e)).await;
    };
    let delivery = Delivery {
        raw: body,
        secret: secret.as_str(),
        ip: arrival.ip,
        received_at: arrival.received_at,
        started: arrival.started,
        rerun: None,
    };
    warp::Reply::into_response(process::deliver(&state.db, delivery).await)
}

/// A 429 when `ip` has sent too many unverified attempts this minute. Such a refusal is not kept
/// in the attempt log (that write is what the limit saves); the first in a minute is audited as
/// `webhook.rate_limited`, carrying how many before it were not (`unrecordedBefore`), so the
/// audit log still accounts for every attempt, and each one has its server log line.
async fn over_unverified_limit(state: &AppState, ip: &str) -> Option<warp::reply::Response> {
    // Counted per address, an IPv6 /64 would be four billion billion allowances.
    match state
        .webhook_unverified_limiter
        .check(&format!("ip:{}", super::address_key(ip)))
    {
        ratelimit::Verdict::Allowed => None,
        ratelimit::Verdict::Limited {
            retry_after_secs,
            notify,
        } => {
            tracing::warn!(%ip, "unverified webhook attempts over the limit: refused unrecorded");
            if let Some(unrecorded) = notify {
                let details = json!({ "retryAfter": retry_after_secs, "limitPerMinute": UNVERIFIED_PER_MINUTE_PER_IP });
                let entry = refusals_entry(
                    actors::ANONYMOUS,
                    actions::WEBHOOK_RATE_LIMITED,
                    "",
                    ip,
                    details,
                    unrecorded,
                );
                record(state, entry).await;
            }
            let message = "Too many unsigned or invalid webhook attempts; retry later".to_string();
            Some(warp::Reply::into_response(ApiError::TooManyRequests {
                message,
                retry_after_secs,
            }))
        }
    }
}

/// A header's value, or `None` when absent or not visible ASCII (which no valid one is).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Records an attempt whose body was refused or not signed: at most
/// [`webhooks::UNVERIFIED_BODY_BYTES`] of it, pruning the oldest such rows beyond
/// [`webhooks::UNVERIFIED_ROWS_KEPT`], audited (rate-limited) in the same write. Callers box its
/// future: it is large and rare, and inline it would make every delivery's future larger.
async fn record_unverified(
    db: &Db,
    arrival: Arrival,
    body: Bytes,
    declared_size: Option<i64>,
    error: ApiError,
) -> warp::reply::Response {
    let kept = body.len().min(webhooks::UNVERIFIED_BODY_BYTES);
    let status = match error.status() {
        StatusCode::UNAUTHORIZED => Status::Unauthorized,
        _ => Status::Rejected,
    };
    let row = NewAttempt {
        id: new_uuid().to_string(),
        received_at: arrival.received_at,
        event: payload::peek_event(&body),
        dedupe_key: None,
        signature: webhooks::UNVERIFIED.into(),
        raw_body: body[..kept].to_vec(),
        body_size: declared_size.unwrap_or(body.len() as i64),
        // A refused body (too large, too slow, unreadable) was never read in full: none is kept.
        body_truncated: status == Status::Rejected || kept < body.len(),
        status,
        http_status: error.status().as_u16(),
        error: process::log_message(&error),
        client_id: None,
        ip: arrival.ip,
        duration_ms: process::elapsed_ms(arrival.started),
        reprocess_of: None,
        reprocessed_by: None,
    };
    let action = match status {
        Status::Unauthorized => actions::WEBHOOK_UNAUTHORIZED,
        _ => actions::WEBHOOK_REJECTED,
    };
    let recorded = db
        .write(move |tx| {
            let minute_ago = (chrono::Utc::now() - chrono::Duration::minutes(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let recent = webhooks::unverified_since(tx, &minute_ago)?;
            webhooks::insert(tx, &row)?;
            webhooks::prune_unverified(tx, webhooks::UNVERIFIED_ROWS_KEPT)?;
            if recent < UNVERIFIED_AUDITS_PER_MINUTE {
                let entry = Audit::new(actors::ANONYMOUS, action, audit::target("webhook", &row.id))
                    .failed()
                    .ip(row.ip.clone())
                    .details(json!({ "attemptId": row.id, "error": row.error, "bodySize": row.body_size }));
                audit::append(tx, &entry)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "could not record a refused webhook attempt");
    }
    tracing::warn!(
        status = error.status().as_u16(),
        "webhook refused: {}",
        error.public_message()
    );
    warp::Reply::into_response(error)
}
