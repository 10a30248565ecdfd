-- compatible-from: 4
-- Edge nodes: home boxes on SQLite and local disk that enrol with the
-- centre and send it signed heartbeats. A row exists from `xpod nodes
-- create-edge` on; `token_hash` (SHA-256 hex of the one-time enrolment
-- token) is cleared by the enrolment that uses it, which also registers
-- the edge's `nodes` row and public key. `tunnel_node` is the centre node
-- that holds the edge's tunnel. Additive: older binaries ignore it.
CREATE TABLE edges (
    node_id     TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    token_hash  TEXT,
    created_at  BIGINT NOT NULL,
    enrolled_at BIGINT,
    last_signal BIGINT,
    tunnel_node TEXT
);
-- A node's pods, for heartbeats and listings by owner.
CREATE INDEX pods_node ON pods (node_id);
