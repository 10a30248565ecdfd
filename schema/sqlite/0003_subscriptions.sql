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
    start_at     INTEGER,
    end_at       INTEGER,
    rate_ms      INTEGER,
    accept       TEXT,
    agent        TEXT,
    created_at   INTEGER NOT NULL,
    -- The outbox position when the channel was made: earlier events are not
    -- for it.
    after_xid    TEXT NOT NULL DEFAULT '0',
    after_id     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX subscriptions_topic ON subscriptions (pod_id, path);

-- Webhook notifications waiting to be delivered, in order per channel. A
-- notification is queued once per channel and event (the unique key), so a
-- follower that replays events after a crash queues nothing twice.
CREATE TABLE webhook_queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id      TEXT NOT NULL,
    event_id        INTEGER NOT NULL,
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    first_failed_at INTEGER,
    next_attempt_at INTEGER NOT NULL,
    UNIQUE (channel_id, event_id)
);
CREATE INDEX webhook_queue_due ON webhook_queue (channel_id, id);
