//! The tiered store: S3 holds the bytes, a bounded local cache holds the hot
//! ones.
//!
//! - **Writes** spool the body into the cache directory while hashing it,
//!   upload the spool under its hash with its known size, and (after the row
//!   commits) link the spool in as the cache entry: one copy on local disk.
//! - **Reads** try the cache first. Entries up to [`SMALL`] are verified
//!   against their SHA-256 before a byte is sent, so a damaged one is evicted
//!   and fetched again within the same request. Larger ones are verified
//!   while they stream, against the XXH3-64 checksum the index recorded from
//!   the SHA-256-verified bytes when the entry was written; the last chunk is
//!   held back until the checksum matches, so a mismatch aborts the response
//!   (and evicts the entry: the next read fetches it again).
//! - **A miss** streams from S3 to the client and fills the cache at once,
//!   never holding a whole object in memory.
//! - Byte ranges of a cached entry are read from its file unverified (a range
//!   cannot be checked without reading the whole entry); a range that misses
//!   is fetched from S3 without filling the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::db::Db;
use crate::metrics::Metrics;

use super::cache::Cache;
use super::s3::{MARKER_KEY, S3Error, S3Store};
use super::{BlobError, BlobStore, ByteStream, SpoolFile, Upload, is_hash};

/// Entries up to this size are verified before they are sent.
pub const SMALL: u64 = 1024 * 1024;

/// The advisory lock that serialises creating a bucket's storage marker ("xpodstor").
const STORAGE_LOCK: i64 = 0x7870_6f64_7374_6f72;

pub struct TieredStore {
    s3: Arc<S3Store>,
    cache: Arc<Cache>,
    storage_id: String,
    /// False while the bucket's marker has not been read since start-up (S3
    /// was unreachable then): writes re-check it first.
    verified: AtomicBool,
    metrics: Arc<Metrics>,
}

fn unavailable(e: S3Error) -> BlobError {
    match e {
        S3Error::NotFound => BlobError::NotFound,
        other => BlobError::Unavailable(format!("S3: {other}")),
    }
}

fn io_unavailable(e: std::io::Error) -> BlobError {
    BlobError::Unavailable(format!("cache: {e}"))
}

impl TieredStore {
    /// Connects to the bucket (creating it if missing), opens the cache and
    /// settles the storage identity. Each failure says what to fix.
    pub async fn open(
        config: &crate::config::Config,
        db: &Db,
        metrics: Arc<Metrics>,
    ) -> Result<TieredStore, String> {
        let s3_config = config.s3.as_ref().expect("called with S3 configured");
        let s3 = Arc::new(S3Store::new(s3_config, metrics.clone())?);
        let cache = Arc::new(Cache::open(
            &config.cache_path,
            config.cache_max_size,
            metrics.clone(),
        )?);
        cache.spawn_flusher(std::time::Duration::from_secs(2));
        let record_key = format!("storage.s3:{}", s3.label());
        let (storage_id, verified) = match s3.ensure_bucket().await {
            Ok(()) => (identify(&s3, db, &record_key).await?, true),
            Err((transient, why)) => {
                // Start on the recorded identity so the cache can serve; the
                // marker is re-read before the first write.
                let recorded = db
                    .setting_get(&record_key)
                    .await
                    .map_err(|e| e.to_string())?;
                match recorded {
                    Some(id) if transient => {
                        tracing::warn!(error = %why, storage_id = %id, "S3 is unreachable; starting on the recorded storage id, serving from the cache");
                        (id, false)
                    }
                    _ => return Err(why),
                }
            }
        };
        Ok(TieredStore {
            s3,
            cache,
            storage_id,
            verified: AtomicBool::new(verified),
            metrics,
        })
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Re-reads the bucket's marker and compares it with this node's id.
    async fn check_marker(&self) -> Result<(), BlobError> {
        let marker = self.s3.get_small(MARKER_KEY).await.map_err(unavailable)?;
        let found = marker.map(|b| String::from_utf8_lossy(&b).trim().to_string());
        if found.as_deref() == Some(self.storage_id.as_str()) {
            self.verified.store(true, Relaxed);
            return Ok(());
        }
        let why = format!(
            "the bucket at {} holds storage marker {:?}, not this node's storage id {}; writes and collection are stopped: fix CSS_MINIO_ENDPOINT/CSS_MINIO_BUCKET_NAME or restore the marker object {MARKER_KEY}",
            self.s3.label(),
            found.unwrap_or_else(|| "(none)".into()),
            self.storage_id
        );
        tracing::error!("{why}");
        Err(BlobError::Unavailable(why))
    }

    /// Reads a cached entry if there is one (and it is sound, for small ones).
    async fn read_cached(
        &self,
        hash: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<ByteStream>, BlobError> {
        use std::io::Read;
        enum Opened {
            Missing,
            Small(Vec<u8>, bool),
            File(std::fs::File, u64),
        }
        let path = self.cache.content_path(hash);
        let expected = hash.to_string();
        // One blocking hop: open, size, and for a small entry read and hash it.
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<Opened> {
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Opened::Missing),
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            if range.is_none() && len <= SMALL {
                let mut bytes = Vec::with_capacity(len as usize);
                file.read_to_end(&mut bytes)?;
                let sound = super::sha256_hex(&bytes) == expected;
                return Ok(Opened::Small(bytes, sound));
            }
            Ok(Opened::File(file, len))
        })
        .await
        .map_err(|e| BlobError::Unavailable(e.to_string()))?
        .map_err(io_unavailable)?;
        let c = &self.metrics.cache;
        let (file, len) = match opened {
            Opened::Missing => return Ok(None),
            Opened::Small(_, false) => {
                tracing::warn!(
                    hash,
                    "cache entry does not match its hash; fetching it again"
                );
                c.corrupt.fetch_add(1, Relaxed);
                self.cache.evict(hash).await;
                return Ok(None);
            }
            Opened::Small(bytes, true) => {
                self.cache.touch(hash);
                c.hits.fetch_add(1, Relaxed);
                c.hit_bytes.fetch_add(bytes.len() as u64, Relaxed);
                return Ok(Some(
                    futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed(),
                ));
            }
            Opened::File(f, len) => (tokio::fs::File::from_std(f), len),
        };
        if let Some((start, end)) = range {
            if end >= len {
                // Damaged (short) entry: let S3 answer.
                return Ok(None);
            }
            self.cache.touch(hash);
            c.hits.fetch_add(1, Relaxed);
            c.hit_bytes.fetch_add(end - start + 1, Relaxed);
            let mut file = file;
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(io_unavailable)?;
            let limited = file.take(end - start + 1);
            return Ok(Some(
                tokio_util::io::ReaderStream::with_capacity(limited, 64 * 1024).boxed(),
            ));
        }
        self.cache.touch(hash);
        c.hits.fetch_add(1, Relaxed);
        c.hit_bytes.fetch_add(len, Relaxed);
        let check = match self.cache.xxh3_of(hash) {
            Some(sum) => Check::Xxh3(sum),
            None => Check::Sha256,
        };
        let inner = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).boxed();
        Ok(Some(verified(
            inner,
            hash.to_string(),
            check,
            None,
            OnMismatch::Evict(self.cache.clone(), self.metrics.clone()),
        )))
    }

    /// Fetches from S3, filling the cache on the way.
    async fn read_through(&self, hash: &str) -> Result<ByteStream, BlobError> {
        let (stream, len) = self.s3.get(hash, None).await.map_err(unavailable)?;
        self.metrics.cache.misses.fetch_add(1, Relaxed);
        self.metrics.cache.miss_bytes.fetch_add(len, Relaxed);
        let fill = self.cache.filler(hash, len).await.map(|w| Fill {
            cache: self.cache.clone(),
            writer: w,
            size: len,
        });
        if len <= SMALL {
            // Small: verify before the first byte is sent.
            let mut body = verified(
                stream,
                hash.to_string(),
                Check::Sha256,
                fill,
                OnMismatch::Report,
            );
            let mut bytes = Vec::with_capacity(len as usize);
            while let Some(chunk) = body.next().await {
                bytes.extend_from_slice(
                    &chunk.map_err(|e| BlobError::Unavailable(format!("S3: {e}")))?,
                );
            }
            return Ok(futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed());
        }
        Ok(verified(
            stream,
            hash.to_string(),
            Check::Sha256,
            fill,
            OnMismatch::Report,
        ))
    }
}

/// A cache entry being written while a miss streams.
struct Fill {
    cache: Arc<Cache>,
    writer: cacache::Writer,
    size: u64,
}

/// How streamed bytes are checked.
enum Check {
    /// Against the SHA-256 they are named by (bytes from S3, or an entry
    /// without a recorded checksum).
    Sha256,
    /// Against the XXH3-64 recorded when the entry was written from
    /// SHA-256-verified bytes.
    Xxh3(u64),
}

/// What to do when streamed bytes do not match their hash.
enum OnMismatch {
    /// The cache entry is damaged: evict it so the next read fetches it again.
    Evict(Arc<Cache>, Arc<Metrics>),
    /// S3 sent wrong bytes: only report it.
    Report,
}

/// Passes `inner` through while hashing it, holding the last chunk back until
/// the hash is known: on a mismatch the stream ends in an error instead, so
/// the client sees an aborted response, never wrong bytes presented as whole.
fn verified(
    mut inner: ByteStream,
    hash: String,
    check: Check,
    mut fill: Option<Fill>,
    on_mismatch: OnMismatch,
) -> ByteStream {
    async_stream::stream! {
        let sha = matches!(check, Check::Sha256);
        let mut hasher = super::Hasher::default();
        // The fast checksum: to check with, or to record with a fill.
        let mut fast = xxhash_rust::xxh3::Xxh3::new();
        let mut held: Option<Bytes> = None;
        while let Some(item) = inner.next().await {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    yield Err(e);
                    return;
                }
            };
            if sha {
                hasher.update(&chunk);
            }
            if !sha || fill.is_some() {
                fast.update(&chunk);
            }
            if let Some(f) = fill.as_mut()
                && let Err(e) = f.writer.write_all(&chunk).await
            {
                tracing::warn!(error = %e, "cache fill failed; serving without caching");
                fill = None;
            }
            if let Some(prev) = held.replace(chunk) {
                yield Ok(prev);
            }
        }
        let sound = match check {
            Check::Sha256 => hasher.finish() == hash,
            Check::Xxh3(sum) => fast.digest() == sum,
        };
        if !sound {
            match &on_mismatch {
                OnMismatch::Evict(cache, metrics) => {
                    tracing::warn!(hash = %hash, "cache entry does not match its hash; evicted");
                    metrics.cache.corrupt.fetch_add(1, Relaxed);
                    cache.evict(&hash).await;
                }
                OnMismatch::Report => {
                    tracing::error!(hash = %hash, "S3 returned bytes that do not match their hash");
                }
            }
            yield Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stored bytes do not match their hash; the response was aborted",
            ));
            return;
        }
        if let Some(f) = fill {
            // Not cancellable: a client leaving now must not leave the entry
            // accounted but not evicted for.
            let (sum, h) = (fast.digest(), hash.clone());
            let _ = tokio::spawn(async move {
                f.cache.commit_fill(&h, f.size, sum, f.writer).await;
            })
            .await;
        }
        if let Some(last) = held {
            yield Ok(last);
        }
    }
    .boxed()
}

/// Settles the bucket's storage id under the cluster lock: read the marker;
/// create it if there is none and the database never saw one; adopt what the
/// bucket then holds (Garage ignores conditional PUTs, so the lock decides).
async fn identify(s3: &Arc<S3Store>, db: &Db, record_key: &str) -> Result<String, String> {
    let (s3c, dbc, key) = (s3.clone(), db.clone(), record_key.to_string());
    let work: crate::db::LockedWork = Box::new(move || {
        Box::pin(async move {
            let read_marker = || async {
                s3c.get_small(MARKER_KEY).await.map_err(|e| match e {
                    S3Error::Denied(why) => format!(
                        "S3 at {} refused to read the storage marker ({why}); grant the access key s3:GetObject and s3:PutObject on the bucket",
                        s3c.label()
                    ),
                    other => format!(
                        "cannot read the storage marker at S3 {} ({other}); check that the S3 server is running",
                        s3c.label()
                    ),
                })
            };
            let parse = |b: Bytes| -> Result<String, String> {
                let text = String::from_utf8_lossy(&b).trim().to_string();
                uuid::Uuid::parse_str(&text).map_err(|_| {
                    format!(
                        "the object {MARKER_KEY} in bucket {} is not a storage id; this bucket is not xpod's, or the marker is damaged: set CSS_MINIO_BUCKET_NAME to xpod's bucket",
                        s3c.label()
                    )
                })?;
                Ok(text)
            };
            let recorded = dbc.setting_get(&key).await.map_err(|e| e.to_string())?;
            let marker = match read_marker().await? {
                Some(b) => parse(b)?,
                None => {
                    if let Some(id) = recorded {
                        return Err(format!(
                            "bucket {} has no storage marker, but the database recorded storage id {id} for it: the bucket was emptied or replaced. If its objects are intact, restore the object {MARKER_KEY} containing {id}; otherwise point CSS_MINIO_BUCKET_NAME at the right bucket",
                            s3c.label()
                        ));
                    }
                    let id = uuid::Uuid::new_v4().to_string();
                    s3c.put_small(MARKER_KEY, Bytes::from(format!("{id}\n")))
                        .await
                        .map_err(|e| match e {
                            S3Error::Denied(why) => format!(
                                "S3 at {} refused to write the storage marker ({why}); grant the access key s3:PutObject on the bucket",
                                s3c.label()
                            ),
                            other => format!("cannot write the storage marker at S3 {} ({other})", s3c.label()),
                        })?;
                    // Adopt what the bucket holds, whoever wrote it.
                    match read_marker().await? {
                        Some(b) => parse(b)?,
                        None => {
                            return Err(format!(
                                "S3 at {} lost the storage marker just written; check the server",
                                s3c.label()
                            ));
                        }
                    }
                }
            };
            let stored = dbc
                .setting_init(&key, &marker)
                .await
                .map_err(|e| e.to_string())?;
            if stored != marker {
                return Err(format!(
                    "bucket {} holds storage id {marker}, but the database recorded {stored} for it: this is a different bucket or a different cluster's database; fix CSS_MINIO_ENDPOINT/CSS_MINIO_BUCKET_NAME or CSS_DATABASE_URL",
                    s3c.label()
                ));
            }
            Ok(marker)
        })
    });
    db.with_cluster_lock(STORAGE_LOCK, work)
        .await
        .map_err(|e| e.to_string())?
}

#[async_trait]
impl BlobStore for TieredStore {
    fn storage_id(&self) -> &str {
        &self.storage_id
    }

    async fn put(&self, body: ByteStream, max_size: u64) -> Result<Upload, BlobError> {
        if !self.verified.load(Relaxed) {
            self.check_marker().await?;
        }
        let spool = SpoolFile(self.cache.spool_path());
        let mut spooled = super::spool(body, &spool.0, max_size).await?;
        // S3 is the durable copy; the spool only has to be complete.
        spooled.file.flush().await.map_err(io_unavailable)?;
        drop(spooled.file);
        let size = spooled.info.size;
        let info = spooled.info;
        self.s3
            .put_file(&info.hash, &spool.0, size)
            .await
            .map_err(unavailable)?;
        Ok(Upload {
            info,
            spool: Some(spool),
            xxh3: Some(spooled.xxh3),
        })
    }

    async fn finish(&self, mut upload: Upload) -> Result<(), BlobError> {
        let Some(spool) = upload.spool.take() else {
            return Ok(());
        };
        let hash = &upload.info.hash;
        match self.s3.exists(hash).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(hash = %hash, "re-uploading bytes removed by a concurrent collection");
                self.s3
                    .put_file(hash, &spool.0, upload.info.size)
                    .await
                    .map_err(unavailable)?;
            }
            // Uploaded moments ago; only a collection in between could remove it.
            Err(e) => tracing::warn!(error = %e, "cannot confirm an upload after its commit"),
        }
        // Not cancellable (the client may be gone): index, link, evict.
        let (cache, hash, size, sum) = (
            self.cache.clone(),
            hash.clone(),
            upload.info.size,
            upload.xxh3,
        );
        let _ = tokio::spawn(async move {
            cache.adopt(&spool.0, &hash, size, sum).await;
            drop(spool);
        })
        .await;
        Ok(())
    }

    async fn get(&self, hash: &str, range: Option<(u64, u64)>) -> Result<ByteStream, BlobError> {
        if !is_hash(hash) {
            return Err(BlobError::NotFound);
        }
        if let Some(stream) = self.read_cached(hash, range).await? {
            return Ok(stream);
        }
        match range {
            None => self.read_through(hash).await,
            Some(r) => {
                let (stream, len) = self.s3.get(hash, Some(r)).await.map_err(unavailable)?;
                self.metrics.cache.misses.fetch_add(1, Relaxed);
                self.metrics.cache.miss_bytes.fetch_add(len, Relaxed);
                Ok(stream)
            }
        }
    }

    async fn delete(&self, hash: &str) -> Result<(), BlobError> {
        if !is_hash(hash) {
            return Err(BlobError::NotFound);
        }
        self.s3.delete(hash).await.map_err(unavailable)?;
        self.cache.evict(hash).await;
        Ok(())
    }

    async fn exists(&self, hash: &str) -> Result<bool, BlobError> {
        if !is_hash(hash) {
            return Ok(false);
        }
        self.s3.exists(hash).await.map_err(unavailable)
    }

    async fn check_identity(&self) -> Result<(), String> {
        self.check_marker().await.map_err(|e| e.to_string())
    }

    fn metrics_enabled(&self) -> bool {
        true
    }
}
