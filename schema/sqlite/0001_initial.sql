-- compatible-from: 1
-- The first schema: nodes, credentials, pods, migrations, the resource tree,
-- reference-counted blobs and the event outbox. Times are Unix milliseconds.

CREATE TABLE nodes (
    node_id        TEXT PRIMARY KEY,
    kind           TEXT NOT NULL DEFAULT 'centre' CHECK (kind IN ('centre', 'edge')),
    internal_ip    TEXT NOT NULL,
    internal_port  INTEGER NOT NULL,
    public_address TEXT,
    storage_id     TEXT,
    version        TEXT NOT NULL,
    public_key     TEXT,
    started_at     INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL
);

CREATE TABLE admin_tokens (
    token_hash TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE cluster_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE pods (
    pod_id     TEXT PRIMARY KEY CHECK (length(pod_id) BETWEEN 1 AND 63),
    base_url   TEXT NOT NULL UNIQUE,
    node_id    TEXT NOT NULL,
    storage_id TEXT NOT NULL,
    owner      TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE migrations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pod_id      TEXT NOT NULL REFERENCES pods (pod_id) ON DELETE CASCADE,
    source_node TEXT NOT NULL,
    target_node TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'copying', 'syncing', 'switching', 'done', 'failed', 'cancelled')),
    progress    INTEGER NOT NULL DEFAULT 0,
    copied      INTEGER NOT NULL DEFAULT 0,
    total       INTEGER NOT NULL DEFAULT 0,
    cursor      TEXT,
    error       TEXT,
    started_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER
);
-- At most one active migration per pod.
CREATE UNIQUE INDEX migrations_one_active ON migrations (pod_id)
    WHERE status IN ('pending', 'copying', 'syncing', 'switching');

CREATE TABLE resources (
    pod_id       TEXT NOT NULL REFERENCES pods (pod_id) ON DELETE CASCADE,
    path         TEXT NOT NULL,
    parent       TEXT,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_hash TEXT,
    etag         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    modified_at  INTEGER NOT NULL,
    PRIMARY KEY (pod_id, path)
);
CREATE INDEX resources_children ON resources (pod_id, parent, path);

CREATE TABLE blobs (
    storage_id TEXT NOT NULL,
    hash       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    refcount   INTEGER NOT NULL CHECK (refcount >= 0),
    zero_since INTEGER,
    PRIMARY KEY (storage_id, hash)
);
CREATE INDEX blobs_unreferenced ON blobs (zero_since) WHERE refcount = 0;

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    pod_id     TEXT NOT NULL,
    path       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('create', 'update', 'delete')),
    version    INTEGER NOT NULL,
    etag       TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE follower_cursors (
    name       TEXT PRIMARY KEY,
    cursor_xid TEXT NOT NULL DEFAULT '0',
    cursor_id  INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
