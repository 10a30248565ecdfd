//! The node registry: heartbeats, reachability, and moving the pods of a node
//! that is gone (or being drained) to live nodes that share its storage.
//!
//! Nodes find each other only through the database. Moving a pod is one
//! conditional update of its owner; the row lock it takes fences the old
//! owner, whose writes re-check ownership when they commit.

use std::time::Duration;

use crate::db::{Db, NodeRecord, now_ms};

/// Whether a node has sent a heartbeat within `window`.
pub fn reachable(node: &NodeRecord, window: Duration, now: i64) -> bool {
    now - node.last_heartbeat <= window.as_millis() as i64
}

/// Sends this node's heartbeat every `interval` until the process ends.
pub fn spawn_heartbeat(db: Db, node_id: String, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = db.node_heartbeat(&node_id, now_ms()).await {
                tracing::warn!(error = %e, "cannot record the heartbeat; will retry");
            }
        }
    });
}

/// One pod moved by [`move_pods`].
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    pub pod_id: String,
    pub to: String,
}

/// Moves every pod of `from` to live centre nodes with the same storage id,
/// spreading them round-robin. Pods stored elsewhere need a migration and
/// are reported as left behind.
pub async fn move_pods(
    db: &Db,
    from: &str,
    window: Duration,
) -> Result<(Vec<Moved>, Vec<String>), String> {
    let nodes = db.node_list().await.map_err(|e| e.to_string())?;
    let now = now_ms();
    let targets: Vec<&NodeRecord> = nodes
        .iter()
        .filter(|n| n.node_id != from && n.kind == "centre" && reachable(n, window, now))
        .collect();
    let pods = db.pod_list().await.map_err(|e| e.to_string())?;
    let mut moved = Vec::new();
    let mut left = Vec::new();
    let mut turn = 0usize;
    for pod in pods.iter().filter(|p| p.node_id == from) {
        let candidates: Vec<&&NodeRecord> = targets
            .iter()
            .filter(|n| n.storage_id.as_deref() == Some(pod.storage_id.as_str()))
            .collect();
        if candidates.is_empty() {
            left.push(pod.pod_id.clone());
            continue;
        }
        let to = &candidates[turn % candidates.len()].node_id;
        turn += 1;
        if db
            .pod_set_owner(&pod.pod_id, from, to)
            .await
            .map_err(|e| e.to_string())?
        {
            tracing::info!(pod = %pod.pod_id, from, to = %to, "moved pod");
            moved.push(Moved {
                pod_id: pod.pod_id.clone(),
                to: to.clone(),
            });
        }
    }
    Ok((moved, left))
}

/// With `CSS_AUTO_REASSIGN=true`: every interval, moves the pods of nodes
/// that have been unreachable for the window to live nodes.
pub fn spawn_auto_reassign(db: Db, me: String, window: Duration, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(nodes) = db.node_list().await else {
                continue;
            };
            let now = now_ms();
            for node in nodes
                .iter()
                .filter(|n| n.node_id != me && !reachable(n, window, now))
            {
                match move_pods(&db, &node.node_id, window).await {
                    Ok((moved, _)) if !moved.is_empty() => tracing::warn!(
                        node = %node.node_id,
                        pods = moved.len(),
                        "node unreachable; reassigned its pods"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "automatic reassignment failed"),
                }
            }
        }
    });
}
