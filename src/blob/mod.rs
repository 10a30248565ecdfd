//! Blob storage: bytes keyed by their SHA-256, immutable once written.
//!
//! Writes stream: the body is spooled to a file while it is hashed, made
//! durable, then published under its hash. Reading streams too, optionally a
//! byte range. Which blobs are still referenced is the metadata store's
//! business (the `blobs` table); a store only holds bytes.

pub mod cache;
pub mod fs;
pub mod gc;
pub mod s3;
pub mod tiered;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A stream of body chunks.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("not found")]
    NotFound,
    /// The body exceeded the configured limit; nothing was stored.
    #[error("body larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The client's body stream failed (e.g. the connection dropped).
    #[error("reading the request body failed: {0}")]
    Body(String),
    /// The store itself failed (disk full, S3 unreachable …).
    #[error("blob storage unavailable: {0}")]
    Unavailable(String),
}

/// What a finished upload produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Lowercase hex SHA-256 of the bytes.
    pub hash: String,
    pub size: u64,
}

/// A durable upload whose spool file is kept until the metadata commit, so
/// that [`BlobStore::finish`] can re-publish the bytes if the garbage
/// collector removed an identical, unreferenced blob in between.
#[derive(Debug)]
pub struct Upload {
    pub info: BlobInfo,
    pub(crate) spool: Option<SpoolFile>,
    /// A fast checksum (XXH3-64) of the bytes, for stores that keep a cache.
    pub(crate) xxh3: Option<u64>,
}

/// A spool file, removed when dropped (also when a write fails).
#[derive(Debug)]
pub struct SpoolFile(pub std::path::PathBuf);

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The storage identity; two nodes share storage exactly when these match.
    fn storage_id(&self) -> &str;

    /// Streams a body into the store. Returns once the bytes are durable.
    async fn put(&self, body: ByteStream, max_size: u64) -> Result<Upload, BlobError>;

    /// Called after the row referencing the upload committed: makes sure the
    /// bytes are (still) published, then releases the spool file.
    async fn finish(&self, upload: Upload) -> Result<(), BlobError>;

    /// Streams a blob, or the inclusive byte range `start..=end` of it.
    async fn get(&self, hash: &str, range: Option<(u64, u64)>) -> Result<ByteStream, BlobError>;

    /// Removes a blob (only the garbage collector calls this).
    async fn delete(&self, hash: &str) -> Result<(), BlobError>;

    async fn exists(&self, hash: &str) -> Result<bool, BlobError>;

    /// Re-reads the storage's marker and confirms it still names this
    /// store's id; the collector calls it before deleting anything.
    async fn check_identity(&self) -> Result<(), String>;

    /// Whether this store has cache and S3 metrics to report.
    fn metrics_enabled(&self) -> bool {
        false
    }
}

pub type Blobs = Arc<dyn BlobStore>;

/// SHA-256 over a stream of chunks. ring's assembly implementation is about
/// twice as fast as a portable one on CPUs without SHA extensions, and every
/// write and every cache read hashes its bytes.
pub struct Hasher(ring::digest::Context);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The lowercase hex digest.
    pub fn finish(self) -> String {
        hex::encode(self.0.finish())
    }
}

/// A body written to a spool file while it was hashed.
pub(crate) struct Spooled {
    /// The spool file, written but not yet synced or flushed.
    pub file: tokio::fs::File,
    pub info: BlobInfo,
    /// XXH3-64 of the same bytes, for stores that keep a cache.
    pub xxh3: u64,
}

/// Streams `body` into a new file at `path`, hashing it on the way; refuses
/// more than `max_size` bytes. The caller owns the path (a [`SpoolFile`]).
pub(crate) async fn spool(
    mut body: ByteStream,
    path: &std::path::Path,
    max_size: u64,
) -> Result<Spooled, BlobError> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| BlobError::Unavailable(format!("spool file: {e}"));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut hasher = Hasher::default();
    let mut fast = xxhash_rust::xxh3::Xxh3::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > max_size {
            return Err(BlobError::TooLarge(max_size));
        }
        hasher.update(&chunk);
        fast.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    Ok(Spooled {
        file,
        info: BlobInfo {
            hash: hasher.finish(),
            size,
        },
        xxh3: fast.digest(),
    })
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Hasher::default();
    h.update(bytes);
    h.finish()
}

/// The hash of the empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Checks that a string is a lowercase hex SHA-256 (so it is safe as a file name).
pub fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
