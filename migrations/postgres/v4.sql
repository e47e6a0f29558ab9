-- Quarry metadata store, schema v4: the keys, constraints and indexes discovery finds,
-- one row per column, replaced with their table's columns.

CREATE TABLE source_constraints (
    connection_id     TEXT NOT NULL,
    table_schema      TEXT NOT NULL,
    table_name        TEXT NOT NULL,
    constraint_type   TEXT NOT NULL,         -- PRIMARY KEY, UNIQUE, FOREIGN KEY or INDEX
    constraint_name   TEXT NOT NULL,
    ordinal_position  BIGINT NOT NULL,        -- 1-based position in the key
    column_name       TEXT NOT NULL,
    referenced_schema TEXT,                  -- for a foreign key: the column it references
    referenced_table  TEXT,
    referenced_column TEXT,
    PRIMARY KEY (connection_id, table_schema, table_name, constraint_type, constraint_name,
                 ordinal_position),
    FOREIGN KEY (connection_id, table_schema, table_name)
        REFERENCES source_tables (connection_id, table_schema, table_name) ON DELETE CASCADE
);
