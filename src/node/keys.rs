//! The node's Ed25519 key pair. The private key lives in `<root>/node.key`
//! (PKCS#8 PEM, mode 0600); the public key is published in the `nodes` table
//! so that other nodes can verify this node's signed requests.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "node key {path} is corrupt ({why}); restore it from a backup, or delete it to make a new key (other nodes then learn the new public key when this node registers)"
    )]
    Corrupt { path: String, why: String },
    #[error("cannot read node key {path}: {source}; fix its permissions")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write node key {path}: {source}; make the root file path writable")]
    Unwritable {
        path: String,
        source: std::io::Error,
    },
}

/// Loads the key pair, creating it on first start.
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Corrupt {
                path: shown.clone(),
                why: e.to_string(),
            })?;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %shown, "node key is readable by other users; run chmod 600 on it");
            }
            Ok(key)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(Default::default())
                .expect("an Ed25519 key encodes as PKCS#8");
            crate::fsutil::write_atomic(path, pem.as_bytes(), 0o600).map_err(|source| {
                KeyError::Unwritable {
                    path: shown,
                    source,
                }
            })?;
            Ok(key)
        }
        Err(e) if e.kind() == ErrorKind::InvalidData => Err(KeyError::Corrupt {
            path: shown,
            why: "not text".into(),
        }),
        Err(source) => Err(KeyError::Unreadable {
            path: shown,
            source,
        }),
    }
}

/// The public key as stored in the `nodes` table: unpadded base64url.
pub fn public_key_text(key: &SigningKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(key.to_bytes(), again.to_bytes());
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyError::Corrupt { .. })
        ));
    }
}
