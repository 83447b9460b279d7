//! Fingerprints of the secrets in use, with when each was first seen (for rotation reminders).

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{now, StoreResult};

/// 64 bits of a domain-separated SHA-256: enough to tell values apart, too little to help guess one.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(format!("crm-secret-fingerprint:{secret}").as_bytes());
    hex::encode(&digest[..8])
}

pub fn record(conn: &Connection, name: &str, secret: &str) -> StoreResult<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO secret_history (name, fingerprint, first_seen) VALUES (?1, ?2, ?3)")?
        .execute(params![name, fingerprint(secret), now()])?;
    Ok(())
}

pub fn first_seen(conn: &Connection, name: &str, secret: &str) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT first_seen FROM secret_history WHERE name = ?1 AND fingerprint = ?2")?
        .query_row(params![name, fingerprint(secret)], |r| r.get(0))
        .optional()?)
}
