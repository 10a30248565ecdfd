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
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{BlobError, BlobStore, ByteStream, SpoolFile, Upload, is_hash};

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

    /// Makes the spooled bytes visible under their hash: a hard link (the
    /// spool stays for `finish`), then an fsync of the directory. Existing
    /// bytes under that hash are identical and are left as they are.
    async fn publish(&self, spool: &Path, hash: &str) -> Result<(), BlobError> {
        let target = self.path_of(hash);
        let parent = target.parent().expect("nested path").to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(unavailable)?;
        match tokio::fs::hard_link(spool, &target).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(unavailable(e)),
        }
        tokio::task::spawn_blocking(move || std::fs::File::open(&parent)?.sync_all())
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?
            .map_err(unavailable)
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

    async fn put(&self, body: ByteStream, max_size: u64) -> Result<Upload, BlobError> {
        let spool = SpoolFile(
            self.dir
                .join("spool")
                .join(uuid::Uuid::new_v4().simple().to_string()),
        );
        let spooled = super::spool(body, &spool.0, max_size).await?;
        // Durable before it is published (and acknowledged).
        spooled.file.sync_all().await.map_err(unavailable)?;
        let info = spooled.info;
        self.publish(&spool.0, &info.hash).await?;
        Ok(Upload {
            info,
            spool: Some(spool),
            xxh3: None,
        })
    }

    async fn finish(&self, mut upload: Upload) -> Result<(), BlobError> {
        let Some(spool) = upload.spool.take() else {
            return Ok(());
        };
        if !tokio::fs::try_exists(self.path_of(&upload.info.hash))
            .await
            .unwrap_or(false)
        {
            tracing::info!(hash = %upload.info.hash, "re-publishing bytes removed by a concurrent collection");
            self.publish(&spool.0, &upload.info.hash).await?;
        }
        Ok(())
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

    async fn check_identity(&self) -> Result<(), String> {
        match read_storage_id(&self.dir) {
            Ok(Some(id)) if id == self.storage_id => Ok(()),
            Ok(found) => Err(format!(
                "the storage marker {} now holds {found:?}, not this node's storage id {}; collection is stopped until the marker is restored",
                self.dir.join(MARKER).display(),
                self.storage_id
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn body(bytes: &'static [u8]) -> ByteStream {
        futures::stream::once(async move { Ok(bytes::Bytes::from_static(bytes)) }).boxed()
    }

    #[tokio::test]
    async fn finish_republishes_bytes_collected_before_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let upload = store.put(body(b"same bytes"), 1 << 20).await.unwrap();
        let hash = upload.info.hash.clone();
        assert!(store.exists(&hash).await.unwrap());
        // The collector removes an identical, unreferenced blob meanwhile.
        store.delete(&hash).await.unwrap();
        assert!(!store.exists(&hash).await.unwrap());
        store.finish(upload).await.unwrap();
        assert!(store.exists(&hash).await.unwrap(), "bytes are back");
        let spool_left = std::fs::read_dir(dir.path().join("spool")).unwrap().count();
        assert_eq!(spool_left, 0, "the spool file is released");
    }

    #[tokio::test]
    async fn a_refused_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let err = store.put(body(b"0123456789"), 4).await.unwrap_err();
        assert!(matches!(err, BlobError::TooLarge(4)));
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
            0
        );
    }
}
