//! The PostgreSQL store for clusters: a deadpool of tokio-postgres clients.
//! Schema changes run in one transaction under an advisory lock, so any
//! number of nodes may start at once against an empty database.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, Row};

use super::schema::{self, AppliedMigration};
use super::*;
use crate::config::redact_url;

/// The advisory lock key that serialises schema migration ("xpodschm").
const SCHEMA_LOCK: i64 = 0x7870_6f64_7363_686d;
const POOL_SIZE: usize = 16;

fn event_row(r: &tokio_postgres::Row) -> EventRecord {
    EventRecord {
        id: r.get(0),
        pod_id: r.get(1),
        path: r.get(2),
        kind: r.get(3),
        version: r.get(4),
        etag: r.get(5),
        xid: r.get(6),
        created_at: r.get(7),
        detail: r.get(8),
    }
}

const SUBSCRIPTION_COLUMNS: &str = "id, channel_type, pod_id, path, topic, send_to, state, \
     start_at, end_at, rate_ms, accept, agent, created_at, after_xid, after_id";

fn subscription_row(r: &tokio_postgres::Row) -> SubscriptionRecord {
    SubscriptionRecord {
        id: r.get(0),
        channel_type: r.get(1),
        pod_id: r.get(2),
        path: r.get(3),
        topic: r.get(4),
        send_to: r.get(5),
        state: r.get(6),
        start_at: r.get(7),
        end_at: r.get(8),
        rate_ms: r.get(9),
        accept: r.get(10),
        agent: r.get(11),
        created_at: r.get(12),
        after: EventCursor {
            xid: r.get(13),
            id: r.get(14),
        },
    }
}

pub struct PostgresStore {
    pool: Pool,
    /// Notified on every `NOTIFY xpod_events` (see `listen`).
    waker: Arc<tokio::sync::Notify>,
}

/// Keeps a connection that LISTENs on `xpod_events` and wakes followers on
/// each notification; reconnects after a failure.
fn listen(config: tokio_postgres::Config, waker: Arc<tokio::sync::Notify>) {
    use futures::StreamExt;
    tokio::spawn(async move {
        loop {
            match config.connect(NoTls).await {
                Ok((client, mut connection)) => {
                    let pump_waker = waker.clone();
                    let pump = tokio::spawn(async move {
                        let mut messages =
                            futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                        while let Some(Ok(message)) = messages.next().await {
                            if let tokio_postgres::AsyncMessage::Notification(_) = message {
                                pump_waker.notify_waiters();
                            }
                        }
                    });
                    if let Err(e) = client.batch_execute("LISTEN xpod_events").await {
                        tracing::warn!(error = %e, "cannot LISTEN for events; followers poll");
                    }
                    // Events may have been missed while disconnected.
                    waker.notify_waiters();
                    let _ = pump.await;
                    drop(client);
                }
                Err(e) => tracing::debug!(error = %e, "event listener cannot connect; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Races that a retry of the whole transaction resolves: two creates of
/// one path (unique violation), a deadlock, a serialisation failure.
fn is_race(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        c == &SqlState::UNIQUE_VIOLATION
            || c == &SqlState::T_R_DEADLOCK_DETECTED
            || c == &SqlState::T_R_SERIALIZATION_FAILURE
    })
}

fn tx_fail(e: TxError) -> DbError {
    match e {
        TxError::Race => DbError::Conflict("a concurrent write got in the way".into()),
        TxError::Fail(e) => e,
    }
}

/// A transaction's failure: retry it, or give up with this error.
enum TxError {
    Race,
    Fail(DbError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_race(&e) {
            TxError::Race
        } else {
            TxError::Fail(err(e))
        }
    }
}

impl From<DbError> for TxError {
    fn from(e: DbError) -> Self {
        TxError::Fail(e)
    }
}

const RECORD_COLUMNS: &str = "kind, id, account_id, unique_key, data, expires_at, created_at";

fn record_row(r: &tokio_postgres::Row) -> IdpRecord {
    IdpRecord {
        kind: r.get(0),
        id: r.get(1),
        account_id: r.get(2),
        unique_key: r.get(3),
        data: r.get(4),
        expires_at: r.get(5),
        created_at: r.get(6),
    }
}

fn err(e: tokio_postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
            return DbError::Conflict(db.message().to_string());
        }
        return DbError::Other(db.message().to_string());
    }
    if e.is_closed() {
        return DbError::Unavailable(format!("connection to PostgreSQL lost: {e}"));
    }
    DbError::Other(e.to_string())
}

fn pool_err(e: deadpool_postgres::PoolError) -> DbError {
    DbError::Unavailable(format!("PostgreSQL is unreachable: {e}"))
}

impl PostgresStore {
    /// Connects, checks that the server answers, and applies the schema.
    pub async fn open(url: &str) -> DbResult<PostgresStore> {
        let shown = redact_url(url);
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| DbError::Unavailable(format!("invalid PostgreSQL URL {shown}: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("xpod");
        }
        let listen_config = pg.clone();
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(6)))
            .build()
            .map_err(|e| DbError::Other(e.to_string()))?;
        let store = PostgresStore {
            pool,
            waker: Arc::new(tokio::sync::Notify::new()),
        };
        let mut client = store.pool.get().await.map_err(|e| {
            let why = match &e {
                deadpool_postgres::PoolError::Backend(b) => b.to_string(),
                deadpool_postgres::PoolError::Timeout(_) => "timed out".to_string(),
                other => other.to_string(),
            };
            DbError::Unavailable(format!(
                "cannot connect to the database at {shown}: {why}; check CSS_DATABASE_URL and that PostgreSQL is running"
            ))
        })?;
        migrate(&mut client).await?;
        drop(client);
        listen(listen_config, store.waker.clone());
        Ok(store)
    }

    async fn client(&self) -> DbResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// One row at most, through a statement prepared once per connection:
    /// for the lookups every request makes (pod, resource, node).
    async fn query_opt_prepared(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> DbResult<Option<tokio_postgres::Row>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(err)?;
        client.query_opt(&stmt, params).await.map_err(err)
    }
}

async fn migrate(client: &mut deadpool_postgres::Object) -> DbResult<()> {
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            compatible_from BIGINT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .await
    .map_err(err)?;
    let applied = applied(&tx).await?;
    schema::check_compatible(&applied).map_err(DbError::IncompatibleSchema)?;
    for file in schema::POSTGRES {
        if applied.iter().any(|m| m.version == file.version) {
            continue;
        }
        tx.batch_execute(file.sql)
            .await
            .map_err(|e| DbError::Other(format!("schema {} failed: {}", file.name, err(e))))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, compatible_from, applied_at) VALUES ($1, $2, $3, $4)",
            &[&file.version, &file.name, &file.compatible_from(), &now_ms()],
        )
        .await
        .map_err(err)?;
        tracing::info!(version = file.version, name = file.name, "applied schema");
    }
    tx.commit().await.map_err(err)
}

async fn applied(tx: &impl deadpool_postgres::GenericClient) -> DbResult<Vec<AppliedMigration>> {
    let rows = tx
        .query(
            "SELECT version, name, compatible_from FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(err)?;
    Ok(rows
        .iter()
        .map(|r| AppliedMigration {
            version: r.get(0),
            name: r.get(1),
            compatible_from: r.get(2),
        })
        .collect())
}

const NODE_COLUMNS: &str = "node_id, kind, internal_ip, internal_port, public_address, storage_id, version, public_key, started_at, last_heartbeat";

fn node_row(r: &Row) -> NodeRecord {
    NodeRecord {
        node_id: r.get(0),
        kind: r.get(1),
        internal_ip: r.get(2),
        internal_port: r.get::<_, i32>(3) as u16,
        public_address: r.get(4),
        storage_id: r.get(5),
        version: r.get(6),
        public_key: r.get(7),
        started_at: r.get(8),
        last_heartbeat: r.get(9),
    }
}

const POD_COLUMNS: &str = "pod_id, base_url, node_id, storage_id, owner, created_at";
/// What a read of a pod returns: [`POD_COLUMNS`] and the move under way.
const POD_SELECT: &str = "pod_id, base_url, node_id, storage_id, owner, created_at, moving";

fn pod_row(r: &Row) -> PodRecord {
    PodRecord {
        pod_id: r.get(0),
        base_url: r.get(1),
        node_id: r.get(2),
        storage_id: r.get(3),
        owner: r.get(4),
        created_at: r.get(5),
        moving: r.get(6),
    }
}

const EDGE_COLUMNS: &str =
    "node_id, name, token_hash, created_at, enrolled_at, last_signal, tunnel_node";

fn edge_row(r: &Row) -> EdgeRecord {
    EdgeRecord {
        node_id: r.get(0),
        name: r.get(1),
        token_hash: r.get(2),
        created_at: r.get(3),
        enrolled_at: r.get(4),
        last_signal: r.get(5),
        tunnel_node: r.get(6),
    }
}

const WEBHOOK_COLUMNS: &str = "q.id, q.channel_id, q.event_id, q.body, q.attempts, q.first_failed_at, \
     q.next_attempt_at, s.pod_id, COALESCE(s.send_to, ''), s.accept";

fn webhook_row(r: &Row) -> WebhookItem {
    WebhookItem {
        id: r.get(0),
        channel_id: r.get(1),
        event_id: r.get(2),
        body: r.get(3),
        attempts: r.get(4),
        first_failed_at: r.get(5),
        next_attempt_at: r.get(6),
        pod_id: r.get(7),
        send_to: r.get(8),
        accept: r.get(9),
    }
}

const MIGRATION_COLUMNS: &str = "id, pod_id, source_node, target_node, status, progress, copied, total, cursor, error, started_at, updated_at, finished_at, fenced_at";

fn migration_row(r: &Row) -> DbResult<MigrationRecord> {
    Ok(MigrationRecord {
        id: r.get(0),
        pod_id: r.get(1),
        source_node: r.get(2),
        target_node: r.get(3),
        status: MigrationStatus::parse(r.get(4))?,
        progress: r.get(5),
        copied: r.get(6),
        total: r.get(7),
        cursor: r.get(8),
        error: r.get(9),
        started_at: r.get(10),
        updated_at: r.get(11),
        finished_at: r.get(12),
        fenced_at: r.get(13),
    })
}

#[async_trait]
impl MetadataStore for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    async fn ping(&self) -> DbResult<()> {
        self.client()
            .await?
            .query_one("SELECT 1", &[])
            .await
            .map(|_| ())
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    async fn applied_migrations(&self) -> DbResult<Vec<AppliedMigration>> {
        applied(&self.client().await?).await
    }

    async fn setting_init(&self, key: &str, value: &str) -> DbResult<String> {
        let client = self.client().await?;
        // `DO NOTHING` plus a SELECT would miss a row that a racing node
        // commits after this statement's snapshot; a no-op `DO UPDATE` waits
        // for that node and always returns the row that won.
        let row = client
            .query_one(
                "INSERT INTO cluster_settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = cluster_settings.value
                 RETURNING value",
                &[&key, &value],
            )
            .await
            .map_err(err)?;
        Ok(row.get(0))
    }

    async fn setting_get(&self, key: &str) -> DbResult<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM cluster_settings WHERE key = $1", &[&key])
            .await
            .map_err(err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn node_upsert(&self, n: &NodeRecord) -> DbResult<()> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO nodes ({NODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (node_id) DO UPDATE SET kind = excluded.kind,
                       internal_ip = excluded.internal_ip, internal_port = excluded.internal_port,
                       public_address = excluded.public_address, storage_id = excluded.storage_id,
                       version = excluded.version, public_key = excluded.public_key,
                       started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat"
                ),
                &[
                    &n.node_id,
                    &n.kind,
                    &n.internal_ip,
                    &(n.internal_port as i32),
                    &n.public_address,
                    &n.storage_id,
                    &n.version,
                    &n.public_key,
                    &n.started_at,
                    &n.last_heartbeat,
                ],
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn node_get(&self, node_id: &str) -> DbResult<Option<NodeRecord>> {
        let row = self
            .query_opt_prepared(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = $1"),
                &[&node_id],
            )
            .await?;
        Ok(row.as_ref().map(node_row))
    }

    async fn node_heartbeat(&self, node_id: &str, at: i64) -> DbResult<()> {
        self.client()
            .await?
            .execute(
                "UPDATE nodes SET last_heartbeat = $2 WHERE node_id = $1",
                &[&node_id, &at],
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn node_remove(&self, node_id: &str) -> DbResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        // Lock the node's pods so none is assigned to it meanwhile.
        let pods: i64 = tx
            .query_one(
                "SELECT count(*) FROM (SELECT 1 FROM pods WHERE node_id = $1 FOR UPDATE) p",
                &[&node_id],
            )
            .await
            .map_err(err)?
            .get(0);
        if pods > 0 {
            return Err(DbError::Conflict(format!(
                "node {node_id} still owns {pods} pod(s); reassign or drain them first"
            )));
        }
        let n = tx
            .execute("DELETE FROM nodes WHERE node_id = $1", &[&node_id])
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(n == 1)
    }

    async fn pod_move_in(
        &self,
        pod_id: &str,
        from: &str,
        to: &str,
        to_storage: &str,
        owner: Option<&str>,
        moving: &str,
    ) -> DbResult<()> {
        let (pod, from, to, storage, owner, moving) = (
            pod_id.to_string(),
            from.to_string(),
            to.to_string(),
            to_storage.to_string(),
            owner.map(str::to_string),
            moving.to_string(),
        );
        self.retrying(move |tx| {
            let (pod, from, to, storage, owner, moving) = (
                pod.clone(),
                from.clone(),
                to.clone(),
                storage.clone(),
                owner.clone(),
                moving.clone(),
            );
            Box::pin(async move {
                let (node, current) = pod_owner_and_move(tx, &pod).await?;
                if let Some(current) = current {
                    return resume_move(tx, &pod, &current, &from, &to, &moving).await;
                }
                if node != from {
                    return Err(TxError::Fail(DbError::Conflict(format!(
                        "pod {pod} is on node {node}, not on {from}"
                    ))));
                }
                tx.execute(
                    "UPDATE pods SET node_id = $2, storage_id = $3, owner = COALESCE($4, owner),
                       moving = $5 WHERE pod_id = $1",
                    &[&pod, &to, &storage, &owner, &moving],
                )
                .await?;
                if get_resource(tx, &pod, "/", "FOR UPDATE").await?.is_none() {
                    insert_container(tx, &pod, "/", now_ms()).await?;
                }
                owner_event(tx, &pod).await
            })
        })
        .await
    }

    async fn pod_move_out(&self, pod_id: &str, from: &str, moving: &str) -> DbResult<()> {
        let (pod, from, moving) = (pod_id.to_string(), from.to_string(), moving.to_string());
        self.retrying(move |tx| {
            let (pod, from, moving) = (pod.clone(), from.clone(), moving.clone());
            Box::pin(async move {
                let (node, current) = pod_owner_and_move(tx, &pod).await?;
                let (_, to) = super::move_ends(&moving);
                if let Some(current) = current {
                    return resume_move(tx, &pod, &current, &from, &to, &moving).await;
                }
                if node != from {
                    return Err(TxError::Fail(DbError::Conflict(format!(
                        "pod {pod} is on node {node}, not on {from}"
                    ))));
                }
                tx.execute(
                    "UPDATE pods SET moving = $2, fence = $3 WHERE pod_id = $1",
                    &[&pod, &moving, &now_ms()],
                )
                .await?;
                owner_event(tx, &pod).await
            })
        })
        .await
    }

    async fn pod_move_end(&self, pod_id: &str, hand_to: Option<(&str, &str)>) -> DbResult<()> {
        let pod = pod_id.to_string();
        let hand_to = hand_to.map(|(n, s)| (n.to_string(), s.to_string()));
        self.retrying(move |tx| {
            let (pod, hand_to) = (pod.clone(), hand_to.clone());
            Box::pin(async move {
                let (node, current) = pod_owner_and_move(tx, &pod).await?;
                if current.is_none() {
                    if hand_to.as_ref().is_some_and(|(n, _)| *n == node) {
                        return Ok(());
                    }
                    return Err(TxError::Fail(DbError::Conflict(format!(
                        "pod {pod} is not moving"
                    ))));
                }
                match &hand_to {
                    Some((node, storage)) => {
                        release_pod_data(tx, &pod).await?;
                        tx.execute(
                            "UPDATE pods SET node_id = $2, storage_id = $3, moving = NULL, fence = NULL
                             WHERE pod_id = $1",
                            &[&pod, node, storage],
                        )
                        .await?;
                    }
                    None => {
                        tx.execute(
                            "UPDATE pods SET moving = NULL, fence = NULL WHERE pod_id = $1",
                            &[&pod],
                        )
                        .await?;
                    }
                }
                owner_event(tx, &pod).await
            })
        })
        .await
    }

    async fn pod_fence(&self, pod_id: &str, fenced: bool) -> DbResult<()> {
        let fence = fenced.then(now_ms);
        self.client()
            .await?
            .execute(
                "UPDATE pods SET fence = $2 WHERE pod_id = $1",
                &[&pod_id, &fence],
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn pod_delete(&self, pod_id: &str) -> DbResult<bool> {
        let pod = pod_id.to_string();
        self.retrying(move |tx| {
            let pod = pod.clone();
            Box::pin(async move {
                match pod_owner_and_move(tx, &pod).await {
                    Err(TxError::Fail(DbError::NotFound)) => return Ok(false),
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
                release_pod_data(tx, &pod).await?;
                tx.execute("DELETE FROM pods WHERE pod_id = $1", &[&pod])
                    .await?;
                owner_event(tx, &pod).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn pod_set_owner(&self, pod_id: &str, from: &str, to: &str) -> DbResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        // UPDATE takes the row lock that conflicts with writers' FOR SHARE.
        let n = tx
            .execute(
                "UPDATE pods SET node_id = $3 WHERE pod_id = $1 AND node_id = $2",
                &[&pod_id, &from, &to],
            )
            .await
            .map_err(err)?;
        if n == 1 {
            // Placement caches learn of the move from the outbox.
            tx.execute(
                "INSERT INTO events (pod_id, path, kind, version, created_at) VALUES ($1, '/', 'owner', 0, $2)",
                &[&pod_id, &super::now_ms()],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(n == 1)
    }

    async fn node_list(&self) -> DbResult<Vec<NodeRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY node_id"),
                &[],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(node_row).collect())
    }

    async fn admin_token_add(&self, token_hash: &str, created_by: &str) -> DbResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO admin_tokens (token_hash, created_by, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (token_hash) DO NOTHING",
                &[&token_hash, &created_by, &now_ms()],
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn admin_token_exists(&self, token_hash: &str) -> DbResult<bool> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT 1 FROM admin_tokens WHERE token_hash = $1",
                &[&token_hash],
            )
            .await
            .map_err(err)?;
        Ok(row.is_some())
    }

    async fn pod_get(&self, pod_id: &str) -> DbResult<Option<PodRecord>> {
        let row = self
            .query_opt_prepared(
                &format!("SELECT {POD_SELECT} FROM pods WHERE pod_id = $1"),
                &[&pod_id],
            )
            .await?;
        Ok(row.as_ref().map(pod_row))
    }

    async fn pod_list(&self) -> DbResult<Vec<PodRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {POD_SELECT} FROM pods ORDER BY pod_id"),
                &[],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(pod_row).collect())
    }

    async fn pods_of_node(&self, node_id: &str) -> DbResult<Vec<PodRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {POD_SELECT} FROM pods WHERE node_id = $1 ORDER BY pod_id"),
                &[&node_id],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(pod_row).collect())
    }

    async fn edge_create(
        &self,
        node_id: &str,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> DbResult<()> {
        let (id, name, hash) = (
            node_id.to_string(),
            name.to_string(),
            token_hash.to_string(),
        );
        // A racing create of the same name or id loses on the unique
        // index, and its retry names the clash.
        self.retrying(move |tx| {
            let (id, name, hash) = (id.clone(), name.clone(), hash.clone());
            Box::pin(async move {
                if tx
                    .query_opt("SELECT 1 FROM edges WHERE name = $1", &[&name])
                    .await?
                    .is_some()
                {
                    return Err(DbError::Conflict(format!("an edge named {name} exists")).into());
                }
                let taken = tx
                    .query_opt(
                        "SELECT 1 FROM edges WHERE node_id = $1
                         UNION ALL SELECT 1 FROM nodes WHERE node_id = $1",
                        &[&id],
                    )
                    .await?
                    .is_some();
                if taken {
                    return Err(DbError::Conflict(format!("node id {id} is taken")).into());
                }
                tx.execute(
                    "INSERT INTO edges (node_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
                    &[&id, &name, &hash, &now],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn edge_get(&self, node_id: &str) -> DbResult<Option<EdgeRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {EDGE_COLUMNS} FROM edges WHERE node_id = $1"),
                &[&node_id],
            )
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(edge_row))
    }

    async fn edge_list(&self) -> DbResult<Vec<EdgeRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {EDGE_COLUMNS} FROM edges ORDER BY name"),
                &[],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(edge_row).collect())
    }

    async fn edge_enrol(
        &self,
        node_id: &str,
        expected_token_hash: &str,
        public_key: &str,
        version: &str,
        now: i64,
    ) -> DbResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        // A second enrolment with the same token waits on this row's lock
        // and then finds the hash gone.
        let used = tx
            .execute(
                "UPDATE edges SET token_hash = NULL, enrolled_at = $3
                 WHERE node_id = $1 AND token_hash = $2",
                &[&node_id, &expected_token_hash, &now],
            )
            .await
            .map_err(err)?;
        if used == 0 {
            return Ok(false);
        }
        let registered = tx
            .execute(
                &format!(
                    "INSERT INTO nodes ({NODE_COLUMNS})
                     VALUES ($1, 'edge', '', 0, NULL, $2, $3, $4, $5, $5)
                     ON CONFLICT (node_id) DO UPDATE SET storage_id = excluded.storage_id,
                       version = excluded.version, public_key = excluded.public_key,
                       started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat
                     WHERE nodes.kind = 'edge'"
                ),
                &[
                    &node_id,
                    &edge_storage_id(node_id),
                    &version,
                    &public_key,
                    &now,
                ],
            )
            .await
            .map_err(err)?;
        if registered == 0 {
            return Err(DbError::Conflict(format!(
                "node id {node_id} belongs to a centre node"
            )));
        }
        tx.commit().await.map_err(err)?;
        Ok(true)
    }

    async fn edge_signal(
        &self,
        node_id: &str,
        version: &str,
        pods: &[(String, String)],
        now: i64,
    ) -> DbResult<Vec<(String, String)>> {
        let (id, version, pods) = (node_id.to_string(), version.to_string(), pods.to_vec());
        // A pod created elsewhere at the same moment wins on the unique
        // index; the retry then refuses it.
        self.retrying(move |tx| {
            let (id, version, pods) = (id.clone(), version.clone(), pods.clone());
            Box::pin(async move {
                let n = tx
                    .execute(
                        "UPDATE nodes SET last_heartbeat = $2, version = $3
                         WHERE node_id = $1 AND kind = 'edge'",
                        &[&id, &now, &version],
                    )
                    .await?;
                if n == 0 {
                    return Err(DbError::NotFound.into());
                }
                tx.execute(
                    "UPDATE edges SET last_signal = $2 WHERE node_id = $1",
                    &[&id, &now],
                )
                .await?;
                let holders = tx
                    .prepare("SELECT pod_id, node_id FROM pods WHERE pod_id = $1 OR base_url = $2")
                    .await?;
                let insert = tx
                    .prepare(&format!(
                        "INSERT INTO pods ({POD_COLUMNS}) VALUES ($1, $2, $3, $4, NULL, $5)"
                    ))
                    .await?;
                let storage = edge_storage_id(&id);
                let mut refused = Vec::new();
                for (pod, base) in &pods {
                    let held: Vec<(String, String)> = tx
                        .query(&holders, &[pod, base])
                        .await?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect();
                    match edge_pod(&id, pod, &held) {
                        EdgePod::Keep => {}
                        EdgePod::Refuse(why) => refused.push((pod.clone(), why)),
                        EdgePod::Register => {
                            tx.execute(&insert, &[pod, base, &id, &storage, &now])
                                .await?;
                        }
                    }
                }
                // A pod the edge no longer has (deleted, renamed) frees its name.
                let registered: Vec<String> = tx
                    .query(
                        "SELECT pod_id FROM pods WHERE node_id = $1 AND moving IS NULL FOR UPDATE",
                        &[&id],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                for gone in registered
                    .iter()
                    .filter(|p| !pods.iter().any(|(l, _)| l == *p))
                {
                    tx.execute("DELETE FROM pods WHERE pod_id = $1", &[gone])
                        .await?;
                    owner_event(tx, gone).await?;
                }
                Ok(refused)
            })
        })
        .await
    }

    async fn edge_tunnel_set(&self, node_id: &str, centre_node: Option<&str>) -> DbResult<()> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE edges SET tunnel_node = $2 WHERE node_id = $1",
                &[&node_id, &centre_node],
            )
            .await
            .map_err(err)?;
        if n == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    async fn migration_start(
        &self,
        pod_id: &str,
        source_node: &str,
        target_node: &str,
    ) -> DbResult<MigrationRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        // Lock the pod row so an ownership change cannot interleave.
        let pod = tx
            .query_opt("SELECT 1 FROM pods WHERE pod_id = $1 FOR SHARE", &[&pod_id])
            .await
            .map_err(err)?;
        if pod.is_none() {
            return Err(DbError::NotFound);
        }
        let now = now_ms();
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO migrations (pod_id, source_node, target_node, status, started_at, updated_at)
                     VALUES ($1, $2, $3, 'pending', $4, $4) RETURNING {MIGRATION_COLUMNS}"
                ),
                &[&pod_id, &source_node, &target_node, &now],
            )
            .await
            .map_err(|e| match err(e) {
                DbError::Conflict(_) => {
                    DbError::Conflict(format!("a migration of pod {pod_id} is already running"))
                }
                other => other,
            })?;
        let m = migration_row(&row)?;
        // Wakes the target node, which drives it.
        migration_event(&tx, &m).await?;
        tx.commit().await.map_err(err)?;
        Ok(m)
    }

    async fn migration_active(&self, pod_id: &str) -> DbResult<Option<MigrationRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {MIGRATION_COLUMNS} FROM migrations WHERE pod_id = $1
                     AND status IN ('pending', 'copying', 'syncing', 'switching')"
                ),
                &[&pod_id],
            )
            .await
            .map_err(err)?;
        row.as_ref().map(migration_row).transpose()
    }

    async fn migrations_active(&self) -> DbResult<Vec<MigrationRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {MIGRATION_COLUMNS} FROM migrations
                     WHERE status IN ('pending', 'copying', 'syncing', 'switching') ORDER BY pod_id"
                ),
                &[],
            )
            .await
            .map_err(err)?;
        rows.iter().map(migration_row).collect()
    }

    async fn migration_latest(&self, pod_id: &str) -> DbResult<Option<MigrationRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {MIGRATION_COLUMNS} FROM migrations WHERE pod_id = $1 ORDER BY id DESC LIMIT 1"
                ),
                &[&pod_id],
            )
            .await
            .map_err(err)?;
        row.as_ref().map(migration_row).transpose()
    }

    async fn migration_progress(
        &self,
        id: i64,
        status: MigrationStatus,
        copied: i64,
        total: i64,
        cursor: Option<&str>,
    ) -> DbResult<MigrationRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let before = lock_migration(&tx, id).await?;
        // A cancelled (or switching, or finished) migration is not moved back.
        if !matches!(
            before.status,
            MigrationStatus::Pending | MigrationStatus::Syncing | MigrationStatus::Copying
        ) {
            return Ok(before);
        }
        let progress = progress_percent(copied, total);
        let row = tx
            .query_one(
                &format!(
                    "UPDATE migrations SET status = $2, copied = $3, total = $4, progress = $5,
                       cursor = COALESCE($6, cursor), updated_at = $7
                     WHERE id = $1 RETURNING {MIGRATION_COLUMNS}"
                ),
                &[
                    &id,
                    &status.as_str(),
                    &copied,
                    &total,
                    &progress,
                    &cursor,
                    &now_ms(),
                ],
            )
            .await
            .map_err(err)?;
        let after = migration_row(&row)?;
        if after.status != before.status || after.progress != before.progress {
            migration_event(&tx, &after).await?;
        }
        tx.commit().await.map_err(err)?;
        Ok(after)
    }

    async fn migration_cancel(&self, pod_id: &str) -> DbResult<MigrationRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {MIGRATION_COLUMNS} FROM migrations WHERE pod_id = $1
                     AND status IN ('pending', 'copying', 'syncing', 'switching') FOR UPDATE"
                ),
                &[&pod_id],
            )
            .await
            .map_err(err)?
            .ok_or(DbError::NotFound)?;
        let m = migration_row(&row)?;
        if m.status == MigrationStatus::Switching {
            return Err(DbError::Conflict(format!(
                "the migration of pod {pod_id} is already switching owners and can no longer be cancelled"
            )));
        }
        let now = now_ms();
        let row = tx
            .query_one(
                &format!(
                    "UPDATE migrations SET status = 'cancelled', error = 'cancelled by an administrator',
                       updated_at = $2, finished_at = $2 WHERE id = $1 RETURNING {MIGRATION_COLUMNS}"
                ),
                &[&m.id, &now],
            )
            .await
            .map_err(err)?;
        let m = migration_row(&row)?;
        migration_event(&tx, &m).await?;
        tx.commit().await.map_err(err)?;
        Ok(m)
    }

    async fn pod_blobs(
        &self,
        pod_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> DbResult<Vec<(String, i64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT content_hash, max(size) FROM resources
                 WHERE pod_id = $1 AND content_hash IS NOT NULL AND content_hash COLLATE \"C\" > $2
                 GROUP BY content_hash ORDER BY content_hash COLLATE \"C\" LIMIT $3",
                &[&pod_id, &after.unwrap_or(""), &(limit as i64)],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn pod_blob_count(&self, pod_id: &str) -> DbResult<i64> {
        Ok(self
            .client()
            .await?
            .query_one(
                "SELECT count(DISTINCT content_hash) FROM resources WHERE pod_id = $1",
                &[&pod_id],
            )
            .await
            .map_err(err)?
            .get(0))
    }

    async fn pod_blobs_missing(
        &self,
        pod_id: &str,
        storage_id: &str,
        limit: u32,
    ) -> DbResult<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT DISTINCT r.content_hash FROM resources r
                 WHERE r.pod_id = $1 AND r.content_hash IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM blobs b WHERE b.storage_id = $2 AND b.hash = r.content_hash)
                 LIMIT $3",
                &[&pod_id, &storage_id, &(limit as i64)],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn migration_fence(&self, id: i64) -> DbResult<MigrationRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let m = lock_migration(&tx, id).await?;
        if m.status == MigrationStatus::Switching {
            return Ok(m);
        }
        if !m.status.is_active() {
            return Err(DbError::Conflict(format!(
                "the migration is {}",
                m.status.as_str()
            )));
        }
        // This row lock waits for writes in flight (they hold FOR SHARE);
        // writes that come later see the fence.
        let n = tx
            .execute(
                "UPDATE pods SET fence = $2 WHERE pod_id = $1 AND node_id = $3",
                &[&m.pod_id, &id, &m.source_node],
            )
            .await
            .map_err(err)?;
        if n == 0 {
            return Err(DbError::Conflict(format!(
                "pod {} is no longer owned by node {}",
                m.pod_id, m.source_node
            )));
        }
        let row = tx
            .query_one(
                &format!(
                    "UPDATE migrations SET status = 'switching', updated_at = $2, fenced_at = $2
                     WHERE id = $1 RETURNING {MIGRATION_COLUMNS}"
                ),
                &[&id, &now_ms()],
            )
            .await
            .map_err(err)?;
        let m = migration_row(&row)?;
        migration_event(&tx, &m).await?;
        tx.commit().await.map_err(err)?;
        Ok(m)
    }

    async fn migration_switch(
        &self,
        id: i64,
        target_storage: &str,
    ) -> DbResult<Result<MigrationRecord, Vec<String>>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let m = lock_migration(&tx, id).await?;
        if m.status != MigrationStatus::Switching {
            return Err(DbError::Conflict(format!(
                "the migration is {}, not switching",
                m.status.as_str()
            )));
        }
        let pod = tx
            .query_opt(
                "SELECT node_id, storage_id, fence FROM pods WHERE pod_id = $1 FOR UPDATE",
                &[&m.pod_id],
            )
            .await
            .map_err(err)?
            .ok_or(DbError::NotFound)?;
        let (owner, source_storage, fence): (String, String, Option<i64>) =
            (pod.get(0), pod.get(1), pod.get(2));
        if owner != m.source_node || fence != Some(id) {
            return Err(DbError::Conflict(format!(
                "pod {} changed hands during the migration (owner {owner})",
                m.pod_id
            )));
        }
        if source_storage != target_storage {
            // The target's copies must all be recorded; their rows stay
            // locked from here to the commit, so the collector cannot take them.
            let refs = "SELECT content_hash AS hash, count(*) AS n FROM resources
                        WHERE pod_id = $1 AND content_hash IS NOT NULL GROUP BY content_hash";
            let missing: Vec<String> = tx
                .query(
                    &format!(
                        "SELECT r.hash FROM ({refs}) r WHERE NOT EXISTS (
                           SELECT 1 FROM blobs b WHERE b.storage_id = $2 AND b.hash = r.hash)"
                    ),
                    &[&m.pod_id, &target_storage],
                )
                .await
                .map_err(err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !missing.is_empty() {
                return Ok(Err(missing));
            }
            let now = now_ms();
            let wanted: i64 = tx
                .query_one(
                    "SELECT count(DISTINCT content_hash) FROM resources WHERE pod_id = $1",
                    &[&m.pod_id],
                )
                .await
                .map_err(err)?
                .get(0);
            let taken = tx
                .execute(
                    &format!(
                        "UPDATE blobs b SET refcount = b.refcount + r.n, zero_since = NULL
                         FROM ({refs}) r WHERE b.storage_id = $2 AND b.hash = r.hash"
                    ),
                    &[&m.pod_id, &target_storage],
                )
                .await
                .map_err(err)?;
            if (taken as i64) < wanted {
                // The collector removed a copy between the check and the
                // update (it held the row lock): nothing is committed; the
                // next round finds the copy missing and fetches it again.
                return Err(DbError::Unavailable(
                    "a copied blob was collected during the switch".into(),
                ));
            }
            // The source's copies become unreferenced unless other pods use
            // them; the collector removes them after its grace period.
            tx.execute(
                &format!(
                    "UPDATE blobs b SET refcount = b.refcount - r.n,
                       zero_since = CASE WHEN b.refcount - r.n = 0 THEN $3::BIGINT ELSE NULL END
                     FROM ({refs}) r WHERE b.storage_id = $2 AND b.hash = r.hash"
                ),
                &[&m.pod_id, &source_storage, &now],
            )
            .await
            .map_err(err)?;
        }
        tx.execute(
            "UPDATE pods SET node_id = $2, storage_id = $3, fence = NULL WHERE pod_id = $1",
            &[&m.pod_id, &m.target_node, &target_storage],
        )
        .await
        .map_err(err)?;
        tx.execute(
            "INSERT INTO events (pod_id, path, kind, version, created_at) VALUES ($1, '/', 'owner', 0, $2)",
            &[&m.pod_id, &now_ms()],
        )
        .await
        .map_err(err)?;
        let now = now_ms();
        let row = tx
            .query_one(
                &format!(
                    "UPDATE migrations SET status = 'done', progress = 100, updated_at = $2,
                       finished_at = $2 WHERE id = $1 RETURNING {MIGRATION_COLUMNS}"
                ),
                &[&id, &now],
            )
            .await
            .map_err(err)?;
        let m = migration_row(&row)?;
        migration_event(&tx, &m).await?;
        tx.commit().await.map_err(err)?;
        Ok(Ok(m))
    }

    async fn migration_fail(
        &self,
        id: i64,
        status: MigrationStatus,
        error: &str,
    ) -> DbResult<MigrationRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let m = lock_migration(&tx, id).await?;
        if !m.status.is_active() {
            return Ok(m);
        }
        tx.execute(
            "UPDATE pods SET fence = NULL WHERE pod_id = $1 AND fence = $2",
            &[&m.pod_id, &id],
        )
        .await
        .map_err(err)?;
        let now = now_ms();
        let row = tx
            .query_one(
                &format!(
                    "UPDATE migrations SET status = $2, error = $3, updated_at = $4, finished_at = $4
                     WHERE id = $1 RETURNING {MIGRATION_COLUMNS}"
                ),
                &[&id, &status.as_str(), &error, &now],
            )
            .await
            .map_err(err)?;
        let m = migration_row(&row)?;
        migration_event(&tx, &m).await?;
        tx.commit().await.map_err(err)?;
        Ok(m)
    }

    async fn pod_create(&self, pod: &PodRecord) -> DbResult<ResourceRecord> {
        let p = pod.clone();
        self.retrying(move |tx| {
            let p = p.clone();
            Box::pin(async move {
                tx.execute(
                    &format!("INSERT INTO pods ({POD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
                    &[
                        &p.pod_id,
                        &p.base_url,
                        &p.node_id,
                        &p.storage_id,
                        &p.owner,
                        &p.created_at,
                    ],
                )
                .await
                .map_err(|e| TxError::Fail(err(e)))?;
                insert_container(tx, &p.pod_id, "/", now_ms()).await
            })
        })
        .await
    }

    async fn resource_get(&self, pod_id: &str, path: &str) -> DbResult<Option<ResourceRecord>> {
        let row = self
            .query_opt_prepared(
                &format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources WHERE pod_id = $1 AND path = $2"
                ),
                &[&pod_id, &path],
            )
            .await?;
        Ok(row.as_ref().map(resource_row))
    }

    async fn resource_put(&self, req: &PutRequest) -> DbResult<PutOutcome> {
        let req = req.clone();
        self.retrying(move |tx| {
            let req = req.clone();
            Box::pin(async move { put_in(tx, &req).await })
        })
        .await
    }

    async fn resource_put_all(&self, reqs: &[PutRequest]) -> DbResult<Vec<PutOutcome>> {
        // One order for every such transaction, so that two of them
        // cannot wait on each other's rows.
        let mut order: Vec<usize> = (0..reqs.len()).collect();
        order.sort_by(|&a, &b| {
            (&reqs[a].pod_id, &reqs[a].path).cmp(&(&reqs[b].pod_id, &reqs[b].path))
        });
        let reqs = reqs.to_vec();
        let mut outcomes = self
            .retrying(move |tx| {
                let (reqs, order) = (reqs.clone(), order.clone());
                Box::pin(async move {
                    let mut out = Vec::with_capacity(reqs.len());
                    for i in order {
                        out.push((i, put_in(tx, &reqs[i]).await?));
                    }
                    Ok(out)
                })
            })
            .await?;
        outcomes.sort_by_key(|(i, _)| *i);
        Ok(outcomes.into_iter().map(|(_, o)| o).collect())
    }

    async fn resource_delete(
        &self,
        pod_id: &str,
        path: &str,
        condition: &Condition,
        writer_node: &str,
    ) -> DbResult<ResourceRecord> {
        let args = (
            pod_id.to_string(),
            path.to_string(),
            condition.clone(),
            writer_node.to_string(),
        );
        self.retrying(move |tx| {
            let (pod, path, cond, writer) = args.clone();
            Box::pin(async move { delete_in(tx, &pod, &path, &cond, &writer).await })
        })
        .await
    }

    async fn resource_children(
        &self,
        pod_id: &str,
        container: &str,
        after: Option<&str>,
        limit: u32,
    ) -> DbResult<Vec<ResourceRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources WHERE pod_id = $1 AND parent = $2 AND path > $3
                     ORDER BY path LIMIT $4"
                ),
                &[&pod_id, &container, &after.unwrap_or(""), &(limit as i64)],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(resource_row).collect())
    }

    async fn events_after(&self, after_id: i64, limit: u32) -> DbResult<Vec<EventRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, pod_id, path, kind, version, etag, xid::text, created_at, detail FROM events WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after_id, &(limit as i64)],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(event_row).collect())
    }

    fn event_waker(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.waker.clone())
    }

    async fn events_since(&self, cursor: &EventCursor, limit: u32) -> DbResult<Vec<EventRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, pod_id, path, kind, version, etag, xid::text, created_at, detail FROM events
                 WHERE (xid, id) > ($1::text::xid8, $2)
                   AND xid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY xid, id LIMIT $3",
                &[&cursor.xid, &cursor.id, &(limit as i64)],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(event_row).collect())
    }

    async fn follower_cursor(&self, name: &str) -> DbResult<Option<EventCursor>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT cursor_xid::text, cursor_id FROM follower_cursors WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(err)?;
        Ok(row.map(|r| EventCursor {
            xid: r.get(0),
            id: r.get(1),
        }))
    }

    async fn follower_cursor_set(&self, name: &str, cursor: &EventCursor) -> DbResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO follower_cursors (name, cursor_xid, cursor_id, updated_at)
                 VALUES ($1, $2::text::xid8, $3, $4)
                 ON CONFLICT (name) DO UPDATE
                 SET cursor_xid = EXCLUDED.cursor_xid, cursor_id = EXCLUDED.cursor_id,
                     updated_at = EXCLUDED.updated_at",
                &[&name, &cursor.xid, &cursor.id, &super::now_ms()],
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn follower_cursor_delete(&self, name: &str) -> DbResult<()> {
        self.client()
            .await?
            .execute("DELETE FROM follower_cursors WHERE name = $1", &[&name])
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn subscription_create(&self, sub: &SubscriptionRecord) -> DbResult<()> {
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &sub.id,
                    &sub.channel_type,
                    &sub.pod_id,
                    &sub.path,
                    &sub.topic,
                    &sub.send_to,
                    &sub.state,
                    &sub.start_at,
                    &sub.end_at,
                    &sub.rate_ms,
                    &sub.accept,
                    &sub.agent,
                    &sub.created_at,
                    &sub.after.xid,
                    &sub.after.id,
                ],
            )
            .await
            .map_err(err)?;
        if n == 0 {
            return Err(DbError::Conflict(format!(
                "subscription {} exists already",
                sub.id
            )));
        }
        Ok(())
    }

    async fn subscription_get(&self, id: &str) -> DbResult<Option<SubscriptionRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(subscription_row))
    }

    async fn subscription_delete(&self, id: &str) -> DbResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        tx.execute("DELETE FROM webhook_queue WHERE channel_id = $1", &[&id])
            .await
            .map_err(err)?;
        let n = tx
            .execute("DELETE FROM subscriptions WHERE id = $1", &[&id])
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(n == 1)
    }

    async fn webhook_enqueue(&self, items: &[(String, i64, String)], now: i64) -> DbResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let mut queued = 0;
        for (channel, event, body) in items {
            queued += tx
                .execute(
                    "INSERT INTO webhook_queue (channel_id, event_id, body, next_attempt_at)
                     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM subscriptions WHERE id = $1)
                     ON CONFLICT (channel_id, event_id) DO NOTHING",
                    &[channel, event, body, &now],
                )
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(queued)
    }

    async fn webhook_heads(&self, limit: u32) -> DbResult<Vec<WebhookItem>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhook_queue q JOIN subscriptions s ON s.id = q.channel_id
                     WHERE q.id = (SELECT MIN(id) FROM webhook_queue WHERE channel_id = q.channel_id)
                     ORDER BY q.next_attempt_at LIMIT $1"
                ),
                &[&(limit as i64)],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(webhook_row).collect())
    }

    async fn webhook_next(&self, channel_id: &str) -> DbResult<Option<WebhookItem>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhook_queue q JOIN subscriptions s ON s.id = q.channel_id
                     WHERE q.channel_id = $1 ORDER BY q.id LIMIT 1"
                ),
                &[&channel_id],
            )
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(webhook_row))
    }

    async fn webhook_delivered(&self, id: i64) -> DbResult<()> {
        self.client()
            .await?
            .execute("DELETE FROM webhook_queue WHERE id = $1", &[&id])
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn webhook_retry(
        &self,
        id: i64,
        attempts: i32,
        first_failed_at: i64,
        next_attempt_at: i64,
    ) -> DbResult<()> {
        self.client()
            .await?
            .execute(
                "UPDATE webhook_queue SET attempts = $2, first_failed_at = $3, next_attempt_at = $4
                 WHERE id = $1",
                &[&id, &attempts, &first_failed_at, &next_attempt_at],
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn subscription_take_state(&self, id: &str) -> DbResult<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE subscriptions s SET state = NULL
                 FROM (SELECT id, state FROM subscriptions WHERE id = $1 FOR UPDATE) old
                 WHERE s.id = old.id AND old.state IS NOT NULL
                 RETURNING old.state",
                &[&id],
            )
            .await
            .map_err(err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn subscriptions_of_type(&self, channel_type: &str) -> DbResult<Vec<SubscriptionRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
                     WHERE channel_type = $1 ORDER BY created_at, id"
                ),
                &[&channel_type],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(subscription_row).collect())
    }

    async fn events_head(&self) -> DbResult<EventCursor> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT xid::text, id FROM events
                 WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY xid DESC, id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(err)?;
        Ok(row
            .map(|r| EventCursor {
                xid: r.get(0),
                id: r.get(1),
            })
            .unwrap_or_else(|| EventCursor {
                xid: "0".into(),
                id: 0,
            }))
    }

    async fn events_prune(&self) -> DbResult<u64> {
        self.client()
            .await?
            .execute(
                "DELETE FROM events WHERE (xid, id) <= (
                     SELECT cursor_xid, cursor_id FROM follower_cursors
                     ORDER BY cursor_xid, cursor_id LIMIT 1)",
                &[],
            )
            .await
            .map_err(err)
    }

    async fn dpop_proof_claim(&self, key: &str, expires_at: i64, now: i64) -> DbResult<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO dpop_proofs (proof_key, expires_at) VALUES ($1, $2)
                 ON CONFLICT (proof_key) DO UPDATE SET expires_at = excluded.expires_at
                 WHERE dpop_proofs.expires_at < $3",
                &[&key, &expires_at, &now],
            )
            .await
            .map_err(err)?;
        Ok(n == 1)
    }

    async fn dpop_proofs_prune(&self, now: i64) -> DbResult<u64> {
        self.client()
            .await?
            .execute("DELETE FROM dpop_proofs WHERE expires_at < $1", &[&now])
            .await
            .map_err(err)
    }

    async fn record_insert(&self, record: &IdpRecord) -> DbResult<()> {
        let r = record;
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO idp_records ({RECORD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ),
                &[
                    &r.kind,
                    &r.id,
                    &r.account_id,
                    &r.unique_key,
                    &r.data,
                    &r.expires_at,
                    &r.created_at,
                ],
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn record_update(&self, record: &IdpRecord) -> DbResult<bool> {
        let r = record;
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE idp_records SET data = $3, expires_at = $4 WHERE kind = $1 AND id = $2",
                &[&r.kind, &r.id, &r.data, &r.expires_at],
            )
            .await
            .map_err(err)?;
        Ok(n == 1)
    }

    async fn record_get(&self, kind: &str, id: &str, now: i64) -> DbResult<Option<IdpRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM idp_records WHERE kind = $1 AND id = $2
                     AND (expires_at IS NULL OR expires_at > $3)"
                ),
                &[&kind, &id, &now],
            )
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(record_row))
    }

    async fn record_find(
        &self,
        kind: &str,
        unique_key: &str,
        now: i64,
    ) -> DbResult<Option<IdpRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM idp_records WHERE kind = $1 AND unique_key = $2
                     AND (expires_at IS NULL OR expires_at > $3)"
                ),
                &[&kind, &unique_key, &now],
            )
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(record_row))
    }

    async fn record_list(
        &self,
        kind: &str,
        account_id: Option<&str>,
        now: i64,
    ) -> DbResult<Vec<IdpRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM idp_records WHERE kind = $1
                     AND ($2::text IS NULL OR account_id = $2)
                     AND (expires_at IS NULL OR expires_at > $3)
                     ORDER BY created_at, id"
                ),
                &[&kind, &account_id, &now],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(record_row).collect())
    }

    async fn record_delete(&self, kind: &str, id: &str) -> DbResult<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM idp_records WHERE kind = $1 AND id = $2",
                &[&kind, &id],
            )
            .await
            .map_err(err)?;
        Ok(n == 1)
    }

    async fn records_prune(&self, now: i64) -> DbResult<u64> {
        self.client()
            .await?
            .execute(
                "DELETE FROM idp_records WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(err)
    }

    async fn blob_get(&self, storage_id: &str, hash: &str) -> DbResult<Option<BlobRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT size, refcount, zero_since FROM blobs WHERE storage_id = $1 AND hash = $2",
                &[&storage_id, &hash],
            )
            .await
            .map_err(err)?;
        Ok(row.map(|r| BlobRecord {
            size: r.get(0),
            refcount: r.get(1),
            zero_since: r.get(2),
        }))
    }

    async fn resource_import(
        &self,
        pod_id: &str,
        storage_id: &str,
        items: Vec<ImportItem>,
    ) -> DbResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        if tx
            .query_opt("SELECT 1 FROM pods WHERE pod_id = $1 FOR SHARE", &[&pod_id])
            .await
            .map_err(err)?
            .is_none()
        {
            return Err(DbError::NotFound);
        }
        let now = now_ms();
        let mut touched = std::collections::BTreeSet::new();
        let mut blob_counts: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        // Batches of arrays: one round trip per few thousand rows.
        for batch in items.chunks(5000) {
            let ids: Vec<i64> = tx
                .query(
                    "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, $1)",
                    &[&(batch.len() as i32)],
                )
                .await
                .map_err(err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut paths = Vec::with_capacity(batch.len());
            let mut parents: Vec<Option<String>> = Vec::with_capacity(batch.len());
            let mut types = Vec::with_capacity(batch.len());
            let mut sizes = Vec::with_capacity(batch.len());
            let mut hashes: Vec<Option<String>> = Vec::with_capacity(batch.len());
            let mut etags = Vec::with_capacity(batch.len());
            for (item, id) in batch.iter().zip(&ids) {
                let hash = item.blob.as_ref().map(|(h, _)| h.clone());
                etags.push(make_etag(*id, hash.as_deref()));
                paths.push(item.path.clone());
                parents.push(parent_of(&item.path));
                types.push(item.content_type.clone());
                sizes.push(item.blob.as_ref().map(|(_, s)| *s).unwrap_or(0));
                if let Some((h, s)) = &item.blob {
                    let entry = blob_counts.entry(h.clone()).or_insert((*s, 0));
                    entry.1 += 1;
                }
                hashes.push(hash);
                if let Some(p) = parent_of(&item.path) {
                    touched.insert(p);
                }
            }
            tx.execute(
                "INSERT INTO events (id, pod_id, path, kind, version, etag, created_at)
                 SELECT id, $1, path, 'create', id, etag, $2
                 FROM unnest($3::bigint[], $4::text[], $5::text[]) AS t(id, path, etag)",
                &[&pod_id, &now, &ids, &paths, &etags],
            )
            .await
            .map_err(err)?;
            tx.execute(
                "INSERT INTO resources (pod_id, path, parent, content_type, size, content_hash, etag, version, modified_at)
                 SELECT $1, path, parent, ctype, size, hash, etag, id, $2
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bigint[])
                   AS t(path, parent, ctype, size, hash, etag, id)",
                &[&pod_id, &now, &paths, &parents, &types, &sizes, &hashes, &etags, &ids],
            )
            .await
            .map_err(|e| match err(e) {
                DbError::Conflict(_) => DbError::Conflict("an imported path already exists".into()),
                other => other,
            })?;
        }
        for (hash, (size, count)) in blob_counts {
            blob_ref(&tx, storage_id, &hash, size, count, now)
                .await
                .map_err(tx_fail)?;
        }
        for parent in touched {
            touch_container(&tx, pod_id, &parent, now)
                .await
                .map_err(tx_fail)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(items.len() as u64)
    }

    async fn blob_orphan(&self, storage_id: &str, hash: &str, size: i64) -> DbResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO blobs (storage_id, hash, size, refcount, zero_since) VALUES ($1, $2, $3, 0, $4)
                 ON CONFLICT (storage_id, hash) DO NOTHING",
                &[&storage_id, &hash, &size, &now_ms()],
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn blob_gc_candidates(
        &self,
        storage_id: &str,
        cutoff: i64,
        limit: u32,
    ) -> DbResult<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT hash FROM blobs WHERE storage_id = $1 AND refcount = 0 AND zero_since < $2
                 ORDER BY zero_since LIMIT $3",
                &[&storage_id, &cutoff, &(limit as i64)],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn with_cluster_lock(
        &self,
        key: i64,
        work: super::LockedWork,
    ) -> DbResult<Result<String, String>> {
        // A session lock on a connection of its own: it is held across the
        // work's own database calls, and dropped if this connection dies.
        let client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .map_err(err)?;
        let outcome = work().await;
        if let Err(e) = client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await
        {
            // Never hand a connection holding the lock back to the pool.
            drop(deadpool_postgres::Object::take(client));
            tracing::warn!(error = %e, "cannot release an advisory lock; dropped its connection");
        }
        Ok(outcome)
    }

    async fn blob_gc_collect(
        &self,
        storage_id: &str,
        hash: &str,
        cutoff: i64,
        remove: RemoveBytes,
    ) -> DbResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        // SKIP LOCKED: a row a writer holds is being referenced right now.
        let row = tx
            .query_opt(
                "SELECT 1 FROM blobs WHERE storage_id = $1 AND hash = $2 AND refcount = 0
                 AND zero_since < $3 FOR UPDATE SKIP LOCKED",
                &[&storage_id, &hash, &cutoff],
            )
            .await
            .map_err(err)?;
        if row.is_none() {
            return Ok(false);
        }
        remove()
            .await
            .map_err(|e| DbError::Unavailable(format!("cannot delete blob {hash}: {e}")))?;
        tx.execute(
            "DELETE FROM blobs WHERE storage_id = $1 AND hash = $2",
            &[&storage_id, &hash],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(true)
    }
}

const RESOURCE_COLUMNS: &str =
    "pod_id, path, parent, content_type, size, content_hash, etag, version, modified_at";

fn resource_row(r: &Row) -> ResourceRecord {
    ResourceRecord {
        pod_id: r.get(0),
        path: r.get(1),
        parent: r.get(2),
        content_type: r.get(3),
        size: r.get(4),
        content_hash: r.get(5),
        etag: r.get(6),
        version: r.get(7),
        modified_at: r.get(8),
    }
}

/// A pod's owner and the move under way, locking its row; `NotFound`
/// without the pod.
async fn pod_owner_and_move(tx: &Tx<'_>, pod: &str) -> Result<(String, Option<String>), TxError> {
    let row = tx
        .query_opt(
            "SELECT node_id, moving FROM pods WHERE pod_id = $1 FOR UPDATE",
            &[&pod],
        )
        .await?
        .ok_or(TxError::Fail(DbError::NotFound))?;
    Ok((row.get(0), row.get(1)))
}

/// A move asked for again: the same ends take the new record (its new
/// secret), other ends are a conflict.
async fn resume_move(
    tx: &Tx<'_>,
    pod: &str,
    current: &str,
    from: &str,
    to: &str,
    moving: &str,
) -> Result<(), TxError> {
    if super::move_ends(current) != (from.to_string(), to.to_string()) {
        return Err(TxError::Fail(DbError::Conflict(format!(
            "pod {pod} is already moving elsewhere; finish or cancel that move first"
        ))));
    }
    tx.execute(
        "UPDATE pods SET moving = $2 WHERE pod_id = $1",
        &[&pod, &moving],
    )
    .await?;
    Ok(())
}

/// Deletes a pod's resources; their blobs lose the references (the
/// collector removes unreferenced ones after its grace period).
async fn release_pod_data(tx: &Tx<'_>, pod: &str) -> Result<(), TxError> {
    let storage: String = tx
        .query_one("SELECT storage_id FROM pods WHERE pod_id = $1", &[&pod])
        .await?
        .get(0);
    tx.execute(
        "UPDATE blobs b SET refcount = b.refcount - r.n,
           zero_since = CASE WHEN b.refcount - r.n = 0 THEN $3::BIGINT ELSE NULL END
         FROM (SELECT content_hash AS hash, count(*) AS n FROM resources
               WHERE pod_id = $1 AND content_hash IS NOT NULL GROUP BY content_hash) r
         WHERE b.storage_id = $2 AND b.hash = r.hash",
        &[&pod, &storage, &now_ms()],
    )
    .await?;
    tx.execute("DELETE FROM resources WHERE pod_id = $1", &[&pod])
        .await?;
    Ok(())
}

/// Tells every node's followers that the pod's placement changed.
async fn owner_event(tx: &Tx<'_>, pod: &str) -> Result<(), TxError> {
    tx.execute(
        "INSERT INTO events (pod_id, path, kind, version, created_at) VALUES ($1, '/', 'owner', 0, $2)",
        &[&pod, &now_ms()],
    )
    .await?;
    Ok(())
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Reads a resource; `lock` is "", "FOR SHARE" or "FOR UPDATE".
async fn get_resource(
    tx: &Tx<'_>,
    pod: &str,
    path: &str,
    lock: &str,
) -> Result<Option<ResourceRecord>, TxError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources WHERE pod_id = $1 AND path = $2 {lock}"
            ),
            &[&pod, &path],
        )
        .await?;
    Ok(row.as_ref().map(resource_row))
}

/// Appends an outbox row; its id is the new version of the resource.
async fn record_event(
    tx: &Tx<'_>,
    pod: &str,
    path: &str,
    kind: &str,
    hash: Option<&str>,
    now: i64,
) -> Result<i64, TxError> {
    let id: i64 = tx
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('events', 'id'))",
            &[],
        )
        .await?
        .get(0);
    let etag = (kind != "delete").then(|| make_etag(id, hash));
    tx.execute(
        "INSERT INTO events (id, pod_id, path, kind, version, etag, created_at) VALUES ($1, $2, $3, $4, $1, $5, $6)",
        &[&id, &pod, &path, &kind, &etag, &now],
    )
    .await?;
    Ok(id)
}

async fn insert_resource(tx: &Tx<'_>, r: &ResourceRecord, upsert: bool) -> Result<(), TxError> {
    let on_conflict = if upsert {
        "ON CONFLICT (pod_id, path) DO UPDATE SET content_type = excluded.content_type,
           size = excluded.size, content_hash = excluded.content_hash, etag = excluded.etag,
           version = excluded.version, modified_at = excluded.modified_at"
    } else {
        ""
    };
    tx.execute(
        &format!(
            "INSERT INTO resources ({RESOURCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) {on_conflict}"
        ),
        &[
            &r.pod_id,
            &r.path,
            &r.parent,
            &r.content_type,
            &r.size,
            &r.content_hash,
            &r.etag,
            &r.version,
            &r.modified_at,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_container(
    tx: &Tx<'_>,
    pod: &str,
    path: &str,
    now: i64,
) -> Result<ResourceRecord, TxError> {
    let version = record_event(tx, pod, path, "create", None, now).await?;
    let record = ResourceRecord {
        pod_id: pod.to_string(),
        path: path.to_string(),
        parent: parent_of(path),
        content_type: "text/turtle".into(),
        size: 0,
        content_hash: None,
        etag: make_etag(version, None),
        version,
        modified_at: now,
    };
    insert_resource(tx, &record, false).await?;
    Ok(record)
}

async fn touch_container(tx: &Tx<'_>, pod: &str, path: &str, now: i64) -> Result<(), TxError> {
    let version = record_event(tx, pod, path, "update", None, now).await?;
    tx.execute(
        "UPDATE resources SET version = $3, etag = $4, modified_at = $5 WHERE pod_id = $1 AND path = $2",
        &[&pod, &path, &version, &make_etag(version, None), &now],
    )
    .await?;
    Ok(())
}

async fn blob_ref(
    tx: &Tx<'_>,
    storage: &str,
    hash: &str,
    size: i64,
    delta: i64,
    now: i64,
) -> Result<(), TxError> {
    if delta > 0 {
        tx.execute(
            "INSERT INTO blobs (storage_id, hash, size, refcount, zero_since) VALUES ($1, $2, $3, $4, NULL)
             ON CONFLICT (storage_id, hash) DO UPDATE SET refcount = blobs.refcount + $4, zero_since = NULL",
            &[&storage, &hash, &size, &delta],
        )
        .await?;
    } else {
        tx.execute(
            "UPDATE blobs SET refcount = refcount + $3,
               zero_since = CASE WHEN refcount + $3 = 0 THEN $4::BIGINT ELSE NULL END
             WHERE storage_id = $1 AND hash = $2",
            &[&storage, &hash, &delta, &now],
        )
        .await?;
    }
    Ok(())
}

/// Reads a migration and locks its row until the transaction ends.
async fn lock_migration(tx: &Tx<'_>, id: i64) -> DbResult<MigrationRecord> {
    let row = tx
        .query_opt(
            &format!("SELECT {MIGRATION_COLUMNS} FROM migrations WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await
        .map_err(err)?
        .ok_or(DbError::NotFound)?;
    migration_row(&row)
}

/// Records a migration's new state in the outbox.
async fn migration_event(tx: &Tx<'_>, m: &MigrationRecord) -> DbResult<()> {
    tx.execute(
        "INSERT INTO events (pod_id, path, kind, version, created_at, detail)
         VALUES ($1, '/', 'migration', 0, $2, $3)",
        &[&m.pod_id, &now_ms(), &super::migration_detail(m)],
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// Locks the pod row against ownership changes (invariant 3) and checks the owner.
async fn check_owner(tx: &Tx<'_>, pod: &str, writer: &str) -> Result<String, TxError> {
    let row = tx
        .query_opt(
            "SELECT node_id, storage_id, fence FROM pods WHERE pod_id = $1 FOR SHARE",
            &[&pod],
        )
        .await?;
    match row {
        None => Err(DbError::NotFound.into()),
        Some(r) => {
            let owner: String = r.get(0);
            if owner != writer {
                return Err(DbError::NotOwner(owner).into());
            }
            if r.get::<_, Option<i64>>(2).is_some() {
                return Err(DbError::Fenced.into());
            }
            Ok(r.get(1))
        }
    }
}

/// One attempt at a put. Locks are taken top-down (pod, ancestors, target),
/// each row in one mode, so concurrent writers cannot deadlock.
async fn put_in(tx: &Tx<'_>, req: &PutRequest) -> Result<PutOutcome, TxError> {
    let storage = check_owner(tx, &req.pod_id, &req.writer_node).await?;
    let ancestors = ancestors_of(&req.path);
    // Which ancestors exist (unlocked look; a race shows up as a unique violation and a retry).
    let mut existing_ancestors = Vec::new();
    for a in &ancestors {
        existing_ancestors.push(get_resource(tx, &req.pod_id, a, "").await?.is_some());
    }
    let target_exists = get_resource(tx, &req.pod_id, &req.path, "")
        .await?
        .is_some();
    // The container whose membership changes: the nearest existing ancestor
    // when something is created; it is locked FOR UPDATE, the others FOR SHARE.
    let touched = if target_exists {
        None
    } else {
        ancestors
            .iter()
            .zip(&existing_ancestors)
            .rev()
            .find(|(_, exists)| **exists)
            .map(|(a, _)| a.clone())
    };
    for (a, exists) in ancestors.iter().zip(&existing_ancestors) {
        if *exists {
            let lock = if touched.as_deref() == Some(a.as_str()) {
                "FOR UPDATE"
            } else {
                "FOR SHARE"
            };
            if get_resource(tx, &req.pod_id, a, lock).await?.is_none() {
                return Err(TxError::Race);
            }
        }
    }
    let existing = get_resource(tx, &req.pod_id, &req.path, "FOR UPDATE").await?;
    if existing.is_some() != target_exists {
        return Err(TxError::Race);
    }
    if !req.condition.allows(existing.as_ref()) {
        return Err(DbError::PreconditionFailed.into());
    }
    if existing.is_some() && (req.create_only || req.path.ends_with('/')) {
        return Err(DbError::Conflict(format!("{} already exists", req.path)).into());
    }
    if get_resource(tx, &req.pod_id, &twin_of(&req.path), "")
        .await?
        .is_some()
    {
        return Err(DbError::Conflict(format!(
            "{} clashes with the existing {}",
            req.path,
            twin_of(&req.path)
        ))
        .into());
    }
    let now = now_ms();
    for (a, exists) in ancestors.iter().zip(&existing_ancestors) {
        if *exists {
            continue;
        }
        if get_resource(tx, &req.pod_id, &twin_of(a), "")
            .await?
            .is_some()
        {
            return Err(DbError::Conflict(format!(
                "cannot create container {a}: a document {} exists",
                twin_of(a)
            ))
            .into());
        }
        insert_container(tx, &req.pod_id, a, now).await?;
    }
    let record = match &req.blob {
        None => insert_container(tx, &req.pod_id, &req.path, now).await?,
        Some((hash, size)) => {
            let kind = if existing.is_some() {
                "update"
            } else {
                "create"
            };
            let version = record_event(tx, &req.pod_id, &req.path, kind, Some(hash), now).await?;
            let record = ResourceRecord {
                pod_id: req.pod_id.clone(),
                path: req.path.clone(),
                parent: parent_of(&req.path),
                content_type: req.content_type.clone(),
                size: *size,
                content_hash: Some(hash.clone()),
                etag: make_etag(version, Some(hash)),
                version,
                modified_at: now,
            };
            insert_resource(tx, &record, true).await?;
            blob_ref(tx, &storage, hash, *size, 1, now).await?;
            record
        }
    };
    let replaced_hash = existing.as_ref().and_then(|e| e.content_hash.clone());
    if let (Some(old), Some(e)) = (&replaced_hash, &existing) {
        blob_ref(tx, &storage, old, e.size, -1, now).await?;
    }
    if let Some(parent) = touched {
        touch_container(tx, &req.pod_id, &parent, now).await?;
    }
    Ok(PutOutcome {
        created: existing.is_none(),
        record,
        replaced_hash,
    })
}

async fn delete_in(
    tx: &Tx<'_>,
    pod: &str,
    path: &str,
    condition: &Condition,
    writer: &str,
) -> Result<ResourceRecord, TxError> {
    let storage = check_owner(tx, pod, writer).await?;
    if path == "/" {
        return Err(DbError::Conflict("the pod root cannot be deleted".into()).into());
    }
    let parent = parent_of(path).expect("not the root");
    // Top-down: the parent first, then the target.
    get_resource(tx, pod, &parent, "FOR UPDATE").await?;
    let existing = get_resource(tx, pod, path, "FOR UPDATE")
        .await?
        .ok_or(DbError::NotFound)?;
    if !condition.allows(Some(&existing)) {
        return Err(DbError::PreconditionFailed.into());
    }
    if existing.is_container() {
        let child = tx
            .query_opt(
                "SELECT 1 FROM resources WHERE pod_id = $1 AND parent = $2 LIMIT 1",
                &[&pod, &path],
            )
            .await?;
        if child.is_some() {
            return Err(DbError::Conflict(format!("container {path} is not empty")).into());
        }
    }
    let now = now_ms();
    record_event(tx, pod, path, "delete", None, now).await?;
    tx.execute(
        "DELETE FROM resources WHERE pod_id = $1 AND path = $2",
        &[&pod, &path],
    )
    .await?;
    if let Some(hash) = &existing.content_hash {
        blob_ref(tx, &storage, hash, existing.size, -1, now).await?;
    }
    touch_container(tx, pod, &parent, now).await?;
    Ok(existing)
}

impl PostgresStore {
    /// Runs a transaction, retrying it when it lost a race.
    async fn retrying<T, F>(&self, mut attempt: F) -> DbResult<T>
    where
        F: for<'a> FnMut(&'a Tx<'a>) -> futures::future::BoxFuture<'a, Result<T, TxError>>,
    {
        let mut client = self.client().await?;
        for round in 0.. {
            let tx = client.transaction().await.map_err(err)?;
            match attempt(&tx).await {
                Ok(value) => match tx.commit().await {
                    Ok(()) => return Ok(value),
                    Err(e) if is_race(&e) && round < 8 => continue,
                    Err(e) => return Err(err(e)),
                },
                Err(TxError::Race) if round < 8 => {
                    drop(tx);
                    tokio::time::sleep(Duration::from_millis(2 << round.min(6))).await;
                }
                Err(TxError::Race) => {
                    return Err(DbError::Other(
                        "gave up after repeated write conflicts".into(),
                    ));
                }
                Err(TxError::Fail(e)) => return Err(e),
            }
        }
        unreachable!()
    }
}
