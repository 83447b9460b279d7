//! Staff balance adjustments sent under an `Idempotency-Key` (migration V8): a key already used
//! by the same staff user for the same request stands for the adjustment it booked, so a retry
//! after a lost answer books nothing more.

use rusqlite::{params, Connection, OptionalExtension};

use super::{now, StoreError, StoreResult};

/// One staff user's key for one request. `fingerprint` is what was asked, written so that two
/// requests asking the same thing give the same text however their JSON was spelt.
pub struct Key<'a> {
    pub staff_user_id: &'a str,
    pub key: &'a str,
    pub fingerprint: &'a str,
}

impl Key<'_> {
    /// The ledger entry this key already booked, if any. The key used for another request is a
    /// 409: which of the two was meant cannot be known.
    pub fn booked(&self, conn: &Connection) -> StoreResult<Option<String>> {
        let found: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT fingerprint, ledger_entry_id FROM staff_idempotency_keys WHERE staff_user_id = ?1 AND key = ?2",
            )?
            .query_row(params![self.staff_user_id, self.key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match found {
            Some((fingerprint, _)) if fingerprint != self.fingerprint => Err(StoreError::Conflict(
                "this Idempotency-Key was used for a different adjustment; send a new key for a new adjustment".into(),
            )),
            Some((_, entry)) => Ok(Some(entry)),
            None => Ok(None),
        }
    }

    /// Records that the key booked `ledger_entry_id`, in the transaction that booked it.
    pub fn claim(&self, conn: &Connection, ledger_entry_id: &str) -> StoreResult<()> {
        conn.prepare_cached(
            "INSERT INTO staff_idempotency_keys (staff_user_id, key, fingerprint, ledger_entry_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            self.staff_user_id,
            self.key,
            self.fingerprint,
            ledger_entry_id,
            now()
        ])?;
        Ok(())
    }
}
