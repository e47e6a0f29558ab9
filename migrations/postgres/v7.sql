-- Quarry metadata store, schema v7: several processes on one store. A superseded cache
-- version records when it was replaced, so it is deleted only after a grace period (another
-- process may still read it), and every committed change is announced on the channel
-- `quarry_store` (payload: the table changed) so other processes reload what they keep.

ALTER TABLE cache_entries ADD COLUMN superseded_at TEXT;

CREATE FUNCTION quarry_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('quarry_store', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER connections_changed AFTER INSERT OR UPDATE OR DELETE ON connections
    FOR EACH STATEMENT EXECUTE FUNCTION quarry_notify_change();
CREATE TRIGGER secrets_changed AFTER INSERT OR UPDATE OR DELETE ON secrets
    FOR EACH STATEMENT EXECUTE FUNCTION quarry_notify_change();
CREATE TRIGGER source_tables_changed AFTER INSERT OR UPDATE OR DELETE ON source_tables
    FOR EACH STATEMENT EXECUTE FUNCTION quarry_notify_change();
CREATE TRIGGER source_columns_changed AFTER INSERT OR UPDATE OR DELETE ON source_columns
    FOR EACH STATEMENT EXECUTE FUNCTION quarry_notify_change();
CREATE TRIGGER source_constraints_changed AFTER INSERT OR UPDATE OR DELETE ON source_constraints
    FOR EACH STATEMENT EXECUTE FUNCTION quarry_notify_change();
CREATE TRIGGER views_changed AFTER INSERT OR UPDATE OR DELETE ON views
    FOR EACH STATEMENT EXECUTE FUNCTION quarry_notify_change();
CREATE TRIGGER cache_entries_changed AFTER INSERT OR UPDATE OR DELETE ON cache_entries
    FOR EACH STATEMENT EXECUTE FUNCTION quarry_notify_change();
