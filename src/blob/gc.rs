//! The blob collector: deletes bytes that no resource has referenced for a
//! grace period. Each candidate is re-checked under its row lock in the
//! metadata store, so an upload of the same bytes can never lose them.

use std::sync::Arc;

use crate::db::{Db, RemoveBytes, now_ms};

use super::Blobs;

/// One pass: collects every eligible blob of this node's storage.
pub async fn collect_once(
    db: &Db,
    blobs: &Blobs,
    grace: std::time::Duration,
) -> Result<usize, String> {
    let cutoff = now_ms() - grace.as_millis() as i64;
    let storage = blobs.storage_id().to_string();
    // Never delete from a storage that is not (or no longer) ours.
    blobs.check_identity().await?;
    let mut collected = 0;
    loop {
        let candidates = db
            .blob_gc_candidates(&storage, cutoff, 500)
            .await
            .map_err(|e| e.to_string())?;
        if candidates.is_empty() {
            return Ok(collected);
        }
        let mut progressed = false;
        for hash in candidates {
            let store = Arc::clone(blobs);
            let h = hash.clone();
            let remove: RemoveBytes = Box::new(move || {
                Box::pin(async move { store.delete(&h).await.map_err(|e| e.to_string()) })
            });
            if db
                .blob_gc_collect(&storage, &hash, cutoff, remove)
                .await
                .map_err(|e| e.to_string())?
            {
                collected += 1;
                progressed = true;
            }
        }
        if !progressed {
            return Ok(collected);
        }
    }
}

/// Runs the collector every `interval` until the process ends.
pub fn spawn(db: Db, blobs: Blobs, grace: std::time::Duration, interval: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match collect_once(&db, &blobs, grace).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(collected = n, "blob collection"),
                Err(e) => tracing::warn!(error = %e, "blob collection failed; will retry"),
            }
        }
    });
}
