-- compatible-from: 1
-- Pod owner changes are outbox events too (placement caches follow them), and
-- every insert into the outbox wakes the followers that LISTEN.
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check
    CHECK (kind IN ('create', 'update', 'delete', 'owner'));

CREATE FUNCTION xpod_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('xpod_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION xpod_events_notify();
