-- Quarry metadata store, schema v8: who may see what, and the audit log.
-- A connection has an owner (the user who created it; `local` for the shell and library)
-- and a visibility: public (everyone sees and queries it), private (only its owner and
-- admins see it) or locked (everyone sees and queries it, only admins change it). The
-- server's users managed through its API live here with their role and argon2 hash.
-- The audit log has one row per connection operation (create, update, test, discover,
-- refresh, purge, rename, drop, visibility): who, what, when and the outcome. Rows outlive
-- the connection they name, so the id is not a foreign key.

ALTER TABLE connections ADD COLUMN owner TEXT NOT NULL DEFAULT 'local';
ALTER TABLE connections ADD COLUMN visibility TEXT NOT NULL DEFAULT 'public';

CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    role          TEXT NOT NULL,             -- 'admin' or 'member'
    password_hash TEXT NOT NULL,             -- argon2id PHC string
    created_at    TEXT NOT NULL
);

CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    connection_id   TEXT,
    connection_name TEXT NOT NULL,
    outcome         TEXT NOT NULL,           -- 'ok' or 'failed'
    detail          TEXT                     -- table, new name or error; never a secret
);

CREATE INDEX audit_log_at ON audit_log (at);
