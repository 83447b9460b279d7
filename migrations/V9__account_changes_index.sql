-- The activity timeline's account changes (a subaccount opened, a leverage or currency changed),
-- found at once like its KYC changes: few rows, written rarely, so this partial index costs the
-- hot paths nothing (deposits and adjustments, which share the accounts' targets, are not in it).
CREATE INDEX audit_account_changes_by_target ON audit_log (target, seq)
    WHERE action IN ('account.open_subaccount', 'account.leverage', 'account.currency');
