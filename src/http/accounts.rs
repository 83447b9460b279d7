//! Accounts for staff: the guide's admin-only balance adjustment (section 4) and leverage change
//! (section 5), plus reading an account and its ledger for the admin page.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::{Filter, Reply};

use super::auth::{self, StaffSession};
use super::body::{self, parse_json};
use super::error::{respond, ApiError};
use super::query::{self, Params};
use super::refusals::{audited, path_target};
use super::views::AccountView;
use super::{with_state, AppState};
use crate::domain::{free_text, AccountId, FundType, Leverage, Money};
use crate::store::accounts::{self, BalanceChange, Reason};
use crate::store::audit::{self, actions};
use crate::store::idempotency;

const MAX_NOTES_CHARS: usize = 1000;
const MAX_KEY_CHARS: usize = 255;

type Session = Result<StaffSession, ApiError>;
type Body = Result<Bytes, ApiError>;

pub fn routes(state: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let s = || with_state(state.clone()).and(auth::staff(state.clone()));
    let get = warp::path!("api" / "accounts" / String)
        .and(warp::get())
        .and(s())
        .then(|id, st, se| async move { respond(get_account(st, se, id).await) });
    let ledger = warp::path!("api" / "accounts" / String / "ledger")
        .and(warp::get())
        .and(s())
        .and(query::params())
        .then(|id, st, se, q| async move { respond(ledger(st, se, id, q).await) });
    let adjust = warp::path!("api" / "accounts" / String / "adjust-balance")
        .and(warp::post())
        .and(s())
        .and(idempotency_key())
        .and(body::json(body::DEFAULT_LIMIT))
        .then(|id, st, se, k, b| async move { respond(adjust_balance(st, se, id, k, b).await) });
    let leverage = warp::path!("api" / "accounts" / String / "leverage")
        .and(warp::patch())
        .and(s())
        .and(body::json(body::DEFAULT_LIMIT))
        .then(|id, st, se, b| async move { respond(set_leverage(st, se, id, b).await) });
    get.or(ledger).unify().or(adjust).unify().or(leverage).unify().boxed()
}

async fn get_account(state: AppState, session: Session, raw_id: String) -> Result<impl Reply, ApiError> {
    session?;
    let id = raw_id.parse::<AccountId>()?.to_string();
    let account = state.db.read(move |conn| accounts::get(conn, &id)).await?;
    Ok(warp::reply::json(&AccountView::from(account)))
}

/// `GET /api/accounts/:id/ledger?before=&limit=`: newest first; `before` is a `nextCursor`.
async fn ledger(
    state: AppState,
    session: Session,
    raw_id: String,
    params: Result<Params, ApiError>,
) -> Result<impl Reply, ApiError> {
    session?;
    let id = raw_id.parse::<AccountId>()?.to_string();
    let params = params?;
    query::only(&params, &["before", "limit"])?;
    let before = match query::text(&params, "before") {
        Some(raw) => Some(
            uuid::Uuid::parse_str(raw)
                .map_err(|_| ApiError::BadRequest("before must be a nextCursor from an earlier page".into()))?
                .to_string(),
        ),
        None => None,
    };
    let limit = query::limit(&params, 50, 200)?;
    let rows = state
        .db
        .read(move |conn| {
            accounts::get(conn, &id)?;
            accounts::ledger(conn, &id, before.as_deref(), limit + 1)
        })
        .await?;
    let (entries, more) = query::page(rows, limit);
    let next = more.then(|| entries.last().map(|e| e.id.clone())).flatten();
    Ok(warp::reply::json(&json!({ "entries": entries, "nextCursor": next })))
}

/// The guide's request body: `amount` as a decimal string (or number), signed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Adjustment {
    amount: Money,
    fund_type: FundType,
    notes: Option<String>,
}

/// `POST /api/accounts/:id/adjust-balance` (admins). A debit beyond the fund is refused with
/// the insufficient-funds body, changes nothing, and is audited as a failure. Sent again under
/// the same `Idempotency-Key` by the same person, an adjustment already booked books nothing
/// more: the answer is the account as it is now, with `Idempotent-Replayed: true`.
async fn adjust_balance(
    state: AppState,
    session: Session,
    raw_id: String,
    key: Result<Option<String>, ApiError>,
    body: Body,
) -> Result<warp::reply::Response, ApiError> {
    let session = session?;
    let parsed = raw_id.parse::<AccountId>();
    let entry = session.audit(actions::BALANCE_ADJUST, path_target("account", &raw_id, &parsed));
    let result = async {
        session.require_admin()?;
        let id = parsed?.to_string();
        let key = key?;
        let req: Adjustment = parse_json(&body?)?;
        let notes = free_text("notes", req.notes.as_deref().unwrap_or_default(), MAX_NOTES_CHARS)?;
        if req.amount.is_zero() {
            return Err(ApiError::BadRequest("amount must not be zero".into()));
        }
        // What was asked, however its JSON was spelt ("100" and 100.00 are the same amount).
        let fingerprint = format!("{id}\n{}\n{}\n{notes}", req.fund_type.as_str(), req.amount);
        let change = BalanceChange {
            account_id: id,
            fund: req.fund_type,
            amount: req.amount,
            reason: Reason::Adjustment,
            notes: notes.clone(),
            actor: session.actor(),
            external_ref: None,
        };
        let mut entry = entry.clone().detail("notes", notes);
        if let Some(key) = &key {
            entry = entry.detail("idempotencyKey", key.as_str());
        }
        let staff_user_id = session.user.id.clone();
        let write = move |tx: &rusqlite::Transaction| {
            let Some(key) = &key else {
                return Ok((accounts::apply_balance_change(tx, &change, entry.clone())?.0, false));
            };
            let key = idempotency::Key {
                staff_user_id: &staff_user_id,
                key,
                fingerprint: &fingerprint,
            };
            if let Some(booked) = key.booked(tx)? {
                audit::append(tx, &entry.clone().detail("duplicateOf", booked))?;
                return Ok((accounts::get(tx, &change.account_id)?, true));
            }
            let (account, booked) = accounts::apply_balance_change(tx, &change, entry.clone())?;
            key.claim(tx, &booked.id)?;
            Ok((account, false))
        };
        Ok(state.db.write(write).await?)
    }
    .await;
    let (account, replayed) = audited(&state, entry, result).await?;
    let reply = warp::reply::json(&AccountView::from(account));
    Ok(if replayed {
        warp::reply::with_header(reply, "idempotent-replayed", "true").into_response()
    } else {
        reply.into_response()
    })
}

/// The `Idempotency-Key` header, when sent: 1 to 255 visible ASCII characters but `"` (a random
/// hex string is what the admin page sends). A quoted string, as the IETF draft writes the
/// header, counts without its quotes. Never rejects, so a bad key is refused and audited like
/// the rest of the request.
fn idempotency_key(
) -> impl Filter<Extract = (Result<Option<String>, ApiError>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(|headers: HeaderMap| {
        let mut sent = headers.get_all("idempotency-key").iter();
        let (Some(value), None) = (sent.next(), sent.next()) else {
            return match headers.contains_key("idempotency-key") {
                true => Err(ApiError::BadRequest(
                    "send one Idempotency-Key header, not several".into(),
                )),
                false => Ok(None),
            };
        };
        let text = value.to_str().unwrap_or_default();
        let key = text.strip_prefix('"').and_then(|k| k.strip_suffix('"')).unwrap_or(text);
        // A quote left inside (`"abc`) is a key mistyped, not part of it.
        if key.is_empty() || key.len() > MAX_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            return Err(ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters other than quotes, such as a UUID"
            )));
        }
        Ok(Some(key.to_string()))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeverageChange {
    leverage: Leverage,
}

/// `PATCH /api/accounts/:id/leverage` `{leverage: 1-500}` (admins); audited with from and to.
async fn set_leverage(state: AppState, session: Session, raw_id: String, body: Body) -> Result<impl Reply, ApiError> {
    let session = session?;
    let parsed = raw_id.parse::<AccountId>();
    let entry = session.audit(actions::LEVERAGE_CHANGE, path_target("account", &raw_id, &parsed));
    let result = async {
        session.require_admin()?;
        let id = parsed?.to_string();
        let req: LeverageChange = parse_json(&body?)?;
        let entry = entry.clone();
        Ok(state
            .db
            .write(move |tx| {
                let before = accounts::get(tx, &id)?;
                let account = accounts::set_leverage(tx, &id, req.leverage)?;
                let details = json!({ "from": before.leverage, "to": account.leverage });
                audit::append(tx, &entry.clone().details(details))?;
                Ok(account)
            })
            .await?)
    }
    .await;
    let account = audited(&state, entry, result).await?;
    Ok(warp::reply::json(&AccountView::from(account)))
}
