//! Which release keys this machine trusts, and the manifest's signature.
//!
//! Trusted are the project's release key, built in from the build-time
//! variable `XPOD_RELEASE_PUBKEY` (base64 of the raw 32-byte Ed25519 key),
//! and every `*.pub` file an administrator put in the keys directory
//! (`CSS_UPDATE_KEYS_DIR`), as apt's `signed-by` keyrings work. A manifest is
//! accepted when any of them verifies its signature.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, VerifyingKey};

use super::UpdateError;

/// The project's release key, when the build was given one.
const BUILT_IN_KEY: Option<&str> = option_env!("XPOD_RELEASE_PUBKEY");

/// A key and where it came from, for messages.
#[derive(Debug)]
pub struct TrustedKey {
    pub origin: String,
    key: VerifyingKey,
}

/// Run as root, a trusted key (and its directory) must be root's and
/// writable by nobody else, as sshd's StrictModes asks of its files: else
/// the service's own user could plant a key that root then trusts.
fn only_root_may_change(path: &Path) -> Result<(), UpdateError> {
    if !crate::update::install::is_root() {
        return Ok(());
    }
    let found = crate::update::install::not_root_alone(path).map_err(|e| {
        UpdateError(format!(
            "cannot read {} ({e}); fix or remove it",
            path.display()
        ))
    })?;
    match found {
        Some((uid, mode)) => Err(UpdateError(format!(
            "{} is owned by uid {uid} with mode {mode:o}: a release key, and its directory, must belong to root and be writable by root alone (chown root: and chmod go-w it)",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// The built-in key and those of `dir`.
pub fn trusted(dir: &Path) -> Result<Vec<TrustedKey>, UpdateError> {
    let mut keys = Vec::new();
    if let Some(text) = BUILT_IN_KEY.filter(|t| !t.trim().is_empty()) {
        let key = parse_raw(text).map_err(|why| {
            UpdateError(format!(
                "the release key built into this xpod (XPOD_RELEASE_PUBKEY) is unusable ({why}); rebuild with base64 of the raw 32-byte public key, or install a build that has it"
            ))
        })?;
        keys.push(TrustedKey {
            origin: "the built-in release key".into(),
            key,
        });
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => Some(entries),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(UpdateError(format!(
                "cannot read the release keys directory {} ({e}); run as root, or fix CSS_UPDATE_KEYS_DIR",
                dir.display()
            )));
        }
    };
    if entries.is_some() {
        only_root_may_change(dir)?;
    }
    let mut files: Vec<_> = entries
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    files.sort();
    for path in files {
        only_root_may_change(&path)?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            UpdateError(format!(
                "cannot read release key {} ({e}); fix or remove it",
                path.display()
            ))
        })?;
        let key = parse_key_file(&text).map_err(|why| {
            UpdateError(format!(
                "release key {} is not an Ed25519 public key ({why}); it must hold a PEM public key (`openssl pkey -pubout`) or one line of base64 of the raw 32 bytes: fix or remove it",
                path.display()
            ))
        })?;
        keys.push(TrustedKey {
            origin: path.display().to_string(),
            key,
        });
    }
    if keys.is_empty() {
        return Err(UpdateError(format!(
            "no trusted release key: this build has none built in and {} holds no *.pub file; put the release public key there (`openssl pkey -in release.pem -pubout > {}/release.pub`), or set CSS_UPDATE_KEYS_DIR",
            dir.display(),
            dir.display()
        )));
    }
    Ok(keys)
}

/// A key file: PEM SubjectPublicKeyInfo, or base64 of the raw 32 bytes.
fn parse_key_file(text: &str) -> Result<VerifyingKey, String> {
    if text.contains("-----BEGIN") {
        VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| e.to_string())
    } else {
        parse_raw(text)
    }
}

fn parse_raw(text: &str) -> Result<VerifyingKey, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, not 32", b.len()))?;
    VerifyingKey::from_bytes(&raw).map_err(|e| e.to_string())
}

/// Checks the detached signature (base64 of 64 bytes) over the exact
/// manifest bytes; returns the key that made it.
pub fn verify<'k>(
    keys: &'k [TrustedKey],
    manifest: &[u8],
    signature: &[u8],
    source: &str,
) -> Result<&'k TrustedKey, UpdateError> {
    let refused = |why: String| {
        UpdateError(format!(
            "the release manifest at {source} is refused: {why}; nothing was changed"
        ))
    };
    let text = std::str::from_utf8(signature)
        .map_err(|_| refused("its signature file is not text".into()))?;
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| refused("its signature file is not base64".into()))?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| refused(format!("its signature is {} bytes, not 64", b.len())))?;
    let signature = Signature::from_bytes(&bytes);
    keys.iter()
        .find(|k| k.key.verify_strict(manifest, &signature).is_ok())
        .ok_or_else(|| {
            let origins: Vec<&str> = keys.iter().map(|k| k.origin.as_str()).collect();
            refused(format!(
                "its signature matches none of the trusted keys ({}): it was altered, or signed with a key this machine does not trust",
                origins.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use ed25519_dalek::{Signer, SigningKey};

    fn key() -> SigningKey {
        SigningKey::generate(&mut rand::rngs::OsRng)
    }

    #[test]
    fn keys_come_as_pem_or_raw_base64_and_any_of_them_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(), key());
        let pem = a
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        std::fs::write(dir.path().join("a.pub"), pem).unwrap();
        let raw = STANDARD.encode(b.verifying_key().as_bytes());
        std::fs::write(dir.path().join("b.pub"), format!("{raw}\n")).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let keys = trusted(dir.path()).unwrap();
        assert_eq!(keys.len(), 2 + usize::from(BUILT_IN_KEY.is_some()));

        let manifest = br#"{"releases":[]}"#;
        let sig = STANDARD.encode(b.sign(manifest).to_bytes());
        let by = verify(&keys, manifest, sig.as_bytes(), "t").unwrap();
        assert!(by.origin.ends_with("b.pub"), "{}", by.origin);

        let err = verify(&keys, br#"{"releases":[ ]}"#, sig.as_bytes(), "t").unwrap_err();
        assert!(
            err.0.contains("matches none of the trusted keys"),
            "{}",
            err.0
        );
        let stranger = STANDARD.encode(key().sign(manifest).to_bytes());
        assert!(verify(&keys, manifest, stranger.as_bytes(), "t").is_err());
        assert!(
            verify(&keys, manifest, b"!!", "t")
                .unwrap_err()
                .0
                .contains("not base64")
        );
    }

    #[test]
    fn a_bad_key_file_is_named_and_no_key_says_where_to_put_one() {
        let dir = tempfile::tempdir().unwrap();
        if BUILT_IN_KEY.is_none() {
            let err = trusted(dir.path()).err().unwrap();
            assert!(err.0.contains("no trusted release key"), "{}", err.0);
            assert!(
                err.0.contains(&dir.path().display().to_string()),
                "{}",
                err.0
            );
            let err = trusted(&dir.path().join("missing")).err().unwrap();
            assert!(err.0.contains("no trusted release key"), "{}", err.0);
        }
        std::fs::write(dir.path().join("broken.pub"), "c2hvcnQ=\n").unwrap();
        let err = trusted(dir.path()).err().unwrap();
        assert!(err.0.contains("broken.pub"), "{}", err.0);
        assert!(
            err.0.contains("8 bytes, not 32") || err.0.contains("bytes, not 32"),
            "{}",
            err.0
        );
    }
}
