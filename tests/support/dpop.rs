//! A Solid client's DPoP key and proofs (RFC 9449), made with ring.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A client's DPoP key (P-256).
pub struct DpopKey(EcdsaKeyPair);

impl DpopKey {
    pub fn new() -> DpopKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        DpopKey(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    pub fn jwk(&self) -> Value {
        let p = self.0.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])})
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    pub fn claims(method: &str, url: &str, token: Option<&str>) -> Value {
        let mut claims = json!({
            "htm": method,
            "htu": url.split(['?', '#']).next().unwrap(),
            "iat": now(),
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(at) = token {
            claims["ath"] = json!(B64.encode(Sha256::digest(at.as_bytes())));
        }
        claims
    }

    pub fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()})
    }

    /// A fresh proof for `method url`, bound to `token` (`ath`).
    pub fn proof(&self, method: &str, url: &str, token: Option<&str>) -> String {
        self.sign(&self.header(), &Self::claims(method, url, token))
    }
}
