//! The signal: an edge's enrolment and its heartbeats, both `POST
//! /api/v1/signal` on the centre (public API, stable).
//!
//! - **Enrolment** (no signature headers): the body carries the one-time
//!   token from `xpod nodes create-edge` and the edge's public key. The
//!   centre compares the token's SHA-256 with the stored one in constant
//!   time, then in one transaction clears it and registers the edge's
//!   `nodes` row with the key ([`crate::db::MetadataStore::edge_enrol`]),
//!   so a token works once. An unknown node id never registers itself. A
//!   pod name the centre already gives another node refuses the whole
//!   enrolment (409) and leaves the token unused.
//! - **Heartbeat**: the same body without token and key, signed with the
//!   edge's node key over its exact bytes ([`super::check_signed`], purpose
//!   `"signal"`). The centre records it and registers the pods it lists
//!   that it does not know yet; their data stays on the edge.
//!
//! Both answer with a [`SignalReply`]: the centre's base URL, the edge's
//! pods with their canonical URLs, the pods refused and why, and when to
//! call again.
//!
//! The edge's side is [`spawn`]: enrol once (then `<root>/edge.enrolled`
//! exists and the token is never sent again), then a signed heartbeat every
//! `nextSignalSeconds`, with backoff after failures.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::app::App;
use crate::db::{DbError, now_ms};

/// The largest signal body the centre reads.
pub const MAX_BODY: usize = 1 << 20;

/// The most pods one signal may list.
pub const MAX_PODS: usize = 10_000;

/// The file that records, on the edge, that enrolment succeeded.
pub const ENROLLED_FILE: &str = "edge.enrolled";

/// What an edge sends: an enrolment (with `token` and `publicKey`) or a
/// heartbeat (signed, without them). Unknown fields are ignored, so newer
/// edges can talk to older centres.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalRequest {
    pub node_id: String,
    /// Enrolment only: the one-time token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Enrolment only: the edge's Ed25519 public key, unpadded base64url
    /// of its 32 bytes (as `node::keys::public_key_text` writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    pub version: String,
    /// The names of the pods the edge hosts.
    #[serde(default)]
    pub pods: Vec<String>,
}

// By hand, so that the token never reaches a log.
impl std::fmt::Debug for SignalRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalRequest")
            .field("node_id", &self.node_id)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("public_key", &self.public_key)
            .field("version", &self.version)
            .field("pods", &self.pods)
            .finish()
    }
}

/// The centre's answer to an enrolment or a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalReply {
    pub node_id: String,
    /// The centre's public base URL: the edge's `CSS_BASE_URL` must be it.
    pub base_url: String,
    /// The edge's pods the centre knows, with their canonical URLs.
    pub pods: Vec<SignalPod>,
    /// Pods the edge listed that the centre did not register.
    pub refused: Vec<RefusedPod>,
    /// When to send the next heartbeat.
    pub next_signal_seconds: u64,
    /// Where to open the tunnel (a path on the centre).
    pub tunnel: String,
}

/// A pod of the edge, registered on the centre.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalPod {
    pub name: String,
    pub url: String,
}

/// A pod the centre refused to register for the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedPod {
    pub name: String,
    pub reason: String,
}

/// Why an edge name is refused: 1–63 characters of `a-z`, `0-9` and `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid edge name {name:?}: use 1-63 characters of a-z, 0-9 and '-'"
        ))
    }
}

/// A new enrolment token: 32 random bytes, unpadded base64url.
pub fn new_token() -> String {
    crate::idp::oauth::random_token()
}

/// How a token is stored: SHA-256, hex, as every token and secret is.
pub fn token_hash(token: &str) -> String {
    crate::idp::accounts::hash(token)
}

/// The centre's signal URL, under its base URL.
pub fn endpoint(base_url: &url::Url) -> url::Url {
    base_url
        .join(super::SIGNAL_PATH.trim_start_matches('/'))
        .expect("a valid path")
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// `POST /api/v1/signal` on the centre: an edge's enrolment or heartbeat.
pub async fn receive(State(app): State<Arc<App>>, req: Request) -> Response {
    if let Some(centre) = &app.config.signal_endpoint {
        return refuse(
            StatusCode::NOT_FOUND,
            &format!("this node is an edge and takes no signals; its centre does, at {centre}"),
        );
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "a signal's body is at most 1 MiB (or could not be read)",
            );
        }
    };
    let signal: SignalRequest = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!(
                    "invalid signal body: {e}; expected JSON {{\"nodeId\", \"version\", \"pods\"}} (and \"token\", \"publicKey\" to enrol)"
                ),
            );
        }
    };
    if signal.pods.len() > MAX_PODS {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("a signal lists at most {MAX_PODS} pods"),
        );
    }
    if signal.version.is_empty() || signal.version.len() > 64 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "\"version\" is the edge's xpod version: 1 to 64 characters",
        );
    }
    if parts.headers.contains_key(super::EDGE) {
        heartbeat(
            &app,
            &parts.headers,
            parts.uri.path(),
            authority(&parts),
            &body,
            signal,
        )
        .await
    } else {
        enrol(&app, signal).await
    }
}

/// The authority the edge addressed (and signed): `Host`, or the URI's
/// for HTTP/2.
fn authority(parts: &axum::http::request::Parts) -> String {
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

async fn heartbeat(
    app: &App,
    headers: &HeaderMap,
    path: &str,
    authority: String,
    body: &[u8],
    signal: SignalRequest,
) -> Response {
    let checked = super::check_signed(
        &app.db,
        &app.nonces,
        "signal",
        "POST",
        &authority,
        path,
        headers,
        body,
    )
    .await;
    let node = match checked {
        Ok(node) => node,
        Err(why) => {
            tracing::warn!(reason = %why, "refused an edge heartbeat");
            return refuse(StatusCode::FORBIDDEN, &why);
        }
    };
    if signal.node_id != node.node_id {
        let why = format!(
            "the heartbeat names node {:?} but is signed by node {}",
            signal.node_id, node.node_id
        );
        tracing::warn!(reason = %why, "refused an edge heartbeat");
        return refuse(StatusCode::FORBIDDEN, &why);
    }
    record(app, &node.node_id, &signal).await
}

async fn enrol(app: &App, signal: SignalRequest) -> Response {
    let id = &signal.node_id;
    let (Some(token), Some(public_key)) = (&signal.token, &signal.public_key) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "an unsigned signal is an enrolment and needs \"token\" and \"publicKey\"; heartbeats are signed with the edge's node key",
        );
    };
    if let Err(why) = crate::cluster::signature::verifying_key(public_key) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "invalid public key ({why}): expected the unpadded base64url of a 32-byte Ed25519 public key"
            ),
        );
    }
    let forbidden = |why: String| {
        tracing::warn!(node = %id, reason = %why, "refused an edge enrolment");
        refuse(StatusCode::FORBIDDEN, &why)
    };
    let edge = match app.db.edge_get(id).await {
        Ok(Some(edge)) => edge,
        Ok(None) => {
            return forbidden(format!(
                "unknown node id {id:?}: an unknown node id never registers itself; create the edge on the centre with `xpod nodes create-edge <name>` and use the node id and token it prints"
            ));
        }
        Err(e) => return crate::http::admin::unavailable(e),
    };
    let used = || {
        forbidden(format!(
            "the enrolment token of edge node {id} was used already; create a new edge on the centre with `xpod nodes create-edge <name>` and set the node id and token it prints"
        ))
    };
    let Some(stored) = edge.token_hash else {
        return used();
    };
    let presented = token_hash(token);
    if !crate::idp::accounts::subtle_eq(presented.as_bytes(), stored.as_bytes()) {
        return forbidden(format!(
            "wrong enrolment token for edge node {id}; set CSS_NODE_TOKEN to the token `xpod nodes create-edge` printed with this node id"
        ));
    }
    // A clash refuses the whole enrolment and leaves the token unused, so
    // the edge enrols once its pods are renamed.
    let mut clashes = Vec::new();
    for name in signal
        .pods
        .iter()
        .filter(|p| crate::pod::validate_name(p).is_ok())
    {
        match app.db.pod_get(name).await {
            Ok(Some(pod)) if pod.node_id != *id => clashes.push((name.clone(), pod.node_id)),
            Ok(_) => {}
            Err(e) => return crate::http::admin::unavailable(e),
        }
    }
    if !clashes.is_empty() {
        let list: Vec<String> = clashes
            .iter()
            .map(|(pod, node)| format!("{pod} (on node {node})"))
            .collect();
        let message = format!(
            "enrolment refused: the centre already has pods named {}; rename them on the edge ({}), then it enrols with the same token at its next attempt",
            list.join(", "),
            clashes
                .iter()
                .map(|(pod, _)| format!("`xpod pods rename {pod} <new name>`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracing::warn!(node = %id, clashes = %list.join(", "), "refused an edge enrolment: pod names taken");
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": message,
                "clashes": clashes
                    .iter()
                    .map(|(pod, node)| serde_json::json!({ "name": pod, "node": node }))
                    .collect::<Vec<_>>(),
            })),
        )
            .into_response();
    }
    match app
        .db
        .edge_enrol(id, &stored, public_key, &signal.version, now_ms())
        .await
    {
        Ok(true) => {}
        Ok(false) => return used(),
        Err(DbError::Conflict(why)) => return forbidden(why),
        Err(e) => return crate::http::admin::unavailable(e),
    }
    tracing::info!(node = %id, name = %edge.name, version = %signal.version, "edge enrolled");
    record(app, id, &signal).await
}

/// Records a heartbeat (also the one an enrolment is) and answers it.
async fn record(app: &App, node: &str, signal: &SignalRequest) -> Response {
    let mut refused = Vec::new();
    let mut listed = Vec::new();
    for name in &signal.pods {
        match crate::pod::validate_name(name) {
            Ok(()) => listed.push((
                name.clone(),
                crate::pod::base_url(&app.config, name).to_string(),
            )),
            Err(why) => refused.push((name.clone(), why)),
        }
    }
    match app
        .db
        .edge_signal(node, &signal.version, &listed, now_ms())
        .await
    {
        Ok(more) => refused.extend(more),
        Err(DbError::NotFound) => {
            return refuse(
                StatusCode::FORBIDDEN,
                &format!("edge node {node} is not enrolled"),
            );
        }
        Err(e) => return crate::http::admin::unavailable(e),
    }
    let registered = match app.db.pods_of_node(node).await {
        Ok(pods) => pods,
        Err(e) => return crate::http::admin::unavailable(e),
    };
    for (name, reason) in &refused {
        tracing::info!(node, pod = %name, %reason, "refused to register an edge's pod");
    }
    let unlisted: Vec<&str> = registered
        .iter()
        .map(|p| p.pod_id.as_str())
        .filter(|p| !signal.pods.iter().any(|l| l == p))
        .collect();
    if !unlisted.is_empty() {
        tracing::info!(
            node,
            pods = %unlisted.join(", "),
            "the edge no longer lists these pods, which are moving; they stay registered to it until the move ends"
        );
    }
    let interval = app.config.edge_signal_interval;
    let reply = SignalReply {
        node_id: node.to_string(),
        base_url: app.config.base_url.to_string(),
        pods: registered
            .iter()
            .map(|p| SignalPod {
                name: p.pod_id.clone(),
                url: crate::pod::base_url(&app.config, &p.pod_id).to_string(),
            })
            .collect(),
        refused: refused
            .into_iter()
            .map(|(name, reason)| RefusedPod { name, reason })
            .collect(),
        next_signal_seconds: interval
            .as_secs()
            .saturating_add(u64::from(interval.subsec_nanos() > 0))
            .clamp(1, 300),
        tunnel: super::TUNNEL_PATH.to_string(),
    };
    Json(reply).into_response()
}

/// Starts the edge's signal loop (on an edge: `app.config.is_edge()`).
/// The receiver sees every reply the centre sends.
pub fn spawn(app: Arc<App>) -> watch::Receiver<Option<SignalReply>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(run(app, tx));
    rx
}

/// Failures wait 1 s, doubling to 30 s.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// A failure that repeats is logged again after this long.
const RELOG: Duration = Duration::from_secs(300);

async fn run(app: Arc<App>, replies: watch::Sender<Option<SignalReply>>) {
    let Some(endpoint) = app.config.signal_endpoint.clone() else {
        return;
    };
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make the HTTP client for the signal; this edge sends no heartbeats");
            return;
        }
    };
    let edge = Edge {
        app: app.clone(),
        client,
        endpoint,
    };
    let marker = app.config.root.join(ENROLLED_FILE);
    let mut enrolled = marker.exists();
    tracing::info!(centre = %edge.endpoint, enrolled, "this node is an edge; signalling its centre");
    let mut retry = FIRST_RETRY;
    let mut last_failure: Option<(String, std::time::Instant)> = None;
    let mut last_reply: Option<SignalReply> = None;
    loop {
        let outcome = if enrolled {
            edge.heartbeat().await
        } else {
            edge.enrol().await
        };
        match outcome {
            Ok(reply) => {
                if !enrolled {
                    enrolled = true;
                    let note = format!("enrolled at {} with {}\n", now_ms(), edge.endpoint);
                    if let Err(e) = crate::fsutil::create_once(&marker, note.as_bytes(), 0o644) {
                        tracing::error!(path = %marker.display(), error = %e, "enrolled, but cannot record it; after a restart the edge will find its token used and carry on with heartbeats");
                    }
                    tracing::info!(centre = %edge.endpoint, "enrolled with the centre");
                }
                if last_failure.take().is_some() {
                    tracing::info!(centre = %edge.endpoint, "the centre accepts heartbeats again");
                }
                edge.check(&reply, last_reply.as_ref());
                retry = FIRST_RETRY;
                let wait = Duration::from_secs(reply.next_signal_seconds.clamp(1, 300));
                last_reply = Some(reply.clone());
                replies.send_replace(Some(reply));
                tokio::time::sleep(wait).await;
            }
            Err(failure) => {
                let repeated = last_failure
                    .as_ref()
                    .is_some_and(|(line, at)| *line == failure.line && at.elapsed() < RELOG);
                if !repeated {
                    tracing::error!(centre = %edge.endpoint, "{}", failure.line);
                    last_failure = Some((failure.line, std::time::Instant::now()));
                }
                let wait = if failure.slow { LAST_RETRY } else { retry };
                retry = (retry * 2).min(LAST_RETRY);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// On an edge: asks the centre for a new pod's name before the pod is made
/// here. The centre allocates pod names, so that they are unique across
/// its nodes and edges: a heartbeat that lists the new name registers it,
/// or comes back with it refused. `Err` is the status to answer and why.
pub async fn claim(app: &Arc<App>, pod: &str) -> Result<(), (StatusCode, String)> {
    let Some(endpoint) = app.config.signal_endpoint.clone() else {
        return Ok(());
    };
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why);
    if !app.config.root.join(ENROLLED_FILE).exists() {
        return Err(unavailable(
            "this edge has not enrolled with its centre yet, and the centre allocates pod names: see the edge's log (CSS_NODE_TOKEN), then try again".into(),
        ));
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| unavailable(format!("cannot make an HTTP client: {e}")))?;
    let edge = Edge {
        app: app.clone(),
        client,
        endpoint,
    };
    let mut pods = edge.pods().await.map_err(|f| unavailable(f.line))?;
    if !pods.iter().any(|p| p == pod) {
        pods.push(pod.to_string());
    }
    let reply = edge.heartbeat_with(pods).await.map_err(|f| {
        unavailable(format!(
            "the centre allocates pod names, and asking it failed ({}); try again when it can be reached",
            f.line
        ))
    })?;
    if let Some(refused) = reply.refused.iter().find(|r| r.name == pod) {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "the centre refused the pod name {pod} ({}): choose another name",
                refused.reason
            ),
        ));
    }
    Ok(())
}

/// One failed exchange: the line to log, and whether to wait long.
struct Failure {
    line: String,
    slow: bool,
}

impl Failure {
    fn new(line: impl Into<String>) -> Self {
        Failure {
            line: line.into(),
            slow: false,
        }
    }
}

/// The edge's side of the exchange.
struct Edge {
    app: Arc<App>,
    client: reqwest::Client,
    endpoint: url::Url,
}

impl Edge {
    /// The names of the pods this edge owns.
    async fn pods(&self) -> Result<Vec<String>, Failure> {
        self.app
            .db
            .pods_of_node(&self.app.node.id)
            .await
            .map(|pods| pods.into_iter().map(|p| p.pod_id).collect())
            .map_err(|e| Failure::new(format!("cannot list this edge's pods: {e}")))
    }

    async fn enrol(&self) -> Result<SignalReply, Failure> {
        let Some(token) = &self.app.config.node_token else {
            return Err(Failure {
                line: "this edge has not enrolled with its centre yet and CSS_NODE_TOKEN is not set: set it (or CSS_NODE_TOKEN_FILE) to the token `xpod nodes create-edge` printed on the centre".into(),
                slow: true,
            });
        };
        let body = SignalRequest {
            node_id: self.app.node.id.clone(),
            token: Some(token.expose().to_string()),
            public_key: Some(crate::node::keys::public_key_text(&self.app.node.key)),
            version: env!("CARGO_PKG_VERSION").into(),
            pods: self.pods().await?,
        };
        let body = serde_json::to_vec(&body).expect("a signal serialises");
        match self.send(body, HeaderMap::new()).await {
            Ok(reply) => Ok(reply),
            // Refused: perhaps an earlier enrolment went through and only
            // its answer was lost. Then the centre has this edge's key and
            // takes a signed heartbeat.
            Err((Some(StatusCode::FORBIDDEN), line)) => match self.heartbeat().await {
                Ok(reply) => Ok(reply),
                Err(_) => Err(Failure {
                    line: format!("the centre refused this edge's enrolment: {line}"),
                    slow: true,
                }),
            },
            Err((Some(StatusCode::CONFLICT), line)) => Err(Failure {
                line: format!("the centre refused this edge's enrolment: {line}"),
                slow: true,
            }),
            Err((_, line)) => Err(Failure::new(format!(
                "cannot enrol with the centre: {line}"
            ))),
        }
    }

    async fn heartbeat(&self) -> Result<SignalReply, Failure> {
        let pods = self.pods().await?;
        self.heartbeat_with(pods).await
    }

    /// A heartbeat that lists `pods`.
    async fn heartbeat_with(&self, pods: Vec<String>) -> Result<SignalReply, Failure> {
        let node = &self.app.node.id;
        let body = SignalRequest {
            node_id: node.clone(),
            token: None,
            public_key: None,
            version: env!("CARGO_PKG_VERSION").into(),
            pods,
        };
        let body = serde_json::to_vec(&body).expect("a signal serialises");
        let headers = super::signed_headers(
            &self.app.node.key,
            node,
            "signal",
            "POST",
            &self.endpoint,
            &body,
        );
        self.send(body, headers).await.map_err(|(status, line)| {
            Failure::new(match status {
                Some(status) => {
                    format!("the centre refused this edge's heartbeat ({status}): {line}")
                }
                None => format!("cannot send a heartbeat to the centre: {line}"),
            })
        })
    }

    /// POSTs a signal; a failure is the status (if one came) and a line.
    async fn send(
        &self,
        body: Vec<u8>,
        headers: HeaderMap,
    ) -> Result<SignalReply, (Option<StatusCode>, String)> {
        let resp = self
            .client
            .post(self.endpoint.clone())
            .headers(headers)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| (None, crate::outbound::error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let why = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{status}"));
            return Err((Some(status), why));
        }
        resp.json::<SignalReply>().await.map_err(|e| {
            (
                Some(status),
                format!("the centre's answer is not a signal reply: {e}"),
            )
        })
    }

    /// Logs what in a reply needs the operator, when it changed.
    fn check(&self, reply: &SignalReply, last: Option<&SignalReply>) {
        let config = &self.app.config;
        let changed = |f: fn(&SignalReply) -> String| last.is_none_or(|l| f(l) != f(reply));
        if reply.base_url != config.base_url.as_str() && changed(|r| r.base_url.clone()) {
            tracing::error!(
                centre_base_url = %reply.base_url,
                css_base_url = %config.base_url,
                "this edge's CSS_BASE_URL is not its centre's base URL: set CSS_BASE_URL={} so that its pods have the canonical URLs the centre gives them",
                reply.base_url
            );
        }
        if reply.node_id != self.app.node.id && changed(|r| r.node_id.clone()) {
            tracing::error!(
                answered_for = %reply.node_id,
                node = %self.app.node.id,
                "the centre answered for another node id"
            );
        }
        if changed(|r| format!("{:?}", r.refused)) {
            for pod in &reply.refused {
                tracing::warn!(pod = %pod.name, reason = %pod.reason, "the centre refused to register this pod; unless it is moving between this edge and the centre, rename it on this edge (`xpod pods rename`)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_names_and_tokens() {
        for ok in ["home-box", "a", "0", &"x".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Home", "home_box", "home.box", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        let token = new_token();
        assert_eq!(token.len(), 43);
        assert_ne!(token, new_token());
        assert_eq!(token_hash(&token).len(), 64);
        let base = url::Url::parse("https://pods.example/").unwrap();
        assert_eq!(
            endpoint(&base).as_str(),
            "https://pods.example/api/v1/signal"
        );
    }

    #[test]
    fn a_signal_request_never_shows_its_token() {
        let req = SignalRequest {
            node_id: "e".into(),
            token: Some("very-secret-token".into()),
            public_key: None,
            version: "1".into(),
            pods: vec![],
        };
        assert!(!format!("{req:?}").contains("very-secret"));
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["nodeId"], "e");
        assert!(json.get("publicKey").is_none());
    }
}
