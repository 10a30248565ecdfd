-- compatible-from: 4
-- Pod migration: a pod being switched to another node is fenced (writes wait,
-- then get 503) by the migration that switches it, and migrations report
-- their progress through the outbox (kind 'migration', details in JSON), so
-- the pod's notification channels hear of them on every node.
ALTER TABLE pods ADD COLUMN fence BIGINT;
-- When the switch fenced the pod: finished_at - fenced_at is how long
-- writes waited.
ALTER TABLE migrations ADD COLUMN fenced_at BIGINT;
ALTER TABLE events ADD COLUMN detail TEXT;
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check
    CHECK (kind IN ('create', 'update', 'delete', 'owner', 'migration'));
