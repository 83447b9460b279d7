//! A client's activity timeline: ledger entries, notes, KYC changes, account changes (subaccounts
//! opened, leverage and currency changed), webhook events and SSO sessions, merged newest first
//! (guide, "Get Client Activity").
//!
//! Each source keeps its own table; the timeline is a read-only view over them, paged by a
//! cursor that names the last item shown, so a page never repeats or skips an item even while
//! new activity arrives.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Value};

use super::audit::{actions, target};
use super::{StoreError, StoreResult};
use crate::domain::{Invalid, Money};

/// One entry of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub at: String,
    pub summary: String,
    pub details: Value,
}

/// A page of the timeline and the cursor of the next (older) page, if there is one.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub activity: Vec<Activity>,
    pub next_cursor: Option<String>,
}

/// Where a page starts: strictly older than this item. Opaque to clients (hex of its parts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    at: String,
    kind: String,
    key: i64,
}

impl Cursor {
    pub fn parse(raw: &str) -> Result<Cursor, Invalid> {
        let bad = || Invalid::new("before: not a cursor returned by this endpoint (use nextCursor)");
        let bytes = hex::decode(raw.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(3, '|');
        let (at, kind, key) = (parts.next(), parts.next(), parts.next());
        let key: i64 = key.and_then(|k| k.parse().ok()).ok_or_else(bad)?;
        match (at, kind) {
            (Some(at), Some(kind)) if !at.is_empty() && KINDS.contains(&kind) => Ok(Cursor {
                at: at.to_string(),
                kind: kind.to_string(),
                key,
            }),
            _ => Err(bad()),
        }
    }

    pub fn encode(&self) -> String {
        hex::encode(format!("{}|{}|{}", self.at, self.kind, self.key))
    }
}

const KINDS: [&str; 6] = ["ledger", "note", "kyc", "account", "webhook", "sso"];

/// Every source as `(type, at, key)`; `key` orders items of one source within one timestamp.
/// `?1` is the client id, `?2` its audit target. The audit actions are written out, as
/// [`super::audit::actions`] says, so that SQLite can use the partial indexes of those rows
/// (`audit_kyc_by_target`, and `audit_account_changes_by_target` with the same list).
const MERGED: &str = "
    SELECT 'ledger' AS kind, l.created_at AS at, l.seq AS key
      FROM ledger_entries l JOIN accounts a ON a.id = l.account_id WHERE a.client_id = ?1
    UNION ALL SELECT 'note', created_at, rowid FROM notes WHERE client_id = ?1
    UNION ALL SELECT 'kyc', at, seq FROM audit_log WHERE target = ?2 AND action = 'client.kyc_update'
    UNION ALL SELECT 'account', at, seq FROM audit_log
      WHERE target = ?2
        AND (action = 'account.open_subaccount' OR action = 'account.leverage' OR action = 'account.currency')
        AND outcome = 'success'
        AND (action = 'account.open_subaccount' OR json_extract(details, '$.from') IS NOT json_extract(details, '$.to'))
    UNION ALL SELECT 'account', l.at, l.seq FROM accounts a JOIN audit_log l ON l.target = 'account:' || a.id
      WHERE a.client_id = ?1
        AND (l.action = 'account.open_subaccount' OR l.action = 'account.leverage' OR l.action = 'account.currency')
        AND l.outcome = 'success'
        AND (l.action = 'account.open_subaccount' OR json_extract(l.details, '$.from') IS NOT json_extract(l.details, '$.to'))
    UNION ALL SELECT 'webhook', received_at, seq FROM webhook_events WHERE client_id = ?1
    UNION ALL SELECT 'sso', issued_at, rowid FROM sso_sessions WHERE client_id = ?1";

/// Up to `limit` items older than `before` (newest first), and the cursor for the next page.
pub fn timeline(conn: &Connection, client_id: &str, before: Option<&Cursor>, limit: u32) -> StoreResult<Page> {
    let limit = limit.clamp(1, 500);
    let sql = format!(
        "SELECT kind, at, key FROM ({MERGED})
         WHERE ?3 IS NULL OR (at, kind, key) < (?3, ?4, ?5)
         ORDER BY at DESC, kind DESC, key DESC LIMIT ?6"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        params![
            client_id,
            target("client", client_id),
            before.map(|c| &c.at),
            before.map(|c| &c.kind),
            before.map(|c| c.key),
            i64::from(limit) + 1,
        ],
        |r| {
            Ok(Cursor {
                kind: r.get(0)?,
                at: r.get(1)?,
                key: r.get(2)?,
            })
        },
    )?;
    let mut found: Vec<Cursor> = rows.collect::<Result<_, _>>()?;
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let next_cursor = more.then(|| found.last().map(Cursor::encode)).flatten();
    let activity = found.iter().map(|c| describe(conn, c)).collect::<StoreResult<_>>()?;
    Ok(Page { activity, next_cursor })
}

fn describe(conn: &Connection, item: &Cursor) -> StoreResult<Activity> {
    let (kind, (summary, details)) = match item.kind.as_str() {
        "ledger" => ("ledger", ledger(conn, item.key)?),
        "note" => ("note", note(conn, item.key)?),
        "kyc" => ("kyc", kyc(conn, item.key)?),
        "account" => ("account", account_change(conn, item.key)?),
        "webhook" => ("webhook", webhook(conn, item.key)?),
        _ => ("sso", sso(conn, item.key)?),
    };
    Ok(Activity {
        kind,
        at: item.at.clone(),
        summary,
        details,
    })
}

fn money(atoms: i64) -> StoreResult<Money> {
    Ok(Money::from_atoms(atoms)?)
}

fn vanished() -> StoreError {
    StoreError::NotFound("an activity item disappeared while it was being read".into())
}

fn ledger(conn: &Connection, seq: i64) -> StoreResult<(String, Value)> {
    let row = conn
        .prepare_cached(
            "SELECT l.id, l.account_id, l.fund_type, l.amount, l.balance_after, l.reason, l.notes, l.actor,
                    l.external_ref, a.currency
             FROM ledger_entries l JOIN accounts a ON a.id = l.account_id WHERE l.seq = ?1",
        )?
        .query_row([seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, String>(9)?,
            ))
        })
        .optional()?
        .ok_or_else(vanished)?;
    let (id, account_id, fund, amount, after, reason, notes, actor, external_ref, currency) = row;
    let (amount, after) = (money(amount)?, money(after)?);
    let what = match reason.as_str() {
        "deposit" => "Deposit",
        "withdrawal" => "Withdrawal",
        _ => "Balance adjustment",
    };
    // The word says which way the money went: "Withdrawal of -10.10" would read as money back.
    let size = if reason == "withdrawal" {
        money(-amount.atoms())?
    } else {
        amount
    };
    let summary = format!("{what} of {size} {currency} ({fund} funds), balance {after}");
    let details = json!({
        "entryId": id, "accountId": account_id, "fundType": fund, "amount": amount,
        "balanceAfter": after, "currency": currency, "reason": reason, "notes": notes,
        "actor": actor, "externalRef": external_ref,
    });
    Ok((summary, details))
}

fn note(conn: &Connection, rowid: i64) -> StoreResult<(String, Value)> {
    let (id, comment, author): (String, String, String) = conn
        .prepare_cached("SELECT id, comment, author FROM notes WHERE rowid = ?1")?
        .query_row([rowid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .ok_or_else(vanished)?;
    let mut preview: String = comment.chars().take(80).collect();
    if comment.chars().count() > 80 {
        preview.push('…');
    }
    let summary = format!("Note by {author}: {preview}");
    Ok((summary, json!({ "id": id, "comment": comment, "author": author })))
}

/// The audit entry at `seq` (action, actor, target, details), for the items the timeline takes
/// from the audit log.
fn audit_entry(conn: &Connection, seq: i64) -> StoreResult<(String, String, String, Value)> {
    let (action, actor, target, details): (String, String, String, String) = conn
        .prepare_cached("SELECT action, actor, target, details FROM audit_log WHERE seq = ?1")?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?
        .ok_or_else(vanished)?;
    let details = serde_json::from_str(&details).unwrap_or_else(|_| json!({}));
    Ok((action, actor, target, details))
}

/// A detail of an audit entry as a summary writes it: a string or number as it is, else `?`.
fn detail_text(details: &Value, key: &str) -> String {
    match details.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "?".into(),
    }
}

fn kyc(conn: &Connection, seq: i64) -> StoreResult<(String, Value)> {
    let (_, actor, _, details) = audit_entry(conn, seq)?;
    let summary = format!(
        "KYC status changed from {} to {} by {actor}",
        detail_text(&details, "from"),
        detail_text(&details, "to")
    );
    let details = json!({
        "from": details.get("from"), "to": details.get("to"), "notes": details.get("notes"), "actor": actor,
    });
    Ok((summary, details))
}

fn account_change(conn: &Connection, seq: i64) -> StoreResult<(String, Value)> {
    let (action, actor, target, details) = audit_entry(conn, seq)?;
    let field = |k: &str| detail_text(&details, k);
    if action == actions::SUBACCOUNT_OPEN {
        let summary = format!(
            "Subaccount opened ({}, leverage 1:{}) by {actor}",
            field("currency"),
            field("leverage")
        );
        let details = json!({
            "accountId": details.get("accountId"), "parentId": details.get("parentId"),
            "currency": details.get("currency"), "leverage": details.get("leverage"), "actor": actor,
        });
        return Ok((summary, details));
    }
    let account_id = target.strip_prefix("account:").unwrap_or(&target).to_string();
    let (change, summary) = if action == actions::LEVERAGE_CHANGE {
        let summary = format!(
            "Leverage changed from 1:{} to 1:{} by {actor}",
            field("from"),
            field("to")
        );
        ("leverage", summary)
    } else {
        let summary = format!("Currency changed from {} to {} by {actor}", field("from"), field("to"));
        ("currency", summary)
    };
    let details = json!({
        "accountId": account_id, "change": change, "from": details.get("from"), "to": details.get("to"), "actor": actor,
    });
    Ok((summary, details))
}

fn webhook(conn: &Connection, seq: i64) -> StoreResult<(String, Value)> {
    let (id, event, status, http_status, error): (String, String, String, i64, String) = conn
        .prepare_cached("SELECT id, event, status, http_status, error FROM webhook_events WHERE seq = ?1")?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()?
        .ok_or_else(vanished)?;
    let name = if event.is_empty() { "(unknown event)" } else { &event };
    let summary = format!("Webhook {name}: {status}");
    let details = json!({
        "id": id, "event": event, "status": status, "httpStatus": http_status, "error": error,
    });
    Ok((summary, details))
}

fn sso(conn: &Connection, rowid: i64) -> StoreResult<(String, Value)> {
    let (id, staff_email, expires_at): (String, String, String) = conn
        .prepare_cached("SELECT id, staff_email, expires_at FROM sso_sessions WHERE rowid = ?1")?
        .query_row([rowid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .ok_or_else(vanished)?;
    let summary = format!("Impersonated on the Trading Platform by {staff_email}");
    Ok((
        summary,
        json!({ "id": id, "staffEmail": staff_email, "expiresAt": expires_at }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timeline's KYC changes come from their partial index, which a query can use only if
    /// it names the action as the index does.
    #[test]
    fn kyc_and_account_changes_are_found_through_their_own_indexes() {
        assert!(MERGED.contains(&format!("action = '{}'", actions::KYC_UPDATE)));
        let listed = format!(
            "action = '{}' OR action = '{}' OR action = '{}'",
            actions::SUBACCOUNT_OPEN,
            actions::LEVERAGE_CHANGE,
            actions::CURRENCY_CHANGE
        );
        assert!(MERGED.contains(&listed));
        let migration = include_str!("../../migrations/V9__account_changes_index.sql");
        assert!(
            migration.contains(&format!("WHERE {listed};")),
            "the index lists the same actions"
        );
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::Db::open(&dir.path().join("t.db")).unwrap();
        let plan: Vec<String> = db
            .read_sync(|conn| {
                Ok(conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {MERGED}"))?
                    .query_map(["c1", "client:c1"], |r| r.get(3))?
                    .collect::<Result<_, _>>()?)
            })
            .unwrap();
        for index in ["audit_kyc_by_target", "audit_account_changes_by_target"] {
            assert!(
                plan.iter()
                    .any(|step| step.contains(&format!("USING INDEX {index} (target=?)"))),
                "{index}: {plan:?}"
            );
        }
        let through_accounts = plan
            .iter()
            .filter(|s| s.contains("audit_account_changes_by_target"))
            .count();
        assert_eq!(through_accounts, 2, "both account sources use it: {plan:?}");
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = Cursor {
            at: "2025-10-13T19:00:00.000Z".into(),
            kind: "note".into(),
            key: 42,
        };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        for (bad, why) in [
            (String::new(), "empty"),
            ("zz".into(), "not hex"),
            (hex::encode("2025|note"), "no key"),
            (hex::encode("2025|note|x"), "key is not a number"),
            (hex::encode("2025|audit|1"), "unknown type"),
            (hex::encode("|note|1"), "no time"),
        ] {
            assert!(Cursor::parse(&bad).is_err(), "{why}");
        }
    }
}
