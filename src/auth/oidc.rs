//! Solid-OIDC access tokens: the resource server's side. A request that
//! carries `Authorization: DPoP <token>` and a `DPoP` proof is checked in
//! this order, cheapest first, so a bad request costs no fetch:
//!
//! 1. the token's shape, algorithm, claims and times (`aud` includes
//!    `solid`, `exp`/`iat` within the clock skew, `cnf.jkt` present);
//! 2. the proof ([`super::dpop`]): its own signature, `htm`, `htu`, `iat`,
//!    `ath`, and that its key is the one `cnf.jkt` names;
//! 3. the WebID document lists the token's issuer as `solid:oidcIssuer`;
//! 4. the token's signature, with the issuer's keys (discovery, then JWKS);
//! 5. the proof's `jti` was never used before, anywhere in the cluster:
//!    claimed in the metadata store, kept until the proof is too old anyway
//!    (every node prunes spent records each minute: `http::serve`).
//!
//! WebID documents, discovery documents and key sets are fetched through
//! the outbound policy ([`crate::outbound`]): size, time and redirect
//! limits, no internal address unless the operator allows it, and `https`
//! unless the address is one the operator allowed. They are cached with a
//! time and a count limit. Failures are cached briefly too, so a dead
//! WebID server is not asked again for every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use url::Url;

use super::{Agent, dpop, jose};
use crate::db::Db;
use crate::outbound::{Policy, error_chain};

/// The `solid:oidcIssuer` predicate.
const OIDC_ISSUER: &str = "http://www.w3.org/ns/solid/terms#oidcIssuer";
/// How long a fetch of a WebID or issuer document may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Redirects followed for one document.
const MAX_REDIRECTS: usize = 3;
const MAX_WEBID_BYTES: usize = 64 * 1024;
/// The longest WebID or issuer IRI accepted.
const MAX_IRI: usize = 2048;
/// Issuers one WebID may list.
const MAX_ISSUERS_LISTED: usize = 16;
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
const MAX_JWKS_BYTES: usize = 256 * 1024;
const MAX_KEYS: usize = 32;
/// WebID documents: how long their issuers are trusted without asking again.
const WEBID_TTL: Duration = Duration::from_secs(120);
/// Issuers' key sets.
const ISSUER_TTL: Duration = Duration::from_secs(600);
/// A failed fetch is not tried again for this long.
const FAILURE_TTL: Duration = Duration::from_secs(10);
/// A key set is fetched again for an unknown `kid` (a rotation) at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
const MAX_WEBIDS: usize = 10_000;
const MAX_ISSUERS: usize = 1_000;
/// Times beyond this (year 36812) are refused rather than computed with.
pub const MAX_TIME: i64 = 1 << 40;

/// The verifier's settings (`CSS_OIDC_CLOCK_SKEW`, `CSS_DPOP_MAX_AGE`,
/// `CSS_DPOP_REQUIRE_ATH`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Clock difference allowed with issuers and clients.
    pub skew: Duration,
    /// How old a DPoP proof may be (plus the skew).
    pub proof_max_age: Duration,
    /// Refuse proofs without `ath`.
    pub require_ath: bool,
}

/// Why a request's credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The access token (or the scheme it came with) is unacceptable.
    Token(String),
    /// The DPoP proof is missing or unacceptable.
    Proof(String),
    /// The check could not be made (the replay store is unreachable).
    Unavailable(String),
}

impl Failure {
    pub fn description(&self) -> &str {
        match self {
            Failure::Token(d) | Failure::Proof(d) | Failure::Unavailable(d) => d,
        }
    }
}

/// Text safe inside a quoted-string of `WWW-Authenticate`.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .collect()
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, error) = match &self {
            Failure::Token(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Failure::Proof(_) => (StatusCode::UNAUTHORIZED, "invalid_dpop_proof"),
            Failure::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ""),
        };
        let description = quoted(self.description());
        let mut resp = (status, format!("{description}\n")).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if error.is_empty() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        } else {
            let challenge = format!(
                "DPoP error=\"{error}\", error_description=\"{description}\", algs=\"{}\"",
                jose::ALGORITHMS
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

/// A request's credentials, as presented.
#[derive(Debug)]
pub struct Presented<'a> {
    /// The `Authorization` header.
    pub authorization: &'a str,
    /// Every `DPoP` header.
    pub proofs: Vec<&'a str>,
    pub method: &'a str,
    /// The canonical URL the client addressed.
    pub url: &'a Url,
}

/// Entries that expire, at most `cap` of them.
struct TtlCache<V> {
    map: Mutex<HashMap<String, (Instant, V)>>,
    cap: usize,
}

impl<V: Clone> TtlCache<V> {
    fn new(cap: usize) -> Self {
        TtlCache {
            map: Mutex::new(HashMap::new()),
            cap,
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        let map = self.map.lock().expect("cache lock");
        map.get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: &str, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut map = self.map.lock().expect("cache lock");
        if map.len() >= self.cap && !map.contains_key(key) {
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= self.cap
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(key.to_string(), (now + ttl, value));
    }
}

/// One usable key of an issuer.
#[derive(Debug)]
struct IssuerKey {
    kid: Option<String>,
    alg: Option<String>,
    key: jose::PublicKey,
}

#[derive(Debug)]
struct KeySet {
    keys: Vec<IssuerKey>,
    fetched: Instant,
}

/// Why a document could not be fetched: the whole story for the log,
/// and whether the outbound policy refused it.
#[derive(Debug)]
struct FetchError {
    detail: String,
    policy: bool,
}

impl FetchError {
    /// What a client may be told: that the policy refused it, or nothing
    /// more than "unreachable" (no internal addresses, ports or statuses).
    fn public(self, about: &str) -> String {
        tracing::info!(%about, error = %self.detail, "cannot fetch a Solid-OIDC document");
        if self.policy {
            "its address is one this server may not fetch from (an operator can allow the network with CSS_OUTBOUND_ALLOWED_NETWORKS)".into()
        } else {
            "the request failed (the server log has details)".into()
        }
    }
}

/// A key set's usable signing keys.
fn key_set(set: &Value) -> Option<KeySet> {
    let keys = set
        .get("keys")?
        .as_array()?
        .iter()
        .take(MAX_KEYS)
        .filter_map(Value::as_object)
        .filter(|k| {
            k.get("use")
                .and_then(Value::as_str)
                .is_none_or(|u| u == "sig")
        })
        .filter_map(|k| {
            Some(IssuerKey {
                kid: k.get("kid").and_then(Value::as_str).map(str::to_string),
                alg: k.get("alg").and_then(Value::as_str).map(str::to_string),
                key: jose::public_key(k).ok()?,
            })
        })
        .collect();
    Some(KeySet {
        keys,
        fetched: Instant::now(),
    })
}

/// This server itself: its own issuer's keys are read from the database,
/// and documents under its own base URL (WebID profiles of its pods) are
/// fetched from its own listener, whatever the base URL resolves to.
pub struct Local {
    pub base: Url,
    pub pod_subdomains: bool,
    /// Where this node listens (loopback when it listens on every address).
    pub addr: std::net::SocketAddr,
    pub idp: Arc<crate::idp::Idp>,
}

impl Local {
    /// Whether `url` is one of this server's.
    fn serves(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.port_or_known_default() == self.base.port_or_known_default()
            && match (url.host_str(), self.base.host_str()) {
                (Some(h), Some(b)) => {
                    h == b
                        || (self.pod_subdomains
                            && h.strip_suffix(b).is_some_and(|p| p.ends_with('.')))
                }
                _ => false,
            }
    }
}

/// How long this server's own keys are used from memory.
const LOCAL_KEYS_FOR: Duration = Duration::from_secs(5);

/// Checks Solid-OIDC access tokens and their DPoP proofs.
pub struct Verifier {
    local: Option<Local>,
    local_keys: Mutex<Option<Arc<KeySet>>>,
    /// Requests to this node's own listener.
    local_client: reqwest::Client,
    settings: Settings,
    policy: Policy,
    client: reqwest::Client,
    webids: TtlCache<Result<Arc<Vec<String>>, String>>,
    issuers: TtlCache<Result<Arc<KeySet>, String>>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Issuer URLs name the same issuer with or without a trailing slash.
fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl Verifier {
    pub fn new(settings: Settings, policy: Policy, local: Option<Local>) -> Verifier {
        Verifier {
            local,
            local_keys: Mutex::new(None),
            local_client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(FETCH_TIMEOUT)
                .build()
                .expect("an HTTP client"),
            settings,
            client: policy.client(FETCH_TIMEOUT),
            policy,
            webids: TtlCache::new(MAX_WEBIDS),
            issuers: TtlCache::new(MAX_ISSUERS),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Checks the presented credentials; the agent they prove, or why not.
    pub async fn verify(&self, db: &Db, req: Presented<'_>) -> Result<Agent, Failure> {
        let token = Failure::Token;
        let (scheme, access_token) = req
            .authorization
            .trim()
            .split_once(' ')
            .map(|(s, t)| (s, t.trim()))
            .ok_or_else(|| token("the Authorization header has no credentials".into()))?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Err(token(
                "Solid-OIDC access tokens must be DPoP-bound: send Authorization: DPoP <token> with a DPoP proof"
                    .into(),
            ));
        }
        if !scheme.eq_ignore_ascii_case("dpop") {
            return Err(token(format!(
                "the authorization scheme {scheme:?} is not supported here (use DPoP)"
            )));
        }
        let jws = jose::parse(access_token)
            .map_err(|e| token(format!("the access token is malformed: {e}")))?;
        let alg = jws.alg().map_err(|e| token(format!("access token: {e}")))?;
        if jws
            .header_str("typ")
            .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
        {
            return Err(token("a DPoP proof is not an access token".into()));
        }
        let claim = |name: &str| {
            jws.claim_str(name)
                .ok_or_else(|| token(format!("the access token has no {name} claim")))
        };
        let issuer = claim("iss")?;
        let webid = claim("webid")?;
        let audience_ok = match jws.claims.get("aud") {
            Some(Value::String(a)) => a == "solid",
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some("solid")),
            _ => false,
        };
        if !audience_ok {
            return Err(token(
                "the access token's aud does not include \"solid\"".into(),
            ));
        }
        let exp = jws
            .claim_secs("exp")
            .ok_or_else(|| token("the access token has no numeric exp claim".into()))?;
        let iat = jws
            .claim_secs("iat")
            .ok_or_else(|| token("the access token has no numeric iat claim".into()))?;
        let now = now_secs();
        let skew = self.settings.skew.as_secs() as i64;
        if !(0..MAX_TIME).contains(&exp) || !(0..MAX_TIME).contains(&iat) {
            return Err(token(
                "the access token's exp or iat is out of range".into(),
            ));
        }
        if now > exp + skew {
            return Err(token(format!(
                "the access token expired {} s ago; get a new one",
                now - exp
            )));
        }
        if iat > now + skew {
            return Err(token(
                "the access token was issued in the future (check the clocks)".into(),
            ));
        }
        let jkt = jws
            .claims
            .get("cnf")
            .and_then(|c| c.get("jkt"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                token("the access token is not DPoP-bound (it has no cnf.jkt)".into())
            })?;
        let client_id = jws
            .claim_str("client_id")
            .or_else(|| jws.claim_str("azp"))
            .map(str::to_string);

        let proof = match req.proofs.as_slice() {
            [one] => *one,
            [] => {
                return Err(Failure::Proof(
                    "the request has no DPoP header: a DPoP-bound token needs a fresh proof".into(),
                ));
            }
            _ => {
                return Err(Failure::Proof(
                    "the request has more than one DPoP header".into(),
                ));
            }
        };
        let proof = dpop::check(
            proof,
            &dpop::Expected {
                method: req.method,
                url: req.url,
                access_token: Some(access_token),
                jkt: Some(jkt),
                now,
                max_age: self.settings.proof_max_age.as_secs() as i64,
                skew,
                require_ath: self.settings.require_ath,
            },
        )
        .map_err(Failure::Proof)?;

        let listed = self.issuers_of(webid).await.map_err(token)?;
        if !listed.iter().any(|i| same_issuer(i, issuer)) {
            return Err(token(format!(
                "the issuer {issuer} is not listed as solid:oidcIssuer in the WebID document of {webid}"
            )));
        }
        self.check_signature(db, issuer, &jws, alg)
            .await
            .map_err(token)?;
        self.claim(db, &proof).await?;
        Ok(Agent {
            webid: webid.to_string(),
            client_id,
            issuer: issuer.to_string(),
        })
    }

    /// Records the proof as used, cluster-wide; refuses it if it was.
    pub async fn claim(&self, db: &Db, proof: &dpop::Proof) -> Result<(), Failure> {
        let skew = self.settings.skew.as_secs() as i64;
        let max_age = self.settings.proof_max_age.as_secs() as i64;
        // The proof is refused as too old after iat + max_age + skew by
        // this node's clock; another node's clock may lag by up to the skew,
        // and nodes' clocks may differ by as much as node requests allow.
        let nodes = crate::cluster::signature::WINDOW_MS / 1000;
        let keep_until = (proof.iat + max_age + 2 * skew + nodes.max(skew) + 1) * 1000;
        let key = jose::sha256_b64(&format!("{}\n{}", proof.jkt, proof.jti));
        let now = crate::db::now_ms();
        let fresh = db
            .dpop_proof_claim(&key, keep_until, now)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot record a DPoP proof");
                Failure::Unavailable(
                    "cannot check the DPoP proof against replays right now; try again shortly"
                        .into(),
                )
            })?;
        if fresh {
            Ok(())
        } else {
            Err(Failure::Proof(
                "this DPoP proof was used before (its jti is replayed); make a new proof for every request"
                    .into(),
            ))
        }
    }

    /// The issuers a WebID document lists.
    async fn issuers_of(&self, webid: &str) -> Result<Arc<Vec<String>>, String> {
        if let Some(cached) = self.webids.get(webid) {
            return cached;
        }
        let result = self.fetch_issuers(webid).await.map(Arc::new);
        let ttl = if result.is_ok() {
            WEBID_TTL
        } else {
            FAILURE_TTL
        };
        self.webids.put(webid, result.clone(), ttl);
        result
    }

    async fn fetch_issuers(&self, webid: &str) -> Result<Vec<String>, String> {
        Ok(self
            .webid_values(webid, OIDC_ISSUER)
            .await?
            .into_iter()
            .filter_map(|(iri, value)| iri.then_some(value))
            .collect())
    }

    /// The values of `predicate` about `webid` in its document, fetched
    /// now: `(true, IRI)` or `(false, literal)`; at most 16, each at most
    /// 2 KiB.
    pub async fn webid_values(
        &self,
        webid: &str,
        predicate: &str,
    ) -> Result<Vec<(bool, String)>, String> {
        let unreachable =
            |why: String| format!("the WebID document of {webid} is unreachable: {why}");
        if webid.len() > MAX_IRI {
            return Err("the webid is too long".into());
        }
        let mut doc = Url::parse(webid).map_err(|_| format!("the webid {webid:?} is not a URL"))?;
        doc.set_fragment(None);
        let (url, content_type, bytes) = self
            .fetch(
                doc.as_str(),
                "text/turtle, application/ld+json;q=0.9, application/n-triples;q=0.8",
                MAX_WEBID_BYTES,
            )
            .await
            .map_err(|e| unreachable(e.public(webid)))?;
        let syntax = content_type
            .as_deref()
            .and_then(crate::rdf::input_syntax)
            .unwrap_or(crate::rdf::Syntax::Turtle);
        // Streamed: only the triples asked for are kept, so a document of
        // long IRIs cannot make the parser hold gigabytes.
        let parser = oxigraph::io::RdfParser::from_format(syntax.format())
            .with_base_iri(url.as_str())
            .map_err(|_| format!("the WebID document of {webid} has an unusable URL"))?;
        let mut values = Vec::new();
        for quad in parser.for_slice(&bytes) {
            let quad = quad.map_err(|e| {
                tracing::info!(%webid, error = %e, "a WebID document is not valid RDF");
                format!("the WebID document of {webid} is not valid RDF")
            })?;
            let about = matches!(&quad.subject, oxigraph::model::NamedOrBlankNode::NamedNode(n) if n.as_str() == webid);
            if !about || quad.predicate.as_str() != predicate {
                continue;
            }
            let value = match &quad.object {
                oxigraph::model::Term::NamedNode(n) => (true, n.as_str().to_string()),
                oxigraph::model::Term::Literal(l) => (false, l.value().to_string()),
                _ => continue,
            };
            if values.len() >= MAX_ISSUERS_LISTED || value.1.len() > MAX_IRI {
                return Err(format!(
                    "the WebID document of {webid} has too many or too long values of {predicate}"
                ));
            }
            values.push(value);
        }
        Ok(values)
    }

    /// Verifies the token's signature with one of the issuer's keys.
    async fn check_signature(
        &self,
        db: &Db,
        issuer: &str,
        jws: &jose::Jws<'_>,
        alg: jose::Alg,
    ) -> Result<(), String> {
        let kid = jws.header_str("kid");
        let alg_name = jws.header_str("alg").unwrap_or_default();
        let candidates = |set: &KeySet| -> Vec<jose::PublicKey> {
            set.keys
                .iter()
                .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
                .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg_name))
                .filter(|k| k.key.fits(alg))
                .map(|k| k.key.clone())
                .collect()
        };
        let local = self
            .local
            .as_ref()
            .is_some_and(|l| same_issuer(&l.idp.issuer, issuer));
        let keys = if local {
            let mut keys = candidates(&*self.local_keys(db, false).await?);
            if keys.is_empty() {
                keys = candidates(&*self.local_keys(db, true).await?);
            }
            keys
        } else {
            let set = self.keys(issuer, false).await?;
            let mut keys = candidates(&set);
            if keys.is_empty() && set.fetched.elapsed() >= REFETCH_AFTER {
                // The issuer may have rotated its keys since we fetched them.
                keys = candidates(&*self.keys(issuer, true).await?);
            }
            keys
        };
        if keys.is_empty() {
            return Err(format!(
                "the issuer {issuer} publishes no {alg_name} key{}",
                kid.map(|k| format!(" with kid {k:?}")).unwrap_or_default()
            ));
        }
        let input = jws.signing_input.as_bytes();
        if keys
            .iter()
            .any(|k| k.verify(alg, input, &jws.signature).is_ok())
        {
            Ok(())
        } else {
            Err(format!(
                "the access token's signature does not verify with the keys of {issuer}"
            ))
        }
    }

    async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<KeySet>, String> {
        if !refresh && let Some(cached) = self.issuers.get(issuer) {
            return cached;
        }
        let result = self.fetch_keys(issuer).await.map(Arc::new);
        if refresh
            && result.is_err()
            && let Some(Ok(kept)) = self.issuers.get(issuer)
        {
            // A failed refresh keeps the keys that still work.
            return Ok(kept);
        }
        let ttl = if result.is_ok() {
            ISSUER_TTL
        } else {
            FAILURE_TTL
        };
        self.issuers.put(issuer, result.clone(), ttl);
        result
    }

    async fn fetch_keys(&self, issuer: &str) -> Result<KeySet, String> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (_, _, bytes) = self
            .fetch(&discovery, "application/json", MAX_DISCOVERY_BYTES)
            .await
            .map_err(|e| {
                format!(
                    "cannot read the issuer's discovery document: {}",
                    e.public(issuer)
                )
            })?;
        let config: Value =
            serde_json::from_slice(&bytes).map_err(|_| format!("{discovery} is not JSON"))?;
        match config.get("issuer").and_then(Value::as_str) {
            Some(named) if same_issuer(named, issuer) => {}
            _ => return Err(format!("{discovery} does not name {issuer} as its issuer")),
        }
        let jwks_uri = config
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{discovery} has no jwks_uri"))?;
        let (_, _, bytes) = self
            .fetch(
                jwks_uri,
                "application/jwk-set+json, application/json",
                MAX_JWKS_BYTES,
            )
            .await
            .map_err(|e| format!("cannot read the issuer's keys: {}", e.public(issuer)))?;
        let set: Value =
            serde_json::from_slice(&bytes).map_err(|_| format!("{jwks_uri} is not JSON"))?;
        key_set(&set).ok_or_else(|| format!("{jwks_uri} is not a JWK set"))
    }

    /// This server's own issuer's keys, straight from the database (a
    /// key made by a rotation on any node is seen within seconds, or at
    /// once for an unknown `kid`).
    async fn local_keys(&self, db: &Db, refresh: bool) -> Result<Arc<KeySet>, String> {
        let Some(local) = &self.local else {
            return Err("no local issuer".into());
        };
        if !refresh
            && let Some(set) = self.local_keys.lock().expect("local keys").clone()
            && set.fetched.elapsed() < LOCAL_KEYS_FOR
        {
            return Ok(set);
        }
        let set = local.idp.keys.jwks(db).await?;
        let set = Arc::new(key_set(&set).ok_or("the local key set is unreadable")?);
        *self.local_keys.lock().expect("local keys") = Some(set.clone());
        Ok(set)
    }

    /// Whether a URL may be fetched: the outbound policy, and `https`
    /// unless the host is an address the operator allowed.
    fn allowed(&self, url: &str) -> Result<Url, String> {
        let parsed = self.policy.check_url(url)?;
        if parsed.scheme() == "http" {
            let allowed_address = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => self.policy.allows(ip.into()),
                Some(url::Host::Ipv6(ip)) => self.policy.allows(ip.into()),
                Some(url::Host::Domain(d)) => {
                    d.eq_ignore_ascii_case("localhost") && self.policy.allows([127, 0, 0, 1].into())
                }
                None => false,
            };
            if !allowed_address {
                return Err(format!(
                    "{url} is not https (plain http is accepted only for addresses in CSS_OUTBOUND_ALLOWED_NETWORKS)"
                ));
            }
        }
        Ok(parsed)
    }

    /// A JSON document (a Solid-OIDC Client ID Document), fetched now
    /// with the same limits and outbound policy as WebIDs, and served at
    /// `url` itself (not redirected); the error says what a client may be
    /// told.
    pub async fn fetch_json(&self, url: &str, limit: usize) -> Result<Value, String> {
        let (at, _, bytes) = self
            .fetch(url, "application/ld+json, application/json;q=0.9", limit)
            .await
            .map_err(|e| e.public(url))?;
        // A redirect elsewhere would let another document speak for `url`.
        if Url::parse(url).ok().as_ref() != Some(&at) {
            return Err("it redirects elsewhere; it must be served at its own URL".into());
        }
        serde_json::from_slice(&bytes).map_err(|_| "it is not a JSON document".to_string())
    }

    /// GETs a document with the size, time and redirect limits; returns
    /// the final URL, the content type and the bytes.
    async fn fetch(
        &self,
        url: &str,
        accept: &str,
        limit: usize,
    ) -> Result<(Url, Option<String>, Vec<u8>), FetchError> {
        self.fetch_detailed(url, accept, limit)
            .await
            .map_err(|detail| {
                let policy = detail.contains("CSS_OUTBOUND_ALLOWED_NETWORKS");
                FetchError { detail, policy }
            })
    }

    async fn fetch_detailed(
        &self,
        url: &str,
        accept: &str,
        limit: usize,
    ) -> Result<(Url, Option<String>, Vec<u8>), String> {
        let mut current = match Url::parse(url) {
            Ok(u) if self.local.as_ref().is_some_and(|l| l.serves(&u)) => u,
            _ => self.allowed(url)?,
        };
        for _ in 0..=MAX_REDIRECTS {
            let local = self.local.as_ref().filter(|l| l.serves(&current));
            let request = match local {
                // One of this server's own documents: asked of this node's
                // listener, with the canonical Host, so it is routed to
                // the pod's owner like any request.
                Some(l) => {
                    let path = &current[url::Position::BeforePath..];
                    self.local_client
                        .get(format!("http://{}{path}", l.addr))
                        .header(
                            header::HOST,
                            &current[url::Position::BeforeHost..url::Position::AfterPort],
                        )
                }
                None => self.client.get(current.clone()),
            };
            let resp = request
                .header(header::ACCEPT, accept)
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{current} redirects without a Location"))?;
                let next = current
                    .join(location)
                    .map_err(|_| format!("{current} redirects to an invalid URL"))?;
                current = if self.local.as_ref().is_some_and(|l| l.serves(&next)) {
                    next
                } else {
                    self.allowed(next.as_str())?
                };
                continue;
            }
            if !status.is_success() {
                return Err(format!("{current} answered {status}"));
            }
            if resp.content_length().is_some_and(|n| n > limit as u64) {
                return Err(format!("{current} is larger than {limit} bytes"));
            }
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| error_chain(&e))?;
                if body.len() + chunk.len() > limit {
                    return Err(format!("{current} is larger than {limit} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            return Ok((current, content_type, body));
        }
        Err(format!("{url} redirects more than {MAX_REDIRECTS} times"))
    }
}
