//! The embedded SQLite store: WAL mode, one writer connection and a few
//! readers, every call moved off the async threads with `spawn_blocking`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::schema::{self, AppliedMigration};
use super::*;

const READERS: usize = 4;

pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

fn err(e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(code, msg)
            if code.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            DbError::Conflict(msg.clone().unwrap_or_else(|| e.to_string()))
        }
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(
                code.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::PermissionDenied
                    | rusqlite::ErrorCode::DiskFull
            ) =>
        {
            DbError::Unavailable(e.to_string())
        }
        _ => DbError::Other(e.to_string()),
    }
}

fn connect(path: &Path) -> DbResult<Connection> {
    let conn = Connection::open(path).map_err(|e| {
        DbError::Unavailable(format!(
            "cannot open SQLite database {}: {e}; check that the root file path is writable",
            path.display()
        ))
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(err)?;
    // WAL lets readers run beside the writer; NORMAL is durable in WAL mode
    // except for the last transactions on power loss, so keep FULL: a 201
    // must mean durable.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| {
            DbError::Unavailable(format!(
                "cannot use SQLite database {}: {e}; check that the root file path is writable",
                path.display()
            ))
        })?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies the schema.
    pub async fn open(path: &Path) -> DbResult<SqliteStore> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut writer = connect(&path)?;
            migrate(&mut writer)?;
            let readers = (0..READERS)
                .map(|_| connect(&path).map(|c| Arc::new(Mutex::new(c))))
                .collect::<DbResult<Vec<_>>>()?;
            Ok(SqliteStore {
                writer: Arc::new(Mutex::new(writer)),
                readers,
                next_reader: AtomicUsize::new(0),
            })
        })
        .await
        .map_err(|e| DbError::Other(e.to_string()))?
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
    ) -> DbResult<T> {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| DbError::Other(e.to_string()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    ) -> DbResult<T> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let conn = self.readers[i].clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| DbError::Other(e.to_string()))?
    }
}

/// Applies missing schema files in one immediate transaction, which takes
/// SQLite's write lock, so two processes cannot migrate at once.
fn migrate(conn: &mut Connection) -> DbResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            compatible_from INTEGER NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .map_err(err)?;
    let applied = applied(&tx)?;
    schema::check_compatible(&applied).map_err(DbError::IncompatibleSchema)?;
    for file in schema::SQLITE {
        if applied.iter().any(|m| m.version == file.version) {
            continue;
        }
        tx.execute_batch(file.sql)
            .map_err(|e| DbError::Other(format!("schema {} failed: {e}", file.name)))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, compatible_from, applied_at) VALUES (?1, ?2, ?3, ?4)",
            params![file.version, file.name, file.compatible_from(), now_ms()],
        )
        .map_err(err)?;
        tracing::info!(version = file.version, name = file.name, "applied schema");
    }
    tx.commit().map_err(err)
}

fn applied(conn: &Connection) -> DbResult<Vec<AppliedMigration>> {
    let mut stmt = conn
        .prepare("SELECT version, name, compatible_from FROM schema_migrations ORDER BY version")
        .map_err(err)?;
    stmt.query_map([], |r| {
        Ok(AppliedMigration {
            version: r.get(0)?,
            name: r.get(1)?,
            compatible_from: r.get(2)?,
        })
    })
    .map_err(err)?
    .collect::<Result<_, _>>()
    .map_err(err)
}

const NODE_COLUMNS: &str = "node_id, kind, internal_ip, internal_port, public_address, storage_id, version, public_key, started_at, last_heartbeat";

fn node_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
    Ok(NodeRecord {
        node_id: r.get(0)?,
        kind: r.get(1)?,
        internal_ip: r.get(2)?,
        internal_port: r.get(3)?,
        public_address: r.get(4)?,
        storage_id: r.get(5)?,
        version: r.get(6)?,
        public_key: r.get(7)?,
        started_at: r.get(8)?,
        last_heartbeat: r.get(9)?,
    })
}

const POD_COLUMNS: &str = "pod_id, base_url, node_id, storage_id, owner, created_at";

fn pod_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PodRecord> {
    Ok(PodRecord {
        pod_id: r.get(0)?,
        base_url: r.get(1)?,
        node_id: r.get(2)?,
        storage_id: r.get(3)?,
        owner: r.get(4)?,
        created_at: r.get(5)?,
    })
}

const MIGRATION_COLUMNS: &str = "id, pod_id, source_node, target_node, status, progress, copied, total, cursor, error, started_at, updated_at, finished_at";

fn migration_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(MigrationRecord, String)> {
    let status: String = r.get(4)?;
    Ok((
        MigrationRecord {
            id: r.get(0)?,
            pod_id: r.get(1)?,
            source_node: r.get(2)?,
            target_node: r.get(3)?,
            status: MigrationStatus::Pending,
            progress: r.get(5)?,
            copied: r.get(6)?,
            total: r.get(7)?,
            cursor: r.get(8)?,
            error: r.get(9)?,
            started_at: r.get(10)?,
            updated_at: r.get(11)?,
            finished_at: r.get(12)?,
        },
        status,
    ))
}

fn with_status((mut m, status): (MigrationRecord, String)) -> DbResult<MigrationRecord> {
    m.status = MigrationStatus::parse(&status)?;
    Ok(m)
}

#[async_trait]
impl MetadataStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> DbResult<()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| DbError::Unavailable(e.to_string()))
        })
        .await
    }

    async fn applied_migrations(&self) -> DbResult<Vec<AppliedMigration>> {
        self.read(applied).await
    }

    async fn setting_init(&self, key: &str, value: &str) -> DbResult<String> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            tx.execute(
                "INSERT INTO cluster_settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, value],
            )
            .map_err(err)?;
            let stored: String = tx
                .query_row("SELECT value FROM cluster_settings WHERE key = ?1", [&key], |r| r.get(0))
                .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(stored)
        })
        .await
    }

    async fn setting_get(&self, key: &str) -> DbResult<Option<String>> {
        let key = key.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT value FROM cluster_settings WHERE key = ?1",
                [&key],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn node_upsert(&self, node: &NodeRecord) -> DbResult<()> {
        let n = node.clone();
        self.write(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO nodes ({NODE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (node_id) DO UPDATE SET kind = excluded.kind,
                       internal_ip = excluded.internal_ip, internal_port = excluded.internal_port,
                       public_address = excluded.public_address, storage_id = excluded.storage_id,
                       version = excluded.version, public_key = excluded.public_key,
                       started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat"
                ),
                params![
                    n.node_id,
                    n.kind,
                    n.internal_ip,
                    n.internal_port,
                    n.public_address,
                    n.storage_id,
                    n.version,
                    n.public_key,
                    n.started_at,
                    n.last_heartbeat
                ],
            )
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn node_get(&self, node_id: &str) -> DbResult<Option<NodeRecord>> {
        let id = node_id.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = ?1"),
                [&id],
                node_row,
            )
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn node_list(&self) -> DbResult<Vec<NodeRecord>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {NODE_COLUMNS} FROM nodes ORDER BY node_id"
                ))
                .map_err(err)?;
            stmt.query_map([], node_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn admin_token_add(&self, token_hash: &str, created_by: &str) -> DbResult<()> {
        let (hash, by) = (token_hash.to_string(), created_by.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO admin_tokens (token_hash, created_by, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (token_hash) DO NOTHING",
                params![hash, by, now_ms()],
            )
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn admin_token_exists(&self, token_hash: &str) -> DbResult<bool> {
        let hash = token_hash.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT 1 FROM admin_tokens WHERE token_hash = ?1",
                [&hash],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(err)
        })
        .await
    }

    async fn pod_create(&self, pod: &PodRecord) -> DbResult<()> {
        let p = pod.clone();
        self.write(move |c| {
            c.execute(
                &format!("INSERT INTO pods ({POD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    p.pod_id,
                    p.base_url,
                    p.node_id,
                    p.storage_id,
                    p.owner,
                    p.created_at
                ],
            )
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn pod_get(&self, pod_id: &str) -> DbResult<Option<PodRecord>> {
        let id = pod_id.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {POD_COLUMNS} FROM pods WHERE pod_id = ?1"),
                [&id],
                pod_row,
            )
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn pod_list(&self) -> DbResult<Vec<PodRecord>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(&format!("SELECT {POD_COLUMNS} FROM pods ORDER BY pod_id"))
                .map_err(err)?;
            stmt.query_map([], pod_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn migration_start(
        &self,
        pod_id: &str,
        source_node: &str,
        target_node: &str,
    ) -> DbResult<MigrationRecord> {
        let (pod, source, target) = (
            pod_id.to_string(),
            source_node.to_string(),
            target_node.to_string(),
        );
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let exists = tx
                .query_row("SELECT 1 FROM pods WHERE pod_id = ?1", [&pod], |_| Ok(()))
                .optional()
                .map_err(err)?;
            if exists.is_none() {
                return Err(DbError::NotFound);
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO migrations (pod_id, source_node, target_node, status, started_at, updated_at)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
                params![pod, source, target, now],
            )
            .map_err(|e| match err(e) {
                DbError::Conflict(_) => {
                    DbError::Conflict(format!("a migration of pod {pod} is already running"))
                }
                other => other,
            })?;
            let id = tx.last_insert_rowid();
            let m = tx
                .query_row(
                    &format!("SELECT {MIGRATION_COLUMNS} FROM migrations WHERE id = ?1"),
                    [id],
                    migration_row,
                )
                .map_err(err)?;
            tx.commit().map_err(err)?;
            with_status(m)
        })
        .await
    }

    async fn migration_set_status(
        &self,
        id: i64,
        status: MigrationStatus,
        error: Option<&str>,
    ) -> DbResult<MigrationRecord> {
        let error = error.map(str::to_string);
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let now = now_ms();
            let finished = (!status.is_active()).then_some(now);
            let changed = tx
                .execute(
                    "UPDATE migrations SET status = ?2, error = COALESCE(?3, error), updated_at = ?4,
                       finished_at = COALESCE(?5, finished_at) WHERE id = ?1",
                    params![id, status.as_str(), error, now, finished],
                )
                .map_err(err)?;
            if changed == 0 {
                return Err(DbError::NotFound);
            }
            let m = tx
                .query_row(
                    &format!("SELECT {MIGRATION_COLUMNS} FROM migrations WHERE id = ?1"),
                    [id],
                    migration_row,
                )
                .map_err(err)?;
            tx.commit().map_err(err)?;
            with_status(m)
        })
        .await
    }

    async fn migration_active(&self, pod_id: &str) -> DbResult<Option<MigrationRecord>> {
        let pod = pod_id.to_string();
        self.read(move |c| {
            c.query_row(
                &format!(
                    "SELECT {MIGRATION_COLUMNS} FROM migrations WHERE pod_id = ?1
                     AND status IN ('pending', 'copying', 'syncing', 'switching')"
                ),
                [&pod],
                migration_row,
            )
            .optional()
            .map_err(err)?
            .map(with_status)
            .transpose()
        })
        .await
    }
}
