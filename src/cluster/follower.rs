//! Outbox followers (invariant 9): each reads events in position order from
//! a cursor it persists, so nothing is lost across restarts or while a
//! listening connection is down. PostgreSQL NOTIFY only wakes it; it also
//! polls. Events every follower has read are pruned.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{Db, EventRecord};

/// How often a follower looks for events without being woken.
pub const POLL: Duration = Duration::from_millis(500);
/// How often a follower prunes what every follower has read.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What a follower does with each batch of events (in order).
pub type Handler = Box<dyn Fn(&[EventRecord]) + Send + Sync>;

/// A handler that writes: the cursor moves past a batch only once its
/// future returns `Ok`; on `Err` the same batch is offered again.
pub type AsyncHandler = Arc<
    dyn Fn(Vec<EventRecord>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// The follower that queues this node's webhook notifications.
pub fn webhooks_name(node_id: &str) -> String {
    format!("webhooks:{node_id}")
}

/// The follower that keeps this node's placement cache right.
pub fn placement_name(node_id: &str) -> String {
    format!("placement:{node_id}")
}

/// Runs the follower `name` until the process ends. A follower that never
/// ran starts at the current head: it follows changes from now on.
pub fn spawn(db: Db, name: String, handler: Handler) {
    let handler = Arc::new(handler);
    spawn_async(
        db,
        name,
        Arc::new(move |batch: Vec<EventRecord>| {
            handler(&batch);
            Box::pin(async { Ok(()) })
        }),
    );
}

/// Like [`spawn`], for a handler whose work must be done before the cursor
/// moves on. Runs until the process ends or the task is aborted.
pub fn spawn_async(db: Db, name: String, handler: AsyncHandler) -> tokio::task::JoinHandle<()> {
    let waker = db.event_waker();
    tokio::spawn(async move {
        let mut cursor = loop {
            let found = match db.follower_cursor(&name).await {
                Ok(Some(c)) => Ok(c),
                Ok(None) => match db.events_head().await {
                    Ok(head) => db.follower_cursor_set(&name, &head).await.map(|_| head),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match found {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(follower = %name, error = %e, "cannot read the follower cursor; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut last_prune = Instant::now();
        loop {
            match db.events_since(&cursor, 500).await {
                Ok(batch) if !batch.is_empty() => {
                    let last = batch.last().expect("non-empty").clone();
                    if let Err(e) = handler(batch).await {
                        tracing::warn!(follower = %name, error = %e, "cannot apply events; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    cursor.xid = last.xid.clone();
                    cursor.id = last.id;
                    if let Err(e) = db.follower_cursor_set(&name, &cursor).await {
                        tracing::warn!(follower = %name, error = %e, "cannot persist the follower cursor");
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(follower = %name, error = %e, "cannot read events; retrying")
                }
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                match db.events_prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(pruned = n, "pruned events every follower has read"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune events"),
                }
            }
            match &waker {
                Some(w) => {
                    let _ = tokio::time::timeout(POLL, w.notified()).await;
                }
                None => tokio::time::sleep(POLL).await,
            }
        }
    })
}
