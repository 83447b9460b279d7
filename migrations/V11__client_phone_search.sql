-- Staff find a client by phone number too (`GET /api/clients?q=`), however either side writes it:
-- a phone is kept as sent (`+44 (20) 7946-0958`), and the search compares its digits only with
-- the digits of the term, through a trigram index of its own beside V3's `clients_search`, so
-- that index and the clients' names and emails in it are left as they are.
--
-- A phone is digits, spaces and `+-().` (checked when it arrives), so taking those six out
-- leaves its digits. The same expression is `store::clients::PHONE_DIGITS`; keep them alike.
CREATE VIEW clients_phone_source AS
    SELECT rowid AS client_rowid,
           replace(replace(replace(replace(replace(replace(phone, ' ', ''), '+', ''), '-', ''), '(', ''), ')', ''), '.', '')
               AS phone_digits
    FROM clients;

CREATE VIRTUAL TABLE clients_phone_search USING fts5(
    phone_digits,
    content = 'clients_phone_source', content_rowid = 'client_rowid', tokenize = 'trigram'
);

CREATE TRIGGER clients_phone_search_insert AFTER INSERT ON clients BEGIN
    INSERT INTO clients_phone_search (rowid, phone_digits)
    SELECT client_rowid, phone_digits FROM clients_phone_source WHERE client_rowid = new.rowid;
END;

CREATE TRIGGER clients_phone_search_delete AFTER DELETE ON clients BEGIN
    INSERT INTO clients_phone_search (clients_phone_search, rowid, phone_digits)
    VALUES ('delete', old.rowid,
            replace(replace(replace(replace(replace(replace(old.phone, ' ', ''), '+', ''), '-', ''), '(', ''), ')', ''), '.', ''));
END;

CREATE TRIGGER clients_phone_search_update AFTER UPDATE OF phone ON clients BEGIN
    INSERT INTO clients_phone_search (clients_phone_search, rowid, phone_digits)
    VALUES ('delete', old.rowid,
            replace(replace(replace(replace(replace(replace(old.phone, ' ', ''), '+', ''), '-', ''), '(', ''), ')', ''), '.', ''));
    INSERT INTO clients_phone_search (rowid, phone_digits)
    SELECT client_rowid, phone_digits FROM clients_phone_source WHERE client_rowid = new.rowid;
END;

-- Clients registered before this migration.
INSERT INTO clients_phone_search (clients_phone_search) VALUES ('rebuild');
