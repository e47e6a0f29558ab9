-- Quarry metadata store, schema v5: incremental refresh. A cache version is its base file
-- plus the delta files appended since (a JSON array of paths, oldest first), and each table
-- keeps the outcome of its last refresh and its last failure.

ALTER TABLE cache_entries ADD COLUMN delta_paths TEXT;
ALTER TABLE source_tables ADD COLUMN refresh_kind TEXT;
ALTER TABLE source_tables ADD COLUMN refreshed_at TEXT;
ALTER TABLE source_tables ADD COLUMN refresh_rows BIGINT;
ALTER TABLE source_tables ADD COLUMN refresh_ms BIGINT;
ALTER TABLE source_tables ADD COLUMN full_refreshed_at TEXT;
ALTER TABLE source_tables ADD COLUMN refreshes_since_full BIGINT NOT NULL DEFAULT 0;
ALTER TABLE source_tables ADD COLUMN refresh_error TEXT;
ALTER TABLE source_tables ADD COLUMN refresh_error_at TEXT;
