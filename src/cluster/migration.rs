//! Moving a pod to another node of the cluster without losing a write.
//!
//! The target node drives the migration (any node accepts the request and
//! records it; each node's [`Driver`] picks up the migrations addressed to
//! it, also after a restart). Metadata is shared, so only bytes move:
//!
//! - **same storage id**: fence, switch; a metadata change only;
//! - **different storage**: a follower of the outbox copies the bytes of
//!   every new write to the pod from the source (`syncing`), the copier
//!   fetches every hash the pod references that this storage lacks, in hash
//!   order from a persisted cursor (`copying`), then the pod is fenced
//!   (writes wait, then get 503), the hashes written since are fetched, and
//!   one transaction moves the references and the owner (`switching`, then
//!   `done`).
//!
//! Bytes come from the source node over `GET /.cluster/blobs/{hash}`, signed
//! with this node's key, and are checked against their hash on arrival.
//! Until the switch the source stays authoritative; a cancelled or failed
//! migration leaves the pod whole on it. Copied bytes that end up unused are
//! recorded unreferenced, so the collector removes them after its grace
//! period, like the source's copies after a switch.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::signature::{self, Signed};
use crate::app::App;
use crate::db::{DbError, MigrationRecord, MigrationStatus, NodeRecord, now_ms};

/// Hashes the copier takes per page (and per progress record).
const PAGE: u32 = 256;
/// Blobs fetched at once.
const PARALLEL: usize = 8;
/// How often a node looks for migrations addressed to it without being woken.
const POLL: Duration = Duration::from_secs(2);
/// Attempts per blob before the migration fails (the source may be
/// restarting; its pod keeps being served wherever it is).
const FETCH_ATTEMPTS: u32 = 6;
/// Rounds of "fetch what the switch found missing" before giving up.
const SWITCH_ROUNDS: u32 = 5;

/// The path of the blob endpoint.
pub fn blob_path(hash: &str) -> String {
    format!("/.cluster/blobs/{hash}")
}

/// The name of a migration's realtime-sync follower.
pub fn sync_follower_name(id: i64) -> String {
    format!("migration:{id}")
}

/// Runs the migrations addressed to this node.
#[derive(Default)]
pub struct Driver {
    running: Mutex<HashSet<i64>>,
    wake: tokio::sync::Notify,
    /// Pods whose switch is under way, as this node heard from the outbox.
    switching: Mutex<HashSet<String>>,
    /// Wakes requests held for a switch.
    switched: tokio::sync::Notify,
}

impl Driver {
    /// Looks for new migrations now (a migration event or request arrived).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Follows a `migration` event: whether its pod is being switched.
    pub fn observe(&self, event: &crate::db::EventRecord) {
        let status = event
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .and_then(|d| d["status"].as_str().map(str::to_string));
        let mut switching = self.switching.lock().unwrap_or_else(|p| p.into_inner());
        if status.as_deref() == Some("switching") {
            switching.insert(event.pod_id.clone());
        } else if switching.remove(&event.pod_id) {
            self.switched.notify_waiters();
        }
    }

    fn is_switching(&self, pod: &str) -> bool {
        self.switching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(pod)
    }

    /// Holds a write while its pod switches owners (at most `limit`), so
    /// that it is routed to the new owner with its body still unread.
    /// Returns whether the switch is over.
    pub async fn wait_switched(&self, pod: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.switched.notified();
            if !self.is_switching(pod) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return !self.is_switching(pod);
            }
        }
    }
}

/// Starts this node's driver loop.
pub fn spawn(app: Arc<App>) {
    tokio::spawn(async move {
        loop {
            match app.db.migrations_active().await {
                Ok(list) => {
                    release_abandoned(&app, &list).await;
                    for m in list.into_iter().filter(|m| m.target_node == app.node.id) {
                        let fresh = app
                            .migrations
                            .running
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(m.id);
                        if fresh {
                            let app = app.clone();
                            tokio::spawn(async move {
                                let id = m.id;
                                run(&app, m).await;
                                app.migrations
                                    .running
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .remove(&id);
                            });
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list migrations; retrying"),
            }
            let _ = tokio::time::timeout(POLL, app.migrations.wake.notified()).await;
        }
    });
}

/// A switch holds the pod's writes: if its target node stops sending
/// heartbeats meanwhile, the pod's owner ends the migration as failed, which
/// lifts the fence (the pod stays, whole, on its source). Before the switch
/// nothing is held, and a target that comes back resumes.
async fn release_abandoned(app: &App, list: &[MigrationRecord]) {
    for m in list {
        if m.status != MigrationStatus::Switching || m.source_node != app.node.id {
            continue;
        }
        let target = match app.db.node_get(&m.target_node).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up a migration's target");
                continue;
            }
        };
        let gone = target.is_none_or(|t| {
            !super::registry::reachable(&t, app.config.node_unreachable_after, now_ms())
        });
        if gone {
            let why = format!(
                "node {} stopped sending heartbeats during the switch; pod {} stays on node {}",
                m.target_node, m.pod_id, m.source_node
            );
            tracing::warn!(migration = m.id, "{why}");
            if let Err(e) = app
                .db
                .migration_fail(m.id, MigrationStatus::Failed, &why)
                .await
            {
                tracing::warn!(migration = m.id, error = %e, "cannot end the abandoned migration");
            }
        }
    }
}

/// Drives one migration to its end, and records how it ended.
async fn run(app: &Arc<App>, m: MigrationRecord) {
    let id = m.id;
    tracing::info!(migration = id, pod = %m.pod_id, from = %m.source_node, status = m.status.as_str(), "driving migration");
    let sync = Sync::default();
    let result = drive(app, &m, &sync).await;
    sync.stop();
    match result {
        Ok(Outcome::Done(took)) => {
            tracing::info!(migration = id, pod = %m.pod_id, fence_ms = took.as_millis() as u64, "migration done");
        }
        Ok(Outcome::Stopped(status)) => {
            tracing::info!(migration = id, pod = %m.pod_id, status, "migration stopped");
        }
        Err(why) => {
            tracing::warn!(migration = id, pod = %m.pod_id, error = %why, "migration failed");
            if let Err(e) = app
                .db
                .migration_fail(id, MigrationStatus::Failed, &why)
                .await
            {
                // The row stays active: this node takes it up again.
                tracing::warn!(migration = id, error = %e, "cannot record the failed migration");
                tokio::time::sleep(POLL).await;
                return;
            }
        }
    }
    if let Err(e) = app.db.follower_cursor_delete(&sync_follower_name(id)).await {
        tracing::warn!(migration = id, error = %e, "cannot delete the sync follower's cursor");
    }
}

enum Outcome {
    /// Switched; how long writes were fenced.
    Done(Duration),
    /// Cancelled (or ended elsewhere); the status it has.
    Stopped(&'static str),
}

/// The realtime sync task, stopped when the migration ends.
#[derive(Default)]
struct Sync(Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Sync {
    fn stop(&self) {
        if let Some(h) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
    }
}

async fn drive(app: &Arc<App>, m: &MigrationRecord, sync: &Sync) -> Result<Outcome, String> {
    let db_err = |e: DbError| format!("metadata store: {e}");
    let pod = app
        .db
        .pod_get(&m.pod_id)
        .await
        .map_err(db_err)?
        .ok_or_else(|| format!("pod {} no longer exists", m.pod_id))?;
    let same_storage = pod.storage_id == app.storage_id;
    let mut m = m.clone();
    if m.status != MigrationStatus::Switching {
        if pod.node_id != m.source_node {
            return Err(format!(
                "pod {} is now owned by node {}, not {}",
                m.pod_id, pod.node_id, m.source_node
            ));
        }
        if !same_storage {
            let source = source_node(app, &m.source_node).await?;
            // 1. Realtime sync: the bytes of every write from now on.
            m = progress(app, &m, MigrationStatus::Syncing, m.copied, m.total, None).await?;
            if !m.status.is_active() {
                return Ok(Outcome::Stopped(m.status.as_str()));
            }
            start_sync(app, &m, &source, sync).await?;
            // 2. Copy what the pod references, from the cursor on.
            if let Some(stopped) = copy_all(app, &m, &source).await? {
                return Ok(Outcome::Stopped(stopped));
            }
            // Fetch what was written meanwhile before fencing, so that
            // writes wait only for the last few.
            for _ in 0..3 {
                let missing = app
                    .db
                    .pod_blobs_missing(&m.pod_id, &app.storage_id, 10_000)
                    .await
                    .map_err(db_err)?;
                if missing.len() < PARALLEL {
                    break;
                }
                fetch_many(app, &source, missing).await?;
            }
        }
    }
    // 3. Fence writes, 4. fetch what arrived meanwhile, then switch.
    let fenced_at = Instant::now();
    match app.db.migration_fence(m.id).await {
        Ok(f) => m = f,
        Err(DbError::Conflict(why)) => {
            // Cancelled just now, or the pod moved: nothing was fenced.
            let now = app.db.migration_latest(&m.pod_id).await.ok().flatten();
            return match now {
                Some(n) if n.id == m.id && !n.status.is_active() => {
                    Ok(Outcome::Stopped(n.status.as_str()))
                }
                _ => Err(why),
            };
        }
        Err(e) => return Err(db_err(e)),
    }
    let source = if same_storage {
        None
    } else {
        Some(source_node(app, &m.source_node).await?)
    };
    for _ in 0..SWITCH_ROUNDS {
        match app.db.migration_switch(m.id, &app.storage_id).await {
            Ok(Ok(_)) => {
                let took = fenced_at.elapsed();
                app.placement.forget_pod(&m.pod_id);
                app.access.forget_pod(&m.pod_id);
                return Ok(Outcome::Done(took));
            }
            Ok(Err(missing)) => {
                let Some(source) = &source else {
                    return Err("the pod's storage changed during the switch".into());
                };
                fetch_many(app, source, missing).await?;
            }
            Err(DbError::Unavailable(why)) => {
                tracing::warn!(migration = m.id, error = %why, "cannot switch yet; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(db_err(e)),
        }
    }
    Err(format!(
        "blobs kept disappearing from this node's storage during the switch ({SWITCH_ROUNDS} rounds)"
    ))
}

async fn source_node(app: &App, id: &str) -> Result<NodeRecord, String> {
    app.db
        .node_get(id)
        .await
        .map_err(|e| format!("metadata store: {e}"))?
        .ok_or_else(|| format!("the source node {id} is not registered"))
}

async fn progress(
    app: &App,
    m: &MigrationRecord,
    status: MigrationStatus,
    copied: i64,
    total: i64,
    cursor: Option<&str>,
) -> Result<MigrationRecord, String> {
    app.db
        .migration_progress(m.id, status, copied, total, cursor)
        .await
        .map_err(|e| format!("metadata store: {e}"))
}

/// Follows the outbox from now (or from where an earlier run stopped) and
/// fetches the bytes of every document the pod's new writes reference.
async fn start_sync(
    app: &Arc<App>,
    m: &MigrationRecord,
    source: &NodeRecord,
    sync: &Sync,
) -> Result<(), String> {
    let name = sync_follower_name(m.id);
    // The cursor exists before the copier lists the pod, so no write falls
    // between the two.
    let db = &app.db;
    if db
        .follower_cursor(&name)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        let head = db.events_head().await.map_err(|e| e.to_string())?;
        db.follower_cursor_set(&name, &head)
            .await
            .map_err(|e| e.to_string())?;
    }
    let (app2, source, pod) = (app.clone(), source.clone(), m.pod_id.clone());
    let handle = super::follower::spawn_async(
        app.db.clone(),
        name,
        Arc::new(move |batch| {
            let (app, source, pod) = (app2.clone(), source.clone(), pod.clone());
            Box::pin(async move {
                let mut wanted = Vec::new();
                for e in batch
                    .iter()
                    .filter(|e| e.pod_id == pod && matches!(e.kind.as_str(), "create" | "update"))
                {
                    if let Some(r) = app
                        .db
                        .resource_get(&pod, &e.path)
                        .await
                        .map_err(|e| e.to_string())?
                        && let Some(h) = r.content_hash
                    {
                        wanted.push(h);
                    }
                }
                fetch_many(&app, &source, wanted).await
            })
        }),
    );
    *sync.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    Ok(())
}

/// Copies every hash the pod references, from the persisted cursor on.
/// `Some(status)` if the migration was cancelled meanwhile.
async fn copy_all(
    app: &Arc<App>,
    m: &MigrationRecord,
    source: &NodeRecord,
) -> Result<Option<&'static str>, String> {
    let db_err = |e: DbError| format!("metadata store: {e}");
    let mut cursor = m.cursor.clone();
    let mut copied = m.copied;
    if cursor.is_some() {
        tracing::info!(
            migration = m.id,
            copied,
            "resuming the copy where it stopped"
        );
    }
    let total = app.db.pod_blob_count(&m.pod_id).await.map_err(db_err)?;
    let mut current = progress(
        app,
        m,
        MigrationStatus::Copying,
        copied,
        total.max(copied),
        None,
    )
    .await?;
    loop {
        if !current.status.is_active() {
            return Ok(Some(current.status.as_str()));
        }
        let page = app
            .db
            .pod_blobs(&m.pod_id, cursor.as_deref(), PAGE)
            .await
            .map_err(db_err)?;
        let Some((last, _)) = page.last().cloned() else {
            return Ok(None);
        };
        let n = page.len() as i64;
        fetch_many(app, source, page.into_iter().map(|(h, _)| h).collect()).await?;
        copied += n;
        cursor = Some(last);
        current = progress(
            app,
            &current,
            MigrationStatus::Copying,
            copied,
            total.max(copied),
            cursor.as_deref(),
        )
        .await?;
    }
}

/// Fetches the listed blobs this storage lacks, several at once.
async fn fetch_many(
    app: &Arc<App>,
    source: &NodeRecord,
    hashes: Vec<String>,
) -> Result<(), String> {
    futures::stream::iter(hashes)
        .map(|hash| async move { fetch_if_missing(app, source, &hash).await })
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await
}

async fn fetch_if_missing(app: &App, source: &NodeRecord, hash: &str) -> Result<(), String> {
    if app
        .db
        .blob_get(&app.storage_id, hash)
        .await
        .map_err(|e| format!("metadata store: {e}"))?
        .is_some()
    {
        return Ok(());
    }
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match fetch(app, source, hash).await {
            Ok(()) => return Ok(()),
            Err(why) if attempt < FETCH_ATTEMPTS => {
                tracing::debug!(hash, error = %why, attempt, "fetching a blob failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(why) => return Err(why),
        }
    }
}

/// Fetches one blob from the source node into this node's storage and
/// records it (unreferenced until the switch).
async fn fetch(app: &App, source: &NodeRecord, hash: &str) -> Result<(), String> {
    let path = blob_path(hash);
    let resp = signed_get(app, source, &path)
        .await
        .map_err(|e| format!("node {} unreachable: {e}", source.node_id))?;
    if !resp.status().is_success() {
        return Err(format!(
            "node {} answered {} for blob {hash}",
            source.node_id,
            resp.status()
        ));
    }
    let stream = resp.bytes_stream().map_err(std::io::Error::other).boxed();
    let upload = app
        .blobs
        .put(stream, u64::MAX)
        .await
        .map_err(|e| format!("storing blob {hash}: {e}"))?;
    if upload.info.hash != hash {
        return Err(format!(
            "node {} sent other bytes for blob {hash} (they hash to {})",
            source.node_id, upload.info.hash
        ));
    }
    app.db
        .blob_orphan(&app.storage_id, hash, upload.info.size as i64)
        .await
        .map_err(|e| format!("metadata store: {e}"))?;
    app.blobs
        .finish(upload)
        .await
        .map_err(|e| format!("storing blob {hash}: {e}"))
}

/// A GET to another node's cluster endpoint, signed with this node's key.
pub async fn signed_get(
    app: &App,
    node: &NodeRecord,
    path: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let authority = format!("{}:{}", node.internal_ip, node.internal_port);
    let nonce = signature::nonce();
    let signed = Signed {
        method: "GET",
        authority: &authority,
        path_and_query: path,
        date: now_ms(),
        nonce: &nonce,
        from: &app.node.id,
        to: &node.node_id,
        hop: "1",
        ..Default::default()
    };
    app.proxy
        .get(format!("http://{authority}{path}"))
        .header(signature::HOP, "1")
        .header(signature::FROM, &app.node.id)
        .header(signature::TO, &node.node_id)
        .header(signature::DATE, signed.date.to_string())
        .header(signature::NONCE, &nonce)
        .header(signature::SIGNATURE, signed.sign(&app.node.key))
        .timeout(Duration::from_secs(600))
        .send()
        .await
}
