-- Quarry metadata store, schema v3: each table's size estimate (for the access mode
-- `auto`) and the options set on it with set_table_options, which survive rediscovery.

ALTER TABLE source_tables ADD COLUMN byte_estimate BIGINT;
ALTER TABLE source_tables ADD COLUMN options TEXT;
