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

pub struct PostgresStore {
    pool: Pool,
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
        let store = PostgresStore { pool };
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
        Ok(store)
    }

    async fn client(&self) -> DbResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
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

fn pod_row(r: &Row) -> PodRecord {
    PodRecord {
        pod_id: r.get(0),
        base_url: r.get(1),
        node_id: r.get(2),
        storage_id: r.get(3),
        owner: r.get(4),
        created_at: r.get(5),
    }
}

const MIGRATION_COLUMNS: &str = "id, pod_id, source_node, target_node, status, progress, copied, total, cursor, error, started_at, updated_at, finished_at";

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
        // Two statements would race; one upsert that returns the stored row cannot.
        let row = client
            .query_one(
                "WITH ins AS (
                   INSERT INTO cluster_settings (key, value) VALUES ($1, $2)
                   ON CONFLICT (key) DO NOTHING RETURNING value)
                 SELECT value FROM ins
                 UNION ALL SELECT value FROM cluster_settings WHERE key = $1
                 LIMIT 1",
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
            .client()
            .await?
            .query_opt(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = $1"),
                &[&node_id],
            )
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(node_row))
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

    async fn pod_create(&self, p: &PodRecord) -> DbResult<()> {
        self.client()
            .await?
            .execute(
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
            .map_err(err)?;
        Ok(())
    }

    async fn pod_get(&self, pod_id: &str) -> DbResult<Option<PodRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {POD_COLUMNS} FROM pods WHERE pod_id = $1"),
                &[&pod_id],
            )
            .await
            .map_err(err)?;
        Ok(row.as_ref().map(pod_row))
    }

    async fn pod_list(&self) -> DbResult<Vec<PodRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {POD_COLUMNS} FROM pods ORDER BY pod_id"),
                &[],
            )
            .await
            .map_err(err)?;
        Ok(rows.iter().map(pod_row).collect())
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
        tx.commit().await.map_err(err)?;
        migration_row(&row)
    }

    async fn migration_set_status(
        &self,
        id: i64,
        status: MigrationStatus,
        error: Option<&str>,
    ) -> DbResult<MigrationRecord> {
        let now = now_ms();
        let finished = (!status.is_active()).then_some(now);
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE migrations SET status = $2, error = COALESCE($3, error), updated_at = $4,
                       finished_at = COALESCE($5, finished_at) WHERE id = $1 RETURNING {MIGRATION_COLUMNS}"
                ),
                &[&id, &status.as_str(), &error, &now, &finished],
            )
            .await
            .map_err(err)?
            .ok_or(DbError::NotFound)?;
        migration_row(&row)
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
}
