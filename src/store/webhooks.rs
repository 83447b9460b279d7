//! Webhook attempts (`webhook_events`: every delivery, rejected ones too) and the exactly-once
//! guard (`webhook_claims`: one row per key of a webhook whose effect is on the books).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::{now, StoreError, StoreResult};

/// How much of an unverified body is kept: enough to diagnose a misconfigured signer, too little
/// for anonymous senders to fill the disk.
pub const UNVERIFIED_BODY_BYTES: usize = 4096;
/// How many unverified attempts are kept; older ones are pruned as new ones arrive.
pub const UNVERIFIED_ROWS_KEPT: i64 = 10_000;
/// `signature` of an attempt that no configured secret verified.
pub const UNVERIFIED: &str = "invalid";

/// What became of an attempt (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Processed,
    Duplicate,
    Rejected,
    Unauthorized,
    Conflict,
    Failed,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Processed,
        Status::Duplicate,
        Status::Rejected,
        Status::Unauthorized,
        Status::Conflict,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Processed => "processed",
            Status::Duplicate => "duplicate",
            Status::Rejected => "rejected",
            Status::Unauthorized => "unauthorized",
            Status::Conflict => "conflict",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One attempt about to be recorded.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: String,
    pub received_at: String,
    pub event: String,
    pub dedupe_key: Option<String>,
    /// `current`, `previous` or [`UNVERIFIED`].
    pub signature: String,
    pub raw_body: Vec<u8>,
    pub body_size: i64,
    pub body_truncated: bool,
    pub status: Status,
    pub http_status: u16,
    pub error: String,
    pub client_id: Option<String>,
    pub ip: String,
    pub duration_ms: i64,
    pub reprocess_of: Option<String>,
    pub reprocessed_by: Option<String>,
}

/// A recorded attempt as the admin log shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub received_at: String,
    pub event: String,
    pub dedupe_key: Option<String>,
    pub signature: String,
    #[serde(skip)]
    pub raw_body: Vec<u8>,
    pub body_size: i64,
    pub body_truncated: bool,
    pub status: String,
    pub http_status: u16,
    pub error: String,
    pub client_id: Option<String>,
    pub ip: String,
    pub duration_ms: i64,
    pub reprocess_of: Option<String>,
    pub reprocessed_at: Option<String>,
    pub reprocessed_by: Option<String>,
}

impl Attempt {
    fn from_row(r: &Row) -> rusqlite::Result<Attempt> {
        Ok(Attempt {
            seq: r.get("seq")?,
            id: r.get("id")?,
            received_at: r.get("received_at")?,
            event: r.get("event")?,
            dedupe_key: r.get("dedupe_key")?,
            signature: r.get("signature")?,
            raw_body: r.get("raw_body")?,
            body_size: r.get("body_size")?,
            body_truncated: r.get("body_truncated")?,
            status: r.get("status")?,
            http_status: r.get("http_status")?,
            error: r.get("error")?,
            client_id: r.get("client_id")?,
            ip: r.get("ip")?,
            duration_ms: r.get("duration_ms")?,
            reprocess_of: r.get("reprocess_of")?,
            reprocessed_at: r.get("reprocessed_at")?,
            reprocessed_by: r.get("reprocessed_by")?,
        })
    }
}

pub fn insert(conn: &Connection, a: &NewAttempt) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO webhook_events (id, received_at, event, dedupe_key, signature, raw_body, body_size,
                body_truncated, status, http_status, error, client_id, ip, duration_ms, reprocess_of,
                reprocessed_at, reprocessed_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                 CASE WHEN ?16 IS NULL THEN NULL ELSE ?2 END, ?16)",
    )?
    .execute(params![
        a.id,
        a.received_at,
        a.event,
        a.dedupe_key,
        a.signature,
        a.raw_body,
        a.body_size,
        a.body_truncated,
        a.status.as_str(),
        a.http_status,
        a.error,
        a.client_id,
        a.ip,
        a.duration_ms,
        a.reprocess_of,
        a.reprocessed_by,
    ])?;
    Ok(())
}

/// Unverified attempts received since `since` (for rate-limiting their audit entries).
pub fn unverified_since(conn: &Connection, since: &str) -> StoreResult<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM webhook_events WHERE signature = ?1 AND received_at >= ?2")?
        .query_row(params![UNVERIFIED, since], |r| r.get(0))?)
}

/// Deletes the oldest unverified attempts beyond the newest `keep`. Verified attempts are never
/// pruned: they are the record of what the Trading Platform asked for.
pub fn prune_unverified(conn: &Connection, keep: i64) -> StoreResult<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM webhook_events WHERE signature = ?1 AND received_at < (
             SELECT received_at FROM webhook_events WHERE signature = ?1
             ORDER BY received_at DESC LIMIT 1 OFFSET ?2)",
        )?
        .execute(params![UNVERIFIED, keep - 1])?)
}

/// The claim of an earlier delivery that put the same webhook on the books.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The key both deliveries claim: `id:<event id>`, `tx:<transactionId>` or `body:<sha256>`.
    pub claim: String,
    pub content_hash: String,
    pub event_id: String,
    pub client_id: Option<String>,
}

/// The earlier claim of any of these keys, checked in order: one primary-key probe each.
pub fn find_processed(conn: &Connection, claims: &[String]) -> StoreResult<Option<Processed>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.claim, c.content_hash, c.event_id, e.client_id
         FROM webhook_claims c JOIN webhook_events e ON e.id = c.event_id
         WHERE c.claim = ?1",
    )?;
    for claim in claims {
        let found = stmt
            .query_row([claim], |r| {
                Ok(Processed {
                    claim: r.get(0)?,
                    content_hash: r.get(1)?,
                    event_id: r.get(2)?,
                    client_id: r.get(3)?,
                })
            })
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Puts a webhook on the books under each of its keys. Call it in the transaction that applies
/// its effect, after [`find_processed`] found none of them: the primary key makes a second claim
/// of a key fail, never succeed.
pub fn mark_processed(conn: &Connection, claims: &[String], content_hash: &str, event_id: &str) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO webhook_claims (claim, content_hash, event_id, processed_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let at = now();
    for claim in claims {
        stmt.execute(params![claim, content_hash, event_id, at])?;
    }
    Ok(())
}

/// Notes on the original attempt that staff re-ran it.
pub fn mark_reprocessed(conn: &Connection, id: &str, by: &str) -> StoreResult<()> {
    conn.prepare_cached("UPDATE webhook_events SET reprocessed_at = ?2, reprocessed_by = ?3 WHERE id = ?1")?
        .execute(params![id, now(), by])?;
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> StoreResult<Attempt> {
    conn.prepare_cached("SELECT * FROM webhook_events WHERE id = ?1")?
        .query_row([id], Attempt::from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound("Webhook attempt not found".into()))
}

/// Filters for the admin log; every field optional. Newest first, paged by `before` (a seq).
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub status: Option<Status>,
    pub event: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

pub fn list(conn: &Connection, q: &Query) -> StoreResult<Vec<Attempt>> {
    let mut stmt = conn.prepare_cached(
        "SELECT * FROM webhook_events
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR event = ?2)
           AND (?3 IS NULL OR received_at >= ?3) AND (?4 IS NULL OR received_at <= ?4)
           AND (?5 IS NULL OR seq < ?5)
         ORDER BY seq DESC LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![q.status.map(Status::as_str), q.event, q.from, q.to, q.before, q.limit],
        Attempt::from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    fn attempt(signature: &str, received_at: String) -> NewAttempt {
        NewAttempt {
            id: uuid::Uuid::new_v4().to_string(),
            received_at,
            event: String::new(),
            dedupe_key: None,
            signature: signature.into(),
            raw_body: b"{}".to_vec(),
            body_size: 2,
            body_truncated: false,
            status: if signature == UNVERIFIED {
                Status::Unauthorized
            } else {
                Status::Rejected
            },
            http_status: 401,
            error: String::new(),
            client_id: None,
            ip: String::new(),
            duration_ms: 0,
            reprocess_of: None,
            reprocessed_by: None,
        }
    }

    #[test]
    fn pruning_keeps_the_newest_unverified_attempts_and_every_verified_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write_sync(|tx| {
            for i in 0..30 {
                let at = format!("2025-10-13T19:00:{i:02}.000Z");
                insert(tx, &attempt(UNVERIFIED, at.clone()))?;
                insert(tx, &attempt("current", at))?;
            }
            assert_eq!(prune_unverified(tx, 10)?, 20);
            assert_eq!(prune_unverified(tx, 10)?, 0, "pruning again removes nothing");
            Ok(())
        })
        .unwrap();
        let (unverified, verified, oldest): (i64, i64, String) = db
            .read_sync(|c| {
                Ok(c.query_row(
                    "SELECT SUM(signature = 'invalid'), SUM(signature = 'current'),
                            MIN(CASE WHEN signature = 'invalid' THEN received_at END)
                     FROM webhook_events",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?)
            })
            .unwrap();
        assert_eq!((unverified, verified), (10, 30));
        assert_eq!(oldest, "2025-10-13T19:00:20.000Z");
    }
}
