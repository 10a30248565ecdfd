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
use crate::cluster::signature::{self, Signed};
use crate::db::{NodeRecord, now_ms};

/// Connecting to the owner may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// After the request is sent, the owner's response head must come within this
/// (plus [`UPLOAD_GRACE_PER_MIB`] per MiB of request body, for the owner's own
/// storage work); a long download is not limited.
pub const HEAD_TIMEOUT: Duration = Duration::from_millis(2000);
pub const UPLOAD_GRACE_PER_MIB: Duration = Duration::from_millis(100);

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

fn strip_connection_headers(headers: &mut HeaderMap) {
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
) -> Result<Response, Response> {
    strip_connection_headers(&mut headers);
    // Nothing a client sends may pass for a node's word.
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
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
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
    };
    let sig = signed.sign(&app.node.key);
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("x-forwarded-for", &forwarded_for);
    set("x-forwarded-host", &forwarded_host);
    set("x-forwarded-proto", &forwarded_proto);
    set(signature::HOP, "1");
    set(signature::FROM, &app.node.id);
    set(signature::TO, &owner.node_id);
    set(signature::DATE, &signed.date.to_string());
    set(signature::NONCE, &nonce);
    set(signature::SIGNATURE, &sig);

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
    let sent = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let mut req = app.proxy.request(method, &url).headers(headers);
    if has_body {
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
        tokio::time::sleep(HEAD_TIMEOUT + UPLOAD_GRACE_PER_MIB * mib as u32).await;
    };
    let resp = tokio::select! {
        r = &mut send => r,
        _ = head_deadline => return Err(unreachable(owner, pod, "no response within 2 s")),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Err(unreachable(owner, pod, "connection failed")),
        Err(e) => {
            let why = if e.is_timeout() {
                "timed out".to_string()
            } else {
                e.to_string()
            };
            return Err(unreachable(owner, pod, &why));
        }
    };
    let mut out = Response::builder().status(resp.status());
    if let Some(h) = out.headers_mut() {
        for (k, v) in resp.headers() {
            h.append(k.clone(), v.clone());
        }
        strip_connection_headers(h);
        h.remove(header::TRANSFER_ENCODING);
    }
    Ok(out
        .body(Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()))
}

/// Why a request that says it comes from a node is refused.
pub fn refused(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        format!("forwarded request refused: {why}\n"),
    )
        .into_response()
}

/// Checks a request that carries the hop marker: it must be signed by a
/// registered node, for this node, recently, and never seen before.
pub async fn verify(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<String, String> {
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
    if to != app.node.id {
        return Err(format!("it is meant for node {to:?}, not this one"));
    }
    let date: i64 = date.parse().map_err(|_| "malformed date".to_string())?;
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
    let public = node
        .public_key
        .as_deref()
        .ok_or_else(|| format!("node {from} has no registered key"))?;
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
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
    };
    if let Err(why) = signed.verify(public, sig) {
        // The key may have changed (node re-keyed): look once more.
        app.placement.forget_node(from);
        return Err(why.to_string());
    }
    if !app.nonces.first_sighting(nonce, date, now) {
        return Err("replayed (its nonce was seen before)".into());
    }
    Ok(from.to_string())
}
