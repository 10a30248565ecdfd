//! Pod routing: a request for a pod this node does not own is forwarded to
//! the owner's internal address through a streaming reverse proxy, signed with
//! this node's key and marked as forwarded (so it is never forwarded again).
//! An owner that refuses connections, or accepts them and does not answer,
//! costs the client about 2 s and a 503 with `Retry-After`, never a hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::app::App;
use crate::cluster::session;
use crate::cluster::signature::{self, Signed};
use crate::db::{NodeRecord, now_ms};

/// Connecting to the owner may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// After the request is sent, the owner's response head must come within this
/// (plus [`UPLOAD_GRACE_PER_MIB`] per MiB of request body, for the owner's own
/// storage work); a long download is not limited.
pub const HEAD_TIMEOUT: Duration = Duration::from_millis(2000);
pub const UPLOAD_GRACE_PER_MIB: Duration = Duration::from_millis(100);

/// How long a forwarded request waits for the response head once it is
/// sent: a base, plus a grace per MiB of request body.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub head: Duration,
    pub per_mib: Duration,
}

impl Patience {
    /// For another node serving the pod itself.
    pub const NODE: Patience = Patience {
        head: HEAD_TIMEOUT,
        per_mib: UPLOAD_GRACE_PER_MIB,
    };
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The HTTP client nodes use to reach each other.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .http1_only()
        .build()
        .expect("a plain HTTP client")
}

fn unreachable(owner: &NodeRecord, pod: &str, why: &str) -> Response {
    tracing::warn!(node = %owner.node_id, pod, error = why, "pod owner unreachable");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "2")],
        format!(
            "node {} (owner of pod {pod}) is unreachable ({why}); try again shortly\n",
            owner.node_id
        ),
    )
        .into_response()
}

pub fn strip_connection_headers(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Who a forwarded request is for and where it came from, as
/// [`outgoing`] computed them.
pub struct Outgoing {
    /// The host the client asked for.
    pub authority: String,
    pub forwarded_for: String,
    pub forwarded_host: String,
    pub forwarded_proto: String,
}

/// Prepares a client's request headers for the next hop (another node, or
/// an edge through its tunnel): drops hop-by-hop headers and anything named
/// `X-Xpod-*` (nothing a client sends may pass for a node's word), then
/// sets `X-Forwarded-For/Host/Proto`.
pub fn outgoing(
    app: &App,
    uri: &Uri,
    headers: &mut HeaderMap,
    client_addr: Option<SocketAddr>,
) -> Outgoing {
    strip_connection_headers(headers);
    let own: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-xpod-"))
        .cloned()
        .collect();
    for k in own {
        headers.remove(k);
    }
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_string();
    let forwarded_for = match (
        headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        client_addr,
    ) {
        (Some(prev), Some(addr)) => format!("{prev}, {}", addr.ip()),
        (Some(prev), None) => prev.to_string(),
        (None, Some(addr)) => addr.ip().to_string(),
        (None, None) => String::new(),
    };
    let forwarded_host = headers
        .get("x-forwarded-host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| authority.clone());
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| app.config.base_url.scheme().to_string());
    for (name, value) in [
        ("x-forwarded-for", &forwarded_for),
        ("x-forwarded-host", &forwarded_host),
        ("x-forwarded-proto", &forwarded_proto),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    Outgoing {
        authority,
        forwarded_for,
        forwarded_host,
        forwarded_proto,
    }
}

/// Forwards the request to `owner` and streams its response back. `Err` is
/// the 503 to send when the owner could not be reached.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    app: &Arc<App>,
    owner: &NodeRecord,
    pod: &str,
    method: Method,
    uri: &Uri,
    mut headers: HeaderMap,
    body: Body,
    client_addr: Option<SocketAddr>,
    credentials: &crate::auth::Credentials,
    patience: Patience,
) -> Result<Response, Response> {
    let Outgoing {
        authority,
        forwarded_for,
        forwarded_host,
        forwarded_proto,
    } = outgoing(app, uri, &mut headers, client_addr);
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(&mut headers, signature::HOP, "1");
    set(&mut headers, signature::FROM, &app.node.id);
    set(&mut headers, signature::TO, &owner.node_id);
    // The owner authorises the caller this node verified.
    let agent = credentials.to_header();
    if !agent.is_empty() {
        set(&mut headers, crate::auth::FORWARDED_AGENT, &agent);
    }
    let url = format!(
        "http://{}{path_and_query}",
        SocketAddr::new(
            owner.internal_ip.parse().unwrap_or([127, 0, 0, 1].into()),
            owner.internal_port
        )
    );
    let has_body = headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING);
    // The client's framing is redone by this hop.
    headers.remove(header::TRANSFER_ENCODING);
    let mut body = Some(body);
    let mut retried = false;
    loop {
        let auth = app.sessions.for_request(&owner.node_id, has_body);
        let (session_id, offer) = match &auth {
            session::Auth::Sign { offer } => ("", offer.as_deref().unwrap_or_default()),
            session::Auth::Session { id, .. } => (id.as_str(), ""),
        };
        let nonce = signature::nonce();
        let signed = Signed {
            method: method.as_str(),
            authority: &authority,
            path_and_query,
            date: now_ms(),
            nonce: &nonce,
            from: &app.node.id,
            to: &owner.node_id,
            hop: "1",
            forwarded_for: &forwarded_for,
            forwarded_host: &forwarded_host,
            forwarded_proto: &forwarded_proto,
            session: session_id,
            offer,
            agent: &agent,
        };
        let sig = match &auth {
            session::Auth::Sign { .. } => signed.sign(&app.node.key),
            session::Auth::Session { key, .. } => session::mac(key, &signed.canonical()),
        };
        let mut headers = headers.clone();
        set(&mut headers, signature::DATE, &signed.date.to_string());
        set(&mut headers, signature::NONCE, &nonce);
        set(&mut headers, signature::SIGNATURE, &sig);
        if !session_id.is_empty() {
            set(&mut headers, session::SESSION, session_id);
        }
        if !offer.is_empty() {
            set(&mut headers, session::OFFER, offer);
        }
        let resp = send(
            app,
            owner,
            pod,
            method.clone(),
            &url,
            headers,
            body.take().filter(|_| has_body),
            patience,
        )
        .await?;
        if let session::Auth::Session { id, .. } = &auth
            && resp.status() == StatusCode::FORBIDDEN
            && resp.headers().contains_key(session::UNKNOWN)
        {
            // The owner restarted or let the session expire: sign instead.
            app.sessions.forget(&owner.node_id, id);
            if !has_body && !retried {
                retried = true;
                continue;
            }
        }
        if !offer.is_empty()
            && let Some(accept) = resp
                .headers()
                .get(session::ACCEPT)
                .and_then(|v| v.to_str().ok())
        {
            app.sessions
                .complete(&app.node.id, &owner.node_id, offer, accept);
        }
        let mut out = Response::builder().status(resp.status());
        if let Some(h) = out.headers_mut() {
            for (k, v) in resp.headers() {
                h.append(k.clone(), v.clone());
            }
            strip_connection_headers(h);
            h.remove(header::TRANSFER_ENCODING);
            h.remove(session::ACCEPT);
            h.remove(session::UNKNOWN);
        }
        return Ok(out
            .body(Body::from_stream(resp.bytes_stream()))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()));
    }
}

/// Sends one request to the owner and waits (bounded) for its response head.
#[allow(clippy::too_many_arguments)]
async fn send(
    app: &App,
    owner: &NodeRecord,
    pod: &str,
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: Option<Body>,
    patience: Patience,
) -> Result<reqwest::Response, Response> {
    let sent = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let mut req = app.proxy.request(method, url).headers(headers);
    if let Some(body) = body {
        let counter = sent.clone();
        let mut done = Some(done_tx);
        let mut inner = body.into_data_stream();
        let stream = async_stream::stream! {
            while let Some(chunk) = inner.next().await {
                if let Ok(c) = &chunk {
                    counter.fetch_add(c.len() as u64, Relaxed);
                }
                yield chunk;
            }
            if let Some(tx) = done.take() {
                let _ = tx.send(());
            }
        };
        req = req.body(reqwest::Body::wrap_stream(stream));
    } else {
        let _ = done_tx.send(());
    }
    let send = req.send();
    tokio::pin!(send);
    let head_deadline = async {
        // The clock starts once the whole request is on its way.
        let _ = done_rx.await;
        let mib = sent.load(Relaxed) / (1024 * 1024);
        tokio::time::sleep(patience.head + patience.per_mib * mib as u32).await;
    };
    let resp = tokio::select! {
        r = &mut send => r,
        _ = head_deadline => {
            let why = format!("no response within {} s", patience.head.as_secs());
            return Err(unreachable(owner, pod, &why));
        }
    };
    match resp {
        Ok(r) => Ok(r),
        Err(e) if e.is_connect() => Err(unreachable(owner, pod, "connection failed")),
        Err(e) => {
            let why = if e.is_timeout() {
                "timed out".to_string()
            } else {
                e.to_string()
            };
            Err(unreachable(owner, pod, &why))
        }
    }
}

/// Why a request that says it comes from a node is refused. A session the
/// receiver does not know is marked, so the sender knows to sign instead.
pub fn refused(why: &Refusal) -> Response {
    let mut resp = (
        StatusCode::FORBIDDEN,
        format!("forwarded request refused: {}\n", why.why),
    )
        .into_response();
    if why.unknown_session {
        resp.headers_mut()
            .insert(session::UNKNOWN, HeaderValue::from_static("1"));
    }
    resp
}

/// A forwarded request that passed [`verify`].
pub struct Verified {
    /// The sending node.
    pub from: String,
    /// The `X-Xpod-Session-Accept` value to answer with, when the sender
    /// offered a session.
    pub accept: Option<String>,
    /// The caller, as the forwarding node verified it.
    pub credentials: crate::auth::Credentials,
}

/// Why [`verify`] refused a request.
#[derive(Debug)]
pub struct Refusal {
    pub why: String,
    pub unknown_session: bool,
}

impl From<String> for Refusal {
    fn from(why: String) -> Self {
        Refusal {
            why,
            unknown_session: false,
        }
    }
}

impl From<&str> for Refusal {
    fn from(why: &str) -> Self {
        why.to_string().into()
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Checks a request that carries the hop marker: it must be signed by a
/// registered node (or MACed under a session that node set up), for this
/// node, recently, and never seen before.
pub async fn verify(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Verified, Refusal> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let (from, to, date, nonce, sig) = (
        get(signature::FROM),
        get(signature::TO),
        get(signature::DATE),
        get(signature::NONCE),
        get(signature::SIGNATURE),
    );
    if from.is_empty() || sig.is_empty() || nonce.is_empty() {
        return Err("it carries the hop marker but no node signature".into());
    }
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("malformed nonce (32 hex digits expected)".into());
    }
    if to != app.node.id {
        return Err(format!("it is meant for node {to:?}, not this one").into());
    }
    let date: i64 = date.parse().map_err(|_| "malformed date")?;
    let now = now_ms();
    if (now - date).abs() > signature::WINDOW_MS {
        return Err("its date is outside the accepted window (check the nodes' clocks)".into());
    }
    let node = app
        .placement
        .node(&app.db, from)
        .await
        .map_err(|e| format!("cannot look up node {from}: {e}"))?
        .ok_or_else(|| format!("node {from:?} is not registered"))?;
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let (session_id, offer) = (get(session::SESSION), get(session::OFFER));
    let signed = Signed {
        method: method.as_str(),
        authority,
        path_and_query: uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        date,
        nonce,
        from,
        to,
        hop: get(signature::HOP),
        forwarded_for: get("x-forwarded-for"),
        forwarded_host: get("x-forwarded-host"),
        forwarded_proto: get("x-forwarded-proto"),
        session: session_id,
        offer,
        agent: get(crate::auth::FORWARDED_AGENT),
    };
    if !session_id.is_empty() {
        let Some(key) = app.sessions.key(session_id, from) else {
            return Err(Refusal {
                why: format!("node {from} has no live session {session_id:?} here"),
                unknown_session: true,
            });
        };
        session::check_mac(&key, &signed.canonical(), sig)?;
    } else {
        let public = node
            .public_key
            .as_deref()
            .ok_or_else(|| format!("node {from} has no registered key"))?;
        if let Err(why) = signed.verify(public, sig) {
            // The key may have changed (node re-keyed): look once more.
            app.placement.forget_node(from);
            return Err(why.into());
        }
    }
    if !app.nonces.first_sighting(nonce, date, now) {
        return Err("replayed (its nonce was seen before)".into());
    }
    let counter = if session_id.is_empty() {
        &app.metrics.node_auth.signed
    } else {
        &app.metrics.node_auth.session
    };
    counter.fetch_add(1, Relaxed);
    let accept = if offer.is_empty() {
        None
    } else {
        Some(app.sessions.accept(from, to, offer)?)
    };
    let credentials = crate::auth::Credentials::from_header(get(crate::auth::FORWARDED_AGENT))?;
    Ok(Verified {
        from: from.to_string(),
        accept,
        credentials,
    })
}
