-- When each secret value was first seen by `crm serve`, by fingerprint (never the value itself),
-- so `crm doctor` can tell when a secret is older than the guide's 90-day rotation period.
CREATE TABLE secret_history (
    name        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    PRIMARY KEY (name, fingerprint)
);
