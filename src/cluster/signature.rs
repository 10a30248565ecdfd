//! Node-to-node request signatures.
//!
//! A forwarded request carries the hop marker and these headers:
//!
//! - `X-Xpod-From`: the sending node's id;
//! - `X-Xpod-To`: the node it is meant for;
//! - `X-Xpod-Date`: the sender's clock, Unix milliseconds;
//! - `X-Xpod-Nonce`: 128 random bits, hex;
//! - `X-Xpod-Signature`: Ed25519 over the canonical text below, base64url
//!   (or, with `X-Xpod-Session`, HMAC-SHA256 under the session key).
//!
//! The canonical text covers the method, authority, path and query, date,
//! nonce, both node ids, the hop marker and the forwarded-identity headers
//! (`X-Forwarded-For/Host/Proto`), the session id or session offer (see
//! [`super::session`]) and the caller's verified identity (`X-Xpod-Agent`,
//! see [`crate::auth::Credentials`]), one per line. Bodies stream unsigned: the
//! cluster network is trusted for integrity. The receiver checks the
//! signature against the sender's registered public key, a time window, and
//! that it has not seen the nonce before (replays).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

pub const HOP: &str = "x-xpod-hop";
pub const FROM: &str = "x-xpod-from";
pub const TO: &str = "x-xpod-to";
pub const DATE: &str = "x-xpod-date";
pub const NONCE: &str = "x-xpod-nonce";
pub const SIGNATURE: &str = "x-xpod-signature";

/// How far the sender's clock may be from ours.
pub const WINDOW_MS: i64 = 30_000;

/// What a signature covers.
#[derive(Debug, Clone, Default)]
pub struct Signed<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub path_and_query: &'a str,
    pub date: i64,
    pub nonce: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub hop: &'a str,
    pub forwarded_for: &'a str,
    pub forwarded_host: &'a str,
    pub forwarded_proto: &'a str,
    /// The session this request is MACed under (empty when signed).
    pub session: &'a str,
    /// The X25519 key the sender offers for a session (empty if none).
    pub offer: &'a str,
    /// The caller's verified identity (`X-Xpod-Agent`; empty if anonymous).
    pub agent: &'a str,
}

impl Signed<'_> {
    /// The text a signature or a session MAC covers.
    pub fn canonical(&self) -> String {
        let mut text = [
            "xpod-node-request-v2",
            self.method,
            self.authority,
            self.path_and_query,
            &self.date.to_string(),
            self.nonce,
            self.from,
            self.to,
            self.hop,
            self.forwarded_for,
            self.forwarded_host,
            self.forwarded_proto,
            self.session,
            self.offer,
        ]
        .join("\n");
        // A fifteenth line only when there is an identity, so requests
        // without one verify as before on nodes that predate it.
        if !self.agent.is_empty() {
            text.push('\n');
            text.push_str(self.agent);
        }
        text
    }

    pub fn sign(&self, key: &SigningKey) -> String {
        let sig = key.sign(self.canonical().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.to_bytes())
    }

    /// Checks the signature with the sender's public key (base64url, as in
    /// the `nodes` table).
    pub fn verify(&self, public_key: &str, signature: &str) -> Result<(), &'static str> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = verifying_key(public_key)?;
        let sig: [u8; 64] = b64
            .decode(signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or("malformed node signature")?;
        key.verify(self.canonical().as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| "invalid node signature")
    }
}

/// Parsed public keys by their text: decoding a key costs about as much as
/// half a verification, and a cluster has few nodes.
static KEYS: LazyLock<Mutex<HashMap<String, VerifyingKey>>> = LazyLock::new(Default::default);

pub(crate) fn verifying_key(text: &str) -> Result<VerifyingKey, &'static str> {
    if let Some(k) = KEYS.lock().expect("key cache").get(text) {
        return Ok(*k);
    }
    let bytes: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or("the sender's registered public key is unusable")?;
    let key =
        VerifyingKey::from_bytes(&bytes).map_err(|_| "the sender's public key is unusable")?;
    let mut keys = KEYS.lock().expect("key cache");
    if keys.len() >= 1024 {
        keys.clear();
    }
    keys.insert(text.to_string(), key);
    Ok(key)
}

/// A fresh nonce: 128 random bits, hex.
pub fn nonce() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Nonces seen within the time window; a second sighting is a replay.
///
/// Nonces are kept in buckets by the date they were signed with (a replay
/// carries the same date, so it lands in the same bucket). A bucket whose
/// dates have all left the window is dropped whole: any request with such a
/// date is refused by its date already. So each request costs one hash
/// lookup, and memory is bounded by the requests of one window.
#[derive(Default)]
pub struct NonceCache {
    buckets: Mutex<BTreeMap<i64, HashSet<u128>>>,
}

/// Width of a nonce bucket, in milliseconds of signing date.
const BUCKET_MS: i64 = 5_000;

impl NonceCache {
    /// Records `nonce` (signed at `date`, which the caller checked is within
    /// the window of `now`); false if it was seen already or is not 32 hex
    /// digits.
    pub fn first_sighting(&self, nonce: &str, date: i64, now: i64) -> bool {
        if nonce.len() != 32 {
            return false;
        }
        let Ok(value) = u128::from_str_radix(nonce, 16) else {
            return false;
        };
        let mut buckets = self.buckets.lock().expect("nonce cache");
        // Buckets whose newest date is older than the window.
        let oldest_live = (now - WINDOW_MS).div_euclid(BUCKET_MS);
        while let Some((&first, _)) = buckets.first_key_value() {
            if first >= oldest_live {
                break;
            }
            buckets.pop_first();
        }
        buckets
            .entry(date.div_euclid(BUCKET_MS))
            .or_default()
            .insert(value)
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        let buckets = self.buckets.lock().expect("nonce cache");
        buckets.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(nonce: &'a str) -> Signed<'a> {
        Signed {
            method: "GET",
            authority: "pods.example:3000",
            path_and_query: "/alice/x?y=1",
            date: 1_700_000_000_000,
            nonce,
            from: "node-b",
            to: "node-a",
            hop: "1",
            forwarded_for: "10.0.0.9",
            forwarded_host: "pods.example:3000",
            forwarded_proto: "http",
            session: "",
            offer: "",
            agent: "",
        }
    }

    #[test]
    fn a_signature_covers_every_field() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = crate::node::keys::public_key_text(&key);
        let signed = request("abc");
        let sig = signed.sign(&key);
        assert!(signed.verify(&public, &sig).is_ok());
        let mut changed = request("abc");
        changed.path_and_query = "/alice/other";
        assert!(changed.verify(&public, &sig).is_err());
        let mut changed = request("abc");
        changed.to = "node-c";
        assert!(changed.verify(&public, &sig).is_err());
        let mut changed = request("abc");
        changed.forwarded_for = "1.2.3.4";
        assert!(changed.verify(&public, &sig).is_err());
        let mut changed = request("abc");
        changed.offer = "another-key";
        assert!(changed.verify(&public, &sig).is_err());
        // A caller's identity cannot be added to or swapped in a signed request.
        let mut changed = request("abc");
        changed.agent = "eyJ3ZWJJZCI6ImV2ZSJ9";
        assert!(changed.verify(&public, &sig).is_err());
        let mut with_agent = request("abc");
        with_agent.agent = "eyJ3ZWJJZCI6ImFsaWNlIn0";
        let agent_sig = with_agent.sign(&key);
        assert!(with_agent.verify(&public, &agent_sig).is_ok());
        let mut swapped = request("abc");
        swapped.agent = "eyJ3ZWJJZCI6ImV2ZSJ9";
        assert!(swapped.verify(&public, &agent_sig).is_err());
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(
            signed
                .verify(&crate::node::keys::public_key_text(&other), &sig)
                .is_err()
        );
        assert!(signed.verify(&public, "not-base64!").is_err());
    }

    #[test]
    fn a_nonce_is_accepted_once() {
        let cache = NonceCache::default();
        let (n1, n2) = (&"1".repeat(32), &"2".repeat(32));
        assert!(cache.first_sighting(n1, 10, 10));
        assert!(!cache.first_sighting(n1, 10, 20));
        // Still refused at the very end of the window.
        assert!(!cache.first_sighting(n1, 10, 10 + WINDOW_MS));
        assert!(cache.first_sighting(n2, 10, 20));
        assert!(!cache.first_sighting("not-hex", 10, 20));
    }

    #[test]
    fn nonces_older_than_the_window_are_forgotten() {
        let cache = NonceCache::default();
        let mut now = 1_700_000_000_000i64;
        for i in 0..100_000u128 {
            // 10,000 requests a second for 10 s.
            now += (i % 10 == 0) as i64;
            assert!(cache.first_sighting(&format!("{i:032x}"), now, now));
        }
        assert_eq!(cache.len(), 100_000);
        let later = now + WINDOW_MS + 2 * BUCKET_MS;
        assert!(cache.first_sighting(&format!("{:032x}", u128::MAX), later, later));
        assert_eq!(cache.len(), 1, "everything older than the window is gone");
    }
}
