-- The exactly-once guard as one row per claimed key instead of one row per webhook.
--
-- V1 kept one row per processed webhook with two unique keys, the deduplication key and the
-- transaction id, so every deposit wrote three B-tree entries, two of them at random places (the
-- keys are random), and for the usual deposit without an event id both keys said the same thing
-- (`tx:<transactionId>`). Now each key a webhook claims is its own row, the key being the primary
-- key of a table without rowid (the table is its own index): `id:<event id>` or
-- `body:<sha256>` or `tx:<transactionId>` as before, plus `tx:<transactionId>` when a money event
-- also has an event id. A claimed key still cannot be claimed twice: the primary key refuses it.
CREATE TABLE webhook_claims (
    claim        TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    event_id     TEXT NOT NULL REFERENCES webhook_events (id),
    processed_at TEXT NOT NULL
) WITHOUT ROWID;

INSERT INTO webhook_claims (claim, content_hash, event_id, processed_at)
SELECT dedupe_key, content_hash, event_id, processed_at FROM processed_webhooks;

-- V1's unique transaction_id means no other row already claims these.
INSERT INTO webhook_claims (claim, content_hash, event_id, processed_at)
SELECT 'tx:' || transaction_id, content_hash, event_id, processed_at FROM processed_webhooks
WHERE transaction_id IS NOT NULL AND dedupe_key <> 'tx:' || transaction_id;

DROP TABLE processed_webhooks;
