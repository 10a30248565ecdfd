//! The local-filesystem blob store under `<root>/blobs`.
//!
//! Its identity is a UUID in the marker file `<root>/blobs/xpod-storage-id`.
//! Two nodes share storage exactly when their storage ids match.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

pub const MARKER: &str = "xpod-storage-id";

#[derive(Debug, thiserror::Error)]
pub enum StorageIdError {
    #[error(
        "storage marker {path} is damaged ({why}); restore it, or delete it only if this storage is empty"
    )]
    Corrupt { path: String, why: String },
    #[error("cannot use blob directory {path}: {source}; make the root file path writable")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The blob directory for a root file path.
pub fn blob_dir(root: &Path) -> PathBuf {
    root.join("blobs")
}

/// Reads the storage id; `None` if the store was never used.
pub fn read_storage_id(dir: &Path) -> Result<Option<String>, StorageIdError> {
    let path = dir.join(MARKER);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            uuid::Uuid::parse_str(id).map_err(|e| StorageIdError::Corrupt {
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
            Ok(Some(id.to_string()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StorageIdError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Reads the storage id, creating the store and its marker on first use.
pub fn ensure_storage_id(dir: &Path) -> Result<String, StorageIdError> {
    if let Some(id) = read_storage_id(dir)? {
        return Ok(id);
    }
    let io = |source| StorageIdError::Io {
        path: dir.display().to_string(),
        source,
    };
    let id = uuid::Uuid::new_v4().to_string();
    crate::fsutil::create_once(&dir.join(MARKER), format!("{id}\n").as_bytes(), 0o644)
        .map_err(io)?;
    // Adopt whatever the marker holds: another process may have won the race.
    Ok(read_storage_id(dir)?.expect("marker exists"))
}

use async_trait::async_trait;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{BlobError, BlobInfo, BlobStore, ByteStream, is_hash};

/// Blobs as files `<dir>/<h0h1>/<h2h3>/<hash>`, published by rename after fsync.
pub struct FsBlobStore {
    dir: PathBuf,
    storage_id: String,
}

impl FsBlobStore {
    pub fn open(dir: &Path) -> Result<FsBlobStore, StorageIdError> {
        let storage_id = ensure_storage_id(dir)?;
        let spool = dir.join("spool");
        std::fs::create_dir_all(&spool).map_err(|source| StorageIdError::Io {
            path: spool.display().to_string(),
            source,
        })?;
        // Spool files of a crashed process are garbage.
        if let Ok(entries) = std::fs::read_dir(&spool) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(FsBlobStore {
            dir: dir.to_path_buf(),
            storage_id,
        })
    }

    fn path_of(&self, hash: &str) -> PathBuf {
        self.dir.join(&hash[0..2]).join(&hash[2..4]).join(hash)
    }
}

fn unavailable(e: std::io::Error) -> BlobError {
    BlobError::Unavailable(e.to_string())
}

#[async_trait]
impl BlobStore for FsBlobStore {
    fn storage_id(&self) -> &str {
        &self.storage_id
    }

    async fn put(&self, mut body: ByteStream, max_size: u64) -> Result<BlobInfo, BlobError> {
        let spool = self
            .dir
            .join("spool")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let result = async {
            let mut file = tokio::fs::File::create(&spool).await.map_err(unavailable)?;
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max_size {
                    return Err(BlobError::TooLarge(max_size));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(unavailable)?;
            }
            file.sync_all().await.map_err(unavailable)?;
            drop(file);
            let hash = hex::encode(hasher.finalize());
            let target = self.path_of(&hash);
            let parent = target.parent().expect("nested path").to_path_buf();
            if tokio::fs::try_exists(&target).await.unwrap_or(false) {
                // Same bytes already stored: content addressing deduplicates.
                return Ok(BlobInfo { hash, size });
            }
            tokio::fs::create_dir_all(&parent)
                .await
                .map_err(unavailable)?;
            tokio::fs::rename(&spool, &target)
                .await
                .map_err(unavailable)?;
            tokio::task::spawn_blocking(move || std::fs::File::open(&parent)?.sync_all())
                .await
                .map_err(|e| BlobError::Unavailable(e.to_string()))?
                .map_err(unavailable)?;
            Ok(BlobInfo { hash, size })
        }
        .await;
        let _ = tokio::fs::remove_file(&spool).await;
        result
    }

    async fn get(&self, hash: &str, range: Option<(u64, u64)>) -> Result<ByteStream, BlobError> {
        if !is_hash(hash) {
            return Err(BlobError::NotFound);
        }
        let mut file = match tokio::fs::File::open(self.path_of(hash)).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(BlobError::NotFound),
            Err(e) => return Err(unavailable(e)),
        };
        match range {
            None => Ok(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).boxed()),
            Some((start, end)) => {
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(unavailable)?;
                let limited = file.take(end - start + 1);
                Ok(tokio_util::io::ReaderStream::with_capacity(limited, 64 * 1024).boxed())
            }
        }
    }

    async fn delete(&self, hash: &str) -> Result<(), BlobError> {
        if !is_hash(hash) {
            return Err(BlobError::NotFound);
        }
        match tokio::fs::remove_file(self.path_of(hash)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn exists(&self, hash: &str) -> Result<bool, BlobError> {
        Ok(is_hash(hash)
            && tokio::fs::try_exists(self.path_of(hash))
                .await
                .unwrap_or(false))
    }
}
