//! Broker staff who log in to the admin page.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::{now, unique_conflict, StoreError, StoreResult};
use crate::domain::{Email, Role, StaffId};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StaffUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    #[serde(skip)]
    pub password_hash: String,
    pub password_changed_at: String,
    /// Moved on by every change that ends the user's sessions; a staff token is valid only while
    /// it carries the current one (migration V7).
    #[serde(skip)]
    pub session_generation: i64,
    pub created_at: String,
}

impl StaffUser {
    fn from_row(r: &Row) -> rusqlite::Result<StaffUser> {
        let role: String = r.get("role")?;
        Ok(StaffUser {
            id: r.get("id")?,
            email: r.get("email")?,
            name: r.get("name")?,
            role: role
                .parse()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            disabled: r.get("disabled")?,
            password_hash: r.get("password_hash")?,
            password_changed_at: r.get("password_changed_at")?,
            session_generation: r.get("session_generation")?,
            created_at: r.get("created_at")?,
        })
    }
}

pub fn insert(conn: &Connection, email: &Email, name: &str, role: Role, password_hash: &str) -> StoreResult<StaffUser> {
    let id = StaffId::new().to_string();
    let at = now();
    conn.prepare_cached(
        "INSERT INTO staff_users (id, email, name, role, password_hash, password_changed_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
    )?
    .execute(params![id, email.as_str(), name, role.as_str(), password_hash, at])
    .map_err(|e| unique_conflict(e, "a staff user with this email already exists"))?;
    get(conn, &id)
}

pub fn get(conn: &Connection, id: &str) -> StoreResult<StaffUser> {
    conn.prepare_cached("SELECT * FROM staff_users WHERE id = ?1")?
        .query_row([id], StaffUser::from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound("Staff user not found".into()))
}

pub fn find_by_email(conn: &Connection, email: &Email) -> StoreResult<Option<StaffUser>> {
    Ok(conn
        .prepare_cached("SELECT * FROM staff_users WHERE email = ?1")?
        .query_row([email.as_str()], StaffUser::from_row)
        .optional()?)
}

pub fn by_email(conn: &Connection, email: &Email) -> StoreResult<StaffUser> {
    find_by_email(conn, email)?.ok_or_else(|| StoreError::NotFound(format!("No staff user with email {email}")))
}

pub fn list(conn: &Connection) -> StoreResult<Vec<StaffUser>> {
    let mut stmt = conn.prepare_cached("SELECT * FROM staff_users ORDER BY email")?;
    let rows = stmt.query_map([], StaffUser::from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn count(conn: &Connection) -> StoreResult<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM staff_users")?
        .query_row([], |r| r.get(0))?)
}

/// Disables or re-enables the user; either way, a change ends their sessions.
pub fn set_disabled(conn: &Connection, id: &str, disabled: bool) -> StoreResult<StaffUser> {
    conn.prepare_cached(
        "UPDATE staff_users SET disabled = ?2, updated_at = ?3,
                session_generation = session_generation + (disabled IS NOT ?2)
         WHERE id = ?1",
    )?
    .execute(params![id, disabled, now()])?;
    get(conn, id)
}

/// Creates a staff user with its audit entry (`entry`, a `staff.create` by whoever asked; the
/// role is added to it), from the staff API and the `crm user` command alike.
pub fn create(
    conn: &Connection,
    email: &Email,
    name: &str,
    role: Role,
    password_hash: &str,
    entry: super::audit::Audit,
) -> StoreResult<StaffUser> {
    let user = insert(conn, email, name, role, password_hash)?;
    super::audit::append(conn, &entry.detail("role", role.as_str()))?;
    Ok(user)
}

/// The longest staff display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A staff member's display name, the same rule from the staff API and `crm user add`: trimmed,
/// 1 to [`MAX_NAME_CHARS`] characters, no control characters (it is printed in terminals and
/// shown on the admin page).
pub fn valid_name(name: &str) -> Result<String, crate::domain::Invalid> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(crate::domain::Invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters without control characters"
        )));
    }
    Ok(name.to_string())
}

/// A role change, disabling or (re-)enabling, from the staff API or the `crm user` command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Change {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

/// Applies `change` to the user `id` and audits it (`entry`, with the email and each field's
/// from and to). Nobody may disable or demote themselves (`me`, for a staff member), and the
/// last active admin stays one (409), so the CRM always has an admin.
pub fn change(
    conn: &Connection,
    id: &str,
    change: Change,
    me: Option<&str>,
    entry: super::audit::Audit,
) -> StoreResult<StaffUser> {
    let before = get(conn, id)?;
    let loses_admin = before.role.is_admin()
        && !before.disabled
        && (change.disabled == Some(true) || change.role.is_some_and(|r| !r.is_admin()));
    if loses_admin && me == Some(before.id.as_str()) {
        return Err(StoreError::Conflict("You cannot disable or demote yourself".into()));
    }
    if loses_admin && active_admin_count(conn)? <= 1 {
        return Err(StoreError::Conflict(
            "The last active administrator cannot be disabled or demoted".into(),
        ));
    }
    let mut user = before.clone();
    if let Some(role) = change.role {
        user = set_role(conn, id, role)?;
    }
    if let Some(disabled) = change.disabled {
        user = set_disabled(conn, id, disabled)?;
    }
    let details = serde_json::json!({
        "email": user.email,
        "role": { "from": before.role, "to": user.role },
        "disabled": { "from": before.disabled, "to": user.disabled },
    });
    super::audit::append(conn, &entry.details(details))?;
    Ok(user)
}

/// A new role ends the user's sessions.
pub fn set_role(conn: &Connection, id: &str, role: Role) -> StoreResult<StaffUser> {
    conn.prepare_cached(
        "UPDATE staff_users SET role = ?2, updated_at = ?3,
                session_generation = session_generation + (role IS NOT ?2)
         WHERE id = ?1",
    )?
    .execute(params![id, role.as_str(), now()])?;
    get(conn, id)
}

/// A new password (changed by the user or reset) ends the user's sessions.
pub fn set_password_hash(conn: &Connection, id: &str, hash: &str) -> StoreResult<StaffUser> {
    let at = now();
    conn.prepare_cached(
        "UPDATE staff_users SET password_hash = ?2, password_changed_at = ?3, updated_at = ?3,
                session_generation = session_generation + 1
         WHERE id = ?1",
    )?
    .execute(params![id, hash, at])?;
    get(conn, id)
}

/// Logging out ends the user's sessions: every one, since a token names no session of its own
/// (the page signs out of all the user's tabs at once).
pub fn end_sessions(conn: &Connection, id: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE staff_users SET session_generation = session_generation + 1, updated_at = ?2 WHERE id = ?1",
    )?
    .execute(params![id, now()])?;
    Ok(())
}

/// Active admins; the last one cannot be disabled or demoted.
pub fn active_admin_count(conn: &Connection) -> StoreResult<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM staff_users WHERE role = 'admin' AND disabled = 0")?
        .query_row([], |r| r.get(0))?)
}
