-- Balance adjustments a staff member has already made under an `Idempotency-Key`.
--
-- A confirmed adjustment whose answer is lost (a dropped connection, a proxy timeout, a restart)
-- is sent again by the admin page under the same key; the CRM finds it here and books nothing
-- more. A key belongs to the staff user who sent it, is claimed in the transaction that books
-- the adjustment, and is kept as long as the ledger entry it points to. `fingerprint` is what was
-- asked (account, fund, amount, notes), so the same key with another request is refused.
CREATE TABLE staff_idempotency_keys (
    staff_user_id   TEXT NOT NULL REFERENCES staff_users(id),
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    ledger_entry_id TEXT NOT NULL REFERENCES ledger_entries(id),
    created_at      TEXT NOT NULL,
    PRIMARY KEY (staff_user_id, key)
) WITHOUT ROWID;
