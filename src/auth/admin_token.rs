//! The administrator credential. Each node, at first start, creates a token and
//! writes it in plain text to `<root>/admin.token` (0600) for the operator and
//! the CLI; only its SHA-256 hash is stored, in `admin_tokens`, and every
//! stored token is valid on every node of the cluster. `CSS_ADMIN_TOKEN` (or
//! `_FILE`) supplies one instead, and then no file is written.
//!
//! The tokens are 256 random bits, so a plain SHA-256 is the right hash: there
//! is nothing for a slow password hash to protect against.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::{Config, Secret};
use crate::db::{Db, DbError};

pub const FILE_NAME: &str = "admin.token";

/// Where the node's administrator token lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// `<root>/admin.token`, created now or on an earlier start.
    File { path: PathBuf, created: bool },
    /// `CSS_ADMIN_TOKEN` or `CSS_ADMIN_TOKEN_FILE`.
    Configured,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("cannot read {path}: {source}; fix its permissions, or set CSS_ADMIN_TOKEN_FILE")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is empty or damaged; delete it and restart xpod to create a new token")]
    Corrupt { path: String },
    #[error("cannot write {path}: {source}; make the root file path writable")]
    Unwritable {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Db(#[from] DbError),
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "xpod_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn read(path: &Path) -> Result<Option<Secret>, AdminTokenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            if token.len() < 16 {
                return Err(AdminTokenError::Corrupt {
                    path: path.display().to_string(),
                });
            }
            Ok(Some(Secret::new(token)))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AdminTokenError::Unreadable {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Makes sure this node has an administrator token and that its hash is stored.
pub async fn ensure(
    config: &Config,
    db: &Db,
    node_id: &str,
) -> Result<TokenOrigin, AdminTokenError> {
    if let Some(token) = &config.admin_token {
        db.admin_token_add(&hash(token.expose()), node_id).await?;
        return Ok(TokenOrigin::Configured);
    }
    let path = config.root.join(FILE_NAME);
    let (token, created) = match read(&path)? {
        Some(token) => (token, false),
        None => {
            let token = generate();
            let unwritable = |source| AdminTokenError::Unwritable {
                path: path.display().to_string(),
                source,
            };
            // Store the hash first: a token in the file must always be valid.
            db.admin_token_add(&hash(&token), node_id).await?;
            let created = crate::fsutil::create_once(&path, format!("{token}\n").as_bytes(), 0o600)
                .map_err(unwritable)?;
            if created {
                (Secret::new(token), true)
            } else {
                (
                    read(&path)?.ok_or_else(|| AdminTokenError::Corrupt {
                        path: path.display().to_string(),
                    })?,
                    false,
                )
            }
        }
    };
    // Idempotent: also repairs a database restored without this node's token.
    db.admin_token_add(&hash(token.expose()), node_id).await?;
    Ok(TokenOrigin::File { path, created })
}

/// The token the CLI presents to the local node: configured, else the file.
pub fn for_cli(config: &Config) -> Result<Option<Secret>, AdminTokenError> {
    if let Some(token) = &config.admin_token {
        return Ok(Some(token.clone()));
    }
    read(&config.root.join(FILE_NAME))
}

/// Checks a presented token against the stored hashes.
pub async fn verify(db: &Db, presented: &str) -> Result<bool, DbError> {
    db.admin_token_exists(&hash(presented)).await
}
