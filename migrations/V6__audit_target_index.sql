-- The audit log's index by target, kept by the CRM instead of by SQLite.
--
-- `audit_by_target` put one entry per audit row at a random place (targets are random ids), so
-- every service read and every deposit dirtied one more page of it, and each commit wrote ~26 of
-- them to the WAL: 1.3 of the 1.85 pages a service read wrote. `audit_targets` holds the same
-- (target, seq) pairs, but a thread of the server adds them later, sorted, a stretch of
-- neighbouring keys at a time, so one page takes many entries at once (see
-- `src/store/audit_index.rs`). Entries not indexed yet are found by reading the newest rows of the
-- log, which `audit_index_progress` delimits: every row up to `indexed_through`, and every row up
-- to `epoch_end` whose (target, seq) sorts before (`next_target`, `next_seq`), is indexed.
CREATE TABLE audit_targets (
    target TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (target, seq)
) WITHOUT ROWID;

-- In the old index's order, so the table is written from left to right.
INSERT INTO audit_targets (target, seq) SELECT target, seq FROM audit_log ORDER BY target, seq;

CREATE TABLE audit_index_progress (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_through INTEGER NOT NULL,
    epoch_end       INTEGER NOT NULL,
    next_target     TEXT,
    next_seq        INTEGER,
    CHECK (epoch_end >= indexed_through),
    CHECK ((next_target IS NULL) = (next_seq IS NULL)),
    CHECK (next_target IS NOT NULL OR epoch_end = indexed_through)
);
INSERT INTO audit_index_progress (id, indexed_through, epoch_end)
SELECT 1, coalesce(max(seq), 0), coalesce(max(seq), 0) FROM audit_log;

DROP INDEX audit_by_target;

-- The activity timeline's KYC changes, found at once: few rows, written rarely.
CREATE INDEX audit_kyc_by_target ON audit_log (target, seq) WHERE action = 'client.kyc_update';
