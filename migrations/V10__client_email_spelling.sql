-- A client's email as the Trading Platform sent it, when that differs from the lower-cased key
-- in `email` (which every lookup, the uniqueness rule and the search index keep using). Records
-- show this spelling, so the SSO token's `clientEmail` is the address the platform registered.
-- NULL: the spelling is the key itself (every client registered before V10).
ALTER TABLE clients ADD COLUMN email_as_sent TEXT CHECK (email_as_sent IS NULL OR email_as_sent <> '');
