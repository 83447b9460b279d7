-- The activity timeline's account changes (a subaccount opened, a leverage or currency changed),
-- found at once like its KYC changes: few rows, written rarely. Every insert into the audit log
-- tests this index's condition, so it is written with `OR`, not `IN (...)`: a list of three or
-- more makes SQLite build a temporary index of it on each row (see V4).
CREATE INDEX audit_account_changes_by_target ON audit_log (target, seq)
    WHERE action = 'account.open_subaccount' OR action = 'account.leverage' OR action = 'account.currency';
