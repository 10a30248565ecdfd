//! Joining a cluster with existing data: `xpod cluster join --import`.
//!
//! A box that ran alone keeps its pods in `<root>/xpod.sqlite` and its bytes
//! under `<root>/blobs`. Pointed at a cluster database it refuses to start
//! until this offline command has copied its pods into the cluster: each pod
//! is created there (owned by this node), its LDP containers are walked from
//! the root, and every resource is imported with its content type. Bytes are
//! copied only where the cluster's storage differs from the box's (e.g. an S3
//! bucket). Nothing on the box is deleted: the SQLite file is renamed to
//! `xpod.sqlite.imported`, and the blobs stay where they are.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;

use crate::blob::Blobs;
use crate::config::{Config, DatabaseConfig};
use crate::db::{self, Db, ImportItem, PodRecord};

/// The box's own database, once it ran alone.
pub fn standalone_db(root: &Path) -> PathBuf {
    root.join("xpod.sqlite")
}

/// Where the box's database goes once imported.
pub fn imported_db(root: &Path) -> PathBuf {
    root.join("xpod.sqlite.imported")
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Imported {
    pub pods: Vec<String>,
    pub resources: u64,
    pub bytes_copied: u64,
}

/// Imports every pod of the box into the cluster. `cluster_blobs` is the
/// store this node uses in the cluster; `node_id` becomes the pods' owner.
pub async fn import(
    config: &Config,
    cluster: &Db,
    cluster_blobs: &Blobs,
    node_id: &str,
) -> Result<Imported, String> {
    let local_path = standalone_db(&config.root);
    if !local_path.exists() {
        return Err(format!(
            "nothing to import: {} does not exist (this box never ran alone, or was imported already)",
            local_path.display()
        ));
    }
    let local = db::open(&DatabaseConfig::Sqlite(local_path.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let local_dir = crate::blob::fs::blob_dir(&config.root);
    let local_blobs: Blobs =
        Arc::new(crate::blob::fs::FsBlobStore::open(&local_dir).map_err(|e| e.to_string())?);
    let same_storage = local_blobs.storage_id() == cluster_blobs.storage_id();

    let pods = local.pod_list().await.map_err(|e| e.to_string())?;
    // Refuse before changing anything if a name is taken.
    for pod in &pods {
        if let Some(existing) = cluster
            .pod_get(&pod.pod_id)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err(format!(
                "the cluster already has a pod named {} (on node {}); nothing was imported. Rename or remove one of them first",
                pod.pod_id, existing.node_id
            ));
        }
    }
    let mut done = Imported::default();
    for pod in &pods {
        let record = PodRecord {
            pod_id: pod.pod_id.clone(),
            base_url: crate::pod::base_url(config, &pod.pod_id).to_string(),
            node_id: node_id.to_string(),
            storage_id: cluster_blobs.storage_id().to_string(),
            owner: pod.owner.clone(),
            created_at: pod.created_at,
            moving: None,
        };
        cluster
            .pod_create(&record)
            .await
            .map_err(|e| format!("cannot create pod {} in the cluster: {e}", pod.pod_id))?;
        // ACLs made under access control come along as they are.
        let key = crate::ldp::access::baseline_key(&pod.pod_id);
        if local
            .setting_get(&key)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            cluster
                .setting_init(&key, "1")
                .await
                .map_err(|e| e.to_string())?;
        }
        // Walk the containers from the root; parents are imported first.
        let mut containers = vec!["/".to_string()];
        while let Some(container) = containers.pop() {
            let mut after: Option<String> = None;
            loop {
                let children = local
                    .resource_children(&pod.pod_id, &container, after.as_deref(), 1000)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(last) = children.last() else { break };
                after = Some(last.path.clone());
                let mut items = Vec::with_capacity(children.len());
                for child in &children {
                    if child.is_container() {
                        containers.push(child.path.clone());
                        items.push(ImportItem {
                            path: child.path.clone(),
                            content_type: child.content_type.clone(),
                            blob: None,
                        });
                        continue;
                    }
                    let hash = child.content_hash.clone().ok_or_else(|| {
                        format!("{}{} has no content hash", pod.pod_id, child.path)
                    })?;
                    if !same_storage {
                        let copied =
                            copy_blob(&local_blobs, cluster_blobs, &hash, config.max_body_size)
                                .await
                                .map_err(|e| format!("{}{}: {e}", pod.pod_id, child.path))?;
                        done.bytes_copied += copied;
                    }
                    items.push(ImportItem {
                        path: child.path.clone(),
                        content_type: child.content_type.clone(),
                        blob: Some((hash, child.size)),
                    });
                }
                done.resources += cluster
                    .resource_import(&pod.pod_id, cluster_blobs.storage_id(), items)
                    .await
                    .map_err(|e| format!("cannot import into pod {}: {e}", pod.pod_id))?;
            }
        }
        tracing::info!(pod = %pod.pod_id, "imported pod");
        done.pods.push(pod.pod_id.clone());
    }
    drop(local);
    std::fs::rename(&local_path, imported_db(&config.root)).map_err(|e| {
        format!(
            "imported, but cannot rename {} ({e}); rename it yourself before starting the node",
            local_path.display()
        )
    })?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", local_path.display()));
        if side.exists() {
            let _ = std::fs::rename(
                &side,
                format!("{}{suffix}", imported_db(&config.root).display()),
            );
        }
    }
    Ok(done)
}

/// Copies one blob between stores, streaming; checks the hash on arrival.
async fn copy_blob(from: &Blobs, to: &Blobs, hash: &str, max: u64) -> Result<u64, String> {
    let stream = from
        .get(hash, None)
        .await
        .map_err(|e| format!("cannot read its bytes from this box: {e}"))?;
    let upload = to
        .put(stream.boxed(), max)
        .await
        .map_err(|e| format!("cannot store its bytes in the cluster: {e}"))?;
    if upload.info.hash != hash {
        return Err(format!(
            "its bytes on this box are damaged (hash {} instead of {hash})",
            upload.info.hash
        ));
    }
    let size = upload.info.size;
    to.finish(upload)
        .await
        .map_err(|e| format!("cannot store its bytes in the cluster: {e}"))?;
    Ok(size)
}
