//! The authorization-code flow's state, kept as `idp_records` so that any
//! node can continue what another began: registered clients, interactions
//! (a login in progress in one browser), authorization codes and refresh
//! tokens. Secrets (client secrets, registration tokens, interaction ids,
//! codes, refresh tokens) are stored only as SHA-256 hashes.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::accounts::{hash, subtle_eq};
use crate::db::{Db, DbError, IdpRecord, now_ms};

pub const OIDC_CLIENT: &str = "oidc-client";
pub const INTERACTION: &str = "interaction";
const CODE: &str = "auth-code";
const USED_CODE: &str = "auth-code-used";
const REFRESH: &str = "refresh-token";

/// How long a login in progress may take.
pub const INTERACTION_TTL: Duration = Duration::from_secs(3600);
/// How long an authorization code may wait for its exchange.
const CODE_TTL: Duration = Duration::from_secs(600);
/// Access and ID tokens from the code and refresh grants.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Refresh tokens (not rotated; bound to the key for public clients).
pub const REFRESH_TTL: Duration = Duration::from_secs(24 * 3600);
/// A registered client unused this long is forgotten.
const CLIENT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// The Solid-OIDC JSON-LD context a Client ID Document must use.
pub const OIDC_CONTEXT: &str = "https://www.w3.org/ns/solid/oidc-context.jsonld";
/// The largest Client ID Document read.
const MAX_CLIENT_DOCUMENT: usize = 64 * 1024;

/// A random token: 32 bytes, base64url.
pub(crate) fn random_token() -> String {
    let mut buf = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut buf);
    B64.encode(buf)
}

fn record(kind: &str, id: &str, account: Option<&str>, data: String, ttl: Duration) -> IdpRecord {
    IdpRecord {
        kind: kind.into(),
        id: id.into(),
        account_id: account.map(str::to_string),
        unique_key: None,
        data,
        expires_at: Some(now_ms() + ttl.as_millis() as i64),
        created_at: now_ms(),
    }
}

/// What a client is, as registered or as its Client ID Document says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    pub redirect_uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub id_token_signed_response_alg: String,
}

impl Metadata {
    pub fn public(&self) -> bool {
        self.token_endpoint_auth_method == "none"
    }

    pub fn allows_refresh(&self) -> bool {
        self.grant_types.iter().any(|g| g == "refresh_token")
    }
}

/// A refused registration: the OAuth error code and why.
pub type Refusal = (&'static str, String);

/// Checks registration metadata (RFC 7591) and fills in the defaults.
pub fn metadata(body: &Value) -> Result<Metadata, Refusal> {
    let bad = |what: String| ("invalid_client_metadata", what);
    let text = |name: &str| -> Result<Option<String>, Refusal> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= 2048 => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!(
                "{name} must be a string of at most 2048 characters"
            ))),
        }
    };
    let list = |name: &str| -> Result<Option<Vec<String>>, Refusal> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) if items.len() <= 32 => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| bad(format!("{name} must be a list of strings"))),
            Some(_) => Err(bad(format!("{name} must be a list of at most 32 strings"))),
        }
    };
    let redirect_uris = list("redirect_uris")
        .map_err(|(_, why)| ("invalid_redirect_uri", why))?
        .filter(|l| !l.is_empty())
        .ok_or(("invalid_redirect_uri", "redirect_uris is mandatory".into()))?;
    for uri in &redirect_uris {
        let ok = url::Url::parse(uri).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.fragment().is_none() && uri.len() <= 2048
        }) || url::Url::parse(uri).is_ok_and(|u| {
            // Native apps' private-use schemes ("com.example.app:/cb").
            u.scheme().contains('.') && u.fragment().is_none() && uri.len() <= 2048
        });
        if !ok {
            return Err((
                "invalid_redirect_uri",
                format!("{uri:?} is not an absolute http(s) URL without a fragment"),
            ));
        }
    }
    let grant_types = list("grant_types")?.unwrap_or_else(|| vec!["authorization_code".into()]);
    if let Some(g) = grant_types
        .iter()
        .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(bad(format!(
            "grant type {g:?} is not offered to registered clients (authorization_code and refresh_token are)"
        )));
    }
    let response_types = list("response_types")?.unwrap_or_else(|| vec!["code".into()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(bad("response_types must be [\"code\"]".into()));
    }
    let token_endpoint_auth_method =
        text("token_endpoint_auth_method")?.unwrap_or_else(|| "client_secret_basic".into());
    if !matches!(
        token_endpoint_auth_method.as_str(),
        "client_secret_basic" | "client_secret_post" | "none"
    ) {
        return Err(bad(format!(
            "token_endpoint_auth_method {token_endpoint_auth_method:?} is not supported (client_secret_basic, client_secret_post or none)"
        )));
    }
    let alg = text("id_token_signed_response_alg")?.unwrap_or_else(|| "ES256".into());
    if alg != "ES256" {
        return Err(bad("id_token_signed_response_alg must be 'ES256'".into()));
    }
    Ok(Metadata {
        redirect_uris,
        client_name: text("client_name")?,
        client_uri: text("client_uri")?,
        logo_uri: text("logo_uri")?,
        scope: text("scope")?,
        grant_types,
        response_types,
        token_endpoint_auth_method,
        id_token_signed_response_alg: alg,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    metadata: Metadata,
    /// SHA-256 of the client secret; none for a public client.
    secret_hash: Option<String>,
    registration_hash: String,
    issued_at: i64,
}

/// A client registered here: its id, secret (shown once, if confidential)
/// and registration access token.
pub struct Registration {
    pub client_id: String,
    pub secret: Option<String>,
    pub registration_token: String,
    pub issued_at: i64,
}

/// Registers a client (RFC 7591).
pub async fn register(db: &Db, metadata: Metadata) -> Result<Registration, DbError> {
    // Random, and never a URL (URLs name Client ID Documents).
    let client_id = random_token()[..22].to_string();
    let secret = (!metadata.public()).then(random_token);
    let registration_token = random_token();
    let issued_at = now_ms() / 1000;
    let data = Registered {
        metadata,
        secret_hash: secret.as_deref().map(hash),
        registration_hash: hash(&registration_token),
        issued_at,
    };
    db.record_insert(&record(
        OIDC_CLIENT,
        &client_id,
        None,
        serde_json::to_string(&data).expect("serialises"),
        CLIENT_TTL,
    ))
    .await?;
    Ok(Registration {
        client_id,
        secret,
        registration_token,
        issued_at,
    })
}

async fn registered(db: &Db, client_id: &str) -> Result<Option<(IdpRecord, Registered)>, DbError> {
    Ok(db
        .record_get(OIDC_CLIENT, client_id, now_ms())
        .await?
        .and_then(|r| {
            let data = serde_json::from_str(&r.data).ok()?;
            Some((r, data))
        }))
}

/// A registered client's metadata, for the holder of its registration
/// access token (RFC 7592 read); `None` if either is wrong.
pub async fn registration(
    db: &Db,
    client_id: &str,
    token: &str,
) -> Result<Option<(Metadata, i64)>, DbError> {
    Ok(registered(db, client_id).await?.and_then(|(_, r)| {
        subtle_eq(hash(token).as_bytes(), r.registration_hash.as_bytes())
            .then_some((r.metadata, r.issued_at))
    }))
}

/// Whether a client id names a Client ID Document.
pub fn is_document(client_id: &str) -> bool {
    url::Url::parse(client_id).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// The client an authorization request names: a registered one, or a
/// Client ID Document fetched now. The error is for the user.
pub async fn client(
    db: &Db,
    verifier: &crate::auth::oidc::Verifier,
    client_id: &str,
) -> Result<Metadata, String> {
    if !is_document(client_id) {
        return match registered(db, client_id).await {
            Ok(Some((_, r))) => Ok(r.metadata),
            Ok(None) => Err(format!(
                "The application's client id {client_id:?} is not registered here; it may need to register again (clear its stored login)."
            )),
            Err(e) => {
                tracing::warn!(error = %e, "client lookup");
                Err("The login service is unavailable; try again shortly.".into())
            }
        };
    }
    let refused = |why: String| {
        format!("The application's Client ID Document {client_id} cannot be used: {why}.")
    };
    let doc = verifier
        .fetch_json(client_id, MAX_CLIENT_DOCUMENT)
        .await
        .map_err(refused)?;
    let context_ok = match doc.get("@context") {
        Some(Value::String(s)) => s == OIDC_CONTEXT,
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(OIDC_CONTEXT)),
        _ => false,
    };
    if !context_ok {
        return Err(refused(format!(
            "its @context does not include {OIDC_CONTEXT}"
        )));
    }
    if doc.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(refused("its client_id is not its own URL".into()));
    }
    let mut doc = doc;
    // A document's client has no secret.
    doc["token_endpoint_auth_method"] = Value::String("none".into());
    metadata(&doc).map_err(|(_, why)| refused(why))
}

/// The confidential client that authenticates with `secret`, or a public
/// client (no secret). `None` when authentication fails.
pub async fn authenticate(
    db: &Db,
    client_id: &str,
    secret: Option<&str>,
) -> Result<Option<Metadata>, DbError> {
    if is_document(client_id) {
        // Public: the code or refresh token it presents binds it.
        return Ok(Some(Metadata {
            redirect_uris: Vec::new(),
            client_name: None,
            client_uri: None,
            logo_uri: None,
            scope: None,
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            response_types: vec!["code".into()],
            token_endpoint_auth_method: "none".into(),
            id_token_signed_response_alg: "ES256".into(),
        }));
    }
    let Some((mut rec, r)) = registered(db, client_id).await? else {
        return Ok(None);
    };
    let ok = match (&r.secret_hash, secret) {
        (None, _) => true,
        (Some(h), Some(s)) => subtle_eq(hash(s).as_bytes(), h.as_bytes()),
        (Some(_), None) => false,
    };
    if !ok {
        return Ok(None);
    }
    // In use: kept another CLIENT_TTL (written at most once a day, not on
    // every token request).
    let renewed = now_ms() + CLIENT_TTL.as_millis() as i64;
    if rec
        .expires_at
        .is_none_or(|at| renewed - at > 24 * 3600 * 1000)
    {
        rec.expires_at = Some(renewed);
        db.record_update(&rec).await?;
    }
    Ok(Some(r.metadata))
}

/// A login in progress: what the application asked for, and what the user
/// has done so far.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Interaction {
    pub client_id: String,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub client_scope: Option<String>,
    pub client_grant_types: Vec<String>,
    pub redirect_uri: String,
    pub scope: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    /// `prompt=login`: a password login must happen within this interaction.
    pub force_login: bool,
    /// The account that logged in during this interaction.
    pub logged_in: Option<String>,
    /// The account and the WebID picked.
    pub account: Option<String>,
    pub webid: Option<String>,
    pub auth_time: Option<i64>,
    /// Consent given, and whether the app may stay logged in.
    pub consent: Option<bool>,
    pub cancelled: bool,
}

impl Interaction {
    /// Whether the app asked for, and may get, a refresh token.
    pub fn wants_offline(&self) -> bool {
        self.scope.iter().any(|s| s == "offline_access")
            && self.client_grant_types.iter().any(|g| g == "refresh_token")
    }
}

/// Starts an interaction; returns its id (the cookie value).
pub async fn start(db: &Db, interaction: &Interaction) -> Result<String, DbError> {
    let uid = random_token();
    db.record_insert(&record(
        INTERACTION,
        &hash(&uid),
        None,
        serde_json::to_string(interaction).expect("serialises"),
        INTERACTION_TTL,
    ))
    .await?;
    Ok(uid)
}

pub async fn interaction(db: &Db, uid: &str) -> Result<Option<Interaction>, DbError> {
    Ok(db
        .record_get(INTERACTION, &hash(uid), now_ms())
        .await?
        .and_then(|r| serde_json::from_str(&r.data).ok()))
}

/// Saves an interaction's progress; false if it is gone.
pub async fn save(db: &Db, uid: &str, interaction: &Interaction) -> Result<bool, DbError> {
    let Some(mut rec) = db.record_get(INTERACTION, &hash(uid), now_ms()).await? else {
        return Ok(false);
    };
    rec.data = serde_json::to_string(interaction).expect("serialises");
    db.record_update(&rec).await
}

pub async fn finish(db: &Db, uid: &str) -> Result<bool, DbError> {
    db.record_delete(INTERACTION, &hash(uid)).await
}

/// What an authorization code grants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub account: String,
    pub webid: String,
    pub scope: Vec<String>,
    pub nonce: Option<String>,
    pub auth_time: i64,
    /// A refresh token goes with it.
    pub offline: bool,
}

/// Issues an authorization code for a finished interaction.
pub async fn issue_code(db: &Db, grant: &Grant) -> Result<String, DbError> {
    let code = random_token();
    db.record_insert(&record(
        CODE,
        &hash(&code),
        Some(&grant.account),
        serde_json::to_string(grant).expect("serialises"),
        CODE_TTL,
    ))
    .await?;
    Ok(code)
}

/// Why a grant is refused: `invalid_grant`, with a reason for the log.
#[derive(Debug)]
pub enum GrantError {
    Invalid(&'static str),
    Db(DbError),
}

impl From<DbError> for GrantError {
    fn from(e: DbError) -> Self {
        GrantError::Db(e)
    }
}

/// PKCE S256: base64url(SHA-256(verifier)) is the challenge.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let valid = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    valid
        && subtle_eq(
            B64.encode(Sha256::digest(verifier)).as_bytes(),
            challenge.as_bytes(),
        )
}

/// Exchanges a code. A wrong verifier leaves the code usable (the client
/// may retry); a code used twice is refused and revokes the refresh token
/// its first use gave, since one of the two uses was an attacker's.
pub async fn redeem(
    db: &Db,
    code: &str,
    client_id: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<(String, Grant), GrantError> {
    let id = hash(code);
    let Some(rec) = db.record_get(CODE, &id, now_ms()).await? else {
        if db.record_get(USED_CODE, &id, now_ms()).await?.is_some() {
            if let Some(rt) = db.record_find(REFRESH, &id, now_ms()).await? {
                db.record_delete(REFRESH, &rt.id).await?;
            }
            return Err(GrantError::Invalid(
                "the code was already used; its grant is revoked",
            ));
        }
        return Err(GrantError::Invalid("the code is unknown or expired"));
    };
    let grant: Grant =
        serde_json::from_str(&rec.data).map_err(|_| GrantError::Invalid("unreadable code"))?;
    if grant.client_id != client_id {
        return Err(GrantError::Invalid("the code was issued to another client"));
    }
    if grant.redirect_uri != redirect_uri {
        return Err(GrantError::Invalid(
            "redirect_uri differs from the authorization request's",
        ));
    }
    if !pkce_matches(verifier, &grant.code_challenge) {
        return Err(GrantError::Invalid("PKCE verification failed"));
    }
    // Only one exchange wins.
    if !db.record_delete(CODE, &id).await? {
        return Err(GrantError::Invalid("the code was already used"));
    }
    db.record_insert(&record(USED_CODE, &id, None, "{}".into(), REFRESH_TTL))
        .await?;
    Ok((id, grant))
}

/// What a refresh token carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refresh {
    pub client_id: String,
    pub webid: String,
    pub scope: Vec<String>,
    pub auth_time: i64,
    /// The key it is bound to (public clients).
    pub jkt: Option<String>,
}

/// Issues a refresh token for the grant `grant_id` (a code's hash).
pub async fn issue_refresh(
    db: &Db,
    grant_id: &str,
    account: &str,
    refresh: &Refresh,
) -> Result<String, DbError> {
    let token = random_token();
    let mut r = record(
        REFRESH,
        &hash(&token),
        Some(account),
        serde_json::to_string(refresh).expect("serialises"),
        REFRESH_TTL,
    );
    r.unique_key = Some(grant_id.into());
    db.record_insert(&r).await?;
    Ok(token)
}

/// Checks a refresh token for `client_id` presented with a proof by key
/// `jkt`, and that its WebID is still linked to the account.
pub async fn refresh(
    db: &Db,
    token: &str,
    client_id: &str,
    jkt: &str,
) -> Result<Refresh, GrantError> {
    let Some(rec) = db.record_get(REFRESH, &hash(token), now_ms()).await? else {
        return Err(GrantError::Invalid(
            "the refresh token is unknown, expired or revoked",
        ));
    };
    let data: Refresh =
        serde_json::from_str(&rec.data).map_err(|_| GrantError::Invalid("unreadable token"))?;
    if data.client_id != client_id {
        return Err(GrantError::Invalid(
            "the refresh token was issued to another client",
        ));
    }
    if data.jkt.as_deref().is_some_and(|bound| bound != jkt) {
        return Err(GrantError::Invalid(
            "the refresh token is bound to another DPoP key",
        ));
    }
    let account = rec.account_id.unwrap_or_default();
    let linked = super::accounts::owns_webid(db, &account, &data.webid)
        .await
        .map_err(|_| GrantError::Db(DbError::Unavailable("account store".into())))?;
    if !linked {
        return Err(GrantError::Invalid(
            "the WebID is no longer linked to the account",
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pkce_s256_matches_only_its_verifier() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
    }

    #[test]
    fn registration_metadata_needs_redirect_uris_and_es256() {
        assert_eq!(metadata(&json!({})).unwrap_err().0, "invalid_redirect_uri");
        assert_eq!(
            metadata(&json!({"redirect_uris": ["/relative"]}))
                .unwrap_err()
                .0,
            "invalid_redirect_uri"
        );
        assert_eq!(
            metadata(&json!({"redirect_uris": ["https://a.example/cb#x"]}))
                .unwrap_err()
                .0,
            "invalid_redirect_uri"
        );
        let alg = json!({"redirect_uris": ["https://a.example/cb"], "id_token_signed_response_alg": "RS256"});
        assert_eq!(metadata(&alg).unwrap_err().0, "invalid_client_metadata");
        let implicit =
            json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]});
        assert_eq!(
            metadata(&implicit).unwrap_err().0,
            "invalid_client_metadata"
        );
        let m = metadata(&json!({"redirect_uris": ["https://a.example/cb"], "client_name": "A"}))
            .unwrap();
        assert_eq!(m.token_endpoint_auth_method, "client_secret_basic");
        assert_eq!(m.grant_types, vec!["authorization_code"]);
        assert!(!m.public());
    }
}
