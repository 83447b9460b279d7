//! Clients for the admin page: search, detail, notes, KYC and subaccounts (SPEC "Staff API").
//! Any staff role reads and adds notes; managers and admins change KYC; admins open subaccounts.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use super::auth::{self, StaffSession};
use super::body::{self, parse_json};
use super::error::{respond, ApiError};
use super::query::{self, Params};
use super::refusals::{audited, path_target};
use super::views::AccountView;
use super::{with_state, AppState};
use crate::domain::{free_text, required_text, ClientId, KycStatus, Leverage, MAX_TEXT_CHARS};
use crate::store::audit::{self, actions};
use crate::store::{accounts, clients, notes, StoreError};

const MAX_SEARCH_CHARS: usize = 200;

type Session = Result<StaffSession, ApiError>;
type Body = Result<Bytes, ApiError>;

pub fn routes(state: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let s = || with_state(state.clone()).and(auth::staff(state.clone()));
    let list = warp::path!("api" / "clients")
        .and(warp::get())
        .and(s())
        .and(query::params())
        .then(|st, se, q| async move { respond(list(st, se, q).await) });
    let detail = warp::path!("api" / "clients" / String)
        .and(warp::get())
        .and(s())
        .then(|id, st, se| async move { respond(detail(st, se, id).await) });
    let notes_get = warp::path!("api" / "clients" / String / "notes")
        .and(warp::get())
        .and(s())
        .then(|id, st, se| async move { respond(list_notes(st, se, id).await) });
    let notes_post = warp::path!("api" / "clients" / String / "notes")
        .and(warp::post())
        .and(s())
        .and(body::json(body::DEFAULT_LIMIT))
        .then(|id, st, se, b| async move { respond(add_note(st, se, id, b).await) });
    let kyc = warp::path!("api" / "clients" / String / "kyc")
        .and(warp::patch())
        .and(s())
        .and(body::json(body::DEFAULT_LIMIT))
        .then(|id, st, se, b| async move { respond(change_kyc(st, se, id, b).await) });
    let sub = warp::path!("api" / "clients" / String / "subaccounts")
        .and(warp::post())
        .and(s())
        .and(body::json(body::DEFAULT_LIMIT))
        .then(|id, st, se, b| async move { respond(open_subaccount(st, se, id, b).await) });
    list.or(detail)
        .unify()
        .or(notes_get)
        .unify()
        .or(notes_post)
        .unify()
        .or(kyc)
        .unify()
        .or(sub)
        .unify()
        .boxed()
}

/// `GET /api/clients?q=&after=&limit=`: newest first, `nextCursor` while more remain.
async fn list(state: AppState, session: Session, params: Result<Params, ApiError>) -> Result<impl Reply, ApiError> {
    session?;
    let params = params?;
    query::only(&params, &["q", "after", "limit"])?;
    let term = query::text(&params, "q").map(|t| t.chars().take(MAX_SEARCH_CHARS).collect::<String>());
    // No name, email or platform id holds one, and the full-text index cannot take a NUL.
    if term.as_ref().is_some_and(|t| t.chars().any(char::is_control)) {
        return Err(ApiError::BadRequest("q must not contain control characters".into()));
    }
    let after = match query::text(&params, "after") {
        Some(raw) => Some(query::decode_cursor(raw, 2)?),
        None => None,
    };
    let limit = query::limit(&params, 50, 100)?;
    let rows = state
        .db
        .read(move |conn| {
            let after = after.as_ref().map(|p| (p[0].as_str(), p[1].as_str()));
            clients::search(conn, term.as_deref(), after, limit + 1)
        })
        .await?;
    let (rows, more) = query::page(rows, limit);
    let next = more
        .then(|| rows.last().map(|c| query::encode_cursor(&[&c.created_at, &c.id])))
        .flatten();
    Ok(warp::reply::json(&json!({ "clients": rows, "nextCursor": next })))
}

/// `GET /api/clients/:id`: the client, its primary account and its subaccounts.
async fn detail(state: AppState, session: Session, raw_id: String) -> Result<impl Reply, ApiError> {
    session?;
    let id = raw_id.parse::<ClientId>()?.to_string();
    let (client, account, subs) = state
        .db
        .read(move |conn| {
            let client = clients::get(conn, &id)?;
            let account = match accounts::primary_for_client(conn, &id) {
                Ok(a) => Some(AccountView::from(a)),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            let subs = accounts::subaccounts_for_client(conn, &id)?;
            Ok((client, account, subs))
        })
        .await?;
    let subs: Vec<AccountView> = subs.iter().map(AccountView::from).collect();
    Ok(warp::reply::json(
        &json!({ "client": client, "account": account, "subaccounts": subs }),
    ))
}

/// `GET /api/clients/:id/notes`: newest first.
async fn list_notes(state: AppState, session: Session, raw_id: String) -> Result<impl Reply, ApiError> {
    session?;
    let id = raw_id.parse::<ClientId>()?.to_string();
    let notes = state
        .db
        .read(move |conn| {
            clients::get(conn, &id)?;
            notes::for_client(conn, &id, 1000)
        })
        .await?;
    Ok(warp::reply::json(&json!({ "notes": notes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    comment: String,
}

/// `POST /api/clients/:id/notes` `{comment}` → 201 note, authored by the staff member.
async fn add_note(state: AppState, session: Session, raw_id: String, body: Body) -> Result<impl Reply, ApiError> {
    let session = session?;
    let id = raw_id.parse::<ClientId>()?;
    let req: NewNote = parse_json(&body?)?;
    let comment = required_text("comment", &req.comment, MAX_TEXT_CHARS)?;
    let actor = session.actor();
    let entry = session.audit(actions::NOTE_ADD, audit::target("client", id));
    let note = state
        .db
        .write(move |tx| {
            let client = clients::get(tx, &id.to_string())?;
            let note = notes::insert(tx, &client.id, &comment, &actor)?;
            let entry = entry.clone().detail("noteId", note.id.clone());
            audit::append(tx, &entry)?;
            Ok(note)
        })
        .await?;
    Ok(warp::reply::with_status(warp::reply::json(&note), StatusCode::CREATED))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KycChange {
    kyc_status: KycStatus,
    kyc_notes: Option<String>,
}

/// `PATCH /api/clients/:id/kyc` `{kycStatus, kycNotes?}` → 200 client (managers and admins).
async fn change_kyc(state: AppState, session: Session, raw_id: String, body: Body) -> Result<impl Reply, ApiError> {
    let session = session?;
    session.require_kyc_rights()?;
    let id = raw_id.parse::<ClientId>()?.to_string();
    let req: KycChange = parse_json(&body?)?;
    let notes = match req.kyc_notes {
        Some(n) => Some(free_text("kycNotes", &n, MAX_TEXT_CHARS)?),
        None => None,
    };
    let entry = session.audit(actions::KYC_UPDATE, audit::target("client", &id));
    let client = state
        .db
        .write(move |tx| {
            let before = clients::get(tx, &id)?;
            let client = clients::set_kyc(tx, &id, req.kyc_status, notes.as_deref())?;
            let details = json!({ "from": before.kyc_status, "to": client.kyc_status, "notes": notes });
            audit::append(tx, &entry.clone().details(details))?;
            Ok(client)
        })
        .await?;
    Ok(warp::reply::json(&client))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubaccount {
    currency: Option<String>,
    leverage: Option<Leverage>,
}

/// `POST /api/clients/:id/subaccounts` `{currency?, leverage?}` → 201 account (admins). The
/// parent is the client's primary account, whose currency and leverage are the defaults.
async fn open_subaccount(
    state: AppState,
    session: Session,
    raw_id: String,
    body: Body,
) -> Result<impl Reply, ApiError> {
    let session = session?;
    let parsed = raw_id.parse::<ClientId>();
    let entry = session.audit(actions::SUBACCOUNT_OPEN, path_target("client", &raw_id, &parsed));
    let result = async {
        session.require_admin()?;
        let id = parsed?.to_string();
        // Both fields are optional, so an empty body asks for the defaults.
        let req: NewSubaccount = match body? {
            b if b.iter().all(u8::is_ascii_whitespace) => NewSubaccount::default(),
            b => parse_json(&b)?,
        };
        let currency = req.currency.as_deref().map(parse_currency).transpose()?;
        let entry = entry.clone();
        Ok(state
            .db
            .write(move |tx| {
                clients::get(tx, &id)?;
                let parent = accounts::primary_for_client(tx, &id)?;
                let currency = currency.clone().unwrap_or_else(|| parent.currency.clone());
                let leverage = req.leverage.map_or_else(|| Leverage::new(parent.leverage.into()), Ok)?;
                let account = accounts::insert_subaccount(tx, &id, &parent, &currency, leverage)?;
                let details = json!({ "accountId": account.id, "parentId": parent.id, "currency": currency, "leverage": leverage });
                audit::append(tx, &entry.clone().details(details))?;
                Ok(account)
            })
            .await?)
    }
    .await;
    let account = audited(&state, entry, result).await?;
    Ok(warp::reply::with_status(
        warp::reply::json(&AccountView::from(account)),
        StatusCode::CREATED,
    ))
}

/// An ISO 4217-style code: three ASCII letters, stored upper-case.
fn parse_currency(raw: &str) -> Result<String, ApiError> {
    let code = raw.trim();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(code.to_ascii_uppercase())
    } else {
        Err(ApiError::BadRequest(
            "currency must be a three-letter code such as \"USD\"".into(),
        ))
    }
}
