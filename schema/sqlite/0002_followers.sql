-- compatible-from: 1
-- Pod owner changes are outbox events too. SQLite cannot alter a CHECK
-- constraint, so the table is rebuilt with its rows and ids.
CREATE TABLE events_v2 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    pod_id     TEXT NOT NULL,
    path       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('create', 'update', 'delete', 'owner')),
    version    INTEGER NOT NULL,
    etag       TEXT,
    created_at INTEGER NOT NULL
);
INSERT INTO events_v2 (id, pod_id, path, kind, version, etag, created_at)
    SELECT id, pod_id, path, kind, version, etag, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
