//! Staff management for admins: list, create, change role or disable, reset a password.
//! Generated passwords are returned once and never stored in clear or logged.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use super::auth::{self, StaffSession};
use super::body::{self, parse_json};
use super::error::{respond, ApiError};
use super::refusals::{audited, path_target};
use super::{with_state, AppState};
use crate::domain::{Email, Role, StaffId};
use crate::security::{password, random_password};
use crate::store::audit::{self, actions};
use crate::store::run_blocking;
use crate::store::staff;

type Session = Result<StaffSession, ApiError>;
type Body = Result<Bytes, ApiError>;

pub fn routes(state: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let s = || with_state(state.clone()).and(auth::staff(state.clone()));
    let list = warp::path!("api" / "staff")
        .and(warp::get())
        .and(s())
        .then(|st, se| async move { respond(list(st, se).await) });
    let create = warp::path!("api" / "staff")
        .and(warp::post())
        .and(s())
        .and(body::json(body::DEFAULT_LIMIT))
        .then(|st, se, b| async move { respond(create(st, se, b).await) });
    let update = warp::path!("api" / "staff" / String)
        .and(warp::patch())
        .and(s())
        .and(body::json(body::DEFAULT_LIMIT))
        .then(|id, st, se, b| async move { respond(update(st, se, id, b).await) });
    let reset = warp::path!("api" / "staff" / String / "reset-password")
        .and(warp::post())
        .and(s())
        .then(|id, st, se| async move { respond(reset_password(st, se, id).await) });
    list.or(create).unify().or(update).unify().or(reset).unify().boxed()
}

async fn list(state: AppState, session: Session) -> Result<impl Reply, ApiError> {
    session?.require_admin()?;
    let staff = state.db.read(staff::list).await?;
    Ok(warp::reply::json(&json!({ "staff": staff })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewStaff {
    email: Email,
    name: String,
    role: Role,
    password: Option<String>,
}

/// `POST /api/staff` → 201 `{"user", "password"?}`: the password only when it was generated.
async fn create(state: AppState, session: Session, body: Body) -> Result<impl Reply, ApiError> {
    let session = session?;
    session.require_admin()?;
    let req: NewStaff = parse_json(&body?)?;
    let name = staff::valid_name(&req.name)?;
    let (pw, generated) = match req.password {
        Some(pw) => (pw, false),
        None => (random_password(), true),
    };
    password::check_strength(&pw).map_err(ApiError::BadRequest)?;
    let hash = hash_off_thread(pw.clone()).await?;
    let entry = session.audit(actions::STAFF_CREATE, audit::target("staff", &req.email));
    let user = state
        .db
        .write(move |tx| staff::create(tx, &req.email, &name, req.role, &hash, entry.clone()))
        .await?;
    let body = if generated {
        json!({ "user": user, "password": pw })
    } else {
        json!({ "user": user })
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaffChange {
    role: Option<Role>,
    disabled: Option<bool>,
}

impl From<&StaffChange> for staff::Change {
    fn from(c: &StaffChange) -> staff::Change {
        staff::Change {
            role: c.role,
            disabled: c.disabled,
        }
    }
}

/// `PATCH /api/staff/:id` `{role?, disabled?}` → `{"user"}`. Nobody may disable or demote
/// themselves, and the last active admin stays one (409), so the CRM always has an admin.
async fn update(state: AppState, session: Session, raw_id: String, body: Body) -> Result<impl Reply, ApiError> {
    let session = session?;
    let parsed = raw_id.parse::<StaffId>();
    let entry = session.audit(actions::STAFF_UPDATE, staff_target(&state, &raw_id, &parsed).await);
    let result = async {
        session.require_admin()?;
        let id = parsed?.to_string();
        let req: StaffChange = parse_json(&body?)?;
        if req.role.is_none() && req.disabled.is_none() {
            return Err(ApiError::BadRequest("give role, disabled or both".into()));
        }
        let me = session.user.id.clone();
        let entry = entry.clone();
        Ok(state
            .db
            .write(move |tx| staff::change(tx, &id, (&req).into(), Some(&me), entry.clone()))
            .await?)
    }
    .await;
    let user = audited(&state, entry, result).await?;
    Ok(warp::reply::json(&json!({ "user": user })))
}

/// `POST /api/staff/:id/reset-password` → `{"password"}`, shown once. The user's tokens stop
/// working at once.
async fn reset_password(state: AppState, session: Session, raw_id: String) -> Result<impl Reply, ApiError> {
    let session = session?;
    let parsed = raw_id.parse::<StaffId>();
    let target = staff_target(&state, &raw_id, &parsed).await;
    let entry = session.audit(actions::STAFF_RESET_PASSWORD, target);
    let result = async {
        session.require_admin()?;
        let id = parsed?.to_string();
        let pw = random_password();
        let hash = hash_off_thread(pw.clone()).await?;
        let entry = entry.clone();
        state
            .db
            .write(move |tx| {
                staff::set_password_hash(tx, &staff::get(tx, &id)?.id, &hash)?;
                audit::append(tx, &entry)?;
                Ok(())
            })
            .await?;
        Ok(pw)
    }
    .await;
    let pw = audited(&state, entry, result).await?;
    Ok(warp::reply::json(&json!({ "password": pw })))
}

/// `staff:<email>` as everywhere else in the log; `staff:<id>` for an id that names nobody, or
/// as sent when it is no id at all.
async fn staff_target<E>(state: &AppState, raw_id: &str, parsed: &Result<StaffId, E>) -> String {
    let Ok(id) = parsed else {
        return path_target("staff", raw_id, parsed);
    };
    let lookup = id.to_string();
    match state.db.read(move |conn| staff::get(conn, &lookup)).await {
        Ok(user) => audit::target("staff", user.email),
        Err(_) => audit::target("staff", id),
    }
}

async fn hash_off_thread(pw: String) -> Result<String, ApiError> {
    Ok(run_blocking(move || Ok(password::hash(&pw)?)).await?)
}
