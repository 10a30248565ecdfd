//! The node id: `CSS_NODE_ID` if set, else the id persisted in `<root>/.node-id`
//! (or `CSS_NODE_ID_PATH`), else a new id written there once and reused on
//! every restart. A damaged file is an error, never a silent new identity:
//! a new identity would orphan every pod this node owns.

use std::io::ErrorKind;
use std::path::Path;

/// Where the node id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeIdSource {
    Configured,
    File,
    Generated,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "node id file {path} is corrupt ({why}); restore it from a backup, or delete it to give this node a new identity (its pods must then be reassigned)"
    )]
    Corrupt { path: String, why: String },
    #[error(
        "cannot read node id file {path}: {source}; fix its permissions or set CSS_NODE_ID_PATH"
    )]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write node id file {path}: {source}; make its directory writable")]
    Unwritable {
        path: String,
        source: std::io::Error,
    },
}

/// A node id is 1–64 characters of `A-Za-z0-9._-`, starting with a letter or digit.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("expected 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit".into())
    }
}

/// Resolves this node's id, creating and persisting one on first start.
pub fn resolve(
    configured: Option<&str>,
    path: &Path,
) -> Result<(String, NodeIdSource), IdentityError> {
    if let Some(id) = configured {
        return Ok((id.to_string(), NodeIdSource::Configured));
    }
    match read(path)? {
        Some(id) => Ok((id, NodeIdSource::File)),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            match create_once(path, &id)? {
                // Another process sharing this root won the race: adopt its id.
                false => Ok((
                    read(path)?.expect("file exists after losing the race"),
                    NodeIdSource::File,
                )),
                true => Ok((id, NodeIdSource::Generated)),
            }
        }
    }
}

/// Reads the persisted id; `None` if there is no file yet.
pub fn read(path: &Path) -> Result<Option<String>, IdentityError> {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IdentityError::Unreadable {
                path: shown,
                source,
            });
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| IdentityError::Corrupt {
        path: shown.clone(),
        why: "not UTF-8 text".into(),
    })?;
    let id = text.strip_suffix('\n').unwrap_or(&text);
    validate_node_id(id).map_err(|why| IdentityError::Corrupt {
        path: shown,
        why: format!("{id:?}: {why}"),
    })?;
    Ok(Some(id.to_string()))
}

/// Writes the id durably, only if no file exists yet. Returns false if one did.
fn create_once(path: &Path, id: &str) -> Result<bool, IdentityError> {
    crate::fsutil::create_once(path, format!("{id}\n").as_bytes(), 0o644).map_err(|source| {
        IdentityError::Unwritable {
            path: path.display().to_string(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".node-id");
        let (first, source) = resolve(None, &path).unwrap();
        assert_eq!(source, NodeIdSource::Generated);
        let (again, source) = resolve(None, &path).unwrap();
        assert_eq!(
            (again.as_str(), source),
            (first.as_str(), NodeIdSource::File)
        );
    }

    #[test]
    fn configured_id_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".node-id");
        let (id, source) = resolve(Some("node-a"), &path).unwrap();
        assert_eq!((id.as_str(), source), ("node-a", NodeIdSource::Configured));
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".node-id");
        std::fs::write(&path, b"\xff\x00garbage").unwrap();
        let err = resolve(None, &path).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            resolve(None, &path),
            Err(IdentityError::Corrupt { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"", "the file is left alone");
    }
}
