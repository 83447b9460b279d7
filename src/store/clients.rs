//! Clients: the people the Trading Platform registers.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::{now, unique_conflict, StoreError, StoreResult};
use crate::domain::{ClientId, Email, KycStatus};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub id: String,
    pub platform_client_id: Option<String>,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
    pub kyc_status: String,
    pub kyc_notes: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Client {
    fn from_row(r: &Row) -> rusqlite::Result<Client> {
        Ok(Client {
            id: r.get("id")?,
            platform_client_id: r.get("platform_client_id")?,
            email: r.get("email")?,
            first_name: r.get("first_name")?,
            last_name: r.get("last_name")?,
            phone: r.get("phone")?,
            kyc_status: r.get("kyc_status")?,
            kyc_notes: r.get("kyc_notes")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }

    pub fn client_id(&self) -> StoreResult<ClientId> {
        Ok(self.id.parse()?)
    }
}

/// Contact fields as registered or updated; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
}

pub fn insert(conn: &Connection, email: &Email, platform_id: Option<&str>, contact: &Contact) -> StoreResult<Client> {
    let id = ClientId::new().to_string();
    let at = now();
    conn.prepare_cached(
        "INSERT INTO clients (id, platform_client_id, email, first_name, last_name, phone, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        id,
        platform_id,
        email.as_str(),
        contact.first_name.as_deref().unwrap_or(""),
        contact.last_name.as_deref().unwrap_or(""),
        contact.phone.as_deref().unwrap_or(""),
        at
    ])
    .map_err(|e| unique_conflict(e, "a client with this email or platform client id already exists"))?;
    get(conn, &id)
}

pub fn get(conn: &Connection, id: &str) -> StoreResult<Client> {
    conn.prepare_cached("SELECT * FROM clients WHERE id = ?1")?
        .query_row([id], Client::from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound("Client not found".into()))
}

pub fn find_by_email(conn: &Connection, email: &Email) -> StoreResult<Option<Client>> {
    Ok(conn
        .prepare_cached("SELECT * FROM clients WHERE email = ?1")?
        .query_row([email.as_str()], Client::from_row)
        .optional()?)
}

pub fn by_email(conn: &Connection, email: &Email) -> StoreResult<Client> {
    find_by_email(conn, email)?.ok_or_else(|| StoreError::NotFound(format!("No client with email {email}")))
}

pub fn find_by_platform_id(conn: &Connection, platform_id: &str) -> StoreResult<Option<Client>> {
    Ok(conn
        .prepare_cached("SELECT * FROM clients WHERE platform_client_id = ?1")?
        .query_row([platform_id], Client::from_row)
        .optional()?)
}

pub fn set_kyc(conn: &Connection, id: &str, status: KycStatus, notes: Option<&str>) -> StoreResult<Client> {
    conn.prepare_cached(
        "UPDATE clients SET kyc_status = ?2, kyc_notes = COALESCE(?3, kyc_notes), updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![id, status.as_str(), notes, now()])?;
    get(conn, id)
}

pub fn update_contact(conn: &Connection, id: &str, email: Option<&Email>, contact: &Contact) -> StoreResult<Client> {
    conn.prepare_cached(
        "UPDATE clients SET email = COALESCE(?2, email), first_name = COALESCE(?3, first_name),
                last_name = COALESCE(?4, last_name), phone = COALESCE(?5, phone), updated_at = ?6
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        email.map(Email::as_str),
        contact.first_name,
        contact.last_name,
        contact.phone,
        now()
    ])
    .map_err(|e| unique_conflict(e, "another client already has this email"))?;
    get(conn, id)
}

/// Staff search: a case-insensitive match on email, names or platform id, newest first,
/// paged by keyset (`after` is the last row's `createdAt|id` cursor).
pub fn search(
    conn: &Connection,
    term: Option<&str>,
    after: Option<(&str, &str)>,
    limit: u32,
) -> StoreResult<Vec<Client>> {
    let pattern = term.map(|t| {
        format!(
            "%{}%",
            t.trim()
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let (after_at, after_id) = after.unzip();
    let mut stmt = conn.prepare_cached(
        "SELECT * FROM clients
         WHERE (?1 IS NULL OR email LIKE ?1 ESCAPE '\\' OR lower(first_name) LIKE ?1 ESCAPE '\\'
                OR lower(last_name) LIKE ?1 ESCAPE '\\' OR lower(first_name || ' ' || last_name) LIKE ?1 ESCAPE '\\'
                OR lower(platform_client_id) LIKE ?1 ESCAPE '\\')
           AND (?2 IS NULL OR (created_at, id) < (?2, ?3))
         ORDER BY created_at DESC, id DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![pattern, after_at, after_id, limit.clamp(1, 200)],
        Client::from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
