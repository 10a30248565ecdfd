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
    /// An `If-Match` / `If-None-Match` condition failed.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The writing node does not own the pod (any more).
    #[error("pod is owned by node {0}")]
    NotOwner(String),
    /// The pod is being switched to another node: writes wait, then retry.
    #[error("pod is switching to another node")]
    Fenced,
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
    /// A move between an edge and the centre under way, as JSON (see
    /// `edge::moving::Moving`); `None` when the pod is not moving.
    pub moving: Option<String>,
}

/// A row of `edges`: an edge node created on the centre, enrolled or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRecord {
    pub node_id: String,
    /// The operator's name for the box, unique among edges.
    pub name: String,
    /// SHA-256 hex of the enrolment token; `None` once it was used.
    pub token_hash: Option<String>,
    pub created_at: i64,
    pub enrolled_at: Option<i64>,
    /// The last heartbeat the centre accepted.
    pub last_signal: Option<i64>,
    /// The centre node that holds the edge's tunnel, if one does.
    pub tunnel_node: Option<String>,
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
    /// When the switch fenced the pod's writes.
    pub fenced_at: Option<i64>,
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
    /// Records that the node is alive.
    async fn node_heartbeat(&self, node_id: &str, at: i64) -> DbResult<()>;
    /// Deletes a node's row; refused (`Conflict`) while it owns pods.
    async fn node_remove(&self, node_id: &str) -> DbResult<bool>;
    /// Moves a pod to `to` if `from` still owns it; returns whether it did.
    /// The row lock this takes waits for writes in flight on the old owner,
    /// and their ownership check fails afterwards (fencing).
    async fn pod_set_owner(&self, pod_id: &str, from: &str, to: &str) -> DbResult<bool>;

    /// Records the hash of an administrator token (idempotent).
    async fn admin_token_add(&self, token_hash: &str, created_by: &str) -> DbResult<()>;
    async fn admin_token_exists(&self, token_hash: &str) -> DbResult<bool>;

    async fn pod_get(&self, pod_id: &str) -> DbResult<Option<PodRecord>>;
    async fn pod_list(&self) -> DbResult<Vec<PodRecord>>;
    /// The pods a node owns, by name.
    async fn pods_of_node(&self, node_id: &str) -> DbResult<Vec<PodRecord>>;

    /// Creates an edge that may enrol once with the token whose hash is
    /// given. `Conflict` naming the clash if the name is taken by an edge
    /// or the node id by an edge or a node.
    async fn edge_create(
        &self,
        node_id: &str,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> DbResult<()>;
    async fn edge_get(&self, node_id: &str) -> DbResult<Option<EdgeRecord>>;
    /// Every edge, by name.
    async fn edge_list(&self) -> DbResult<Vec<EdgeRecord>>;
    /// Enrols an edge: only if its token hash is still `expected_token_hash`
    /// (so a token works once, even when two enrolments race), clears it,
    /// records the time, and registers the edge's `nodes` row (kind
    /// `edge`, no internal address, storage `edge:<node id>`) with its
    /// public key. False if the token was used already (or the edge does
    /// not exist). `Conflict` if a centre node has that id.
    async fn edge_enrol(
        &self,
        node_id: &str,
        expected_token_hash: &str,
        public_key: &str,
        version: &str,
        now: i64,
    ) -> DbResult<bool>;
    /// Records an enrolled edge's heartbeat (its node's version and last
    /// heartbeat, the edge's last signal) and registers the listed pods
    /// `(name, base URL)` it does not own yet, with no resources: their
    /// data stays on the edge. A pod the edge owns already is left alone;
    /// one it no longer lists (deleted, renamed) is deregistered, unless it
    /// is moving, so its name is free again. Returns the pods refused, with
    /// why (the name or base URL belongs to another node). `NotFound` if
    /// the edge's node is not registered.
    async fn edge_signal(
        &self,
        node_id: &str,
        version: &str,
        pods: &[(String, String)],
        now: i64,
    ) -> DbResult<Vec<(String, String)>>;
    /// Records which centre node holds the edge's tunnel (`None`: none).
    /// `NotFound` if there is no such edge.
    async fn edge_tunnel_set(&self, node_id: &str, centre_node: Option<&str>) -> DbResult<()>;

    /// Starts moving an edge's pod to the centre node `to`: if `from` (the
    /// edge) still owns it, the centre node takes it (owner, storage, an
    /// empty root container, the owner's WebID if given) and `moving` is
    /// recorded, with an `owner` event, in one transaction. A move already
    /// recorded between the same nodes only gets the new `moving`.
    /// `Conflict` otherwise; `NotFound` without the pod.
    async fn pod_move_in(
        &self,
        pod_id: &str,
        from: &str,
        to: &str,
        to_storage: &str,
        owner: Option<&str>,
        moving: &str,
    ) -> DbResult<()>;
    /// Starts moving a pod from the centre node `from` to an edge: records
    /// `moving` and fences the pod (writes fail at commit), with an `owner`
    /// event, in one transaction. A move already recorded between the same
    /// nodes only gets the new `moving`. `Conflict` if `from` does not own
    /// the pod or another move is recorded.
    async fn pod_move_out(&self, pod_id: &str, from: &str, moving: &str) -> DbResult<()>;
    /// Ends a move: clears `moving` and the fence. With `hand_to` (node,
    /// storage), the pod's resources here are deleted (their blobs lose
    /// the references) and the pod goes to that node, in the same
    /// transaction, with an `owner` event. `Conflict` if it is not moving
    /// (unless it is on `hand_to` already: done before).
    async fn pod_move_end(&self, pod_id: &str, hand_to: Option<(&str, &str)>) -> DbResult<()>;
    /// Fences a pod (writes fail when they commit, with `Fenced`) or lifts
    /// the fence; waits for writes in flight. Nothing happens without the pod.
    async fn pod_fence(&self, pod_id: &str, fenced: bool) -> DbResult<()>;
    /// Deletes a pod and all its resources (their blobs lose the
    /// references), with an `owner` event. False if there was no such pod.
    async fn pod_delete(&self, pod_id: &str) -> DbResult<bool>;

    /// Starts a migration of a pod; `Conflict` if one is already active,
    /// `NotFound` if the pod does not exist.
    async fn migration_start(
        &self,
        pod_id: &str,
        source_node: &str,
        target_node: &str,
    ) -> DbResult<MigrationRecord>;
    /// The pod's active migration, if any.
    async fn migration_active(&self, pod_id: &str) -> DbResult<Option<MigrationRecord>>;
    /// Every active migration, of every pod (for listings).
    async fn migrations_active(&self) -> DbResult<Vec<MigrationRecord>>;
    /// The pod's newest migration, active or finished.
    async fn migration_latest(&self, pod_id: &str) -> DbResult<Option<MigrationRecord>>;
    /// Records a running migration's phase and progress (and the copier's
    /// cursor, if given). A migration that is no longer pending, syncing or
    /// copying (cancelled, switching, finished) is left as it is; either
    /// way the current row is returned. A new phase or percentage is
    /// written to the outbox as a `migration` event.
    async fn migration_progress(
        &self,
        id: i64,
        status: MigrationStatus,
        copied: i64,
        total: i64,
        cursor: Option<&str>,
    ) -> DbResult<MigrationRecord>;
    /// Cancels the pod's active migration. `NotFound` without one;
    /// `Conflict` once it is switching.
    async fn migration_cancel(&self, pod_id: &str) -> DbResult<MigrationRecord>;
    /// The distinct content hashes (with sizes) the pod's resources
    /// reference, in hash order after `after`, at most `limit`.
    async fn pod_blobs(
        &self,
        pod_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> DbResult<Vec<(String, i64)>>;
    /// Content hashes the pod references that `storage_id` has no `blobs`
    /// row for (at most `limit`).
    async fn pod_blobs_missing(
        &self,
        pod_id: &str,
        storage_id: &str,
        limit: u32,
    ) -> DbResult<Vec<String>>;
    /// How many distinct content hashes the pod references.
    async fn pod_blob_count(&self, pod_id: &str) -> DbResult<i64>;
    /// Moves a migration to `switching` and fences the pod: the pod row's
    /// lock waits for writes in flight, and later writes fail with
    /// `Fenced` until the switch or [`Self::migration_fail`] lifts it.
    /// Idempotent while switching; `Conflict` if the migration ended or the
    /// source no longer owns the pod.
    async fn migration_fence(&self, id: i64) -> DbResult<MigrationRecord>;
    /// Switches a fenced pod to the target node and its storage, in one
    /// transaction: the target storage's `blobs` rows take the pod's
    /// references and the source's give them up (the collector takes the
    /// source's bytes after its grace period unless other pods use them);
    /// the owner changes, the fence is lifted, and `owner` and `migration`
    /// events are written. `Ok(Err(hashes))`: the target storage has no
    /// row for these hashes yet, and nothing changed.
    async fn migration_switch(
        &self,
        id: i64,
        target_storage: &str,
    ) -> DbResult<Result<MigrationRecord, Vec<String>>>;
    /// Ends an active migration as `failed` or `cancelled` with `error`,
    /// lifting its fence: the pod stays, whole, on its source.
    async fn migration_fail(
        &self,
        id: i64,
        status: MigrationStatus,
        error: &str,
    ) -> DbResult<MigrationRecord>;

    /// Creates a pod with its root container, in one transaction;
    /// `Conflict` if the name or base URL is taken.
    async fn pod_create(&self, pod: &PodRecord) -> DbResult<ResourceRecord>;

    async fn resource_get(&self, pod_id: &str, path: &str) -> DbResult<Option<ResourceRecord>>;

    /// Creates or replaces a resource, creating missing ancestor containers,
    /// referencing its blob and recording the events, in one transaction.
    /// `NotFound`: no such pod. `Conflict`: a container/document clash, or
    /// `create_only` and the path exists. `PreconditionFailed`, `NotOwner`.
    async fn resource_put(&self, req: &PutRequest) -> DbResult<PutOutcome>;

    /// [`Self::resource_put`] of several resources in one transaction:
    /// every write commits, or none does (the first error is returned).
    async fn resource_put_all(&self, reqs: &[PutRequest]) -> DbResult<Vec<PutOutcome>>;

    /// Deletes a resource (a container only when empty: else `Conflict`).
    async fn resource_delete(
        &self,
        pod_id: &str,
        path: &str,
        condition: &Condition,
        writer_node: &str,
    ) -> DbResult<ResourceRecord>;

    /// Children of a container in path order, after `after`, at most `limit`.
    async fn resource_children(
        &self,
        pod_id: &str,
        container: &str,
        after: Option<&str>,
        limit: u32,
    ) -> DbResult<Vec<ResourceRecord>>;

    /// Outbox rows after `after_id`, oldest first.
    async fn events_after(&self, after_id: i64, limit: u32) -> DbResult<Vec<EventRecord>>;

    async fn blob_get(&self, storage_id: &str, hash: &str) -> DbResult<Option<BlobRecord>>;

    /// Imports many resources in one transaction (bulk loads and pod
    /// imports): each gets its version, ETag, outbox row and blob reference.
    /// Items come parents first; each parent container must exist or come
    /// earlier in `items`. Returns how many were imported.
    async fn resource_import(
        &self,
        pod_id: &str,
        storage_id: &str,
        items: Vec<ImportItem>,
    ) -> DbResult<u64>;

    /// Records bytes that were uploaded but whose write was refused (412,
    /// 409 …): a row with no references, so the collector removes them after
    /// the grace period. A row that already exists is left as it is.
    async fn blob_orphan(&self, storage_id: &str, hash: &str, size: i64) -> DbResult<()>;

    /// Blobs unreferenced since before `cutoff` (ms): collection candidates.
    async fn blob_gc_candidates(
        &self,
        storage_id: &str,
        cutoff: i64,
        limit: u32,
    ) -> DbResult<Vec<String>>;

    /// Collects one blob. Under its row lock it re-checks that the blob is
    /// still unreferenced since before `cutoff`, runs `remove` (which deletes
    /// the bytes) and deletes the row, in one transaction. A writer that
    /// references the same bytes meanwhile waits for the lock and then
    /// re-publishes them (`BlobStore::finish`). Returns whether it collected.
    async fn blob_gc_collect(
        &self,
        storage_id: &str,
        hash: &str,
        cutoff: i64,
        remove: RemoveBytes,
    ) -> DbResult<bool>;

    /// Committed events after `cursor` (`(xid, id)`), in position order. On
    /// PostgreSQL only events of transactions below the snapshot's xmin are
    /// returned: sequence order is not commit order, and nothing can commit
    /// below xmin any more.
    async fn events_since(&self, cursor: &EventCursor, limit: u32) -> DbResult<Vec<EventRecord>>;
    /// A follower's persisted cursor; `None` if it never ran.
    async fn follower_cursor(&self, name: &str) -> DbResult<Option<EventCursor>>;
    /// Persists a follower's cursor.
    async fn follower_cursor_set(&self, name: &str, cursor: &EventCursor) -> DbResult<()>;
    /// Forgets a follower (its node was removed), so it no longer holds back pruning.
    async fn follower_cursor_delete(&self, name: &str) -> DbResult<()>;

    /// Records a notification channel. An existing id is a conflict.
    async fn subscription_create(&self, sub: &SubscriptionRecord) -> DbResult<()>;
    async fn subscription_get(&self, id: &str) -> DbResult<Option<SubscriptionRecord>>;
    /// Deletes a channel; false if there was none.
    async fn subscription_delete(&self, id: &str) -> DbResult<bool>;
    /// Clears a channel's `state` feature and returns what it was: the
    /// first caller gets it, every later one `None`.
    async fn subscription_take_state(&self, id: &str) -> DbResult<Option<String>>;
    /// Queues webhook notifications `(channel id, event id, body)`, each
    /// once: an item already queued (or delivered and replayed) for that
    /// channel and event is skipped. Returns how many were queued.
    async fn webhook_enqueue(&self, items: &[(String, i64, String)], now: i64) -> DbResult<u64>;
    /// The oldest queued notification of each channel, with the channel's
    /// pod and target.
    async fn webhook_heads(&self, limit: u32) -> DbResult<Vec<WebhookItem>>;
    /// The oldest queued notification of one channel.
    async fn webhook_next(&self, channel_id: &str) -> DbResult<Option<WebhookItem>>;
    /// Removes a delivered notification.
    async fn webhook_delivered(&self, id: i64) -> DbResult<()>;
    /// Records a failed attempt and when to try again.
    async fn webhook_retry(
        &self,
        id: i64,
        attempts: i32,
        first_failed_at: i64,
        next_attempt_at: i64,
    ) -> DbResult<()>;
    /// Every channel of one type, oldest first.
    async fn subscriptions_of_type(&self, channel_type: &str) -> DbResult<Vec<SubscriptionRecord>>;
    /// The position of the newest event a follower could read now.
    async fn events_head(&self) -> DbResult<EventCursor>;
    /// Deletes events every registered follower has read. Returns how many.
    async fn events_prune(&self) -> DbResult<u64>;

    /// Records a DPoP proof (by `key`) as used until `expires_at` (Unix
    /// ms). True if it was not recorded before, or its record had expired
    /// by `now`; false for a replay. Atomic across nodes.
    async fn dpop_proof_claim(&self, key: &str, expires_at: i64, now: i64) -> DbResult<bool>;
    /// Deletes proof records expired by `now`. Returns how many.
    async fn dpop_proofs_prune(&self, now: i64) -> DbResult<u64>;

    /// Stores a new identity-provider record. `Conflict` if its id, or its
    /// unique key, is taken by a record of the same kind (even an expired
    /// one not yet pruned).
    async fn record_insert(&self, record: &IdpRecord) -> DbResult<()>;
    /// Replaces the data and expiry of a record; false if there is none.
    async fn record_update(&self, record: &IdpRecord) -> DbResult<bool>;
    /// A record by kind and id, unless it expired by `now`.
    async fn record_get(&self, kind: &str, id: &str, now: i64) -> DbResult<Option<IdpRecord>>;
    /// A record by kind and unique key, unless it expired by `now`.
    async fn record_find(
        &self,
        kind: &str,
        unique_key: &str,
        now: i64,
    ) -> DbResult<Option<IdpRecord>>;
    /// An account's live records of one kind, oldest first; with `account_id`
    /// `None`, every live record of the kind.
    async fn record_list(
        &self,
        kind: &str,
        account_id: Option<&str>,
        now: i64,
    ) -> DbResult<Vec<IdpRecord>>;
    /// Deletes a record; false if there was none.
    async fn record_delete(&self, kind: &str, id: &str) -> DbResult<bool>;
    /// Deletes records expired by `now`. Returns how many.
    async fn records_prune(&self, now: i64) -> DbResult<u64>;

    /// Wakes event followers when new events may be readable (PostgreSQL
    /// NOTIFY). Only a hint: followers also poll, because notifications are
    /// lost while the listening connection is down.
    fn event_waker(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// Runs `work` while holding the cluster-wide lock `key`: a PostgreSQL
    /// session advisory lock, or a process-wide lock on SQLite (one node).
    /// For decisions that span the database and something outside it, such
    /// as creating a bucket's storage marker.
    async fn with_cluster_lock(
        &self,
        key: i64,
        work: LockedWork,
    ) -> DbResult<Result<String, String>>;
}

/// A position in the outbox: `(xid, id)`; xid is "0" on SQLite.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventCursor {
    pub xid: String,
    pub id: i64,
}

/// Work done under [`MetadataStore::with_cluster_lock`].
pub type LockedWork =
    Box<dyn FnOnce() -> futures::future::BoxFuture<'static, Result<String, String>> + Send>;

/// Deletes a blob's bytes, for [`MetadataStore::blob_gc_collect`].
pub type RemoveBytes =
    Box<dyn FnOnce() -> futures::future::BoxFuture<'static, Result<(), String>> + Send>;

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

/// A row of `resources`. Containers are the paths ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    pub pod_id: String,
    /// The path inside the pod, starting with `/`.
    pub path: String,
    pub parent: Option<String>,
    pub content_type: String,
    pub size: i64,
    /// SHA-256 of the bytes; `None` for containers.
    pub content_hash: Option<String>,
    pub etag: String,
    /// The outbox position of the last change: grows with every change of
    /// this resource, across deletion and re-creation.
    pub version: i64,
    pub modified_at: i64,
}

impl ResourceRecord {
    pub fn is_container(&self) -> bool {
        self.path.ends_with('/')
    }
}

/// `If-Match` / `If-None-Match` as sent; `*` is kept as a list entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    pub if_match: Option<Vec<String>>,
    pub if_none_match: Option<Vec<String>>,
}

impl Condition {
    /// Whether a write may proceed given the current state.
    pub fn allows(&self, current: Option<&ResourceRecord>) -> bool {
        let matches = |list: &Vec<String>| {
            current.is_some_and(|r| {
                list.iter()
                    .any(|t| t == "*" || t.trim_start_matches("W/") == r.etag)
            })
        };
        if let Some(list) = &self.if_match
            && !matches(list)
        {
            return false;
        }
        if let Some(list) = &self.if_none_match
            && matches(list)
        {
            return false;
        }
        true
    }
}

/// A write of one resource.
#[derive(Debug, Clone)]
pub struct PutRequest {
    pub pod_id: String,
    pub path: String,
    pub content_type: String,
    /// `None` for a container.
    pub blob: Option<(String, i64)>,
    pub storage_id: String,
    /// The node committing the write; it must own the pod (invariant 3).
    pub writer_node: String,
    pub condition: Condition,
    /// POST: fail with `Conflict` instead of replacing.
    pub create_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub created: bool,
    pub record: ResourceRecord,
    /// The blob the write stopped referencing, if any.
    pub replaced_hash: Option<String>,
}

/// One resource of a bulk import.
#[derive(Debug, Clone)]
pub struct ImportItem {
    pub path: String,
    pub content_type: String,
    /// `(hash, size)`; `None` for a container.
    pub blob: Option<(String, i64)>,
}

/// A row of `events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// On PostgreSQL the writing transaction's id (`xid8`, as text): with
    /// `id` it is the event's position. "0" on SQLite.
    pub xid: String,
    pub id: i64,
    pub pod_id: String,
    pub path: String,
    pub kind: String,
    pub version: i64,
    pub etag: Option<String>,
    /// When the change committed, Unix milliseconds.
    pub created_at: i64,
    /// For `migration` events: the migration's state, as JSON.
    pub detail: Option<String>,
}

/// A queued webhook notification (`webhook_queue`) and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookItem {
    pub id: i64,
    pub channel_id: String,
    pub event_id: i64,
    pub body: String,
    pub attempts: i32,
    pub first_failed_at: Option<i64>,
    pub next_attempt_at: i64,
    pub pod_id: String,
    pub send_to: String,
    /// The channel's `accept` feature.
    pub accept: Option<String>,
}

/// A row of `idp_records`: one record of the identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpRecord {
    /// What it is: "account", "password", "session", "webid", "pod",
    /// "client", "key".
    pub kind: String,
    pub id: String,
    /// The account it belongs to, if any.
    pub account_id: Option<String>,
    /// Unique among records of its kind (an email, a WebID), if set.
    pub unique_key: Option<String>,
    /// The record itself, as JSON.
    pub data: String,
    /// Unix ms after which it no longer exists.
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

/// A row of `subscriptions`: one Solid Notifications channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub id: String,
    /// "websocket", "webhook" or "streaming".
    pub channel_type: String,
    pub pod_id: String,
    /// The topic's path in the pod.
    pub path: String,
    /// The topic's URL.
    pub topic: String,
    /// Where a webhook posts.
    pub send_to: Option<String>,
    /// The `state` feature: the ETag the subscriber last saw.
    pub state: Option<String>,
    /// `startAt` and `endAt`, Unix milliseconds.
    pub start_at: Option<i64>,
    pub end_at: Option<i64>,
    /// `rate`: at least this long between two notifications.
    pub rate_ms: Option<i64>,
    /// `accept`: the notifications' media type.
    pub accept: Option<String>,
    /// The subscriber's WebID, once requests are authenticated.
    pub agent: Option<String>,
    pub created_at: i64,
    /// The outbox head when the channel was made: events at or before it
    /// happened before the channel existed.
    pub after: EventCursor,
}

/// A row of `blobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub size: i64,
    pub refcount: i64,
    pub zero_since: Option<i64>,
}

/// What a heartbeat does with one pod an edge lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EdgePod {
    Register,
    /// The edge owns it already.
    Keep,
    /// Refused, with why.
    Refuse(String),
}

/// Decides about pod `pod_id` listed by `edge`, given the rows `(pod_id,
/// node_id)` that hold its name or its base URL.
pub(crate) fn edge_pod(edge: &str, pod_id: &str, holders: &[(String, String)]) -> EdgePod {
    match holders.iter().find(|(p, _)| p == pod_id) {
        Some((_, node)) if node == edge => EdgePod::Keep,
        Some((_, node)) => EdgePod::Refuse(format!("taken by node {node}")),
        None => match holders.first() {
            None => EdgePod::Register,
            Some((other, node)) => EdgePod::Refuse(format!(
                "its base URL is taken by pod {other} of node {node}"
            )),
        },
    }
}

/// The storage id of an edge's pods on the centre: their bytes stay on the edge.
pub fn edge_storage_id(node_id: &str) -> String {
    format!("edge:{node_id}")
}

/// The two ends of a `moving` record, to tell a move taken up again from
/// another one.
pub(crate) fn move_ends(moving: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(moving).unwrap_or_default();
    let end = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    (end("from"), end("to"))
}

/// A migration's completion in percent.
pub fn progress_percent(copied: i64, total: i64) -> i32 {
    if total <= 0 {
        0
    } else {
        (copied.clamp(0, total) * 100 / total) as i32
    }
}

/// What a `migration` event carries: the migration's state as JSON.
pub fn migration_detail(m: &MigrationRecord) -> String {
    serde_json::json!({
        "migration": m.id,
        "status": m.status.as_str(),
        "sourceNode": m.source_node,
        "targetNode": m.target_node,
        "progress": m.progress,
        "copied": m.copied,
        "total": m.total,
        "error": m.error,
    })
    .to_string()
}

/// The parent container of a path (`/a/b` → `/a/`, `/a/` → `/`), `None` for `/`.
pub fn parent_of(path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let cut = trimmed.rfind('/').expect("paths start with /");
    Some(trimmed[..=cut].to_string())
}

/// The containers from the pod root down to the parent of `path`.
pub fn ancestors_of(path: &str) -> Vec<String> {
    let mut list = Vec::new();
    let mut cur = parent_of(path);
    while let Some(p) = cur {
        cur = parent_of(&p);
        list.push(p);
    }
    list.reverse();
    list
}

/// The path that would clash with `path`: `/a` for `/a/` and the reverse.
pub fn twin_of(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(doc) => doc.to_string(),
        None => format!("{path}/"),
    }
}

/// The entity tag of a version of a resource.
pub fn make_etag(version: i64, hash: Option<&str>) -> String {
    match hash {
        Some(h) => format!("\"{version:x}-{}\"", &h[..16.min(h.len())]),
        None => format!("\"{version:x}-c\""),
    }
}
