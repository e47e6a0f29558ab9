-- Quarry metadata store, schema v1 (PostgreSQL).
-- Timestamps are RFC 3339 UTC text with microseconds, so they sort as text.
-- Connections are referenced only by their text id ('conn_' + 22 chars).

CREATE TABLE connections (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL UNIQUE,
    source_type     TEXT NOT NULL,
    config          TEXT NOT NULL,           -- JSON object without secrets
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_tested_at  TEXT,
    test_status     TEXT,
    test_latency_ms BIGINT,
    test_error      TEXT,
    server_version  TEXT
);

CREATE TABLE secrets (
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    field         TEXT NOT NULL,             -- config key the secret belongs to
    key_id        TEXT NOT NULL,             -- fingerprint of the key that sealed it
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,            -- AES-256-GCM, connection id as associated data
    PRIMARY KEY (connection_id, field)
);

CREATE TABLE source_tables (
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    table_schema  TEXT NOT NULL,
    table_name    TEXT NOT NULL,
    table_type    TEXT NOT NULL,             -- 'table' or 'view'
    row_estimate  BIGINT,
    arrow_schema  TEXT,                      -- the Arrow schema a fetch must produce
    discovered_at TEXT NOT NULL,
    fetch_count   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (connection_id, table_schema, table_name)
);

CREATE TABLE source_columns (
    connection_id    TEXT NOT NULL,
    table_schema     TEXT NOT NULL,
    table_name       TEXT NOT NULL,
    column_name      TEXT NOT NULL,
    ordinal_position BIGINT NOT NULL,
    source_type      TEXT NOT NULL,
    numeric_precision BIGINT,
    numeric_scale    BIGINT,
    is_nullable      BIGINT NOT NULL,        -- 0 or 1
    arrow_type       TEXT NOT NULL,
    PRIMARY KEY (connection_id, table_schema, table_name, column_name),
    FOREIGN KEY (connection_id, table_schema, table_name)
        REFERENCES source_tables (connection_id, table_schema, table_name) ON DELETE CASCADE
);

CREATE TABLE cache_entries (
    connection_id TEXT NOT NULL,
    table_schema  TEXT NOT NULL,
    table_name    TEXT NOT NULL,
    version       BIGINT NOT NULL,
    path          TEXT NOT NULL,             -- relative to the data dir
    row_count     BIGINT NOT NULL,
    byte_size     BIGINT NOT NULL,
    arrow_schema  TEXT NOT NULL,
    fetched_at    TEXT NOT NULL,
    is_current    BIGINT NOT NULL DEFAULT 1, -- 0 once superseded, until readers are done
    PRIMARY KEY (connection_id, table_schema, table_name, version),
    FOREIGN KEY (connection_id, table_schema, table_name)
        REFERENCES source_tables (connection_id, table_schema, table_name) ON DELETE CASCADE
);
