//! Edge nodes: a home box on SQLite and local disk that enrols with a
//! centre, sends it signed heartbeats (`signal`) and keeps one outbound
//! connection open to it (`tunnel`), over which the centre sends the
//! requests for the edge's pods.
//!
//! Both of the edge's requests to the centre are signed with its node key
//! (the one its enrolment registered) over the text [`EdgeSigned::canonical`]
//! and carry these headers:
//!
//! - `X-Xpod-Edge`: the edge's node id;
//! - `X-Xpod-Date`: the edge's clock, Unix milliseconds;
//! - `X-Xpod-Nonce`: 128 random bits, hex;
//! - `X-Xpod-Signature`: Ed25519, base64url.
//!
//! The signature covers what the request is for, method, authority, path,
//! date, nonce, node id and the SHA-256 of the body, so a captured heartbeat
//! cannot be replayed, sent elsewhere or given another body.

pub mod moving;
pub mod signal;
pub mod tunnel;

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use sha2::Digest;

use crate::cluster::signature::{self, NonceCache, WINDOW_MS};
use crate::db::{Db, NodeRecord, now_ms};

/// Where edges send heartbeats (and enrol). Public API: stable.
pub const SIGNAL_PATH: &str = "/api/v1/signal";
/// Where an edge opens its tunnel.
pub const TUNNEL_PATH: &str = "/api/v1/tunnel";

/// The header that names the edge node.
pub const EDGE: &str = "x-xpod-edge";

/// What an edge's signature covers.
#[derive(Debug, Clone, Default)]
pub struct EdgeSigned<'a> {
    /// `"signal"` or `"tunnel"`.
    pub purpose: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub date: i64,
    pub nonce: &'a str,
    pub node: &'a str,
    /// SHA-256 of the body, hex (of nothing for a bodiless request).
    pub body_sha256: &'a str,
}

impl EdgeSigned<'_> {
    pub fn canonical(&self) -> String {
        [
            "xpod-edge-request-v1",
            self.purpose,
            self.method,
            self.authority,
            self.path,
            &self.date.to_string(),
            self.nonce,
            self.node,
            self.body_sha256,
        ]
        .join("\n")
    }

    pub fn sign(&self, key: &SigningKey) -> String {
        let sig = key.sign(self.canonical().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.to_bytes())
    }

    /// Checks the signature with the edge's registered public key.
    pub fn verify(&self, public_key: &str, sig: &str) -> Result<(), &'static str> {
        let key = signature::verifying_key(public_key)?;
        let sig: [u8; 64] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or("malformed signature")?;
        key.verify(self.canonical().as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| "invalid signature")
    }
}

/// SHA-256 of a body, hex.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(body))
}

/// The headers that sign an edge's request to `url`.
pub fn signed_headers(
    key: &SigningKey,
    node: &str,
    purpose: &str,
    method: &str,
    url: &url::Url,
    body: &[u8],
) -> HeaderMap {
    let authority = authority_of(url);
    let nonce = signature::nonce();
    let hash = body_sha256(body);
    let signed = EdgeSigned {
        purpose,
        method,
        authority: &authority,
        path: url.path(),
        date: now_ms(),
        nonce: &nonce,
        node,
        body_sha256: &hash,
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(EDGE, node);
    set(signature::DATE, &signed.date.to_string());
    set(signature::NONCE, &nonce);
    set(signature::SIGNATURE, &signed.sign(key));
    headers
}

/// `host[:port]` as a client puts it in `Host`: the port only when it is
/// not the scheme's default.
pub fn authority_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Checks an edge's signed request on the centre: a registered edge node
/// with a key, a date within the window, a valid signature, a nonce never
/// seen. Returns the edge's record. The error says what is wrong, for the
/// log and the edge's operator; the caller answers 403 with it.
#[allow(clippy::too_many_arguments)]
pub async fn check_signed(
    db: &Db,
    nonces: &NonceCache,
    purpose: &str,
    method: &str,
    authority: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<NodeRecord, String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let (node, date, nonce, sig) = (
        get(EDGE),
        get(signature::DATE),
        get(signature::NONCE),
        get(signature::SIGNATURE),
    );
    if node.is_empty() || sig.is_empty() {
        return Err(format!(
            "the request carries no edge signature ({EDGE} and {} expected)",
            signature::SIGNATURE
        ));
    }
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("malformed nonce (32 hex digits expected)".into());
    }
    let date: i64 = date.parse().map_err(|_| "malformed date".to_string())?;
    let now = now_ms();
    if (now - date).abs() > WINDOW_MS {
        return Err(
            "the request's date is more than 30 s from the centre's clock; set the edge's clock (NTP)"
                .into(),
        );
    }
    let record = db
        .node_get(node)
        .await
        .map_err(|e| format!("cannot look up node {node}: {e}"))?
        .filter(|n| n.kind == "edge")
        .ok_or_else(|| format!("{node:?} is not an enrolled edge node"))?;
    let public = record
        .public_key
        .as_deref()
        .ok_or_else(|| format!("edge node {node} has not enrolled yet"))?;
    let hash = body_sha256(body);
    let signed = EdgeSigned {
        purpose,
        method,
        authority,
        path,
        date,
        nonce,
        node,
        body_sha256: &hash,
    };
    signed
        .verify(public, sig)
        .map_err(|why| {
            format!(
                "{why} (node {node}): either a reverse proxy in front of the centre changed the request's Host or path (pass Host through, or set X-Forwarded-Host from a proxy listed in CSS_TRUSTED_PROXIES, and keep the path), or the edge's node.key is not the key it enrolled with (then create a new edge with `xpod nodes create-edge`)"
            )
        })?;
    if !nonces.first_sighting(nonce, date, now) {
        return Err("replayed (its nonce was seen before)".into());
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_signature_covers_purpose_path_and_body() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let public = crate::node::keys::public_key_text(&key);
        let hash = body_sha256(b"{\"pods\":[]}");
        let signed = EdgeSigned {
            purpose: "signal",
            method: "POST",
            authority: "centre.example",
            path: SIGNAL_PATH,
            date: 1_700_000_000_000,
            nonce: "0123456789abcdef0123456789abcdef",
            node: "edge-1",
            body_sha256: &hash,
        };
        let sig = signed.sign(&key);
        assert!(signed.verify(&public, &sig).is_ok());
        let other_body = body_sha256(b"{\"pods\":[\"mallory\"]}");
        for changed in [
            EdgeSigned {
                purpose: "tunnel",
                ..signed.clone()
            },
            EdgeSigned {
                authority: "elsewhere.example",
                ..signed.clone()
            },
            EdgeSigned {
                node: "edge-2",
                ..signed.clone()
            },
            EdgeSigned {
                body_sha256: &other_body,
                ..signed.clone()
            },
        ] {
            assert!(changed.verify(&public, &sig).is_err());
        }
        let other = SigningKey::from_bytes(&[4u8; 32]);
        assert!(
            signed
                .verify(&crate::node::keys::public_key_text(&other), &sig)
                .is_err()
        );
    }
}
