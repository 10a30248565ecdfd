//! The identity provider's signing keys: ES256 (P-256) key pairs, kept in
//! the shared database as `key` records so every node signs with, and
//! publishes, the same keys. The private half is stored encrypted with
//! AES-256-GCM under a key derived (HKDF-SHA256) from the cluster secret
//! (`CSS_SECRET_KEY`), with the key id as associated data; it is never
//! stored in the clear.
//!
//! The newest key that is not retired signs. Rotation adds a new key and
//! retires the others: a retired key is still published in the JWKS until
//! every token it signed has expired, then its record expires.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Secret;
use crate::db::{Db, IdpRecord, now_ms};

pub const KIND: &str = "key";
/// How long the signing key is used from memory before the database is asked again.
const CACHE_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct KeyData {
    kid: String,
    alg: String,
    /// The public JWK.
    public: Value,
    /// base64url(nonce || AES-256-GCM ciphertext of the PKCS#8 document).
    private: String,
    #[serde(default)]
    retired_at: Option<i64>,
}

/// A key that can sign.
pub struct SigningKey {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    /// A compact JWS of `claims` with header `typ`, signed ES256.
    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": typ, "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ECDSA signing");
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }
}

pub struct Keys {
    sealing: LessSafeKey,
    current: Mutex<Option<(Instant, std::sync::Arc<SigningKey>)>>,
}

fn public_jwk(pair: &EcdsaKeyPair, kid: &str) -> Value {
    let p = pair.public_key().as_ref();
    json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65]),
    })
}

impl Keys {
    pub fn new(secret: &Secret) -> Keys {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"xpod idp signing keys v1");
        let prk = salt.extract(secret.expose().as_bytes());
        let okm = prk
            .expand(&[b"aes-256-gcm"], &AES_256_GCM)
            .expect("HKDF output of one AES key");
        Keys {
            sealing: LessSafeKey::new(UnboundKey::from(okm)),
            current: Mutex::new(None),
        }
    }

    fn seal(&self, kid: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        SystemRandom::new().fill(&mut nonce).expect("random nonce");
        let mut data = plain.to_vec();
        self.sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut data,
            )
            .expect("AES-GCM sealing");
        let mut out = nonce.to_vec();
        out.extend(data);
        B64.encode(out)
    }

    fn open(&self, kid: &str, sealed: &str) -> Result<Vec<u8>, String> {
        let bytes = B64
            .decode(sealed)
            .map_err(|_| format!("signing key {kid} is stored damaged"))?;
        if bytes.len() < 12 + 16 {
            return Err(format!("signing key {kid} is stored damaged"));
        }
        let (nonce, data) = bytes.split_at(12);
        let mut data = data.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
        let plain = self
            .sealing
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut data)
            .map_err(|_| {
                format!(
                    "signing key {kid} cannot be decrypted: this node's CSS_SECRET_KEY is not the one it was stored with"
                )
            })?;
        Ok(plain.to_vec())
    }

    /// Makes a new key and stores it (the newest key signs).
    async fn create(&self, db: &Db) -> Result<String, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate a signing key".to_string())?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| "cannot read a new signing key".to_string())?;
        let kid = uuid::Uuid::new_v4().simple().to_string();
        let data = KeyData {
            kid: kid.clone(),
            alg: "ES256".into(),
            public: public_jwk(&pair, &kid),
            private: self.seal(&kid, pkcs8.as_ref()),
            retired_at: None,
        };
        db.record_insert(&IdpRecord {
            kind: KIND.into(),
            id: kid.clone(),
            account_id: None,
            unique_key: None,
            data: serde_json::to_string(&data).expect("key data serialises"),
            expires_at: None,
            created_at: now_ms(),
        })
        .await
        .map_err(|e| format!("cannot store a signing key: {e}"))?;
        Ok(kid)
    }

    async fn records(db: &Db) -> Result<Vec<(IdpRecord, KeyData)>, String> {
        let records = db
            .record_list(KIND, None, now_ms())
            .await
            .map_err(|e| format!("cannot read the signing keys: {e}"))?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let data = serde_json::from_str(&r.data).ok()?;
                Some((r, data))
            })
            .collect())
    }

    /// The key that signs now; the first one is made on first use.
    pub async fn signing(&self, db: &Db) -> Result<std::sync::Arc<SigningKey>, String> {
        if let Some((at, key)) = self.current.lock().expect("key cache").as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Ok(key.clone());
        }
        let mut records = Self::records(db).await?;
        if !records.iter().any(|(_, d)| d.retired_at.is_none()) {
            self.create(db).await?;
            records = Self::records(db).await?;
        }
        // Newest first: with two nodes creating the first key at once,
        // both pick the same one.
        let (_, data) = records
            .iter()
            .filter(|(_, d)| d.retired_at.is_none())
            .max_by(|(a, _), (b, _)| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            .ok_or("no signing key")?;
        let pkcs8 = self.open(&data.kid, &data.private)?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| format!("signing key {} is not a P-256 key", data.kid))?;
        let key = std::sync::Arc::new(SigningKey {
            kid: data.kid.clone(),
            pair,
        });
        *self.current.lock().expect("key cache") = Some((Instant::now(), key.clone()));
        Ok(key)
    }

    /// The published key set: every key not yet expired, retired or not.
    pub async fn jwks(&self, db: &Db) -> Result<Value, String> {
        let keys: Vec<Value> = Self::records(db)
            .await?
            .into_iter()
            .map(|(_, d)| d.public)
            .collect();
        Ok(json!({ "keys": keys }))
    }

    /// Starts signing with a new key. The old ones stay published for
    /// `keep` (the longest token lifetime), so tokens they signed verify
    /// until they expire. Returns the new key id.
    pub async fn rotate(&self, db: &Db, keep: Duration) -> Result<String, String> {
        let old = Self::records(db).await?;
        let kid = self.create(db).await?;
        let now = now_ms();
        for (mut record, mut data) in old {
            if data.retired_at.is_some() {
                continue;
            }
            data.retired_at = Some(now);
            record.data = serde_json::to_string(&data).expect("key data serialises");
            record.expires_at = Some(now + keep.as_millis() as i64);
            db.record_update(&record)
                .await
                .map_err(|e| format!("cannot retire signing key {}: {e}", data.kid))?;
        }
        *self.current.lock().expect("key cache") = None;
        Ok(kid)
    }
}
