//! Auditing of refused staff actions. The guide asks to "log all impersonation attempts", and a
//! refused money movement or staff change matters as much as one that went through, so the
//! admin-only actions record their refusals too, each in its own transaction. The webhook and
//! service API record theirs through [`record_after_refusal`].

use std::future::Future;

use warp::http::StatusCode;

use super::error::ApiError;
use super::AppState;
use crate::domain::clip;
use crate::store::audit::{self, Audit};

/// Returns `result` unchanged, after auditing it as a failure of `entry` when it was refused.
/// Outages (500, 503) are not recorded: the database is what failed.
pub async fn audited<T>(state: &AppState, entry: Audit, result: Result<T, ApiError>) -> Result<T, ApiError> {
    if let Err(e) = &result {
        if !matches!(e, ApiError::Internal(_) | ApiError::Unavailable) {
            let mut failed = entry
                .failed()
                .detail("status", e.status().as_u16())
                .detail("error", e.public_message());
            if let ApiError::InsufficientFunds {
                required, available, ..
            } = e
            {
                failed = failed
                    .detail("required", required.to_string())
                    .detail("available", available.to_string());
            }
            if let Err(audit_error) = state.db.write(move |tx| audit::append(tx, &failed)).await {
                tracing::error!(error = %audit_error, "could not audit a refused staff action");
            }
        }
    }
    result
}

/// Appends an audit entry in a transaction of its own. A failure to record is logged, and the
/// caller still gets the answer it was going to get.
pub async fn record(state: &AppState, entry: Audit) {
    // What the entry said goes to the server's log if it cannot be written (a count of refusals
    // it carried included).
    let (action, details) = (entry.action.clone(), entry.details.to_string());
    if let Err(e) = state.db.write(move |tx| audit::append(tx, &entry).map(drop)).await {
        tracing::error!(error = %e, %action, %details, "could not write an audit entry");
    }
}

/// The entry that stands for refusals of one kind from one caller: a failure from `ip`, saying
/// how many of them since its previous entry were not written (`unrecordedBefore`, see
/// `ratelimit::Notices`), when any.
pub fn refusals_entry(
    actor: &str,
    action: &str,
    target: impl Into<String>,
    ip: impl Into<String>,
    mut details: serde_json::Value,
    unrecorded: u64,
) -> Audit {
    if unrecorded > 0 {
        details["unrecordedBefore"] = unrecorded.into();
    }
    Audit::new(actor, action, target).failed().ip(ip).details(details)
}

/// A request's path as an audit entry records it: its first 512 characters, so a refused
/// request with a long path cannot make a large row in the log that is never pruned.
pub fn recorded_path(path: &str) -> String {
    path.chars().take(512).collect()
}

/// The audit target `<kind>:<id>` of a request about the record its path names: the id as
/// parsed when it parses, else the text as sent (its first 64 characters, control characters
/// dropped), so a request refused for a malformed id is recorded under what it asked for.
pub fn path_target<T: std::fmt::Display, E>(kind: &str, raw: &str, parsed: &Result<T, E>) -> String {
    match parsed {
        Ok(id) => audit::target(kind, id),
        Err(_) => audit::target(kind, clip(raw, 64)),
    }
}

/// Writes the record of a refused request: before the answer, so the record exists when the
/// caller hears back; but after it for a 503 (the database busy or full), whose record would
/// first wait out the busy timeout again and keep the caller from its answer and Retry-After.
pub async fn record_after_refusal(status: StatusCode, recording: impl Future<Output = ()> + Send + 'static) {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tokio::spawn(recording);
    } else {
        recording.await;
    }
}
