//! One signed delivery, start to finish: parse, then in ONE write transaction check the
//! exactly-once guard, apply the effect, record the attempt, claim the guard and audit, so the
//! 200 is sent only after all of it is committed. A delivery that fails is rolled back and then
//! recorded (with its audit entry) in a write of its own.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rusqlite::Connection;
use serde_json::json;
use sha2::{Digest, Sha256};
use warp::http::StatusCode;

use super::effects::{self, Ctx};
use super::payload::{self, Action, Event};
use crate::domain::new_uuid;
use crate::http::error::ApiError;
use crate::http::refusals::record_after_refusal;
use crate::store::audit::{self, actions, Audit};
use crate::store::webhooks::{self, NewAttempt, Status};
use crate::store::{Db, StoreError, StoreResult};

/// A body whose signature has been verified, at receipt or when it was first stored.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub raw: Bytes,
    /// `current` or `previous`: the secret that verified it.
    pub secret: &'static str,
    pub ip: String,
    pub received_at: String,
    pub started: Instant,
    pub rerun: Option<Rerun>,
}

/// Staff re-running a stored attempt.
#[derive(Debug, Clone)]
pub struct Rerun {
    pub original_id: String,
    /// The staff member's audit actor (`staff:<email>`).
    pub by: String,
}

/// What was answered, and the attempt row that records it.
#[derive(Debug)]
pub struct Answer {
    pub attempt_id: String,
    pub status: StatusCode,
    pub body: Box<serde_json::value::RawValue>,
}

impl warp::Reply for Answer {
    fn into_response(self) -> warp::reply::Response {
        let mut resp = warp::reply::with_status(warp::reply::json(&self.body), self.status).into_response();
        // A busy or full database (503): tell the platform when to retry, as ApiError does.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(warp::http::header::RETRY_AFTER, 1.into());
        }
        resp
    }
}

/// The exactly-once keys of one event.
#[derive(Debug, Clone)]
struct Keys {
    /// `id:<event id>`, else `tx:<transactionId>` for money events, else `body:<sha256 of body>`.
    dedupe: String,
    transaction_id: Option<String>,
    /// `tx:<transactionId>` for a money event that has one.
    transaction_claim: Option<String>,
    /// What the event claims once processed: its deduplication key and, for a money event that
    /// also has an event id, `tx:<transactionId>`, so a transaction is on the books once whatever
    /// event id it comes with.
    claims: Vec<String>,
    /// SHA-256 of the event name and `data` (keys sorted): a retry with a new timestamp or id
    /// has the same content; a reused transaction id with other data does not.
    content: String,
}

impl Keys {
    fn of(event: &Event, raw: &[u8]) -> Keys {
        let transaction_id = event.action.transaction_id().map(str::to_string);
        let transaction_claim = transaction_id.as_ref().map(|tx| format!("tx:{tx}"));
        let dedupe = match (&event.id, &transaction_claim) {
            (Some(id), _) => format!("id:{id}"),
            (None, Some(tx)) => tx.clone(),
            (None, None) => format!("body:{}", sha256_hex(raw)),
        };
        let mut claims = vec![dedupe.clone()];
        claims.extend(transaction_claim.clone().filter(|tx| *tx != dedupe));
        let content = sha256_hex(content_of(event).as_bytes());
        Keys {
            dedupe,
            transaction_id,
            transaction_claim,
            claims,
            content,
        }
    }
}

/// What "the same event" means. A money event is its parsed movement, so a retry that writes
/// the amount as `100` instead of `"100.00"` is still a duplicate, not a conflict. Other events
/// are their `data` as sent, with the keys of every object sorted: the same text whatever order
/// a retry writes them in, and the text hashed before serde_json kept the order sent
/// (`preserve_order`), so a retry of an event recorded then is still a duplicate.
fn content_of(event: &Event) -> String {
    match &event.action {
        Action::Deposit(m) | Action::Withdraw(m) => format!(
            "{}\nemail={}\nclientId={}\naccount={}\namount={}\ncurrency={}\ntransactionId={}",
            event.name.as_str(),
            m.who.email.as_ref().map(|e| e.as_str()).unwrap_or(""),
            m.who.platform_id.as_deref().unwrap_or(""),
            m.account_id.as_deref().unwrap_or(""),
            m.amount.atoms(),
            m.currency.as_deref().unwrap_or("").to_ascii_uppercase(),
            m.transaction_id.as_deref().unwrap_or(""),
        ),
        _ => {
            let mut data = event.data.clone();
            data.sort_all_objects();
            format!("{}\n{}", event.name.as_str(), data)
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

enum Applied {
    Processed,
    Duplicate,
}

/// Runs a verified delivery and records it. Never fails: every outcome is an answer.
pub async fn deliver(db: &Db, delivery: Delivery) -> Answer {
    let attempt_id = new_uuid().to_string();
    let event = match payload::parse(&delivery.raw) {
        Ok(event) => event,
        Err(e) => return answer_failure(db, delivery, attempt_id, None, e).await,
    };
    let keys = Keys::of(&event, &delivery.raw);
    let shared = Arc::new((delivery, event, keys, attempt_id));
    let job = shared.clone();
    let result = db
        .write(move |tx| {
            let (delivery, event, keys, attempt_id) = &*job;
            apply(tx, delivery, event, keys, attempt_id)
        })
        .await;
    let (delivery, event, keys, attempt_id) = Arc::unwrap_or_clone(shared);
    let status = match result {
        Ok(Applied::Processed) => "processed",
        Ok(Applied::Duplicate) => "duplicate",
        Err(e) => return answer_failure(db, delivery, attempt_id, Some((event, keys)), failure(e)).await,
    };
    Answer {
        attempt_id,
        status: StatusCode::OK,
        body: serde_json::value::to_raw_value(&json!({ "status": status })).unwrap_or_default(),
    }
}

fn apply(tx: &Connection, d: &Delivery, event: &Event, keys: &Keys, attempt_id: &str) -> StoreResult<Applied> {
    let ctx = Ctx {
        attempt_id,
        ip: &d.ip,
        secret: d.secret,
        rerun_by: d.rerun.as_ref().map(|r| r.by.as_str()),
        event: Some(event),
    };
    let action = format!("{}{}", actions::WEBHOOK_PREFIX, event.name.as_str());
    let mut row = attempt_row(d, attempt_id, event.name.as_str(), Some(&keys.dedupe));
    if let Some(prior) = webhooks::find_processed(tx, &keys.claims)? {
        if prior.content_hash != keys.content {
            return Err(StoreError::Conflict(match &keys.transaction_id {
                Some(t) if keys.transaction_claim.as_ref() == Some(&prior.claim) => {
                    format!("transactionId {t} was already used by a different event")
                }
                _ => format!("Event {} was already received with different content", prior.claim),
            }));
        }
        row.status = Status::Duplicate;
        row.client_id = prior.client_id.clone();
        finish(tx, row, d)?;
        let target = target_of(prior.client_id.as_deref(), attempt_id);
        audit::append(
            tx,
            &ctx.audit(&action, target)
                .detail("result", "duplicate")
                .detail("originalAttemptId", prior.event_id),
        )?;
        return Ok(Applied::Duplicate);
    }
    let client_id = effects::apply(tx, &event.action, &ctx)?;
    row.status = Status::Processed;
    row.client_id = Some(client_id.clone());
    finish(tx, row, d)?;
    webhooks::mark_processed(tx, &keys.claims, &keys.content, attempt_id)?;
    if event.action.moves_money() {
        // Its balance change's entry (`account.deposit` / `account.withdrawal`) is its record.
        return Ok(Applied::Processed);
    }
    audit::append(
        tx,
        &ctx.audit(&action, audit::target("client", &client_id))
            .detail("result", "processed"),
    )?;
    Ok(Applied::Processed)
}

/// Inserts the attempt row (timed now, just before commit) and, for a re-run, notes it on the
/// original and audits it as the staff member's action.
fn finish(tx: &Connection, mut row: NewAttempt, d: &Delivery) -> StoreResult<()> {
    row.duration_ms = elapsed_ms(d.started);
    webhooks::insert(tx, &row)?;
    if let Some(rerun) = &d.rerun {
        webhooks::mark_reprocessed(tx, &rerun.original_id, &rerun.by)?;
        let mut entry = Audit::new(
            rerun.by.clone(),
            actions::WEBHOOK_REPROCESS,
            audit::target("webhook", &rerun.original_id),
        )
        .ip(d.ip.clone())
        .detail("attemptId", row.id.clone())
        .detail("status", row.status.as_str())
        .detail("httpStatus", row.http_status);
        if !matches!(row.status, Status::Processed | Status::Duplicate) {
            entry = entry.failed().detail("error", row.error.clone());
        }
        audit::append(tx, &entry)?;
    }
    Ok(())
}

fn attempt_row(d: &Delivery, id: &str, event: &str, dedupe: Option<&str>) -> NewAttempt {
    NewAttempt {
        id: id.to_string(),
        received_at: d.received_at.clone(),
        event: event.to_string(),
        dedupe_key: dedupe.map(str::to_string),
        signature: d.secret.to_string(),
        raw_body: d.raw.to_vec(),
        body_size: d.raw.len() as i64,
        body_truncated: false,
        status: Status::Processed,
        http_status: 200,
        error: String::new(),
        client_id: None,
        ip: d.ip.clone(),
        duration_ms: 0,
        reprocess_of: d.rerun.as_ref().map(|r| r.original_id.clone()),
        reprocessed_by: d.rerun.as_ref().map(|r| r.by.clone()),
    }
}

fn target_of(client_id: Option<&str>, attempt_id: &str) -> String {
    match client_id {
        Some(c) => audit::target("client", c),
        None => audit::target("webhook", attempt_id),
    }
}

pub fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// The guide's withdrawal refusal has its own wording; everything else maps as usual.
fn failure(e: StoreError) -> ApiError {
    match e {
        StoreError::InsufficientFunds {
            fund,
            required,
            available,
        } => ApiError::InsufficientFunds {
            message: format!("Insufficient {fund} funds for withdrawal"),
            required,
            available,
        },
        other => other.into(),
    }
}

/// Not-found and server-side failures may succeed later (a deposit before its registration):
/// they are `failed`, for re-processing. Bad content is `rejected`, a reused id a `conflict`.
pub fn status_of(e: &ApiError) -> Status {
    match e.status() {
        StatusCode::UNAUTHORIZED => Status::Unauthorized,
        StatusCode::CONFLICT => Status::Conflict,
        StatusCode::NOT_FOUND => Status::Failed,
        s if s.is_server_error() => Status::Failed,
        _ => Status::Rejected,
    }
}

/// The error as the attempt log shows it: the client's message, plus the amounts of a refusal.
pub fn log_message(e: &ApiError) -> String {
    match e {
        ApiError::InsufficientFunds {
            message,
            required,
            available,
        } => format!("{message}: required {required}, available {available}"),
        other => other.public_message(),
    }
}

/// Answers a delivery that failed, and records it (attempt row and audit entry) in a write of
/// its own: before the answer, or after it for a 503 (see [`record_after_refusal`]).
async fn answer_failure(
    db: &Db,
    d: Delivery,
    attempt_id: String,
    parsed: Option<(Event, Keys)>,
    error: ApiError,
) -> Answer {
    let answer = Answer {
        attempt_id: attempt_id.clone(),
        status: error.status(),
        body: error.body(),
    };
    // Boxed: a future holds the state of every path it might take, and this rare one holds a
    // whole delivery; unboxed, it made every webhook's future several kilobytes larger.
    let recording = Box::pin(record_failure(db.clone(), d, attempt_id, parsed, error));
    record_after_refusal(answer.status, recording).await;
    answer
}

async fn record_failure(db: Db, d: Delivery, attempt_id: String, parsed: Option<(Event, Keys)>, error: ApiError) {
    if let ApiError::Internal(cause) = &error {
        tracing::error!(error = format!("{cause:#}"), attempt = %attempt_id, "webhook processing failed");
    }
    let event_name = match &parsed {
        Some((event, _)) => event.name.as_str().to_string(),
        None => payload::peek_event(&d.raw),
    };
    let mut row = attempt_row(
        &d,
        &attempt_id,
        &event_name,
        parsed.as_ref().map(|(_, k)| k.dedupe.as_str()),
    );
    row.status = status_of(&error);
    row.http_status = error.status().as_u16();
    row.error = log_message(&error);
    let action = match &parsed {
        Some((event, _)) => format!("{}{}", actions::WEBHOOK_PREFIX, event.name.as_str()),
        None => actions::WEBHOOK_REJECTED.to_string(),
    };
    let mut details = json!({ "error": row.error, "status": row.status.as_str(), "httpStatus": row.http_status });
    if let ApiError::InsufficientFunds {
        required, available, ..
    } = &error
    {
        details["required"] = json!(required.to_string());
        details["available"] = json!(available.to_string());
    }
    let who = parsed.as_ref().map(|(event, _)| event.action.client());
    let transaction_id = parsed.as_ref().and_then(|(_, k)| k.transaction_id.clone());
    let recorded = db
        .write(move |tx| {
            // Best effort: a failure still names its client when the event identifies one.
            let mut row = row.clone();
            row.client_id = who
                .as_ref()
                .and_then(|w| effects::find_client(tx, w).ok().flatten())
                .map(|c| c.id);
            let target = target_of(row.client_id.as_deref(), &row.id);
            let ctx = Ctx {
                attempt_id: &row.id,
                ip: &d.ip,
                secret: d.secret,
                rerun_by: d.rerun.as_ref().map(|r| r.by.as_str()),
                event: parsed.as_ref().map(|(event, _)| event),
            };
            let entry = ctx
                .audit(&action, target)
                .failed()
                .detail("transactionId", transaction_id.clone())
                .detail("failure", details.clone());
            audit::append(tx, &entry)?;
            finish(tx, row, &d)
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, attempt = %attempt_id, "could not record a failed webhook attempt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text hashed for an event other than a money movement is its `data` with every
    /// object's keys sorted: the text the CRM hashed before serde_json kept the order sent, so a
    /// retry of an event recorded before that is a duplicate, and so is one that reorders keys.
    #[test]
    fn the_content_of_a_non_money_event_does_not_depend_on_key_order() {
        let sent = [
            br#"{"event":"kyc.updated","timestamp":"2025-10-13T19:00:00Z",
                 "data":{"kycStatus":"approved","email":"a@example.com","extra":{"z":1,"a":[{"y":2,"b":3}]}}}"#
                .as_slice(),
            br#"{"data":{"extra":{"a":[{"b":3,"y":2}],"z":1},"email":"a@example.com","kycStatus":"approved"},
                 "timestamp":"2025-10-14T08:00:00Z","event":"kyc.updated"}"#,
        ];
        for raw in sent {
            let event = super::super::payload::parse(raw).unwrap();
            assert_eq!(
                content_of(&event),
                "kyc.updated\n{\"email\":\"a@example.com\",\"extra\":{\"a\":[{\"b\":3,\"y\":2}],\"z\":1},\"kycStatus\":\"approved\"}"
            );
        }
    }
}
