//! Per-resource serialisation of read-modify-write operations (PATCH) on
//! this node. The metadata store already makes each write atomic and
//! conditional; this keeps concurrent patches of one resource from
//! starving each other with retries. A pod is only ever written by its
//! owning node, so a node-local lock is enough.

use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;

pub struct Stripes {
    locks: Vec<Mutex<()>>,
}

impl Default for Stripes {
    fn default() -> Self {
        Stripes {
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl Stripes {
    /// Waits for the lock of one resource (shared with the few others that
    /// hash to the same stripe).
    pub async fn lock(&self, pod: &str, path: &str) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (pod, path).hash(&mut h);
        self.locks[(h.finish() as usize) % STRIPES].lock().await
    }
}
