-- The CRM's schema. Money columns are INTEGER hundred-millionths (8 decimal places), so SUM over
-- the ledger is exact. Timestamps are RFC 3339 UTC text with milliseconds, which sorts correctly.
-- Never edit this file once shipped: add V2__... instead.

CREATE TABLE clients (
    id                 TEXT PRIMARY KEY,
    platform_client_id TEXT UNIQUE,
    email              TEXT NOT NULL UNIQUE CHECK (email = lower(email) AND email <> ''),
    first_name         TEXT NOT NULL DEFAULT '',
    last_name          TEXT NOT NULL DEFAULT '',
    phone              TEXT NOT NULL DEFAULT '',
    kyc_status         TEXT NOT NULL DEFAULT 'pending'
                       CHECK (kyc_status IN ('pending', 'in_review', 'approved', 'rejected')),
    kyc_notes          TEXT NOT NULL DEFAULT '',
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX clients_by_name ON clients (lower(last_name), lower(first_name));
CREATE INDEX clients_by_created ON clients (created_at, id);

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    client_id     TEXT NOT NULL REFERENCES clients (id),
    parent_id     TEXT REFERENCES accounts (id),
    real_balance  INTEGER NOT NULL DEFAULT 0 CHECK (real_balance >= 0),
    demo_balance  INTEGER NOT NULL DEFAULT 0 CHECK (demo_balance >= 0),
    bonus_balance INTEGER NOT NULL DEFAULT 0 CHECK (bonus_balance >= 0),
    leverage      INTEGER NOT NULL DEFAULT 100 CHECK (leverage BETWEEN 1 AND 500),
    currency      TEXT NOT NULL DEFAULT 'USD' CHECK (length(currency) = 3 AND currency = upper(currency)),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
-- Exactly one primary account per client; subaccounts hang off it.
CREATE UNIQUE INDEX accounts_one_primary ON accounts (client_id) WHERE parent_id IS NULL;
CREATE INDEX accounts_by_client ON accounts (client_id);

CREATE TABLE ledger_entries (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    fund_type     TEXT NOT NULL CHECK (fund_type IN ('real', 'demo', 'bonus')),
    amount        INTEGER NOT NULL CHECK (amount <> 0),
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    reason        TEXT NOT NULL CHECK (reason IN ('deposit', 'withdrawal', 'adjustment')),
    notes         TEXT NOT NULL DEFAULT '',
    actor         TEXT NOT NULL,
    external_ref  TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX ledger_by_account ON ledger_entries (account_id, seq);

CREATE TABLE notes (
    id         TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients (id),
    comment    TEXT NOT NULL CHECK (comment <> ''),
    author     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX notes_by_client ON notes (client_id, created_at);

CREATE TABLE staff_users (
    id                  TEXT PRIMARY KEY,
    email               TEXT NOT NULL UNIQUE CHECK (email = lower(email) AND email <> ''),
    name                TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('admin', 'manager', 'agent')),
    password_hash       TEXT NOT NULL,
    disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    password_changed_at TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

-- Append-only and hash-chained: each row's hash covers its content and the previous row's hash,
-- so `crm verify` detects an edited or deleted row. The triggers stop accidental edits.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT NOT NULL UNIQUE,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL DEFAULT '',
    outcome   TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    ip        TEXT NOT NULL DEFAULT '',
    details   TEXT NOT NULL DEFAULT '{}',
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_by_at ON audit_log (at);
CREATE INDEX audit_by_target ON audit_log (target, seq);
CREATE INDEX audit_by_actor ON audit_log (actor, seq);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Every webhook attempt, rejected ones too, with its raw body (bounded for unsigned ones).
-- `signature` is the secret that verified the body, or 'invalid' when none did (missing, wrong, or
-- the body was refused before it could be checked). A re-processing run is a new row whose
-- `reprocess_of` names the original; the original keeps its outcome and gets `reprocessed_at/by`.
CREATE TABLE webhook_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    received_at    TEXT NOT NULL,
    event          TEXT NOT NULL DEFAULT '',
    dedupe_key     TEXT,
    signature      TEXT NOT NULL CHECK (signature IN ('current', 'previous', 'invalid')),
    raw_body       BLOB NOT NULL,
    body_size      INTEGER NOT NULL,
    body_truncated INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL
                   CHECK (status IN ('processed', 'duplicate', 'rejected', 'unauthorized', 'conflict', 'failed')),
    http_status    INTEGER NOT NULL,
    error          TEXT NOT NULL DEFAULT '',
    client_id      TEXT,
    ip             TEXT NOT NULL DEFAULT '',
    duration_ms    INTEGER NOT NULL DEFAULT 0,
    reprocessed_at TEXT,
    reprocessed_by TEXT,
    reprocess_of   TEXT REFERENCES webhook_events (id)
);
CREATE INDEX webhook_events_by_received ON webhook_events (received_at);
-- Unverified rows are capped (oldest pruned) and rate-audited by their receipt time.
CREATE INDEX webhook_events_by_signature ON webhook_events (signature, received_at);
CREATE INDEX webhook_events_by_status ON webhook_events (status, seq);
CREATE INDEX webhook_events_by_client ON webhook_events (client_id, seq);

-- One row per webhook whose effect is on the books: the exactly-once guard.
CREATE TABLE processed_webhooks (
    dedupe_key     TEXT PRIMARY KEY,
    transaction_id TEXT UNIQUE,
    content_hash   TEXT NOT NULL,
    event_id       TEXT NOT NULL REFERENCES webhook_events (id),
    processed_at   TEXT NOT NULL
);

-- SSO impersonation sessions started by staff (guide, section 3).
CREATE TABLE sso_sessions (
    id         TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients (id),
    staff_id   TEXT NOT NULL REFERENCES staff_users (id),
    staff_email TEXT NOT NULL,
    issued_at  TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sso_sessions_by_client ON sso_sessions (client_id, issued_at);
