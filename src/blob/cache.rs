//! The node-local cache in front of S3: cacache used purely as a
//! content-addressed store, plus our own LRU index in a node-local SQLite file
//! (`<cache>/index.sqlite`: hash, size, last access), never in the shared
//! database.
//!
//! Entries are immutable (keyed by their SHA-256), so a cached entry is never
//! stale; it can only be damaged, which reads detect by hashing. The index
//! also keeps an XXH3-64 checksum of each entry, taken from the same bytes
//! that were SHA-256-verified when the entry was written: large entries are
//! checked with it (tens of GB/s) instead of re-hashing them with SHA-256
//! (about 350 MB/s on CPUs without SHA extensions) on every read. The index row
//! is written before the bytes are linked in, so a crash leaves at worst a row
//! without a file: it still counts towards the cap until evicted, and a read
//! of it is a miss.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

use crate::metrics::Metrics;

/// The name of the index file inside the cache directory.
pub const INDEX_FILE: &str = "index.sqlite";

pub struct Cache {
    dir: PathBuf,
    index: Mutex<Connection>,
    /// Bytes accounted in the index.
    total: AtomicU64,
    cap: u64,
    /// Reads not yet written to the index: hash → last access (ms).
    touches: Mutex<HashMap<String, i64>>,
    /// One eviction pass at a time.
    evicting: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

fn now_ms() -> i64 {
    crate::db::now_ms()
}

/// The cacache integrity of a hex SHA-256.
pub fn integrity(hash: &str) -> cacache::Integrity {
    cacache::Integrity::from_hex(hash, cacache::Algorithm::Sha256)
        .expect("callers pass a valid hex SHA-256")
}

impl Cache {
    /// Opens (or creates) the cache at `dir`, capped at `cap` bytes.
    pub fn open(dir: &Path, cap: u64, metrics: Arc<Metrics>) -> Result<Cache, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!(
                "cannot use the cache directory {} ({what}: {e}); set CSS_CACHE_PATH to a writable directory",
                dir.display()
            )
        };
        for sub in ["", "spool"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| fail("create", &e))?;
        }
        // Spool files of a crashed process are garbage.
        if let Ok(entries) = std::fs::read_dir(dir.join("spool")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let conn = Connection::open(dir.join(INDEX_FILE)).map_err(|e| fail("index", &e))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS entries (
                 hash TEXT PRIMARY KEY,
                 size INTEGER NOT NULL,
                 last_access INTEGER NOT NULL,
                 xxh3 INTEGER
             );
             CREATE INDEX IF NOT EXISTS entries_lru ON entries (last_access);",
        )
        .map_err(|e| fail("index", &e))?;
        let total: i64 = conn
            .query_row("SELECT COALESCE(SUM(size), 0) FROM entries", [], |r| {
                r.get(0)
            })
            .map_err(|e| fail("index", &e))?;
        metrics.cache.size_bytes.store(total as u64, Relaxed);
        metrics.cache.max_bytes.store(cap, Relaxed);
        Ok(Cache {
            dir: dir.to_path_buf(),
            index: Mutex::new(conn),
            total: AtomicU64::new(total as u64),
            cap,
            touches: Mutex::new(HashMap::new()),
            evicting: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes the index accounts for.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// Where a new spool file goes (same file system as the entries).
    pub fn spool_path(&self) -> PathBuf {
        self.dir
            .join("spool")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Where cacache keeps the bytes of `hash` (its content-v2 layout; a unit
    /// test holds cacache to it).
    pub fn content_path(&self, hash: &str) -> PathBuf {
        self.dir
            .join("content-v2")
            .join("sha256")
            .join(&hash[0..2])
            .join(&hash[2..4])
            .join(&hash[4..])
    }

    /// Whether an entry of `size` bytes may be cached at all.
    pub fn admits(&self, size: u64) -> bool {
        size <= self.cap
    }

    /// Notes a read, for the LRU order (written to the index by [`Cache::flush`]).
    pub fn touch(&self, hash: &str) {
        self.touches
            .lock()
            .expect("touch map")
            .insert(hash.to_string(), now_ms());
    }

    /// Writes pending reads to the index.
    pub fn flush(&self) {
        let pending = std::mem::take(&mut *self.touches.lock().expect("touch map"));
        if pending.is_empty() {
            return;
        }
        let mut conn = self.index.lock().expect("cache index");
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE entries SET last_access = ?2 WHERE hash = ?1")?;
                for (hash, at) in &pending {
                    stmt.execute(params![hash, at])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record cache reads in the index");
        }
    }

    /// The XXH3-64 checksum recorded for an entry, if any.
    pub fn xxh3_of(&self, hash: &str) -> Option<u64> {
        let conn = self.index.lock().expect("cache index");
        conn.query_row(
            "SELECT xxh3 FROM entries WHERE hash = ?1",
            params![hash],
            |r| r.get::<_, Option<i64>>(0),
        )
        .ok()
        .flatten()
        .map(|v| v as u64)
    }

    /// Accounts a new entry in the index (before its bytes are linked in).
    /// Returns false if it was already there.
    fn account(&self, hash: &str, size: u64, xxh3: Option<u64>) -> Result<bool, String> {
        let conn = self.index.lock().expect("cache index");
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO entries (hash, size, last_access, xxh3) VALUES (?1, ?2, ?3, ?4)",
                params![hash, size as i64, now_ms(), xxh3.map(|v| v as i64)],
            )
            .map_err(|e| e.to_string())?;
        if n == 1 {
            let total = self.total.fetch_add(size, Relaxed) + size;
            self.metrics.cache.size_bytes.store(total, Relaxed);
        }
        Ok(n == 1)
    }

    /// Makes a finished spool file (already hashed) the cache entry of `hash`,
    /// by hard link: no copy. The spool name is left for its owner to drop.
    pub async fn adopt(&self, spool: &Path, hash: &str, size: u64, xxh3: Option<u64>) {
        if !self.admits(size) {
            return;
        }
        if let Err(e) = self.account(hash, size, xxh3) {
            tracing::warn!(error = %e, "cannot index a cache entry");
            return;
        }
        let target = self.content_path(hash);
        let linked = async {
            tokio::fs::create_dir_all(target.parent().expect("nested")).await?;
            match tokio::fs::hard_link(spool, &target).await {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        }
        .await;
        if let Err(e) = linked {
            tracing::warn!(error = %e, "cannot add an entry to the cache");
        }
        self.drop_if_unindexed(hash).await;
        self.evict_to_cap().await;
    }

    /// An eviction may have picked the row between its insert and the link:
    /// then the bytes must go too, or they would sit outside the accounting.
    async fn drop_if_unindexed(&self, hash: &str) {
        let indexed = {
            let conn = self.index.lock().expect("cache index");
            conn.query_row(
                "SELECT 1 FROM entries WHERE hash = ?1",
                params![hash],
                |_| Ok(()),
            )
            .is_ok()
        };
        if !indexed {
            let _ = cacache::remove_hash(&self.dir, &integrity(hash)).await;
        }
    }

    /// A writer that fills the entry of `hash` (`size` bytes) while a miss
    /// streams; cacache checks size and hash when it is committed.
    pub async fn filler(&self, hash: &str, size: u64) -> Option<cacache::Writer> {
        if !self.admits(size) {
            return None;
        }
        match cacache::WriteOpts::new()
            .algorithm(cacache::Algorithm::Sha256)
            .integrity(integrity(hash))
            .size(size as usize)
            .open_hash(&self.dir)
            .await
        {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a cache fill");
                None
            }
        }
    }

    /// Commits a fill; on a hash or size mismatch nothing is cached.
    pub async fn commit_fill(
        &self,
        hash: &str,
        size: u64,
        xxh3: u64,
        writer: cacache::Writer,
    ) -> bool {
        // Account first: a crash between the two leaves a row without a file.
        if let Err(e) = self.account(hash, size, Some(xxh3)) {
            tracing::warn!(error = %e, "cannot index a cache entry");
            return false;
        }
        match writer.commit().await {
            Ok(_) => {
                self.drop_if_unindexed(hash).await;
                self.evict_to_cap().await;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, hash, "cache fill rejected");
                self.forget(hash);
                false
            }
        }
    }

    /// Drops an entry: its index row and its bytes (damaged, or collected).
    pub async fn evict(&self, hash: &str) {
        self.forget(hash);
        let _ = cacache::remove_hash(&self.dir, &integrity(hash)).await;
    }

    fn forget(&self, hash: &str) -> Option<u64> {
        let conn = self.index.lock().expect("cache index");
        let size: Option<i64> = conn
            .query_row(
                "DELETE FROM entries WHERE hash = ?1 RETURNING size",
                params![hash],
                |r| r.get(0),
            )
            .ok();
        let size = size? as u64;
        let total = self.total.fetch_sub(size, Relaxed) - size;
        self.metrics.cache.size_bytes.store(total, Relaxed);
        Some(size)
    }

    /// Evicts least-recently-used entries until the cache is under its cap.
    pub async fn evict_to_cap(&self) {
        if self.total() <= self.cap {
            return;
        }
        let _one = self.evicting.lock().await;
        self.flush();
        while self.total() > self.cap {
            let victims: Vec<String> = {
                let conn = self.index.lock().expect("cache index");
                let stmt = conn
                    .prepare_cached("SELECT hash FROM entries ORDER BY last_access, hash LIMIT 64");
                match stmt.and_then(|mut s| {
                    s.query_map([], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the cache index");
                        return;
                    }
                }
            };
            if victims.is_empty() {
                return;
            }
            for hash in victims {
                if self.total() <= self.cap {
                    break;
                }
                if let Some(size) = self.forget(&hash) {
                    let _ = cacache::remove_hash(&self.dir, &integrity(&hash)).await;
                    self.metrics.cache.evictions.fetch_add(1, Relaxed);
                    self.metrics.cache.evicted_bytes.fetch_add(size, Relaxed);
                }
            }
        }
    }

    /// Writes pending reads to the index every `every`, until the process ends.
    pub fn spawn_flusher(self: &Arc<Self>, every: std::time::Duration) {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(cache) = cache.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || cache.flush()).await;
            }
        });
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn hash_of(bytes: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn adopted_spool_files_are_cacache_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20, Default::default()).unwrap();
        let spool = cache.spool_path();
        std::fs::write(&spool, b"adopted bytes").unwrap();
        let hash = hash_of(b"adopted bytes");
        cache.adopt(&spool, &hash, 13, None).await;
        // cacache finds (and verifies) the entry where we linked it.
        let read = cacache::read_hash(dir.path(), &integrity(&hash))
            .await
            .unwrap();
        assert_eq!(read, b"adopted bytes");
        assert_eq!(cache.total(), 13);
    }

    #[tokio::test]
    async fn eviction_keeps_the_least_recently_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 25, Default::default()).unwrap();
        let mut hashes = Vec::new();
        for body in [b"first 10b!", b"second 10!", b"third 10b!"] {
            let spool = cache.spool_path();
            std::fs::write(&spool, body).unwrap();
            let hash = hash_of(body);
            cache.adopt(&spool, &hash, 10, None).await;
            hashes.push(hash);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if hashes.len() == 2 {
                // Read the first again: the second is now the oldest.
                cache.touch(&hashes[0]);
            }
        }
        assert!(cache.total() <= 25);
        assert!(
            cache.content_path(&hashes[0]).exists(),
            "recently read entry kept"
        );
        assert!(
            !cache.content_path(&hashes[1]).exists(),
            "least recently read entry evicted"
        );
        assert!(cache.content_path(&hashes[2]).exists(), "newest entry kept");
    }
}
