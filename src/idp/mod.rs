//! xpod's own identity provider: accounts (`accounts`), signing keys
//! (`keys`), the authorization-code flow's state (`oauth`), and the
//! access and ID tokens it issues. The HTTP side is
//! `http::account` (the CSS-compatible `/.account/` API) and `http::oidc`
//! (discovery, JWKS, the token endpoint).

pub mod accounts;
pub mod keys;
pub mod oauth;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;
use sha2::Digest;

use crate::db::Db;

/// How long client-credentials access tokens live (as CSS's do).
pub const CLIENT_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Retired signing keys stay published this long: longer than any token
/// they signed lives, plus clock skew.
pub const KEY_RETENTION: Duration = Duration::from_secs(2 * 3600);

/// A user's login to an app, as its tokens state it.
pub struct Login<'a> {
    pub webid: &'a str,
    pub client_id: &'a str,
    /// The app's `nonce` from its authorization request.
    pub nonce: Option<&'a str>,
    /// When the user last typed a password (Unix seconds).
    pub auth_time: i64,
}

pub struct Idp {
    pub keys: keys::Keys,
    /// The issuer: this server's base URL.
    pub issuer: String,
}

impl Idp {
    pub fn new(config: &crate::config::Config, secret: &crate::config::Secret) -> Idp {
        Idp {
            keys: keys::Keys::new(secret),
            issuer: config.base_url.to_string(),
        }
    }

    /// A DPoP-bound access token for `webid`, used by `client_id`, bound to
    /// the key with thumbprint `jkt`. `sub` is the WebID for a user's login
    /// and the client id for client credentials (as CSS has them).
    pub async fn access_token(
        &self,
        db: &Db,
        sub: &str,
        webid: &str,
        client_id: &str,
        jkt: &str,
        ttl: Duration,
    ) -> Result<String, String> {
        let key = self.keys.signing(db).await?;
        let now = crate::db::now_ms() / 1000;
        let claims = json!({
            "iss": self.issuer,
            "aud": "solid",
            "sub": sub,
            "webid": webid,
            "client_id": client_id,
            "iat": now,
            "exp": now + ttl.as_secs() as i64,
            "jti": uuid::Uuid::new_v4().to_string(),
            "cnf": {"jkt": jkt},
        });
        Ok(key.sign("at+jwt", &claims))
    }

    /// An ID token (OpenID Connect Core 2) for a user's login to an app,
    /// issued with `access_token` (its `at_hash`).
    pub async fn id_token(
        &self,
        db: &Db,
        login: &Login<'_>,
        access_token: &str,
        ttl: Duration,
    ) -> Result<String, String> {
        let key = self.keys.signing(db).await?;
        let now = crate::db::now_ms() / 1000;
        let digest = sha2::Sha256::digest(access_token.as_bytes());
        let mut claims = json!({
            "iss": self.issuer,
            "aud": login.client_id,
            "azp": login.client_id,
            "sub": login.webid,
            "webid": login.webid,
            "at_hash": B64.encode(&digest[..16]),
            "auth_time": login.auth_time,
            "iat": now,
            "exp": now + ttl.as_secs() as i64,
        });
        if let Some(n) = login.nonce {
            claims["nonce"] = json!(n);
        }
        Ok(key.sign("JWT", &claims))
    }
}
