-- Quarry metadata store, schema v8: the audit log. One row per connection operation
-- (create, update, test, discover, refresh, purge, rename, drop): who, what, when and the
-- outcome. Rows outlive the connection they name, so the id is not a foreign key.

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    connection_id   TEXT,
    connection_name TEXT NOT NULL,
    outcome         TEXT NOT NULL,           -- 'ok' or 'failed'
    detail          TEXT                     -- table, new name or error; never a secret
);

CREATE INDEX audit_log_at ON audit_log (at);
