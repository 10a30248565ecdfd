//! The cluster secret (`CSS_SECRET_KEY`), used to encrypt secrets at rest.
//!
//! Every node of a cluster must hold the same secret. The database stores only
//! a check value derived from it, so a node started with a different secret,
//! or with none on a cluster that has one, refuses to start and says which
//! file to copy. On a fresh cluster (or a single box) the first node creates
//! the secret in `<root>/secret.key` (0600).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{Config, DatabaseConfig, Secret};
use crate::db::{Db, DbError};

pub const FILE_NAME: &str = "secret.key";
const CHECK_KEY: &str = "secret_key_check";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "this cluster already has a secret key and this node has none: copy {file} from an existing node{example} to {file} on this node (mode 0600), or set CSS_SECRET_KEY_FILE to a copy of it"
    )]
    Missing { file: String, example: String },
    #[error(
        "this node's secret key ({origin}) differs from the cluster's: use the {file_name} of an existing node{example}"
    )]
    Mismatch {
        origin: String,
        file_name: &'static str,
        example: String,
    },
    #[error("cannot read {path}: {source}; fix its permissions, or set CSS_SECRET_KEY_FILE")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; make the root file path writable")]
    Unwritable {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Db(#[from] DbError),
}

fn check_value(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"xpod cluster secret check v1\0");
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

fn read(path: &Path) -> Result<Option<Secret>, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(Secret::new(text.trim()))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretError::Unreadable {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Names an existing node to copy from, for the error message.
async fn example_node(db: &Db, me: &str) -> String {
    match db.node_list().await {
        Ok(nodes) => nodes
            .into_iter()
            .find(|n| n.node_id != me)
            .map(|n| format!(" (e.g. node {} at {})", n.node_id, n.internal_ip))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Loads or creates the cluster secret and checks it against the cluster's.
pub async fn ensure(config: &Config, db: &Db, node_id: &str) -> Result<Secret, SecretError> {
    let path: PathBuf = config.root.join(FILE_NAME);
    let (local, origin) = match &config.secret_key {
        Some(s) => (Some(s.clone()), "CSS_SECRET_KEY".to_string()),
        None => (read(&path)?, path.display().to_string()),
    };
    if let Some(secret) = local {
        let stored = db
            .setting_init(CHECK_KEY, &check_value(secret.expose()))
            .await?;
        if stored != check_value(secret.expose()) {
            return Err(SecretError::Mismatch {
                origin,
                file_name: FILE_NAME,
                example: example_node(db, node_id).await,
            });
        }
        return Ok(secret);
    }

    let shared = matches!(config.database, DatabaseConfig::Postgres(_));
    if shared && db.setting_get(CHECK_KEY).await?.is_some() {
        return Err(SecretError::Missing {
            file: path.display().to_string(),
            example: example_node(db, node_id).await,
        });
    }
    // First node of a cluster, or a single box: create the secret. The file is
    // written before the check value is stored, so a crash in between never
    // leaves a cluster whose secret exists nowhere.
    let bytes: [u8; 32] = rand::random();
    let secret = hex::encode(bytes);
    let unwritable = |source| SecretError::Unwritable {
        path: path.display().to_string(),
        source,
    };
    crate::fsutil::write_atomic(&path, format!("{secret}\n").as_bytes(), 0o600)
        .map_err(unwritable)?;
    let stored = db.setting_init(CHECK_KEY, &check_value(&secret)).await?;
    if stored != check_value(&secret) {
        // Another node created the cluster's secret first.
        let _ = std::fs::remove_file(&path);
        return Err(SecretError::Missing {
            file: path.display().to_string(),
            example: example_node(db, node_id).await,
        });
    }
    tracing::info!(path = %path.display(), "created the cluster secret key");
    Ok(Secret::new(secret))
}
