-- compatible-from: 4
-- Pod migration: a pod being switched to another node is fenced (writes wait,
-- then get 503) by the migration that switches it, and migrations report
-- their progress through the outbox (kind 'migration', details in JSON).
-- SQLite cannot alter a CHECK constraint, so the events table is rebuilt
-- with its rows, ids and id sequence.
ALTER TABLE pods ADD COLUMN fence INTEGER;
-- When the switch fenced the pod: finished_at - fenced_at is how long
-- writes waited.
ALTER TABLE migrations ADD COLUMN fenced_at INTEGER;
CREATE TABLE events_v4 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    pod_id     TEXT NOT NULL,
    path       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('create', 'update', 'delete', 'owner', 'migration')),
    version    INTEGER NOT NULL,
    etag       TEXT,
    created_at INTEGER NOT NULL,
    detail     TEXT
);
INSERT INTO events_v4 (id, pod_id, path, kind, version, etag, created_at)
    SELECT id, pod_id, path, kind, version, etag, created_at FROM events;
-- Event ids are resource versions: they keep growing past pruned rows.
DELETE FROM sqlite_sequence WHERE name = 'events_v4';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'events_v4', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
