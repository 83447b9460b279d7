-- Substring search for the admin page (`GET /api/clients?q=`) through a trigram index, so a rare
-- or absent term no longer reads every client. It is an FTS5 external-content index: it stores
-- only the index, over the view below (the same fields the search always matched: email, the
-- full name and the platform's client id), and the triggers keep it in step with `clients`.
CREATE VIEW clients_search_source AS
    SELECT rowid AS client_rowid, email, first_name || ' ' || last_name AS full_name,
           coalesce(platform_client_id, '') AS platform_id
    FROM clients;

CREATE VIRTUAL TABLE clients_search USING fts5(
    email, full_name, platform_id,
    content = 'clients_search_source', content_rowid = 'client_rowid', tokenize = 'trigram'
);

CREATE TRIGGER clients_search_insert AFTER INSERT ON clients BEGIN
    INSERT INTO clients_search (rowid, email, full_name, platform_id)
    VALUES (new.rowid, new.email, new.first_name || ' ' || new.last_name, coalesce(new.platform_client_id, ''));
END;

CREATE TRIGGER clients_search_delete AFTER DELETE ON clients BEGIN
    INSERT INTO clients_search (clients_search, rowid, email, full_name, platform_id)
    VALUES ('delete', old.rowid, old.email, old.first_name || ' ' || old.last_name, coalesce(old.platform_client_id, ''));
END;

CREATE TRIGGER clients_search_update AFTER UPDATE OF email, first_name, last_name, platform_client_id ON clients
BEGIN
    INSERT INTO clients_search (clients_search, rowid, email, full_name, platform_id)
    VALUES ('delete', old.rowid, old.email, old.first_name || ' ' || old.last_name, coalesce(old.platform_client_id, ''));
    INSERT INTO clients_search (rowid, email, full_name, platform_id)
    VALUES (new.rowid, new.email, new.first_name || ' ' || new.last_name, coalesce(new.platform_client_id, ''));
END;

-- Clients registered before this migration.
INSERT INTO clients_search (clients_search) VALUES ('rebuild');
