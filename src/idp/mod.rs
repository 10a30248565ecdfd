//! xpod's own identity provider: accounts (`accounts`), signing keys
//! (`keys`), and the access tokens it issues. The HTTP side is
//! `http::account` (the CSS-compatible `/.account/` API) and `http::oidc`
//! (discovery, JWKS, the token endpoint).

pub mod accounts;
pub mod keys;

use std::time::Duration;

use serde_json::json;

use crate::db::Db;

/// How long client-credentials access tokens live (as CSS's do).
pub const CLIENT_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Retired signing keys stay published this long: longer than any token
/// they signed lives, plus clock skew.
pub const KEY_RETENTION: Duration = Duration::from_secs(2 * 3600);

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
    /// the key with thumbprint `jkt`.
    pub async fn access_token(
        &self,
        db: &Db,
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
            "sub": client_id,
            "webid": webid,
            "client_id": client_id,
            "iat": now,
            "exp": now + ttl.as_secs() as i64,
            "jti": uuid::Uuid::new_v4().to_string(),
            "cnf": {"jkt": jkt},
        });
        Ok(key.sign("at+jwt", &claims))
    }
}
