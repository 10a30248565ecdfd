//! Session keys between two nodes, so that a forwarded request costs an
//! HMAC instead of an Ed25519 signature and verification.
//!
//! A sender with no session for a receiver signs its request with its node
//! key (see [`super::signature`]) and offers a fresh X25519 public key in
//! `X-Xpod-Session-Offer`, which the signature covers. The receiver, having
//! checked that signature against the sender's registered key, answers with
//! its own fresh X25519 key and a session id in `X-Xpod-Session-Accept`
//! (`<id>.<public key>`). Both derive the session key with HKDF-SHA256 from
//! the X25519 secret, salted with both public keys and bound to both node
//! ids. Only the holder of the offered private key can know the key, and
//! the offer was signed by the sender's node key, so a request that carries
//! a valid MAC under that key comes from that node.
//!
//! Later requests carry `X-Xpod-Session: <id>` and, in `X-Xpod-Signature`,
//! HMAC-SHA256 under the session key over the same canonical text as a
//! signature (date, nonce and all); the date window and the nonce cache
//! apply as before. A receiver that no longer knows the session (it
//! restarted, or the session expired) refuses with 403 and
//! `X-Xpod-Session-Unknown: 1`; the sender forgets the session and, if the
//! request had no body, sends it again signed with its node key. Requests
//! with a body are always signed with the node key, so they never need that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::{hkdf, hmac, rand::SystemRandom};

pub const OFFER: &str = "x-xpod-session-offer";
pub const ACCEPT: &str = "x-xpod-session-accept";
pub const SESSION: &str = "x-xpod-session";
pub const UNKNOWN: &str = "x-xpod-session-unknown";

/// How long a receiver keeps a session.
pub const LIFETIME: Duration = Duration::from_secs(3600);
/// How long a sender uses one (less than [`LIFETIME`], so clocks and queues
/// never make it use an expired one).
pub const USE_FOR: Duration = Duration::from_secs(3000);
/// A sender waits this long for its offer to be accepted before offering again.
const OFFER_PATIENCE: Duration = Duration::from_secs(5);
/// Sessions a receiver keeps per sending node (the newest win).
const PER_NODE: usize = 8;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn derive(
    private: EphemeralPrivateKey,
    peer_public: &[u8],
    offer: &[u8],
    accept: &[u8],
    from: &str,
    to: &str,
) -> Result<hmac::Key, &'static str> {
    let salt = [offer, accept].concat();
    agreement::agree_ephemeral(
        private,
        &UnparsedPublicKey::new(&X25519, peer_public),
        |shared| {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared);
            let info: [&[u8]; 5] = [
                b"xpod-node-session-v1",
                b"\n",
                from.as_bytes(),
                b"\n",
                to.as_bytes(),
            ];
            prk.expand(&info, hmac::HMAC_SHA256)
                .map(hmac::Key::from)
                .map_err(|_| "cannot derive a session key")
        },
    )
    .map_err(|_| "unusable session public key")?
}

fn ephemeral() -> (EphemeralPrivateKey, Vec<u8>) {
    let rng = SystemRandom::new();
    let private = EphemeralPrivateKey::generate(&X25519, &rng).expect("system randomness");
    let public = private
        .compute_public_key()
        .expect("X25519 public key")
        .as_ref()
        .to_vec();
    (private, public)
}

/// The MAC that takes the place of a signature within a session, base64url.
pub fn mac(key: &hmac::Key, canonical: &str) -> String {
    B64.encode(hmac::sign(key, canonical.as_bytes()).as_ref())
}

/// Checks a MAC made by [`mac`], in constant time.
pub fn check_mac(key: &hmac::Key, canonical: &str, tag: &str) -> Result<(), &'static str> {
    let tag = B64.decode(tag).map_err(|_| "malformed session MAC")?;
    hmac::verify(key, canonical.as_bytes(), &tag).map_err(|_| "invalid session MAC")
}

struct Accepted {
    from: String,
    key: hmac::Key,
    until: Instant,
}

enum Peer {
    /// An offer is out; its private key waits for the answer.
    Offered {
        public: String,
        private: Option<EphemeralPrivateKey>,
        at: Instant,
    },
    Established {
        id: String,
        key: hmac::Key,
        until: Instant,
    },
}

/// How a sender authenticates one request.
pub enum Auth {
    /// Sign with the node key; `offer` is the X25519 public key to offer, if any.
    Sign { offer: Option<String> },
    /// MAC with an established session.
    Session { id: String, key: hmac::Key },
}

/// Both sides of every session this node takes part in.
#[derive(Default)]
pub struct Sessions {
    accepted: Mutex<HashMap<String, Accepted>>,
    peers: Mutex<HashMap<String, Peer>>,
}

impl Sessions {
    /// Sender: how to authenticate a request to node `to`. A request with a
    /// body is always signed (it could not be sent again if the session
    /// turned out to be unknown); at most one offer per peer is out at once.
    pub fn for_request(&self, to: &str, has_body: bool) -> Auth {
        let mut peers = self.peers.lock().expect("sessions");
        match peers.get(to) {
            Some(Peer::Established { id, key, until }) if Instant::now() < *until => {
                if has_body {
                    return Auth::Sign { offer: None };
                }
                return Auth::Session {
                    id: id.clone(),
                    key: key.clone(),
                };
            }
            Some(Peer::Offered { at, .. }) if at.elapsed() < OFFER_PATIENCE => {
                return Auth::Sign { offer: None };
            }
            _ => {}
        }
        let (private, public) = ephemeral();
        let public = B64.encode(public);
        peers.insert(
            to.to_string(),
            Peer::Offered {
                public: public.clone(),
                private: Some(private),
                at: Instant::now(),
            },
        );
        Auth::Sign {
            offer: Some(public),
        }
    }

    /// Sender: the receiver `to` accepted `offer` (sent by `from`, this node).
    /// An answer to anything but the outstanding offer is ignored.
    pub fn complete(&self, from: &str, to: &str, offer: &str, accept: &str) {
        let Some((id, their_public)) = accept.split_once('.') else {
            return;
        };
        let Ok(their_public) = B64.decode(their_public) else {
            return;
        };
        let mut peers = self.peers.lock().expect("sessions");
        let private = match peers.get_mut(to) {
            Some(Peer::Offered {
                public, private, ..
            }) if public == offer => private.take(),
            _ => None,
        };
        let Some(private) = private else { return };
        let Ok(ours) = B64.decode(offer) else { return };
        match derive(private, &their_public, &ours, &their_public, from, to) {
            Ok(key) => {
                peers.insert(
                    to.to_string(),
                    Peer::Established {
                        id: id.to_string(),
                        key,
                        until: Instant::now() + USE_FOR,
                    },
                );
            }
            Err(why) => {
                tracing::warn!(
                    node = to,
                    error = why,
                    "a node answered a session offer badly"
                );
                peers.remove(to);
            }
        }
    }

    /// Sender: the receiver no longer knows session `id`.
    pub fn forget(&self, to: &str, id: &str) {
        let mut peers = self.peers.lock().expect("sessions");
        if matches!(peers.get(to), Some(Peer::Established { id: known, .. }) if known == id) {
            peers.remove(to);
        }
    }

    /// Receiver: accepts an offer whose signature from `from` was checked.
    /// Returns the `X-Xpod-Session-Accept` value.
    pub fn accept(&self, from: &str, to: &str, offer: &str) -> Result<String, &'static str> {
        let theirs = B64.decode(offer).map_err(|_| "malformed session offer")?;
        let (private, ours) = ephemeral();
        let key = derive(private, &theirs, &theirs, &ours, from, to)?;
        let id = super::signature::nonce();
        let now = Instant::now();
        let mut accepted = self.accepted.lock().expect("sessions");
        accepted.retain(|_, s| s.until > now);
        let mut of_node: Vec<(Instant, String)> = accepted
            .iter()
            .filter(|(_, s)| s.from == from)
            .map(|(id, s)| (s.until, id.clone()))
            .collect();
        if of_node.len() >= PER_NODE {
            of_node.sort();
            for (_, old) in &of_node[..=of_node.len() - PER_NODE] {
                accepted.remove(old);
            }
        }
        accepted.insert(
            id.clone(),
            Accepted {
                from: from.to_string(),
                key,
                until: now + LIFETIME,
            },
        );
        Ok(format!("{id}.{}", B64.encode(ours)))
    }

    /// Receiver: the key of session `id`, if it is live and was set up by `from`.
    pub fn key(&self, id: &str, from: &str) -> Option<hmac::Key> {
        let accepted = self.accepted.lock().expect("sessions");
        accepted
            .get(id)
            .filter(|s| s.from == from && Instant::now() < s.until)
            .map(|s| s.key.clone())
    }

    /// Receiver: forgets every session of a node (it was removed or re-keyed).
    pub fn drop_node(&self, from: &str) {
        self.accepted
            .lock()
            .expect("sessions")
            .retain(|_, s| s.from != from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(sender: &Sessions, receiver: &Sessions) -> (String, hmac::Key, hmac::Key) {
        let Auth::Sign { offer: Some(offer) } = sender.for_request("a", false) else {
            panic!("the first request offers a session");
        };
        let accept = receiver.accept("b", "a", &offer).unwrap();
        sender.complete("b", "a", &offer, &accept);
        let Auth::Session { id, key } = sender.for_request("a", false) else {
            panic!("the session is established");
        };
        let theirs = receiver.key(&id, "b").expect("the receiver knows it");
        (id, key, theirs)
    }

    #[test]
    fn both_sides_derive_the_same_key() {
        let (sender, receiver) = (Sessions::default(), Sessions::default());
        let (_, ours, theirs) = handshake(&sender, &receiver);
        let tag = mac(&ours, "GET\n/x");
        assert!(check_mac(&theirs, "GET\n/x", &tag).is_ok());
        assert!(check_mac(&theirs, "GET\n/y", &tag).is_err());
        assert!(check_mac(&theirs, "GET\n/x", "AAAA").is_err());
    }

    #[test]
    fn a_session_belongs_to_the_node_that_offered_it() {
        let (sender, receiver) = (Sessions::default(), Sessions::default());
        let (id, _, _) = handshake(&sender, &receiver);
        assert!(receiver.key(&id, "c").is_none());
        assert!(receiver.key("made-up", "b").is_none());
        receiver.drop_node("b");
        assert!(receiver.key(&id, "b").is_none());
    }

    #[test]
    fn one_offer_at_a_time_and_bodies_are_signed() {
        let (sender, receiver) = (Sessions::default(), Sessions::default());
        let Auth::Sign { offer: Some(first) } = sender.for_request("a", false) else {
            panic!("offers");
        };
        assert!(matches!(
            sender.for_request("a", false),
            Auth::Sign { offer: None }
        ));
        // An answer to some other offer is ignored.
        let stray = receiver.accept("b", "a", &B64.encode([9u8; 32])).unwrap();
        sender.complete("b", "a", "someone-else", &stray);
        assert!(matches!(
            sender.for_request("a", false),
            Auth::Sign { offer: None }
        ));
        let accept = receiver.accept("b", "a", &first).unwrap();
        sender.complete("b", "a", &first, &accept);
        assert!(matches!(
            sender.for_request("a", false),
            Auth::Session { .. }
        ));
        assert!(matches!(
            sender.for_request("a", true),
            Auth::Sign { offer: None }
        ));
        // Once forgotten, the next request offers again.
        let Auth::Session { id, .. } = sender.for_request("a", false) else {
            panic!()
        };
        sender.forget("a", &id);
        assert!(matches!(
            sender.for_request("a", false),
            Auth::Sign { offer: Some(_) }
        ));
    }

    #[test]
    fn a_receiver_keeps_a_bounded_number_of_sessions_per_node() {
        let receiver = Sessions::default();
        let ids: Vec<String> = (0..PER_NODE + 3)
            .map(|_| {
                let (_, public) = ephemeral();
                let accept = receiver.accept("b", "a", &B64.encode(public)).unwrap();
                accept.split_once('.').unwrap().0.to_string()
            })
            .collect();
        let live = ids
            .iter()
            .filter(|id| receiver.key(id, "b").is_some())
            .count();
        assert_eq!(live, PER_NODE);
        assert!(
            receiver.key(ids.last().unwrap(), "b").is_some(),
            "the newest is kept"
        );
    }
}
