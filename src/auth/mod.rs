//! Credentials: the administrator token, and the Solid-OIDC verifier that
//! turns a DPoP-bound access token into an [`Agent`]. Access control (WAC)
//! comes later and will take [`Credentials`] as its input.

pub mod admin_token;
pub mod dpop;
pub mod jose;
pub mod oidc;
pub mod wac;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

/// The header a forwarded request carries the caller's verified identity
/// in; it is covered by the node signature, and a client's own is dropped.
pub const FORWARDED_AGENT: &str = "x-xpod-agent";

/// An agent whose access token and DPoP proof were verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// The WebID the token was issued for.
    #[serde(rename = "webId")]
    pub webid: String,
    /// The client (application) the token was issued to.
    #[serde(rename = "clientId")]
    pub client_id: Option<String>,
    /// The issuer that signed the token, listed in the WebID document.
    pub issuer: String,
}

/// Who is asking: the one value the authorization layer gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials were presented.
    #[default]
    Anonymous,
    Agent(Agent),
    /// The cluster's own pod mover (the walk of `xpod pods migrate`
    /// between an edge and the centre, holding the move's secret): every
    /// mode on the pod it moves.
    Mover,
}

impl Credentials {
    pub fn agent(&self) -> Option<&Agent> {
        match self {
            Credentials::Anonymous | Credentials::Mover => None,
            Credentials::Agent(a) => Some(a),
        }
    }

    /// The value of [`FORWARDED_AGENT`] (empty for anonymous).
    pub fn to_header(&self) -> String {
        match self {
            Credentials::Anonymous | Credentials::Mover => String::new(),
            Credentials::Agent(a) => {
                B64.encode(serde_json::to_vec(a).expect("an agent serialises"))
            }
        }
    }

    /// Reads [`FORWARDED_AGENT`] of a request whose node signature was checked.
    pub fn from_header(value: &str) -> Result<Credentials, String> {
        if value.is_empty() {
            return Ok(Credentials::Anonymous);
        }
        let bytes = B64
            .decode(value)
            .map_err(|_| "the forwarded agent is not base64url".to_string())?;
        serde_json::from_slice(&bytes)
            .map(Credentials::Agent)
            .map_err(|e| format!("the forwarded agent is malformed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_survive_the_forwarded_header() {
        let agent = Credentials::Agent(Agent {
            webid: "https://id.example/alice#me".into(),
            client_id: Some("https://app.example/id".into()),
            issuer: "https://idp.example/".into(),
        });
        assert_eq!(Credentials::from_header(&agent.to_header()).unwrap(), agent);
        assert_eq!(
            Credentials::from_header("").unwrap(),
            Credentials::Anonymous
        );
        assert!(Credentials::from_header("!!").is_err());
    }
}
