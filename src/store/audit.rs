//! The append-only, hash-chained audit log (guide, "Audit Logging").
//!
//! Each row's `hash` is SHA-256 over the previous row's hash and this row's content, so editing
//! or deleting any row breaks every hash after it; `crm verify` walks the chain.

use crate::domain::new_uuid;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{now, StoreResult};

/// Who did something, as written in `actor`.
pub mod actors {
    pub const WEBHOOK: &str = "platform:webhook";
    pub const SERVICE: &str = "platform:service";
    pub const ANONYMOUS: &str = "anonymous";
    pub const SYSTEM: &str = "system";
    pub const CLI: &str = "cli";
    // Staff appear as "staff:<email>" (see `http::auth::StaffSession::actor`).
}

/// What happened, as written in `action`. One name per kind of event, shared by every surface,
/// so the activity timeline and the audit filters can rely on them.
pub mod actions {
    /// `webhook.<event>` for each processed or rejected webhook, e.g. `webhook.deposit.completed`.
    pub const WEBHOOK_PREFIX: &str = "webhook.";
    pub const WEBHOOK_UNAUTHORIZED: &str = "webhook.unauthorized";
    pub const WEBHOOK_REPROCESS: &str = "webhook.reprocess";
    pub const CLIENT_REGISTER: &str = "client.register";
    pub const CLIENT_UPDATE: &str = "client.update";
    /// Every KYC change, whoever made it; target `client:<id>`, details `{from, to, notes}`.
    pub const KYC_UPDATE: &str = "client.kyc_update";
    pub const NOTE_ADD: &str = "client.note_add";
    pub const SUBACCOUNT_OPEN: &str = "account.open_subaccount";
    pub const BALANCE_DEPOSIT: &str = "account.deposit";
    pub const BALANCE_WITHDRAWAL: &str = "account.withdrawal";
    pub const BALANCE_ADJUST: &str = "account.adjust_balance";
    pub const LEVERAGE_CHANGE: &str = "account.leverage";
    pub const IMPERSONATE: &str = "sso.impersonate";
    pub const LOGIN: &str = "auth.login";
    pub const PASSWORD_CHANGE: &str = "auth.change_password";
    /// `service.<operation>` for each service API call, e.g. `service.get_client`.
    pub const SERVICE_PREFIX: &str = "service.";
    pub const SERVICE_UNAUTHORIZED: &str = "service.unauthorized";
    /// A service caller refused for exceeding the rate limit (at most one entry per caller per minute).
    pub const SERVICE_RATE_LIMITED: &str = "service.rate_limited";
    /// Staff management, by an admin on the staff API or by the `crm user` command.
    pub const STAFF_CREATE: &str = "staff.create";
    /// A role change or (re-)enabling; details `{role: {from, to}, disabled: {from, to}}`.
    pub const STAFF_UPDATE: &str = "staff.update";
    pub const STAFF_RESET_PASSWORD: &str = "staff.reset_password";
    /// A webhook whose event could not be read (malformed JSON, unknown event, body too large).
    pub const WEBHOOK_REJECTED: &str = "webhook.rejected";
    pub const CURRENCY_CHANGE: &str = "account.currency";
}

/// Targets are written `client:<uuid>`, `account:<uuid>`, `staff:<email>`, `webhook:<attempt id>`.
pub fn target(kind: &str, id: impl std::fmt::Display) -> String {
    format!("{kind}:{id}")
}

/// The hash that precedes the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// An entry about to be written. Built by the caller, appended in the caller's transaction.
#[derive(Debug, Clone)]
pub struct Audit {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub ip: String,
    pub details: serde_json::Value,
}

impl Audit {
    pub fn new(actor: impl Into<String>, action: impl Into<String>, target: impl Into<String>) -> Audit {
        Audit {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome: Outcome::Success,
            ip: String::new(),
            details: serde_json::json!({}),
        }
    }

    pub fn failed(mut self) -> Audit {
        self.outcome = Outcome::Failure;
        self
    }

    pub fn ip(mut self, ip: impl Into<String>) -> Audit {
        self.ip = ip.into();
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Audit {
        self.details = details;
        self
    }

    /// Adds one key to the details object.
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Audit {
        if let Some(map) = self.details.as_object_mut() {
            map.insert(key.to_string(), value.into());
        }
        self
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub ip: String,
    pub details: serde_json::Value,
    #[serde(skip)]
    pub prev_hash: String,
    #[serde(skip)]
    pub hash: String,
}

impl AuditRow {
    fn from_row(r: &Row) -> rusqlite::Result<AuditRow> {
        let details: String = r.get("details")?;
        Ok(AuditRow {
            seq: r.get("seq")?,
            id: r.get("id")?,
            at: r.get("at")?,
            actor: r.get("actor")?,
            action: r.get("action")?,
            target: r.get("target")?,
            outcome: r.get("outcome")?,
            ip: r.get("ip")?,
            details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
            prev_hash: r.get("prev_hash")?,
            hash: r.get("hash")?,
        })
    }

    fn details_text(&self) -> String {
        match &self.details {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn chain_hash(
    prev: &str,
    id: &str,
    at: &str,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    ip: &str,
    details: &str,
) -> String {
    let mut h = Sha256::new();
    // Length-prefixed fields, so no two different rows can serialise to the same bytes.
    for field in [prev, id, at, actor, action, target, outcome, ip, details] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends one entry. Call it inside the write transaction that makes the change it records,
/// which also serialises appends so the chain has no forks.
pub fn append(conn: &Connection, entry: &Audit) -> StoreResult<String> {
    let prev: String = conn
        .prepare_cached("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| GENESIS.to_string());
    let id = new_uuid().to_string();
    let at = now();
    let details = entry.details.to_string();
    let outcome = entry.outcome.as_str();
    let hash = chain_hash(
        &prev,
        &id,
        &at,
        &entry.actor,
        &entry.action,
        &entry.target,
        outcome,
        &entry.ip,
        &details,
    );
    conn.prepare_cached(
        "INSERT INTO audit_log (id, at, actor, action, target, outcome, ip, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        id,
        at,
        entry.actor,
        entry.action,
        entry.target,
        outcome,
        entry.ip,
        details,
        prev,
        hash
    ])?;
    Ok(id)
}

/// Walks the whole chain. Returns a description of the first broken link, if any.
pub fn verify_chain(conn: &Connection) -> StoreResult<Option<String>> {
    let mut stmt = conn.prepare_cached("SELECT * FROM audit_log ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut expected_prev = GENESIS.to_string();
    let mut expected_seq: Option<i64> = None;
    while let Some(r) = rows.next()? {
        let row = AuditRow::from_row(r)?;
        if let Some(seq) = expected_seq.filter(|s| *s != row.seq) {
            return Ok(Some(format!(
                "audit row {seq} is missing (next row found is {})",
                row.seq
            )));
        }
        if row.prev_hash != expected_prev {
            return Ok(Some(format!("audit row {} does not follow the row before it", row.seq)));
        }
        let recomputed = chain_hash(
            &row.prev_hash,
            &row.id,
            &row.at,
            &row.actor,
            &row.action,
            &row.target,
            &row.outcome,
            &row.ip,
            &row.details_text(),
        );
        if recomputed != row.hash {
            return Ok(Some(format!(
                "audit row {} ({}) was altered after it was written",
                row.seq, row.id
            )));
        }
        expected_prev = row.hash;
        expected_seq = Some(row.seq + 1);
    }
    Ok(None)
}

/// Filters for reading the log; every field optional. Newest first, paged by `before` (a seq).
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub target: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

pub fn query(conn: &Connection, q: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
    let mut sql = String::from("SELECT * FROM audit_log WHERE 1=1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut add = |clause: &str, v: rusqlite::types::Value| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(a) = &q.actor {
        add(" AND actor = ?", a.clone().into());
    }
    if let Some(a) = &q.action {
        add(" AND action = ?", a.clone().into());
    }
    if let Some(o) = &q.outcome {
        add(" AND outcome = ?", o.clone().into());
    }
    if let Some(t) = &q.target {
        add(" AND target = ?", t.clone().into());
    }
    if let Some(f) = &q.from {
        add(" AND at >= ?", f.clone().into());
    }
    if let Some(t) = &q.to {
        add(" AND at <= ?", t.clone().into());
    }
    if let Some(b) = q.before {
        add(" AND seq < ?", b.into());
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", q.limit.clamp(1, 1000)));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), AuditRow::from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
