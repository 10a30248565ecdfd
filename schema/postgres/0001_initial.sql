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
    started_at     BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL
);

CREATE TABLE admin_tokens (
    token_hash TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
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
    created_at BIGINT NOT NULL
);

CREATE TABLE migrations (
    id          BIGSERIAL PRIMARY KEY,
    pod_id      TEXT NOT NULL REFERENCES pods (pod_id) ON DELETE CASCADE,
    source_node TEXT NOT NULL,
    target_node TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'copying', 'syncing', 'switching', 'done', 'failed', 'cancelled')),
    progress    INTEGER NOT NULL DEFAULT 0,
    copied      BIGINT NOT NULL DEFAULT 0,
    total       BIGINT NOT NULL DEFAULT 0,
    cursor      TEXT,
    error       TEXT,
    started_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    finished_at BIGINT
);
-- At most one active migration per pod.
CREATE UNIQUE INDEX migrations_one_active ON migrations (pod_id)
    WHERE status IN ('pending', 'copying', 'syncing', 'switching');

CREATE TABLE resources (
    pod_id       TEXT NOT NULL REFERENCES pods (pod_id) ON DELETE CASCADE,
    path         TEXT NOT NULL COLLATE "C",
    parent       TEXT COLLATE "C",
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    content_hash TEXT,
    etag         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    modified_at  BIGINT NOT NULL,
    PRIMARY KEY (pod_id, path)
);
CREATE INDEX resources_children ON resources (pod_id, parent, path);

CREATE TABLE blobs (
    storage_id TEXT NOT NULL,
    hash       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    refcount   BIGINT NOT NULL CHECK (refcount >= 0),
    zero_since BIGINT,
    PRIMARY KEY (storage_id, hash)
);
CREATE INDEX blobs_unreferenced ON blobs (zero_since) WHERE refcount = 0;

-- The outbox. `xid` is the writing transaction's id: followers read only rows
-- below pg_snapshot_xmin(pg_current_snapshot()), because ids are assigned in
-- sequence order, not commit order.
CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    pod_id     TEXT NOT NULL,
    path       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('create', 'update', 'delete')),
    version    BIGINT NOT NULL,
    etag       TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_position ON events (xid, id);

CREATE TABLE follower_cursors (
    name       TEXT PRIMARY KEY,
    cursor_xid xid8 NOT NULL DEFAULT '0',
    cursor_id  BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
