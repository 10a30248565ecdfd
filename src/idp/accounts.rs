//! Accounts, as Community Solid Server 7 keeps them: an account has
//! password logins (argon2id hashes), session tokens for the account API,
//! linked WebIDs, pods, and client credentials for scripts. All of it is
//! `idp_records` in the shared database, so every node sees the same.
//!
//! Session tokens and client secrets are random and only their SHA-256
//! hashes are stored; passwords are hashed with argon2id.

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{Db, DbError, IdpRecord, now_ms};

pub const ACCOUNT: &str = "account";
pub const PASSWORD: &str = "password";
pub const SESSION: &str = "session";
pub const WEBID: &str = "webid";
pub const POD: &str = "pod";
pub const CLIENT: &str = "client";
/// A pending proof that an account controls an outside WebID.
pub const WEBID_TOKEN: &str = "webid-token";
const THROTTLE: &str = "throttle";

/// How long an account token stays valid.
pub const SESSION_TTL: Duration = Duration::from_secs(14 * 24 * 3600);
/// Failed logins counted per account and per address...
const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// ...and how many are allowed in that window.
const MAX_FAILURES_PER_ACCOUNT: usize = 5;
const MAX_FAILURES_PER_ADDRESS: usize = 20;

/// A refusal the account API answers with (a CSS-style error body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountError {
    /// 400, with the message.
    Invalid(String),
    /// 403 "Invalid email/password combination."
    BadLogin,
    /// 429 with the seconds to wait.
    Throttled(u64),
    /// 503: the database failed.
    Unavailable,
}

impl From<DbError> for AccountError {
    fn from(e: DbError) -> Self {
        tracing::warn!(error = %e, "account store");
        AccountError::Unavailable
    }
}

/// SHA-256, hex: how tokens and secrets are stored.
pub(crate) fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordLogin {
    pub email: String,
    /// The argon2id PHC string.
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientCredential {
    pub name: String,
    pub webid: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
}

fn record(
    kind: &str,
    id: &str,
    account: Option<&str>,
    key: Option<&str>,
    data: String,
) -> IdpRecord {
    IdpRecord {
        kind: kind.into(),
        id: id.into(),
        account_id: account.map(str::to_string),
        unique_key: key.map(str::to_string),
        data,
        expires_at: None,
        created_at: now_ms(),
    }
}

/// Creates an account; returns its id and a session token for it.
pub async fn create_account(db: &Db) -> Result<(String, String), AccountError> {
    let id = uuid::Uuid::new_v4().to_string();
    db.record_insert(&record(ACCOUNT, &id, Some(&id), None, "{}".into()))
        .await?;
    let token = new_session(db, &id).await?;
    Ok((id, token))
}

pub async fn account_exists(db: &Db, id: &str) -> Result<bool, AccountError> {
    Ok(db.record_get(ACCOUNT, id, now_ms()).await?.is_some())
}

async fn new_session(db: &Db, account: &str) -> Result<String, AccountError> {
    let token = uuid::Uuid::new_v4().to_string();
    let mut r = record(SESSION, &hash(&token), Some(account), None, "{}".into());
    r.expires_at = Some(now_ms() + SESSION_TTL.as_millis() as i64);
    db.record_insert(&r).await?;
    Ok(token)
}

/// The account a session token belongs to, if it is live.
pub async fn session_account(db: &Db, token: &str) -> Result<Option<String>, AccountError> {
    Ok(db
        .record_get(SESSION, &hash(token), now_ms())
        .await?
        .and_then(|r| r.account_id))
}

/// When a live session token was made (Unix seconds): when its user
/// last typed a password.
pub async fn session_started(db: &Db, token: &str) -> Result<Option<i64>, AccountError> {
    Ok(db
        .record_get(SESSION, &hash(token), now_ms())
        .await?
        .map(|r| r.created_at / 1000))
}

pub async fn end_session(db: &Db, token: &str) -> Result<(), AccountError> {
    db.record_delete(SESSION, &hash(token)).await?;
    Ok(())
}

/// Emails are compared trimmed and lower-cased.
pub fn normalise_email(email: &str) -> Result<String, AccountError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(AccountError::Invalid("email must be a valid email".into()))
    }
}

async fn hash_password(password: String) -> Result<String, AccountError> {
    let _permit = hashing()
        .acquire()
        .await
        .map_err(|_| AccountError::Unavailable)?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| AccountError::Unavailable)
    })
    .await
    .map_err(|_| AccountError::Unavailable)?
}

async fn password_matches(password: String, phc: String) -> bool {
    let Ok(_permit) = hashing().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// Adds a password login to an account; returns its id.
pub async fn add_password(
    db: &Db,
    account: &str,
    email: &str,
    password: &str,
) -> Result<String, AccountError> {
    let email = normalise_email(email)?;
    let password = password.trim();
    if password.is_empty() {
        return Err(AccountError::Invalid(
            "password must be at least 1 characters".into(),
        ));
    }
    let data = PasswordLogin {
        email: email.clone(),
        hash: hash_password(password.to_string()).await?,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let r = record(
        PASSWORD,
        &id,
        Some(account),
        Some(&email),
        serde_json::to_string(&data).expect("serialises"),
    );
    match db.record_insert(&r).await {
        Ok(()) => Ok(id),
        Err(DbError::Conflict(_)) => Err(AccountError::Invalid(
            "There already is a login for this e-mail address.".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The address a login is counted against: IPv6 clients by their /64,
/// which one client usually holds whole.
fn address_key(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("address:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        std::net::IpAddr::V6(v6) => format!("address:{}", v6.to_ipv4_mapped().expect("mapped")),
        v4 => format!("address:{v4}"),
    }
}

/// Records an attempt against `key` (it counts as a failure until it
/// succeeds) and tells whether `key` is now over `max`. Recording before
/// counting means a burst of parallel guesses cannot all pass the check.
async fn attempt(db: &Db, key: &str, max: usize) -> Result<(String, bool), AccountError> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut r = record(THROTTLE, &id, Some(key), None, "{}".into());
    r.expires_at = Some(now_ms() + THROTTLE_WINDOW.as_millis() as i64);
    db.record_insert(&r).await?;
    let count = db.record_list(THROTTLE, Some(key), now_ms()).await?.len();
    Ok((id, count > max))
}

/// Counts one unauthenticated creation (of an account, of a registered
/// client) against the client's address: false once `max` were made from
/// it within the window, cluster-wide, so nobody fills the database.
pub async fn creation_allowed(
    db: &Db,
    what: &str,
    address: Option<std::net::IpAddr>,
    max: usize,
) -> Result<bool, AccountError> {
    let Some(a) = address else {
        return Ok(true);
    };
    let (_, over) = attempt(db, &format!("{what}:{}", address_key(a)), max).await?;
    Ok(!over)
}

/// How many accounts, and how many clients, one address may create per
/// throttling window (15 minutes).
pub const MAX_CREATIONS_PER_ADDRESS: usize = 20;

/// How long to wait after [`creation_allowed`] said no.
pub const CREATION_WAIT: Duration = THROTTLE_WINDOW;

/// Hashing a password takes about 19 MiB and tens of milliseconds: at
/// most as many at once as there are cores, the rest wait their turn.
fn hashing() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
    })
}

/// Logs in with a password; returns the account and a new session token.
/// Attempts are counted per account and per client address, across the
/// cluster; an attempt that fails stays counted for 15 minutes, and past
/// the limit every attempt is refused (429), so a correct guess gains
/// nothing.
pub async fn login(
    db: &Db,
    email: &str,
    password: &str,
    address: Option<std::net::IpAddr>,
) -> Result<(String, String), AccountError> {
    let email = email.trim().to_lowercase();
    let by_email = format!("email:{}", hash(&email));
    let wait = THROTTLE_WINDOW.as_secs();
    let mut counted = Vec::new();
    let (id, over) = attempt(db, &by_email, MAX_FAILURES_PER_ACCOUNT).await?;
    counted.push(id);
    let mut refused = over;
    if let Some(a) = address {
        let (id, over) = attempt(db, &address_key(a), MAX_FAILURES_PER_ADDRESS).await?;
        counted.push(id);
        refused |= over;
    }
    if refused {
        return Err(AccountError::Throttled(wait));
    }
    let found = db.record_find(PASSWORD, &email, now_ms()).await?;
    let login = found.as_ref().and_then(|r| {
        let data: PasswordLogin = serde_json::from_str(&r.data).ok()?;
        Some((r.account_id.clone()?, data))
    });
    let ok = match &login {
        Some((_, data)) => password_matches(password.trim().to_string(), data.hash.clone()).await,
        None => {
            // The same work as a real check, so timing does not say which
            // addresses have accounts.
            let _ = hash_password(password.to_string()).await;
            false
        }
    };
    if !ok {
        return Err(AccountError::BadLogin);
    }
    for id in counted {
        db.record_delete(THROTTLE, &id).await?;
    }
    let (account, _) = login.expect("a matching login");
    let token = new_session(db, &account).await?;
    Ok((account, token))
}

/// An account's records of one kind, as (id, unique key or data).
pub async fn list(db: &Db, kind: &str, account: &str) -> Result<Vec<IdpRecord>, AccountError> {
    Ok(db.record_list(kind, Some(account), now_ms()).await?)
}

/// Links a WebID to an account; returns the link id.
pub async fn link_webid(db: &Db, account: &str, webid: &str) -> Result<String, AccountError> {
    let id = uuid::Uuid::new_v4().to_string();
    match db
        .record_insert(&record(WEBID, &id, Some(account), Some(webid), "{}".into()))
        .await
    {
        Ok(()) => Ok(id),
        Err(DbError::Conflict(_)) => Err(AccountError::Invalid(format!(
            "{webid} is already registered to an account."
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Whether the account has this WebID linked.
pub async fn owns_webid(db: &Db, account: &str, webid: &str) -> Result<bool, AccountError> {
    Ok(db
        .record_find(WEBID, webid, now_ms())
        .await?
        .is_some_and(|r| r.account_id.as_deref() == Some(account)))
}

/// Records that `account` owns pod `pod`; returns the record id.
pub async fn add_pod(db: &Db, account: &str, pod: &str) -> Result<String, AccountError> {
    let id = uuid::Uuid::new_v4().to_string();
    match db
        .record_insert(&record(POD, &id, Some(account), Some(pod), "{}".into()))
        .await
    {
        Ok(()) => Ok(id),
        Err(DbError::Conflict(_)) => Err(AccountError::Invalid(format!(
            "Pod creation failed: there already is a pod named {pod}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Makes client credentials for one of the account's WebIDs; returns the
/// id and the secret (shown once; only its hash is kept).
pub async fn create_client(
    db: &Db,
    account: &str,
    name: &str,
    webid: &str,
) -> Result<(String, String, String), AccountError> {
    if !owns_webid(db, account, webid).await? {
        return Err(AccountError::Invalid(
            "WebID does not belong to this account.".into(),
        ));
    }
    // `<name>_<uuid>`, never a URL (clients treat URL ids as Client ID Documents).
    let clean: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let client_id = format!("{clean}_{}", uuid::Uuid::new_v4());
    let secret = random_hex(64);
    let data = ClientCredential {
        name: name.trim().to_string(),
        webid: webid.to_string(),
        secret_hash: hash(&secret),
    };
    let id = uuid::Uuid::new_v4().to_string();
    db.record_insert(&record(
        CLIENT,
        &id,
        Some(account),
        Some(&client_id),
        serde_json::to_string(&data).expect("serialises"),
    ))
    .await?;
    Ok((id, client_id, secret))
}

/// The credential a client id and secret name, if they match and its
/// WebID is still linked to the account.
pub async fn check_client(
    db: &Db,
    client_id: &str,
    secret: &str,
) -> Result<Option<ClientCredential>, AccountError> {
    let Some(r) = db.record_find(CLIENT, client_id, now_ms()).await? else {
        return Ok(None);
    };
    let Ok(data) = serde_json::from_str::<ClientCredential>(&r.data) else {
        return Ok(None);
    };
    let given = hash(secret);
    if !subtle_eq(given.as_bytes(), data.secret_hash.as_bytes()) {
        return Ok(None);
    }
    let account = r.account_id.unwrap_or_default();
    if !owns_webid(db, &account, &data.webid).await? {
        return Ok(None);
    }
    Ok(Some(data))
}

/// Constant-time equality of two byte strings.
pub(crate) fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
