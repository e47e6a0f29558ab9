-- Quarry metadata store, schema v2: views made with CREATE VIEW, served as quarry.views.<name>.

CREATE TABLE views (
    name            TEXT PRIMARY KEY NOT NULL,
    definition      TEXT NOT NULL,           -- the view's query, as SQL
    default_catalog TEXT NOT NULL,           -- where its unqualified names resolve
    default_schema  TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
