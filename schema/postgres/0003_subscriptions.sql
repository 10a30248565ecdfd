-- compatible-from: 1
-- Solid Notifications: every channel a client set up. A WebSocket channel
-- is held by whichever node the client connects to; its row is what lets any
-- node accept that connection, before and after a restart.
CREATE TABLE subscriptions (
    id           TEXT PRIMARY KEY,
    channel_type TEXT NOT NULL CHECK (channel_type IN ('websocket', 'webhook', 'streaming')),
    pod_id       TEXT NOT NULL,
    path         TEXT NOT NULL,
    topic        TEXT NOT NULL,
    send_to      TEXT,
    state        TEXT,
    start_at     BIGINT,
    end_at       BIGINT,
    rate_ms      BIGINT,
    accept       TEXT,
    agent        TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX subscriptions_topic ON subscriptions (pod_id, path);
