//! The embedded SQLite store: WAL mode, one writer connection and a few
//! readers, every call moved off the async threads with `spawn_blocking`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::schema::{self, AppliedMigration};
use super::*;

const SUBSCRIPTION_COLUMNS: &str = "id, channel_type, pod_id, path, topic, send_to, state, \
     start_at, end_at, rate_ms, accept, agent, created_at, after_xid, after_id";

fn subscription_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SubscriptionRecord> {
    Ok(SubscriptionRecord {
        id: r.get(0)?,
        channel_type: r.get(1)?,
        pod_id: r.get(2)?,
        path: r.get(3)?,
        topic: r.get(4)?,
        send_to: r.get(5)?,
        state: r.get(6)?,
        start_at: r.get(7)?,
        end_at: r.get(8)?,
        rate_ms: r.get(9)?,
        accept: r.get(10)?,
        agent: r.get(11)?,
        created_at: r.get(12)?,
        after: EventCursor {
            xid: r.get(13)?,
            id: r.get(14)?,
        },
    })
}

const READERS: usize = 4;

pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

const RECORD_COLUMNS: &str = "kind, id, account_id, unique_key, data, expires_at, created_at";

fn record_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IdpRecord> {
    Ok(IdpRecord {
        kind: r.get(0)?,
        id: r.get(1)?,
        account_id: r.get(2)?,
        unique_key: r.get(3)?,
        data: r.get(4)?,
        expires_at: r.get(5)?,
        created_at: r.get(6)?,
    })
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
    // A statement whose LIMIT is a bound parameter is compiled again on
    // every run (SQLite looks at the bound value when it plans), so the
    // cached statements write their limit into the text: a `u32`, one
    // cached statement per limit a caller uses.
    conn.set_prepared_statement_cache_capacity(64);
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
/// What a read of a pod returns: [`POD_COLUMNS`] and the move under way.
const POD_SELECT: &str = "pod_id, base_url, node_id, storage_id, owner, created_at, moving";

fn pod_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PodRecord> {
    Ok(PodRecord {
        pod_id: r.get(0)?,
        base_url: r.get(1)?,
        node_id: r.get(2)?,
        storage_id: r.get(3)?,
        owner: r.get(4)?,
        created_at: r.get(5)?,
        moving: r.get(6)?,
    })
}

const EDGE_COLUMNS: &str =
    "node_id, name, token_hash, created_at, enrolled_at, last_signal, tunnel_node";

fn edge_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EdgeRecord> {
    Ok(EdgeRecord {
        node_id: r.get(0)?,
        name: r.get(1)?,
        token_hash: r.get(2)?,
        created_at: r.get(3)?,
        enrolled_at: r.get(4)?,
        last_signal: r.get(5)?,
        tunnel_node: r.get(6)?,
    })
}

const WEBHOOK_COLUMNS: &str = "q.id, q.channel_id, q.event_id, q.body, q.attempts, q.first_failed_at, \
     q.next_attempt_at, s.pod_id, COALESCE(s.send_to, ''), s.accept";

fn webhook_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookItem> {
    Ok(WebhookItem {
        id: r.get(0)?,
        channel_id: r.get(1)?,
        event_id: r.get(2)?,
        body: r.get(3)?,
        attempts: r.get(4)?,
        first_failed_at: r.get(5)?,
        next_attempt_at: r.get(6)?,
        pod_id: r.get(7)?,
        send_to: r.get(8)?,
        accept: r.get(9)?,
    })
}

const MIGRATION_COLUMNS: &str = "id, pod_id, source_node, target_node, status, progress, copied, total, cursor, error, started_at, updated_at, finished_at, fenced_at";

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
            fenced_at: r.get(13)?,
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

    async fn node_heartbeat(&self, node_id: &str, at: i64) -> DbResult<()> {
        let id = node_id.to_string();
        self.write(move |c| {
            c.execute(
                "UPDATE nodes SET last_heartbeat = ?2 WHERE node_id = ?1",
                params![id, at],
            )
            .map(|_| ())
            .map_err(err)
        })
        .await
    }

    async fn node_remove(&self, node_id: &str) -> DbResult<bool> {
        let id = node_id.to_string();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let pods: i64 = tx
                .query_row("SELECT count(*) FROM pods WHERE node_id = ?1", [&id], |r| {
                    r.get(0)
                })
                .map_err(err)?;
            if pods > 0 {
                return Err(DbError::Conflict(format!(
                    "node {id} still owns {pods} pod(s); reassign or drain them first"
                )));
            }
            let n = tx
                .execute("DELETE FROM nodes WHERE node_id = ?1", [&id])
                .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(n == 1)
        })
        .await
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
        self.write_tx(move |c| {
            let (node, current) = pod_owner_and_move(c, &pod)?;
            if let Some(current) = current {
                return resume_move(c, &pod, &current, &from, &to, &moving);
            }
            if node != from {
                return Err(DbError::Conflict(format!(
                    "pod {pod} is on node {node}, not on {from}"
                )));
            }
            c.execute(
                "UPDATE pods SET node_id = ?2, storage_id = ?3, owner = COALESCE(?4, owner),
                   moving = ?5 WHERE pod_id = ?1",
                params![pod, to, storage, owner, moving],
            )
            .map_err(err)?;
            if get_resource(c, &pod, "/")?.is_none() {
                insert_container(c, &pod, "/", now_ms())?;
            }
            owner_event(c, &pod)
        })
        .await
    }

    async fn pod_move_out(&self, pod_id: &str, from: &str, moving: &str) -> DbResult<()> {
        let (pod, from, moving) = (pod_id.to_string(), from.to_string(), moving.to_string());
        self.write_tx(move |c| {
            let (node, current) = pod_owner_and_move(c, &pod)?;
            let (_, to) = super::move_ends(&moving);
            if let Some(current) = current {
                return resume_move(c, &pod, &current, &from, &to, &moving);
            }
            if node != from {
                return Err(DbError::Conflict(format!(
                    "pod {pod} is on node {node}, not on {from}"
                )));
            }
            c.execute(
                "UPDATE pods SET moving = ?2, fence = ?3 WHERE pod_id = ?1",
                params![pod, moving, now_ms()],
            )
            .map_err(err)?;
            owner_event(c, &pod)
        })
        .await
    }

    async fn pod_move_end(&self, pod_id: &str, hand_to: Option<(&str, &str)>) -> DbResult<()> {
        let pod = pod_id.to_string();
        let hand_to = hand_to.map(|(n, s)| (n.to_string(), s.to_string()));
        self.write_tx(move |c| {
            let (node, current) = pod_owner_and_move(c, &pod)?;
            if current.is_none() {
                if hand_to.as_ref().is_some_and(|(n, _)| *n == node) {
                    return Ok(());
                }
                return Err(DbError::Conflict(format!("pod {pod} is not moving")));
            }
            match &hand_to {
                Some((node, storage)) => {
                    release_pod_data(c, &pod)?;
                    c.execute(
                        "UPDATE pods SET node_id = ?2, storage_id = ?3, moving = NULL, fence = NULL
                         WHERE pod_id = ?1",
                        params![pod, node, storage],
                    )
                    .map_err(err)?;
                }
                None => {
                    c.execute(
                        "UPDATE pods SET moving = NULL, fence = NULL WHERE pod_id = ?1",
                        [&pod],
                    )
                    .map_err(err)?;
                }
            }
            owner_event(c, &pod)
        })
        .await
    }

    async fn pod_fence(&self, pod_id: &str, fenced: bool) -> DbResult<()> {
        let pod = pod_id.to_string();
        self.write_tx(move |c| {
            c.execute(
                "UPDATE pods SET fence = ?2 WHERE pod_id = ?1",
                params![pod, fenced.then(now_ms)],
            )
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn pod_delete(&self, pod_id: &str) -> DbResult<bool> {
        let pod = pod_id.to_string();
        self.write_tx(move |c| {
            match pod_owner_and_move(c, &pod) {
                Err(DbError::NotFound) => return Ok(false),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            release_pod_data(c, &pod)?;
            c.execute("DELETE FROM pods WHERE pod_id = ?1", [&pod])
                .map_err(err)?;
            owner_event(c, &pod)?;
            Ok(true)
        })
        .await
    }

    async fn pod_set_owner(&self, pod_id: &str, from: &str, to: &str) -> DbResult<bool> {
        let (pod, from, to) = (pod_id.to_string(), from.to_string(), to.to_string());
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let n = tx
                .execute(
                    "UPDATE pods SET node_id = ?3 WHERE pod_id = ?1 AND node_id = ?2",
                    params![pod, from, to],
                )
                .map_err(err)?;
            if n == 1 {
                tx.execute(
                    "INSERT INTO events (pod_id, path, kind, version, created_at) VALUES (?1, '/', 'owner', 0, ?2)",
                    params![pod, super::now_ms()],
                )
                .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(n == 1)
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

    async fn pod_get(&self, pod_id: &str) -> DbResult<Option<PodRecord>> {
        let id = pod_id.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {POD_SELECT} FROM pods WHERE pod_id = ?1"),
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
                .prepare(&format!("SELECT {POD_SELECT} FROM pods ORDER BY pod_id"))
                .map_err(err)?;
            stmt.query_map([], pod_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn pods_of_node(&self, node_id: &str) -> DbResult<Vec<PodRecord>> {
        let id = node_id.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {POD_SELECT} FROM pods WHERE node_id = ?1 ORDER BY pod_id"
                ))
                .map_err(err)?;
            stmt.query_map([&id], pod_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
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
        self.write_tx(move |c| {
            let exists = |sql: &str, value: &str| -> DbResult<bool> {
                c.query_row(sql, [value], |_| Ok(()))
                    .optional()
                    .map(|r| r.is_some())
                    .map_err(err)
            };
            if exists("SELECT 1 FROM edges WHERE name = ?1", &name)? {
                return Err(DbError::Conflict(format!("an edge named {name} exists")));
            }
            if exists("SELECT 1 FROM edges WHERE node_id = ?1", &id)?
                || exists("SELECT 1 FROM nodes WHERE node_id = ?1", &id)?
            {
                return Err(DbError::Conflict(format!("node id {id} is taken")));
            }
            c.execute(
                "INSERT INTO edges (node_id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, name, hash, now],
            )
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn edge_get(&self, node_id: &str) -> DbResult<Option<EdgeRecord>> {
        let id = node_id.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {EDGE_COLUMNS} FROM edges WHERE node_id = ?1"),
                [&id],
                edge_row,
            )
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn edge_list(&self) -> DbResult<Vec<EdgeRecord>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(&format!("SELECT {EDGE_COLUMNS} FROM edges ORDER BY name"))
                .map_err(err)?;
            stmt.query_map([], edge_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn edge_enrol(
        &self,
        node_id: &str,
        expected_token_hash: &str,
        public_key: &str,
        version: &str,
        now: i64,
    ) -> DbResult<bool> {
        let (id, hash, key, version) = (
            node_id.to_string(),
            expected_token_hash.to_string(),
            public_key.to_string(),
            version.to_string(),
        );
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let used = tx
                .execute(
                    "UPDATE edges SET token_hash = NULL, enrolled_at = ?3
                     WHERE node_id = ?1 AND token_hash = ?2",
                    params![id, hash, now],
                )
                .map_err(err)?;
            if used == 0 {
                return Ok(false);
            }
            let registered = tx
                .execute(
                    &format!(
                        "INSERT INTO nodes ({NODE_COLUMNS})
                         VALUES (?1, 'edge', '', 0, NULL, ?2, ?3, ?4, ?5, ?5)
                         ON CONFLICT (node_id) DO UPDATE SET storage_id = excluded.storage_id,
                           version = excluded.version, public_key = excluded.public_key,
                           started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat
                         WHERE nodes.kind = 'edge'"
                    ),
                    params![id, edge_storage_id(&id), version, key, now],
                )
                .map_err(err)?;
            if registered == 0 {
                return Err(DbError::Conflict(format!(
                    "node id {id} belongs to a centre node"
                )));
            }
            tx.commit().map_err(err)?;
            Ok(true)
        })
        .await
    }

    async fn edge_signal(
        &self,
        node_id: &str,
        version: &str,
        pods: &[(String, String)],
        now: i64,
    ) -> DbResult<Vec<(String, String)>> {
        let (id, version, pods) = (node_id.to_string(), version.to_string(), pods.to_vec());
        self.write_tx(move |c| {
            let n = c
                .execute(
                    "UPDATE nodes SET last_heartbeat = ?2, version = ?3
                     WHERE node_id = ?1 AND kind = 'edge'",
                    params![id, now, version],
                )
                .map_err(err)?;
            if n == 0 {
                return Err(DbError::NotFound);
            }
            c.execute(
                "UPDATE edges SET last_signal = ?2 WHERE node_id = ?1",
                params![id, now],
            )
            .map_err(err)?;
            let mut refused = Vec::new();
            let mut holders = c
                .prepare("SELECT pod_id, node_id FROM pods WHERE pod_id = ?1 OR base_url = ?2")
                .map_err(err)?;
            for (pod, base) in &pods {
                let held: Vec<(String, String)> = holders
                    .query_map([pod, base], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(err)?
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                match edge_pod(&id, pod, &held) {
                    EdgePod::Keep => {}
                    EdgePod::Refuse(why) => refused.push((pod.clone(), why)),
                    EdgePod::Register => {
                        c.execute(
                            &format!(
                                "INSERT INTO pods ({POD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, NULL, ?5)"
                            ),
                            params![pod, base, id, edge_storage_id(&id), now],
                        )
                        .map_err(err)?;
                    }
                }
            }
            // A pod the edge no longer has (deleted, renamed) frees its name.
            let registered: Vec<String> = c
                .prepare("SELECT pod_id FROM pods WHERE node_id = ?1 AND moving IS NULL")
                .map_err(err)?
                .query_map([&id], |r| r.get(0))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            for gone in registered
                .iter()
                .filter(|p| !pods.iter().any(|(l, _)| l == *p))
            {
                c.execute("DELETE FROM pods WHERE pod_id = ?1", [gone])
                    .map_err(err)?;
                owner_event(c, gone)?;
            }
            Ok(refused)
        })
        .await
    }

    async fn edge_tunnel_set(&self, node_id: &str, centre_node: Option<&str>) -> DbResult<()> {
        let (id, centre) = (node_id.to_string(), centre_node.map(str::to_string));
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE edges SET tunnel_node = ?2 WHERE node_id = ?1",
                    params![id, centre],
                )
                .map_err(err)?;
            if n == 0 {
                return Err(DbError::NotFound);
            }
            Ok(())
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
            let m = migration_by_id(&tx, tx.last_insert_rowid())?;
            migration_event(&tx, &m)?;
            tx.commit().map_err(err)?;
            Ok(m)
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

    async fn migrations_active(&self) -> DbResult<Vec<MigrationRecord>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {MIGRATION_COLUMNS} FROM migrations
                     WHERE status IN ('pending', 'copying', 'syncing', 'switching') ORDER BY pod_id"
                ))
                .map_err(err)?;
            let rows = stmt
                .query_map([], migration_row)
                .map_err(err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            rows.into_iter().map(with_status).collect()
        })
        .await
    }

    async fn migration_latest(&self, pod_id: &str) -> DbResult<Option<MigrationRecord>> {
        let pod = pod_id.to_string();
        self.read(move |c| {
            c.query_row(
                &format!(
                    "SELECT {MIGRATION_COLUMNS} FROM migrations WHERE pod_id = ?1 ORDER BY id DESC LIMIT 1"
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

    async fn migration_progress(
        &self,
        id: i64,
        status: MigrationStatus,
        copied: i64,
        total: i64,
        cursor: Option<&str>,
    ) -> DbResult<MigrationRecord> {
        let cursor = cursor.map(str::to_string);
        self.write_tx(move |c| {
            let before = migration_by_id(c, id)?;
            if !matches!(
                before.status,
                MigrationStatus::Pending | MigrationStatus::Syncing | MigrationStatus::Copying
            ) {
                return Ok(before);
            }
            c.execute(
                "UPDATE migrations SET status = ?2, copied = ?3, total = ?4, progress = ?5,
                   cursor = COALESCE(?6, cursor), updated_at = ?7 WHERE id = ?1",
                params![
                    id,
                    status.as_str(),
                    copied,
                    total,
                    progress_percent(copied, total),
                    cursor,
                    now_ms()
                ],
            )
            .map_err(err)?;
            let after = migration_by_id(c, id)?;
            if after.status != before.status || after.progress != before.progress {
                migration_event(c, &after)?;
            }
            Ok(after)
        })
        .await
    }

    async fn migration_cancel(&self, pod_id: &str) -> DbResult<MigrationRecord> {
        let pod = pod_id.to_string();
        self.write_tx(move |c| {
            let m = c
                .query_row(
                    &format!(
                        "SELECT {MIGRATION_COLUMNS} FROM migrations WHERE pod_id = ?1
                         AND status IN ('pending', 'copying', 'syncing', 'switching')"
                    ),
                    [&pod],
                    migration_row,
                )
                .optional()
                .map_err(err)?
                .ok_or(DbError::NotFound)
                .and_then(with_status)?;
            if m.status == MigrationStatus::Switching {
                return Err(DbError::Conflict(format!(
                    "the migration of pod {pod} is already switching owners and can no longer be cancelled"
                )));
            }
            let now = now_ms();
            c.execute(
                "UPDATE migrations SET status = 'cancelled', error = 'cancelled by an administrator',
                   updated_at = ?2, finished_at = ?2 WHERE id = ?1",
                params![m.id, now],
            )
            .map_err(err)?;
            let m = migration_by_id(c, m.id)?;
            migration_event(c, &m)?;
            Ok(m)
        })
        .await
    }

    async fn pod_blobs(
        &self,
        pod_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> DbResult<Vec<(String, i64)>> {
        let (pod, after) = (pod_id.to_string(), after.unwrap_or("").to_string());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT content_hash, max(size) FROM resources
                     WHERE pod_id = ?1 AND content_hash IS NOT NULL AND content_hash > ?2
                     GROUP BY content_hash ORDER BY content_hash LIMIT {limit}"
                ))
                .map_err(err)?;
            stmt.query_map(params![pod, after], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn pod_blob_count(&self, pod_id: &str) -> DbResult<i64> {
        let pod = pod_id.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT count(DISTINCT content_hash) FROM resources WHERE pod_id = ?1",
                [&pod],
                |r| r.get(0),
            )
            .map_err(err)
        })
        .await
    }

    async fn pod_blobs_missing(
        &self,
        pod_id: &str,
        storage_id: &str,
        limit: u32,
    ) -> DbResult<Vec<String>> {
        let (pod, storage) = (pod_id.to_string(), storage_id.to_string());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT DISTINCT r.content_hash FROM resources r
                     WHERE r.pod_id = ?1 AND r.content_hash IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM blobs b WHERE b.storage_id = ?2 AND b.hash = r.content_hash)
                     LIMIT {limit}"
                ))
                .map_err(err)?;
            stmt.query_map(params![pod, storage], |r| r.get(0))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn migration_fence(&self, id: i64) -> DbResult<MigrationRecord> {
        self.write_tx(move |c| {
            let m = migration_by_id(c, id)?;
            if m.status == MigrationStatus::Switching {
                return Ok(m);
            }
            if !m.status.is_active() {
                return Err(DbError::Conflict(format!(
                    "the migration is {}",
                    m.status.as_str()
                )));
            }
            let n = c
                .execute(
                    "UPDATE pods SET fence = ?2 WHERE pod_id = ?1 AND node_id = ?3",
                    params![m.pod_id, id, m.source_node],
                )
                .map_err(err)?;
            if n == 0 {
                return Err(DbError::Conflict(format!(
                    "pod {} is no longer owned by node {}",
                    m.pod_id, m.source_node
                )));
            }
            c.execute(
                "UPDATE migrations SET status = 'switching', updated_at = ?2, fenced_at = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )
            .map_err(err)?;
            let m = migration_by_id(c, id)?;
            migration_event(c, &m)?;
            Ok(m)
        })
        .await
    }

    async fn migration_switch(
        &self,
        id: i64,
        target_storage: &str,
    ) -> DbResult<Result<MigrationRecord, Vec<String>>> {
        let target_storage = target_storage.to_string();
        self.write_tx(move |c| {
            let m = migration_by_id(c, id)?;
            if m.status != MigrationStatus::Switching {
                return Err(DbError::Conflict(format!(
                    "the migration is {}, not switching",
                    m.status.as_str()
                )));
            }
            let (owner, source_storage, fence): (String, String, Option<i64>) = c
                .query_row(
                    "SELECT node_id, storage_id, fence FROM pods WHERE pod_id = ?1",
                    [&m.pod_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(err)?
                .ok_or(DbError::NotFound)?;
            if owner != m.source_node || fence != Some(id) {
                return Err(DbError::Conflict(format!(
                    "pod {} changed hands during the migration (owner {owner})",
                    m.pod_id
                )));
            }
            if source_storage != target_storage {
                let refs = "SELECT content_hash AS hash, count(*) AS n FROM resources
                            WHERE pod_id = ?1 AND content_hash IS NOT NULL GROUP BY content_hash";
                let missing: Vec<String> = c
                    .prepare(&format!(
                        "SELECT r.hash FROM ({refs}) r WHERE NOT EXISTS (
                           SELECT 1 FROM blobs b WHERE b.storage_id = ?2 AND b.hash = r.hash)"
                    ))
                    .map_err(err)?
                    .query_map(params![m.pod_id, target_storage], |r| r.get(0))
                    .map_err(err)?
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                if !missing.is_empty() {
                    return Ok(Err(missing));
                }
                c.execute(
                    &format!(
                        "UPDATE blobs SET refcount = blobs.refcount + r.n, zero_since = NULL
                         FROM ({refs}) r WHERE blobs.storage_id = ?2 AND blobs.hash = r.hash"
                    ),
                    params![m.pod_id, target_storage],
                )
                .map_err(err)?;
                c.execute(
                    &format!(
                        "UPDATE blobs SET refcount = blobs.refcount - r.n,
                           zero_since = CASE WHEN blobs.refcount - r.n = 0 THEN ?3 ELSE NULL END
                         FROM ({refs}) r WHERE blobs.storage_id = ?2 AND blobs.hash = r.hash"
                    ),
                    params![m.pod_id, source_storage, now_ms()],
                )
                .map_err(err)?;
            }
            c.execute(
                "UPDATE pods SET node_id = ?2, storage_id = ?3, fence = NULL WHERE pod_id = ?1",
                params![m.pod_id, m.target_node, target_storage],
            )
            .map_err(err)?;
            c.execute(
                "INSERT INTO events (pod_id, path, kind, version, created_at) VALUES (?1, '/', 'owner', 0, ?2)",
                params![m.pod_id, now_ms()],
            )
            .map_err(err)?;
            let now = now_ms();
            c.execute(
                "UPDATE migrations SET status = 'done', progress = 100, updated_at = ?2,
                   finished_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .map_err(err)?;
            let m = migration_by_id(c, id)?;
            migration_event(c, &m)?;
            Ok(Ok(m))
        })
        .await
    }

    async fn migration_fail(
        &self,
        id: i64,
        status: MigrationStatus,
        error: &str,
    ) -> DbResult<MigrationRecord> {
        let error = error.to_string();
        self.write_tx(move |c| {
            let m = migration_by_id(c, id)?;
            if !m.status.is_active() {
                return Ok(m);
            }
            c.execute(
                "UPDATE pods SET fence = NULL WHERE pod_id = ?1 AND fence = ?2",
                params![m.pod_id, id],
            )
            .map_err(err)?;
            let now = now_ms();
            c.execute(
                "UPDATE migrations SET status = ?2, error = ?3, updated_at = ?4, finished_at = ?4
                 WHERE id = ?1",
                params![id, status.as_str(), error, now],
            )
            .map_err(err)?;
            let m = migration_by_id(c, id)?;
            migration_event(c, &m)?;
            Ok(m)
        })
        .await
    }

    async fn pod_create(&self, pod: &PodRecord) -> DbResult<ResourceRecord> {
        let p = pod.clone();
        self.write_tx(move |c| {
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
            insert_container(c, &p.pod_id, "/", now_ms())
        })
        .await
    }

    async fn resource_get(&self, pod_id: &str, path: &str) -> DbResult<Option<ResourceRecord>> {
        let (pod, path) = (pod_id.to_string(), path.to_string());
        self.read(move |c| get_resource(c, &pod, &path)).await
    }

    async fn resource_put(&self, req: &PutRequest) -> DbResult<PutOutcome> {
        let req = req.clone();
        self.write_tx(move |c| put_in(c, &req)).await
    }

    async fn resource_put_all(&self, reqs: &[PutRequest]) -> DbResult<Vec<PutOutcome>> {
        let reqs = reqs.to_vec();
        self.write_tx(move |c| reqs.iter().map(|r| put_in(c, r)).collect())
            .await
    }

    async fn resource_delete(
        &self,
        pod_id: &str,
        path: &str,
        condition: &Condition,
        writer_node: &str,
    ) -> DbResult<ResourceRecord> {
        let (pod, path, cond, writer) = (
            pod_id.to_string(),
            path.to_string(),
            condition.clone(),
            writer_node.to_string(),
        );
        self.write_tx(move |c| delete_in(c, &pod, &path, &cond, &writer))
            .await
    }

    async fn resource_children(
        &self,
        pod_id: &str,
        container: &str,
        after: Option<&str>,
        limit: u32,
    ) -> DbResult<Vec<ResourceRecord>> {
        let (pod, container, after) = (
            pod_id.to_string(),
            container.to_string(),
            after.unwrap_or("").to_string(),
        );
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources WHERE pod_id = ?1 AND parent = ?2 AND path > ?3
                     ORDER BY path LIMIT {limit}"
                ))
                .map_err(err)?;
            stmt.query_map(params![pod, container, after], resource_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn events_after(&self, after_id: i64, limit: u32) -> DbResult<Vec<EventRecord>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT id, pod_id, path, kind, version, etag, created_at, detail FROM events WHERE id > ?1 ORDER BY id LIMIT {limit}"
                ))
                .map_err(err)?;
            stmt.query_map(params![after_id], |r| {
                Ok(EventRecord {
                    xid: "0".into(),
                    id: r.get(0)?,
                    pod_id: r.get(1)?,
                    path: r.get(2)?,
                    kind: r.get(3)?,
                    version: r.get(4)?,
                    etag: r.get(5)?,
                    created_at: r.get(6)?,
                    detail: r.get(7)?,
                })
            })
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)
        })
        .await
    }

    async fn events_since(&self, cursor: &EventCursor, limit: u32) -> DbResult<Vec<EventRecord>> {
        // One writer: id order is commit order.
        self.events_after(cursor.id, limit).await
    }

    async fn follower_cursor(&self, name: &str) -> DbResult<Option<EventCursor>> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT cursor_xid, cursor_id FROM follower_cursors WHERE name = ?1",
                [&name],
                |r| {
                    Ok(EventCursor {
                        xid: r.get(0)?,
                        id: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn follower_cursor_set(&self, name: &str, cursor: &EventCursor) -> DbResult<()> {
        let (name, cursor) = (name.to_string(), cursor.clone());
        self.write(move |c| {
            c.execute(
                "INSERT INTO follower_cursors (name, cursor_xid, cursor_id, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET cursor_xid = ?2, cursor_id = ?3, updated_at = ?4",
                params![name, cursor.xid, cursor.id, super::now_ms()],
            )
            .map(|_| ())
            .map_err(err)
        })
        .await
    }

    async fn follower_cursor_delete(&self, name: &str) -> DbResult<()> {
        let name = name.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM follower_cursors WHERE name = ?1", [&name])
                .map(|_| ())
                .map_err(err)
        })
        .await
    }

    async fn subscription_create(&self, sub: &SubscriptionRecord) -> DbResult<()> {
        let sub = sub.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    &format!(
                        "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                         ON CONFLICT (id) DO NOTHING"
                    ),
                    params![
                        sub.id,
                        sub.channel_type,
                        sub.pod_id,
                        sub.path,
                        sub.topic,
                        sub.send_to,
                        sub.state,
                        sub.start_at,
                        sub.end_at,
                        sub.rate_ms,
                        sub.accept,
                        sub.agent,
                        sub.created_at,
                        sub.after.xid,
                        sub.after.id,
                    ],
                )
                .map_err(err)?;
            if n == 0 {
                return Err(DbError::Conflict(format!(
                    "subscription {} exists already",
                    sub.id
                )));
            }
            Ok(())
        })
        .await
    }

    async fn subscription_get(&self, id: &str) -> DbResult<Option<SubscriptionRecord>> {
        let id = id.to_string();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1"),
                [&id],
                subscription_row,
            )
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn subscription_delete(&self, id: &str) -> DbResult<bool> {
        let id = id.to_string();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            tx.execute("DELETE FROM webhook_queue WHERE channel_id = ?1", [&id])
                .map_err(err)?;
            let n = tx
                .execute("DELETE FROM subscriptions WHERE id = ?1", [&id])
                .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn webhook_enqueue(&self, items: &[(String, i64, String)], now: i64) -> DbResult<u64> {
        let items = items.to_vec();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let mut queued = 0;
            for (channel, event, body) in &items {
                queued += tx
                    .execute(
                        "INSERT INTO webhook_queue (channel_id, event_id, body, next_attempt_at)
                         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM subscriptions WHERE id = ?1)
                         ON CONFLICT (channel_id, event_id) DO NOTHING",
                        params![channel, event, body, now],
                    )
                    .map_err(err)? as u64;
            }
            tx.commit().map_err(err)?;
            Ok(queued)
        })
        .await
    }

    async fn webhook_heads(&self, limit: u32) -> DbResult<Vec<WebhookItem>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhook_queue q JOIN subscriptions s ON s.id = q.channel_id
                     WHERE q.id = (SELECT MIN(id) FROM webhook_queue WHERE channel_id = q.channel_id)
                     ORDER BY q.next_attempt_at LIMIT {limit}"
                ))
                .map_err(err)?;
            stmt.query_map([], webhook_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn webhook_next(&self, channel_id: &str) -> DbResult<Option<WebhookItem>> {
        let channel = channel_id.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhook_queue q JOIN subscriptions s ON s.id = q.channel_id
                 WHERE q.channel_id = ?1 ORDER BY q.id LIMIT 1"
            ))
            .map_err(err)?
            .query_row([&channel], webhook_row)
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn webhook_delivered(&self, id: i64) -> DbResult<()> {
        self.write(move |c| {
            c.execute("DELETE FROM webhook_queue WHERE id = ?1", [id])
                .map(|_| ())
                .map_err(err)
        })
        .await
    }

    async fn webhook_retry(
        &self,
        id: i64,
        attempts: i32,
        first_failed_at: i64,
        next_attempt_at: i64,
    ) -> DbResult<()> {
        self.write(move |c| {
            c.execute(
                "UPDATE webhook_queue SET attempts = ?2, first_failed_at = ?3, next_attempt_at = ?4
                 WHERE id = ?1",
                params![id, attempts, first_failed_at, next_attempt_at],
            )
            .map(|_| ())
            .map_err(err)
        })
        .await
    }

    async fn subscription_take_state(&self, id: &str) -> DbResult<Option<String>> {
        let id = id.to_string();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM subscriptions WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?
                .flatten();
            if state.is_some() {
                tx.execute("UPDATE subscriptions SET state = NULL WHERE id = ?1", [&id])
                    .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(state)
        })
        .await
    }

    async fn subscriptions_of_type(&self, channel_type: &str) -> DbResult<Vec<SubscriptionRecord>> {
        let channel_type = channel_type.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
                     WHERE channel_type = ?1 ORDER BY created_at, id"
                ))
                .map_err(err)?;
            stmt.query_map([&channel_type], subscription_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn events_head(&self) -> DbResult<EventCursor> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| {
                Ok(EventCursor {
                    xid: "0".into(),
                    id: r.get(0)?,
                })
            })
            .map_err(err)
        })
        .await
    }

    async fn events_prune(&self) -> DbResult<u64> {
        self.write(|c| {
            c.execute(
                "DELETE FROM events WHERE id <= (SELECT MIN(cursor_id) FROM follower_cursors)",
                [],
            )
            .map(|n| n as u64)
            .map_err(err)
        })
        .await
    }

    async fn dpop_proof_claim(&self, key: &str, expires_at: i64, now: i64) -> DbResult<bool> {
        let key = key.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO dpop_proofs (proof_key, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (proof_key) DO UPDATE SET expires_at = excluded.expires_at
                 WHERE dpop_proofs.expires_at < ?3",
                params![key, expires_at, now],
            )
            .map(|n| n == 1)
            .map_err(err)
        })
        .await
    }

    async fn dpop_proofs_prune(&self, now: i64) -> DbResult<u64> {
        self.write(move |c| {
            c.execute("DELETE FROM dpop_proofs WHERE expires_at < ?1", [now])
                .map(|n| n as u64)
                .map_err(err)
        })
        .await
    }

    async fn record_insert(&self, record: &IdpRecord) -> DbResult<()> {
        let r = record.clone();
        self.write(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO idp_records ({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    r.kind,
                    r.id,
                    r.account_id,
                    r.unique_key,
                    r.data,
                    r.expires_at,
                    r.created_at
                ],
            )
            .map(|_| ())
            .map_err(err)
        })
        .await
    }

    async fn record_update(&self, record: &IdpRecord) -> DbResult<bool> {
        let r = record.clone();
        self.write(move |c| {
            c.execute(
                "UPDATE idp_records SET data = ?3, expires_at = ?4 WHERE kind = ?1 AND id = ?2",
                params![r.kind, r.id, r.data, r.expires_at],
            )
            .map(|n| n == 1)
            .map_err(err)
        })
        .await
    }

    async fn record_get(&self, kind: &str, id: &str, now: i64) -> DbResult<Option<IdpRecord>> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.read(move |c| {
            c.query_row(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM idp_records WHERE kind = ?1 AND id = ?2
                     AND (expires_at IS NULL OR expires_at > ?3)"
                ),
                params![kind, id, now],
                record_row,
            )
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn record_find(
        &self,
        kind: &str,
        unique_key: &str,
        now: i64,
    ) -> DbResult<Option<IdpRecord>> {
        let (kind, key) = (kind.to_string(), unique_key.to_string());
        self.read(move |c| {
            c.query_row(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM idp_records WHERE kind = ?1 AND unique_key = ?2
                     AND (expires_at IS NULL OR expires_at > ?3)"
                ),
                params![kind, key, now],
                record_row,
            )
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn record_list(
        &self,
        kind: &str,
        account_id: Option<&str>,
        now: i64,
    ) -> DbResult<Vec<IdpRecord>> {
        let (kind, account) = (kind.to_string(), account_id.map(str::to_string));
        self.read(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {RECORD_COLUMNS} FROM idp_records WHERE kind = ?1
                     AND (?2 IS NULL OR account_id = ?2)
                     AND (expires_at IS NULL OR expires_at > ?3)
                     ORDER BY created_at, id"
                ))
                .map_err(err)?;
            let rows = stmt
                .query_map(params![kind, account, now], record_row)
                .map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)
        })
        .await
    }

    async fn record_delete(&self, kind: &str, id: &str) -> DbResult<bool> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.write(move |c| {
            c.execute(
                "DELETE FROM idp_records WHERE kind = ?1 AND id = ?2",
                params![kind, id],
            )
            .map(|n| n == 1)
            .map_err(err)
        })
        .await
    }

    async fn records_prune(&self, now: i64) -> DbResult<u64> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM idp_records WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                [now],
            )
            .map(|n| n as u64)
            .map_err(err)
        })
        .await
    }

    async fn blob_get(&self, storage_id: &str, hash: &str) -> DbResult<Option<BlobRecord>> {
        let (storage, hash) = (storage_id.to_string(), hash.to_string());
        self.read(move |c| {
            c.query_row(
                "SELECT size, refcount, zero_since FROM blobs WHERE storage_id = ?1 AND hash = ?2",
                [&storage, &hash],
                |r| {
                    Ok(BlobRecord {
                        size: r.get(0)?,
                        refcount: r.get(1)?,
                        zero_since: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(err)
        })
        .await
    }

    async fn resource_import(
        &self,
        pod_id: &str,
        storage_id: &str,
        items: Vec<ImportItem>,
    ) -> DbResult<u64> {
        let (pod, storage) = (pod_id.to_string(), storage_id.to_string());
        self.write_tx(move |c| {
            if c.query_row("SELECT 1 FROM pods WHERE pod_id = ?1", [&pod], |_| Ok(()))
                .optional()
                .map_err(err)?
                .is_none()
            {
                return Err(DbError::NotFound);
            }
            let now = now_ms();
            let mut touched = std::collections::BTreeSet::new();
            for item in &items {
                let kind = "create";
                let version = record_event(c, &pod, &item.path, kind, now)?;
                let hash = item.blob.as_ref().map(|(h, _)| h.as_str());
                let etag = make_etag(version, hash);
                if hash.is_some() {
                    set_event_etag(c, version, &etag)?;
                }
                insert_resource(
                    c,
                    &ResourceRecord {
                        pod_id: pod.clone(),
                        path: item.path.clone(),
                        parent: parent_of(&item.path),
                        content_type: item.content_type.clone(),
                        size: item.blob.as_ref().map(|(_, s)| *s).unwrap_or(0),
                        content_hash: hash.map(str::to_string),
                        etag,
                        version,
                        modified_at: now,
                    },
                    false,
                )?;
                if let Some((h, size)) = &item.blob {
                    blob_ref(c, &storage, h, *size, 1, now)?;
                }
                if let Some(parent) = parent_of(&item.path) {
                    touched.insert(parent);
                }
            }
            for parent in touched {
                touch_container(c, &pod, &parent, now)?;
            }
            Ok(items.len() as u64)
        })
        .await
    }

    async fn blob_orphan(&self, storage_id: &str, hash: &str, size: i64) -> DbResult<()> {
        let (storage, hash) = (storage_id.to_string(), hash.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO blobs (storage_id, hash, size, refcount, zero_since) VALUES (?1, ?2, ?3, 0, ?4)
                 ON CONFLICT (storage_id, hash) DO NOTHING",
                params![storage, hash, size, now_ms()],
            )
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn blob_gc_candidates(
        &self,
        storage_id: &str,
        cutoff: i64,
        limit: u32,
    ) -> DbResult<Vec<String>> {
        let storage = storage_id.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT hash FROM blobs WHERE storage_id = ?1 AND refcount = 0 AND zero_since < ?2
                     ORDER BY zero_since LIMIT {limit}"
                ))
                .map_err(err)?;
            stmt.query_map(params![storage, cutoff], |r| r.get(0))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)
        })
        .await
    }

    async fn with_cluster_lock(
        &self,
        _key: i64,
        work: super::LockedWork,
    ) -> DbResult<Result<String, String>> {
        // SQLite means one node: a lock within this process is the cluster lock.
        static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _held = LOCK.lock().await;
        Ok(work().await)
    }

    async fn blob_gc_collect(
        &self,
        storage_id: &str,
        hash: &str,
        cutoff: i64,
        remove: RemoveBytes,
    ) -> DbResult<bool> {
        let (storage, hash) = (storage_id.to_string(), hash.to_string());
        // The writer connection is the lock: no write runs while we hold it.
        let runtime = tokio::runtime::Handle::current();
        self.write_tx(move |c| {
            let still = c
                .query_row(
                    "SELECT 1 FROM blobs WHERE storage_id = ?1 AND hash = ?2 AND refcount = 0 AND zero_since < ?3",
                    params![storage, hash, cutoff],
                    |_| Ok(()),
                )
                .optional()
                .map_err(err)?;
            if still.is_none() {
                return Ok(false);
            }
            runtime
                .block_on(remove())
                .map_err(|e| DbError::Unavailable(format!("cannot delete blob {hash}: {e}")))?;
            c.execute(
                "DELETE FROM blobs WHERE storage_id = ?1 AND hash = ?2",
                params![storage, hash],
            )
            .map_err(err)?;
            Ok(true)
        })
        .await
    }
}

const RESOURCE_COLUMNS: &str =
    "pod_id, path, parent, content_type, size, content_hash, etag, version, modified_at";

fn resource_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceRecord> {
    Ok(ResourceRecord {
        pod_id: r.get(0)?,
        path: r.get(1)?,
        parent: r.get(2)?,
        content_type: r.get(3)?,
        size: r.get(4)?,
        content_hash: r.get(5)?,
        etag: r.get(6)?,
        version: r.get(7)?,
        modified_at: r.get(8)?,
    })
}

fn get_resource(c: &Connection, pod: &str, path: &str) -> DbResult<Option<ResourceRecord>> {
    c.query_row(
        &format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE pod_id = ?1 AND path = ?2"),
        [pod, path],
        resource_row,
    )
    .optional()
    .map_err(err)
}

/// Appends an outbox row; its id is the new version of the resource.
fn record_event(c: &Connection, pod: &str, path: &str, kind: &str, now: i64) -> DbResult<i64> {
    c.execute(
        "INSERT INTO events (pod_id, path, kind, version, created_at) VALUES (?1, ?2, ?3, 0, ?4)",
        params![pod, path, kind, now],
    )
    .map_err(err)?;
    let id = c.last_insert_rowid();
    let etag = (kind != "delete").then(|| make_etag(id, None));
    c.execute(
        "UPDATE events SET version = ?1, etag = ?2 WHERE id = ?1",
        params![id, etag],
    )
    .map_err(err)?;
    Ok(id)
}

fn set_event_etag(c: &Connection, id: i64, etag: &str) -> DbResult<()> {
    c.execute(
        "UPDATE events SET etag = ?2 WHERE id = ?1",
        params![id, etag],
    )
    .map_err(err)?;
    Ok(())
}

/// Writes a resource row; `upsert` replaces an existing row of that path.
fn insert_resource(c: &Connection, r: &ResourceRecord, upsert: bool) -> DbResult<()> {
    let on_conflict = if upsert {
        "ON CONFLICT (pod_id, path) DO UPDATE SET content_type = excluded.content_type,
           size = excluded.size, content_hash = excluded.content_hash, etag = excluded.etag,
           version = excluded.version, modified_at = excluded.modified_at"
    } else {
        ""
    };
    c.prepare_cached(&format!(
        "INSERT INTO resources ({RESOURCE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) {on_conflict}"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            r.pod_id,
            r.path,
            r.parent,
            r.content_type,
            r.size,
            r.content_hash,
            r.etag,
            r.version,
            r.modified_at
        ])
    })
    .map_err(err)?;
    Ok(())
}

/// Inserts a container row (used for pod roots and missing ancestors).
fn insert_container(c: &Connection, pod: &str, path: &str, now: i64) -> DbResult<ResourceRecord> {
    let version = record_event(c, pod, path, "create", now)?;
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
    insert_resource(c, &record, false)?;
    Ok(record)
}

/// A container's membership changed: new version, new ETag, an event.
fn touch_container(c: &Connection, pod: &str, path: &str, now: i64) -> DbResult<()> {
    let version = record_event(c, pod, path, "update", now)?;
    c.execute(
        "UPDATE resources SET version = ?3, etag = ?4, modified_at = ?5 WHERE pod_id = ?1 AND path = ?2",
        params![pod, path, version, make_etag(version, None), now],
    )
    .map_err(err)?;
    Ok(())
}

fn blob_ref(
    c: &Connection,
    storage: &str,
    hash: &str,
    size: i64,
    delta: i64,
    now: i64,
) -> DbResult<()> {
    if delta > 0 {
        c.execute(
            "INSERT INTO blobs (storage_id, hash, size, refcount, zero_since) VALUES (?1, ?2, ?3, ?4, NULL)
             ON CONFLICT (storage_id, hash) DO UPDATE SET refcount = refcount + ?4, zero_since = NULL",
            params![storage, hash, size, delta],
        )
        .map_err(err)?;
    } else {
        c.execute(
            "UPDATE blobs SET refcount = refcount + ?3,
               zero_since = CASE WHEN refcount + ?3 = 0 THEN ?4 ELSE NULL END
             WHERE storage_id = ?1 AND hash = ?2",
            params![storage, hash, delta, now],
        )
        .map_err(err)?;
    }
    Ok(())
}

fn check_owner(c: &Connection, pod: &str, writer: &str) -> DbResult<String> {
    let row: Option<(String, String, Option<i64>)> = c
        .query_row(
            "SELECT node_id, storage_id, fence FROM pods WHERE pod_id = ?1",
            [pod],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(err)?;
    match row {
        None => Err(DbError::NotFound),
        Some((owner, _, _)) if owner != writer => Err(DbError::NotOwner(owner)),
        Some((_, _, Some(_))) => Err(DbError::Fenced),
        Some((_, storage, None)) => Ok(storage),
    }
}

fn migration_by_id(c: &Connection, id: i64) -> DbResult<MigrationRecord> {
    c.query_row(
        &format!("SELECT {MIGRATION_COLUMNS} FROM migrations WHERE id = ?1"),
        [id],
        migration_row,
    )
    .optional()
    .map_err(err)?
    .ok_or(DbError::NotFound)
    .and_then(with_status)
}

/// Records a migration's new state in the outbox.
fn migration_event(c: &Connection, m: &MigrationRecord) -> DbResult<()> {
    c.execute(
        "INSERT INTO events (pod_id, path, kind, version, created_at, detail)
         VALUES (?1, '/', 'migration', 0, ?2, ?3)",
        params![m.pod_id, now_ms(), super::migration_detail(m)],
    )
    .map_err(err)?;
    Ok(())
}

fn put_in(c: &Connection, req: &PutRequest) -> DbResult<PutOutcome> {
    let storage = check_owner(c, &req.pod_id, &req.writer_node)?;
    let existing = get_resource(c, &req.pod_id, &req.path)?;
    if !req.condition.allows(existing.as_ref()) {
        return Err(DbError::PreconditionFailed);
    }
    if existing.is_some() && (req.create_only || req.path.ends_with('/')) {
        return Err(DbError::Conflict(format!("{} already exists", req.path)));
    }
    if get_resource(c, &req.pod_id, &twin_of(&req.path))?.is_some() {
        return Err(DbError::Conflict(format!(
            "{} clashes with the existing {}",
            req.path,
            twin_of(&req.path)
        )));
    }
    let now = now_ms();
    let mut first_created: Option<String> = None;
    for ancestor in ancestors_of(&req.path) {
        if get_resource(c, &req.pod_id, &ancestor)?.is_some() {
            continue;
        }
        if get_resource(c, &req.pod_id, &twin_of(&ancestor))?.is_some() {
            return Err(DbError::Conflict(format!(
                "cannot create container {ancestor}: a document {} exists",
                twin_of(&ancestor)
            )));
        }
        insert_container(c, &req.pod_id, &ancestor, now)?;
        first_created.get_or_insert(ancestor);
    }
    let record = match &req.blob {
        None => insert_container(c, &req.pod_id, &req.path, now)?,
        Some((hash, size)) => {
            let kind = if existing.is_some() {
                "update"
            } else {
                "create"
            };
            let version = record_event(c, &req.pod_id, &req.path, kind, now)?;
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
            set_event_etag(c, version, &record.etag)?;
            insert_resource(c, &record, true)?;
            blob_ref(c, &storage, hash, *size, 1, now)?;
            record
        }
    };
    let replaced_hash = existing.as_ref().and_then(|e| e.content_hash.clone());
    if let (Some(old), Some(e)) = (&replaced_hash, &existing) {
        blob_ref(c, &storage, old, e.size, -1, now)?;
    }
    if existing.is_none() {
        first_created.get_or_insert(req.path.clone());
    }
    if let Some(parent) = first_created.as_deref().and_then(parent_of) {
        touch_container(c, &req.pod_id, &parent, now)?;
    }
    Ok(PutOutcome {
        created: existing.is_none(),
        record,
        replaced_hash,
    })
}

fn delete_in(
    c: &Connection,
    pod: &str,
    path: &str,
    condition: &Condition,
    writer: &str,
) -> DbResult<ResourceRecord> {
    let storage = check_owner(c, pod, writer)?;
    let existing = get_resource(c, pod, path)?.ok_or(DbError::NotFound)?;
    if !condition.allows(Some(&existing)) {
        return Err(DbError::PreconditionFailed);
    }
    if path == "/" {
        return Err(DbError::Conflict("the pod root cannot be deleted".into()));
    }
    if existing.is_container() {
        let child = c
            .query_row(
                "SELECT 1 FROM resources WHERE pod_id = ?1 AND parent = ?2 LIMIT 1",
                [pod, path],
                |_| Ok(()),
            )
            .optional()
            .map_err(err)?;
        if child.is_some() {
            return Err(DbError::Conflict(format!("container {path} is not empty")));
        }
    }
    let now = now_ms();
    record_event(c, pod, path, "delete", now)?;
    c.execute(
        "DELETE FROM resources WHERE pod_id = ?1 AND path = ?2",
        [pod, path],
    )
    .map_err(err)?;
    if let Some(hash) = &existing.content_hash {
        blob_ref(c, &storage, hash, existing.size, -1, now)?;
    }
    if let Some(parent) = parent_of(path) {
        touch_container(c, pod, &parent, now)?;
    }
    Ok(existing)
}

/// A pod's owner and the move under way; `NotFound` without the pod.
fn pod_owner_and_move(c: &Connection, pod: &str) -> DbResult<(String, Option<String>)> {
    c.query_row(
        "SELECT node_id, moving FROM pods WHERE pod_id = ?1",
        [pod],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(err)?
    .ok_or(DbError::NotFound)
}

/// A move asked for again: the same ends take the new record (its new
/// secret), other ends are a conflict.
fn resume_move(
    c: &Connection,
    pod: &str,
    current: &str,
    from: &str,
    to: &str,
    moving: &str,
) -> DbResult<()> {
    if super::move_ends(current) != (from.to_string(), to.to_string()) {
        return Err(DbError::Conflict(format!(
            "pod {pod} is already moving elsewhere; finish or cancel that move first"
        )));
    }
    c.execute(
        "UPDATE pods SET moving = ?2 WHERE pod_id = ?1",
        params![pod, moving],
    )
    .map_err(err)?;
    Ok(())
}

/// Deletes a pod's resources; their blobs lose the references (the
/// collector removes unreferenced ones after its grace period).
fn release_pod_data(c: &Connection, pod: &str) -> DbResult<()> {
    let storage: String = c
        .query_row(
            "SELECT storage_id FROM pods WHERE pod_id = ?1",
            [pod],
            |r| r.get(0),
        )
        .map_err(err)?;
    c.execute(
        "UPDATE blobs SET refcount = blobs.refcount - r.n,
           zero_since = CASE WHEN blobs.refcount - r.n = 0 THEN ?3 ELSE NULL END
         FROM (SELECT content_hash AS hash, count(*) AS n FROM resources
               WHERE pod_id = ?1 AND content_hash IS NOT NULL GROUP BY content_hash) r
         WHERE blobs.storage_id = ?2 AND blobs.hash = r.hash",
        params![pod, storage, now_ms()],
    )
    .map_err(err)?;
    c.execute("DELETE FROM resources WHERE pod_id = ?1", [pod])
        .map_err(err)?;
    Ok(())
}

/// Tells every node's followers that the pod's placement changed.
fn owner_event(c: &Connection, pod: &str) -> DbResult<()> {
    c.execute(
        "INSERT INTO events (pod_id, path, kind, version, created_at) VALUES (?1, '/', 'owner', 0, ?2)",
        params![pod, now_ms()],
    )
    .map_err(err)?;
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn write_tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    ) -> DbResult<T> {
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let value = f(&tx)?;
            tx.commit().map_err(err)?;
            Ok(value)
        })
        .await
    }
}
