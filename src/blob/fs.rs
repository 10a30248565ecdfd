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
