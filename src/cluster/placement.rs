//! Where pods live: a cache of pod → owner node, and of node → address.
//!
//! Correctness never depends on it: the owner re-checks ownership when it
//! commits a write, and a forwarded request is never forwarded again. The
//! cache only saves a database round trip per request. Entries expire after
//! [`TTL`], and the event follower drops a pod's entry as soon as its owner
//! changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::{Db, DbResult, NodeRecord, PodRecord};

/// How long a cached placement is trusted without news from the follower.
pub const TTL: Duration = Duration::from_secs(30);

/// How long a cached placement is trusted for a request another node
/// forwarded here: that node believed this one owns the pod, and if both
/// caches are stale only a fresh look can tell.
pub const FORWARDED_TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Placement {
    pods: Mutex<HashMap<String, (Instant, Option<PodRecord>)>>,
    nodes: Mutex<HashMap<String, (Instant, Option<NodeRecord>)>>,
}

impl Placement {
    /// The pod's record (owner included), or `None` if there is no such pod.
    pub async fn pod(&self, db: &Db, pod_id: &str) -> DbResult<Option<PodRecord>> {
        self.pod_within(db, pod_id, TTL).await
    }

    /// Like [`Self::pod`], trusting a cached record only if it is younger
    /// than `max_age`.
    pub async fn pod_within(
        &self,
        db: &Db,
        pod_id: &str,
        max_age: Duration,
    ) -> DbResult<Option<PodRecord>> {
        if let Some((at, rec)) = self.pods.lock().expect("placement").get(pod_id)
            && at.elapsed() < max_age
        {
            return Ok(rec.clone());
        }
        self.pod_fresh(db, pod_id).await
    }

    /// The pod's record read from the database, which replaces the cached one.
    pub async fn pod_fresh(&self, db: &Db, pod_id: &str) -> DbResult<Option<PodRecord>> {
        let rec = db.pod_get(pod_id).await?;
        // Absence is not cached: another node may create the pod any moment.
        if rec.is_none() {
            self.forget_pod(pod_id);
        }
        if let Some(r) = &rec {
            let mut pods = self.pods.lock().expect("placement");
            if pods.len() > 100_000 {
                pods.clear();
            }
            pods.insert(pod_id.to_string(), (Instant::now(), Some(r.clone())));
        }
        Ok(rec)
    }

    /// A node's record (address, public key).
    pub async fn node(&self, db: &Db, node_id: &str) -> DbResult<Option<NodeRecord>> {
        if let Some((at, rec)) = self.nodes.lock().expect("placement").get(node_id)
            && at.elapsed() < TTL
        {
            return Ok(rec.clone());
        }
        let rec = db.node_get(node_id).await?;
        self.nodes
            .lock()
            .expect("placement")
            .insert(node_id.to_string(), (Instant::now(), rec.clone()));
        Ok(rec)
    }

    /// Forgets a pod's placement (its owner changed, or it was created).
    pub fn forget_pod(&self, pod_id: &str) {
        self.pods.lock().expect("placement").remove(pod_id);
    }

    /// Forgets a node (it re-registered with a new address or key).
    pub fn forget_node(&self, node_id: &str) {
        self.nodes.lock().expect("placement").remove(node_id);
    }

    /// Forgets everything (the follower fell behind and cannot tell what changed).
    pub fn clear(&self) {
        self.pods.lock().expect("placement").clear();
        self.nodes.lock().expect("placement").clear();
    }
}
