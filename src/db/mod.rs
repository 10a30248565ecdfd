//! The metadata store: one trait, [`MetadataStore`], with a SQLite and a
//! PostgreSQL implementation that pass one contract suite
//! (`tests/db_contract.rs`). The backend is chosen once, from the database URL.

pub mod postgres;
pub mod schema;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::DatabaseConfig;
pub use schema::AppliedMigration;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule refused the change (the text names which).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or refused the connection.
    #[error("{0}")]
    Unavailable(String),
    /// The schema is newer than this binary can run with.
    #[error("{0}")]
    IncompatibleSchema(String),
    #[error("database error: {0}")]
    Other(String),
}

pub type DbResult<T> = Result<T, DbError>;

/// Unix time in milliseconds, the unit of every time column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A row of `nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: String,
    pub kind: String,
    pub internal_ip: String,
    pub internal_port: u16,
    pub public_address: Option<String>,
    pub storage_id: Option<String>,
    pub version: String,
    pub public_key: Option<String>,
    pub started_at: i64,
    pub last_heartbeat: i64,
}

/// A row of `pods`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub pod_id: String,
    pub base_url: String,
    /// The owning node.
    pub node_id: String,
    /// The storage that holds the pod's bytes.
    pub storage_id: String,
    pub owner: Option<String>,
    pub created_at: i64,
}

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationStatus {
    Pending,
    Copying,
    Syncing,
    Switching,
    Done,
    Failed,
    Cancelled,
}

impl MigrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationStatus::Pending => "pending",
            MigrationStatus::Copying => "copying",
            MigrationStatus::Syncing => "syncing",
            MigrationStatus::Switching => "switching",
            MigrationStatus::Done => "done",
            MigrationStatus::Failed => "failed",
            MigrationStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> DbResult<Self> {
        Ok(match s {
            "pending" => MigrationStatus::Pending,
            "copying" => MigrationStatus::Copying,
            "syncing" => MigrationStatus::Syncing,
            "switching" => MigrationStatus::Switching,
            "done" => MigrationStatus::Done,
            "failed" => MigrationStatus::Failed,
            "cancelled" => MigrationStatus::Cancelled,
            other => {
                return Err(DbError::Other(format!(
                    "unknown migration status {other:?}"
                )));
            }
        })
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            MigrationStatus::Pending
                | MigrationStatus::Copying
                | MigrationStatus::Syncing
                | MigrationStatus::Switching
        )
    }
}

/// A row of `migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRecord {
    pub id: i64,
    pub pod_id: String,
    pub source_node: String,
    pub target_node: String,
    pub status: MigrationStatus,
    pub progress: i32,
    pub copied: i64,
    pub total: i64,
    pub cursor: Option<String>,
    pub error: Option<String>,
    pub started_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// The metadata store. Every method is one transaction.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// `"sqlite"` or `"postgresql"`.
    fn backend(&self) -> &'static str;

    /// Checks that the database answers.
    async fn ping(&self) -> DbResult<()>;

    /// The rows of `schema_migrations`, oldest first.
    async fn applied_migrations(&self) -> DbResult<Vec<AppliedMigration>>;

    /// Stores `value` under `key` unless a value is there already; returns
    /// the stored value either way (first writer wins, cluster-wide).
    async fn setting_init(&self, key: &str, value: &str) -> DbResult<String>;
    async fn setting_get(&self, key: &str) -> DbResult<Option<String>>;

    /// Inserts or updates this node's row.
    async fn node_upsert(&self, node: &NodeRecord) -> DbResult<()>;
    async fn node_get(&self, node_id: &str) -> DbResult<Option<NodeRecord>>;
    async fn node_list(&self) -> DbResult<Vec<NodeRecord>>;

    /// Records the hash of an administrator token (idempotent).
    async fn admin_token_add(&self, token_hash: &str, created_by: &str) -> DbResult<()>;
    async fn admin_token_exists(&self, token_hash: &str) -> DbResult<bool>;

    /// Creates a pod; `Conflict` if the name or base URL is taken.
    async fn pod_create(&self, pod: &PodRecord) -> DbResult<()>;
    async fn pod_get(&self, pod_id: &str) -> DbResult<Option<PodRecord>>;
    async fn pod_list(&self) -> DbResult<Vec<PodRecord>>;

    /// Starts a migration of a pod; `Conflict` if one is already active,
    /// `NotFound` if the pod does not exist.
    async fn migration_start(
        &self,
        pod_id: &str,
        source_node: &str,
        target_node: &str,
    ) -> DbResult<MigrationRecord>;
    /// Moves a migration to a new status (and sets its error, if any).
    async fn migration_set_status(
        &self,
        id: i64,
        status: MigrationStatus,
        error: Option<&str>,
    ) -> DbResult<MigrationRecord>;
    /// The pod's active migration, if any.
    async fn migration_active(&self, pod_id: &str) -> DbResult<Option<MigrationRecord>>;
}

/// A shared handle to the store.
pub type Db = Arc<dyn MetadataStore>;

/// Opens the configured store and brings its schema up to date.
pub async fn open(config: &DatabaseConfig) -> DbResult<Db> {
    match config {
        DatabaseConfig::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
        DatabaseConfig::Postgres(url) => {
            Ok(Arc::new(postgres::PostgresStore::open(url.expose()).await?))
        }
    }
}
