//! The append-only, hash-chained audit log (guide, "Audit Logging").
//!
//! Each row's `hash` is SHA-256 over the previous row's hash and this row's content, so editing
//! or deleting any row breaks every hash after it; `crm verify` walks the chain.

use crate::domain::new_uuid;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{now, text_column, StoreResult};

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
    /// Unverified webhook attempts from one address beyond 60 a minute: answered 429 and kept out
    /// of the attempt log; at most one entry per address and minute, with `unrecordedBefore`.
    pub const WEBHOOK_RATE_LIMITED: &str = "webhook.rate_limited";
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
    pub const LOGOUT: &str = "auth.logout";
    /// `service.<operation>` for each service API call, e.g. `service.get_client`.
    pub const SERVICE_PREFIX: &str = "service.";
    pub const SERVICE_UNAUTHORIZED: &str = "service.unauthorized";
    /// A staff API request refused for its token: none, not valid, or a session that has ended
    /// (at most 10 entries per address and minute).
    pub const STAFF_UNAUTHORIZED: &str = "auth.unauthorized";
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
    let stretch = walk_chain(conn, i64::MIN, i64::MAX, |_| {})?;
    Ok(stitch(&[stretch]))
}

/// What one stretch of the chain holds, so stretches walked in parallel can be joined.
#[derive(Debug)]
pub enum Stretch {
    Empty,
    Rows {
        first_seq: i64,
        first_prev: String,
        last_seq: i64,
        last_hash: String,
    },
    /// The first broken link inside the stretch.
    Broken(String),
}

/// A row as [`walk_chain`] passes it on, its text as stored.
pub struct Walked<'a> {
    pub seq: i64,
    pub target: &'a str,
    pub details: &'a str,
}

/// Walks the rows with `from <= seq <= to`: each row's hash must be that of its content and the
/// hash before it, each row must name the hash of the row before it, and no seq may be missing.
/// Hashes the stored text itself, without decoding anything. `each` sees every row on the way,
/// for checks that need one pass over the log too.
pub fn walk_chain(conn: &Connection, from: i64, to: i64, mut each: impl FnMut(Walked)) -> StoreResult<Stretch> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, at, actor, action, target, outcome, ip, details, prev_hash, hash
         FROM audit_log WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query([from, to])?;
    let mut first: Option<(i64, String)> = None;
    let mut last: Option<(i64, String)> = None;
    while let Some(r) = rows.next()? {
        let text = |i: usize| text_column(r, i);
        let seq: i64 = r.get(0)?;
        let (prev_hash, hash) = (text(9)?, text(10)?);
        each(Walked {
            seq,
            target: text(5)?,
            details: text(8)?,
        });
        // The first row's link is checked by `stitch`, which knows the stretch before.
        if let Some((last_seq, last_hash)) = &last {
            if let Some(why) = broken_link(Some((*last_seq, last_hash)), seq, prev_hash) {
                return Ok(Stretch::Broken(why));
            }
        }
        let recomputed = chain_hash(
            prev_hash,
            text(1)?,
            text(2)?,
            text(3)?,
            text(4)?,
            text(5)?,
            text(6)?,
            text(7)?,
            text(8)?,
        );
        if recomputed != hash {
            return Ok(Stretch::Broken(format!(
                "audit row {seq} ({}) was altered after it was written",
                text(1)?
            )));
        }
        if first.is_none() {
            first = Some((seq, prev_hash.to_string()));
        }
        last = Some((seq, hash.to_string()));
    }
    Ok(match (first, last) {
        (Some((first_seq, first_prev)), Some((last_seq, last_hash))) => Stretch::Rows {
            first_seq,
            first_prev,
            last_seq,
            last_hash,
        },
        _ => Stretch::Empty,
    })
}

/// What is wrong between the row before (its seq and hash; `None` before the first row) and row
/// `seq`, which names `prev_hash` as the hash before it.
fn broken_link(before: Option<(i64, &str)>, seq: i64, prev_hash: &str) -> Option<String> {
    match before {
        Some((before_seq, _)) if seq != before_seq + 1 => Some(format!(
            "audit row {} is missing (next row found is {seq})",
            before_seq + 1
        )),
        _ if prev_hash != before.map_or(GENESIS, |(_, hash)| hash) => {
            Some(format!("audit row {seq} does not follow the row before it"))
        }
        _ => None,
    }
}

/// Joins consecutive stretches into the whole chain's verdict: the first
/// broken link, in chain order, or `None` if the chain is intact.
pub fn stitch(stretches: &[Stretch]) -> Option<String> {
    let mut before: Option<(i64, &str)> = None;
    for stretch in stretches {
        match stretch {
            Stretch::Broken(why) => return Some(why.clone()),
            // Rows missing here are reported by the next stretch that has rows.
            Stretch::Empty => {}
            Stretch::Rows {
                first_seq,
                first_prev,
                last_seq,
                last_hash,
            } => {
                if let Some(why) = broken_link(before, *first_seq, first_prev) {
                    return Some(why);
                }
                before = Some((*last_seq, last_hash));
            }
        }
    }
    None
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
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    // A target's rows come from the CRM's own index of them (which binds the target as `?1`).
    let mut sql = match &q.target {
        Some(t) => {
            args.push(t.clone().into());
            format!("SELECT * FROM ({}) WHERE 1=1", super::audit_index::ROWS_OF_TARGET)
        }
        None => String::from("SELECT * FROM audit_log WHERE 1=1"),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    /// A chain of ten entries; `damage` runs with the append-only triggers dropped.
    fn chain_then(damage: &str) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write_sync(|tx| {
            for i in 0..10 {
                append(tx, &Audit::new("cli", "test", format!("t:{i}")).detail("i", i))?;
            }
            tx.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")?;
            tx.execute_batch(damage)?;
            Ok(())
        })
        .unwrap();
        (dir, db)
    }

    fn verdict(db: &Db, bounds: &[(i64, i64)]) -> Option<String> {
        db.read_sync(|conn| {
            let stretches = bounds
                .iter()
                .map(|&(from, to)| walk_chain(conn, from, to, |_| {}))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(stitch(&stretches))
        })
        .unwrap()
    }

    const SPLITS: [&[(i64, i64)]; 3] = [&[(1, 10)], &[(1, 5), (6, 10)], &[(1, 3), (4, 6), (7, 10)]];

    #[test]
    fn an_intact_chain_passes_however_it_is_split() {
        let (_dir, db) = chain_then("");
        for split in SPLITS {
            assert_eq!(verdict(&db, split), None, "{split:?}");
        }
        assert_eq!(db.read_sync(verify_chain).unwrap(), None);
    }

    #[test]
    fn damage_is_found_wherever_the_stretches_begin_and_end() {
        let cases = [
            (
                "DELETE FROM audit_log WHERE seq = 6",
                "audit row 6 is missing (next row found is 7)",
            ),
            (
                "DELETE FROM audit_log WHERE seq BETWEEN 4 AND 6",
                "audit row 4 is missing (next row found is 7)",
            ),
            (
                "DELETE FROM audit_log WHERE seq = 1",
                "audit row 2 does not follow the row before it",
            ),
        ];
        for (damage, want) in cases {
            let (_dir, db) = chain_then(damage);
            for split in SPLITS {
                assert_eq!(verdict(&db, split).as_deref(), Some(want), "{damage} / {split:?}");
            }
        }
        // A stretch cannot check its first row's link, so it finds that row's hash wrong instead.
        let (_dir, db) = chain_then("UPDATE audit_log SET prev_hash = hash WHERE seq = 4");
        for split in SPLITS {
            let found = verdict(&db, split).unwrap();
            assert!(found.starts_with("audit row 4 "), "{split:?}: {found}");
        }
        let (_dir, db) = chain_then("UPDATE audit_log SET details = '{\"i\":80}' WHERE seq = 8");
        for split in SPLITS {
            let found = verdict(&db, split).unwrap();
            assert!(
                found.starts_with("audit row 8 (") && found.ends_with("was altered after it was written"),
                "{found}"
            );
        }
    }
}
