//! SSO impersonation sessions staff start into the Trading Platform (guide, section 3).

use rusqlite::{params, Connection};

use super::StoreResult;

/// One issued SSO token: who, for whom, and for how long. The token itself is not kept.
#[derive(Debug, Clone)]
pub struct SsoSession {
    pub id: String,
    pub client_id: String,
    pub staff_id: String,
    pub staff_email: String,
    pub issued_at: String,
    pub expires_at: String,
}

pub fn insert(conn: &Connection, s: &SsoSession) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO sso_sessions (id, client_id, staff_id, staff_email, issued_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        s.id,
        s.client_id,
        s.staff_id,
        s.staff_email,
        s.issued_at,
        s.expires_at
    ])?;
    Ok(())
}
