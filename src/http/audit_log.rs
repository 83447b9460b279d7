//! Reading the audit log (guide, "Audit Logging": CRM Dashboard → Audit Logs): `GET /api/audit`
//! as JSON pages and `GET /api/audit.csv` as a download, with the same filters. Admins and
//! managers only: the log names every client, amount and staff address, which agents do not need.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::{header, Response, StatusCode};
use warp::{Filter, Reply};

use super::auth::{self, StaffSession};
use super::error::{respond, ApiError};
use super::query::{self, Params};
use super::{with_state, AppState};
use crate::store::audit::{self, AuditQuery, AuditRow};

/// Rows the store returns per query; the CSV export pages through the log with it.
const CHUNK: u32 = 1000;
const MAX_FILTER_CHARS: usize = 300;

type Session = Result<StaffSession, ApiError>;
type QueryParams = Result<Params, ApiError>;

pub fn routes(state: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let s = || with_state(state.clone()).and(auth::staff(state.clone()));
    let json = warp::path!("api" / "audit")
        .and(warp::get())
        .and(s())
        .and(query::params())
        .then(|st, se, q| async move { respond(list(st, se, q).await) });
    let csv = warp::path!("api" / "audit.csv")
        .and(warp::get())
        .and(s())
        .and(query::params())
        .then(|st, se, q| async move { respond(export(st, se, q).await) });
    json.or(csv).unify().boxed()
}

/// `{"entries": [...], "nextCursor"}`, newest first.
async fn list(state: AppState, session: Session, params: QueryParams) -> Result<impl Reply, ApiError> {
    session?.require_log_rights()?;
    let params = params?;
    let limit = query::limit(&params, 100, 500)?;
    let mut q = filters(&params)?;
    q.limit = limit + 1;
    let rows = state.db.read(move |conn| audit::query(conn, &q)).await?;
    let (entries, more) = query::page(rows, limit);
    let next = more.then(|| entries.last().map(|e| e.seq.to_string())).flatten();
    Ok(warp::reply::json(&json!({ "entries": entries, "nextCursor": next })))
}

/// The matching rows as CSV, newest first; `limit` (default 10000, at most 100000) caps the rows.
async fn export(state: AppState, session: Session, params: QueryParams) -> Result<impl Reply, ApiError> {
    session?.require_log_rights()?;
    let params = params?;
    let limit = query::limit(&params, 10_000, 100_000)?;
    let q = filters(&params)?;
    let rows = state.db.read(move |conn| read_all(conn, q, limit)).await?;
    let mut out = String::from("id,at,actor,action,target,outcome,ip,details\r\n");
    for r in &rows {
        out.push_str(&csv_row(r));
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .header(header::CONTENT_DISPOSITION, "attachment; filename=\"audit-log.csv\"")
        .body(out)
        .map_err(|e| ApiError::Internal(e.into()))
}

fn read_all(conn: &rusqlite::Connection, mut q: AuditQuery, limit: u32) -> crate::store::StoreResult<Vec<AuditRow>> {
    let mut rows: Vec<AuditRow> = Vec::new();
    while rows.len() < limit as usize {
        q.limit = CHUNK.min(limit - rows.len() as u32);
        let chunk = audit::query(conn, &q)?;
        let done = chunk.len() < q.limit as usize;
        q.before = chunk.last().map(|r| r.seq);
        rows.extend(chunk);
        if done {
            break;
        }
    }
    Ok(rows)
}

/// `actor`, `action`, `target` match exactly; `outcome` is `success` or `failure`; `from` and
/// `to` are RFC 3339 times or dates (a `to` date includes that whole day); `before` is a
/// `nextCursor`.
fn filters(params: &Params) -> Result<AuditQuery, ApiError> {
    query::only(
        params,
        &["actor", "action", "outcome", "target", "from", "to", "before", "limit"],
    )?;
    let exact = |name: &str| -> Result<Option<String>, ApiError> {
        match query::text(params, name) {
            Some(v) if v.chars().count() > MAX_FILTER_CHARS => Err(ApiError::BadRequest(format!(
                "{name} must be at most {MAX_FILTER_CHARS} characters"
            ))),
            v => Ok(v.map(str::to_string)),
        }
    };
    let outcome = match query::text(params, "outcome") {
        None => None,
        Some(o @ ("success" | "failure")) => Some(o.to_string()),
        Some(_) => return Err(ApiError::BadRequest("outcome must be success or failure".into())),
    };
    let before = match query::text(params, "before") {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("before must be a nextCursor from an earlier page".into()))?,
        ),
    };
    Ok(AuditQuery {
        actor: exact("actor")?,
        action: exact("action")?,
        outcome,
        target: exact("target")?,
        from: query::text(params, "from").map(|t| time_bound(t, false)).transpose()?,
        to: query::text(params, "to").map(|t| time_bound(t, true)).transpose()?,
        before,
        limit: CHUNK,
    })
}

/// A filter time in the log's own format (UTC, milliseconds), so text comparison is correct.
fn time_bound(raw: &str, end_of_day: bool) -> Result<String, ApiError> {
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    // A `+hh:mm` offset arrives as a space when the caller did not percent-encode it.
    for candidate in [raw.to_string(), raw.replace(' ', "+")] {
        if let Ok(t) = DateTime::parse_from_rfc3339(&candidate) {
            return Ok(fmt(t.with_timezone(&Utc)));
        }
    }
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok();
    let time = day.and_then(|d| {
        if end_of_day {
            d.and_hms_milli_opt(23, 59, 59, 999)
        } else {
            d.and_hms_opt(0, 0, 0)
        }
    });
    time.map(|t| fmt(t.and_utc()))
        .ok_or_else(|| ApiError::BadRequest("from and to must be RFC 3339 times or YYYY-MM-DD dates".into()))
}

fn csv_row(r: &AuditRow) -> String {
    let details = r.details.to_string();
    let cells = [
        &r.id, &r.at, &r.actor, &r.action, &r.target, &r.outcome, &r.ip, &details,
    ];
    let mut line = cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

/// RFC 4180 quoting for every cell, and a leading `'` on cells a spreadsheet would run as a
/// formula (OWASP "CSV injection"), since actors, targets and details carry outside text.
fn csv_cell(raw: &str) -> String {
    let text = if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{raw}")
    } else {
        raw.to_string()
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_cell("plain"), "\"plain\"");
        assert_eq!(csv_cell("say \"hi\", then\nleave"), "\"say \"\"hi\"\", then\nleave\"");
        for formula in ["=SUM(A1)", "+1", "-2+3", "@cmd", "\tx", "\rx"] {
            assert!(csv_cell(formula).starts_with("\"'"), "{formula:?} must be neutralised");
        }
    }

    #[test]
    fn time_bounds_accept_times_and_dates_only() {
        assert_eq!(time_bound("2025-10-13", false).unwrap(), "2025-10-13T00:00:00.000Z");
        assert_eq!(time_bound("2025-10-13", true).unwrap(), "2025-10-13T23:59:59.999Z");
        assert_eq!(
            time_bound("2025-10-13T21:00:00 02:00", false).unwrap(),
            "2025-10-13T19:00:00.000Z"
        );
        for bad in ["yesterday", "2025-13-01", "1760382000", "2025-10-13T25:00:00Z"] {
            assert!(time_bound(bad, false).is_err(), "{bad} must fail");
        }
    }
}
