-- Quarry metadata store, schema v7: a superseded cache version records when it was
-- replaced (a shared PostgreSQL store keeps it for a grace period; SQLite deletes it at once).

ALTER TABLE cache_entries ADD COLUMN superseded_at TEXT;
