//! DPoP proofs (RFC 9449 section 4.3): the checks that need nothing but the
//! proof, the request and the access token. The replay check, which needs
//! the shared store, is the caller's last step.

use url::Url;

use super::jose;

/// The longest `jti` accepted.
pub const MAX_JTI: usize = 256;

/// What a proof must match.
#[derive(Debug)]
pub struct Expected<'a> {
    /// The request method, e.g. `GET`.
    pub method: &'a str,
    /// The canonical URL the client addressed.
    pub url: &'a Url,
    /// The access token the proof comes with (for `ath`); none at a
    /// token endpoint.
    pub access_token: Option<&'a str>,
    /// The token's `cnf.jkt`: the thumbprint of the key the token is bound
    /// to; none at a token endpoint, where the proof names the key to bind.
    pub jkt: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
    /// How old a proof may be, in seconds, beyond the clock skew.
    pub max_age: i64,
    /// Clock skew allowed either way, in seconds.
    pub skew: i64,
    /// Refuse proofs without `ath`.
    pub require_ath: bool,
}

/// A proof that passed every check but the replay check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jti: String,
    pub iat: i64,
    /// The RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
}

/// Checks one `DPoP` header value.
pub fn check(proof: &str, want: &Expected<'_>) -> Result<Proof, String> {
    let jws = jose::parse(proof).map_err(|e| format!("the DPoP proof is malformed: {e}"))?;
    let typ = jws.header_str("typ").unwrap_or_default();
    if !typ.eq_ignore_ascii_case("dpop+jwt") {
        return Err("the DPoP proof's typ is not dpop+jwt".into());
    }
    let alg = jws.alg().map_err(|e| format!("DPoP proof: {e}"))?;
    let jwk = jws
        .header
        .get("jwk")
        .and_then(|v| v.as_object())
        .ok_or("the DPoP proof carries no jwk")?;
    let key = jose::public_key(jwk).map_err(|e| format!("the DPoP proof's jwk: {e}"))?;
    let htm = jws
        .claim_str("htm")
        .ok_or("the DPoP proof has no htm claim")?;
    let htu = jws
        .claim_str("htu")
        .ok_or("the DPoP proof has no htu claim")?;
    let iat = jws
        .claim_secs("iat")
        .ok_or("the DPoP proof has no numeric iat claim")?;
    let jti = jws
        .claim_str("jti")
        .ok_or("the DPoP proof has no jti claim")?;
    if jti.is_empty() || jti.len() > MAX_JTI {
        return Err(format!(
            "the DPoP proof's jti must be 1 to {MAX_JTI} characters"
        ));
    }
    if htm != want.method {
        return Err(format!(
            "htm mismatch: the DPoP proof is for {htm:?}, the request is {}",
            want.method
        ));
    }
    if !same_target(htu, want.url) {
        let mut url = want.url.clone();
        url.set_query(None);
        url.set_fragment(None);
        return Err(format!(
            "htu mismatch: the DPoP proof is for {htu:?}, the request is for {url}"
        ));
    }
    if !(0..super::oidc::MAX_TIME).contains(&iat) {
        return Err("the DPoP proof's iat is out of range".into());
    }
    if iat > want.now + want.skew {
        return Err("the DPoP proof was made in the future (check the client's clock)".into());
    }
    if iat < want.now - want.max_age - want.skew {
        return Err(format!(
            "the DPoP proof is too old (made {} s ago; make a new proof for every request)",
            want.now - iat
        ));
    }
    // The signature last among the proof's own checks: it costs the most.
    key.verify(alg, jws.signing_input.as_bytes(), &jws.signature)
        .map_err(|e| format!("the DPoP proof's signature is invalid: {e}"))?;
    if let Some(token) = want.access_token {
        match jws.claim_str("ath") {
            Some(ath) if ath != jose::sha256_b64(token) => {
                return Err("the DPoP proof's ath does not match the access token".into());
            }
            None if want.require_ath => {
                return Err("the DPoP proof has no ath claim (the access token's hash)".into());
            }
            _ => {}
        }
    }
    if want.jkt.is_some_and(|jkt| key.thumbprint != jkt) {
        return Err(
            "the DPoP proof is signed by a key other than the one the access token is bound to (cnf.jkt)"
                .into(),
        );
    }
    Ok(Proof {
        jti: jti.to_string(),
        iat,
        jkt: key.thumbprint,
    })
}

/// Whether `htu` names `url`, ignoring query and fragment, after the
/// syntax-based normalisation URL parsing gives (case of scheme and host,
/// default ports). Paths must match exactly: `/x` is not `/x/`.
pub fn same_target(htu: &str, url: &Url) -> bool {
    let Ok(htu) = Url::parse(htu) else {
        return false;
    };
    htu.scheme() == url.scheme()
        && htu.host_str() == url.host_str()
        && htu.port_or_known_default() == url.port_or_known_default()
        && htu.path() == url.path()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_compare_after_normalisation_only() {
        let url = Url::parse("http://pods.example:3000/alice/x?q=1").unwrap();
        assert!(same_target("http://pods.example:3000/alice/x", &url));
        assert!(same_target("HTTP://PODS.example:3000/alice/x#f", &url));
        assert!(same_target("http://pods.example:3000/alice/x?other", &url));
        assert!(!same_target("http://pods.example:3000/alice/x/", &url));
        assert!(!same_target("https://pods.example:3000/alice/x", &url));
        assert!(!same_target("http://pods.example:3001/alice/x", &url));
        assert!(!same_target("http://other.example:3000/alice/x", &url));
        assert!(!same_target("/alice/x", &url));
        let default = Url::parse("https://pods.example/a").unwrap();
        assert!(same_target("https://pods.example:443/a", &default));
    }
}
