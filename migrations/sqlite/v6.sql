-- Quarry metadata store, schema v6: files and object storage. A table of a `files`
-- connection keeps its format and files as discovered (JSON), and a cache version counts
-- the rows its fetch skipped as unparseable (`bad_rows = 'skip'`).

ALTER TABLE source_tables ADD COLUMN file_set TEXT;
ALTER TABLE cache_entries ADD COLUMN skipped_rows BIGINT NOT NULL DEFAULT 0;
