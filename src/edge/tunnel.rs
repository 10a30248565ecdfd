//! The tunnel: one connection the edge opens to its centre and keeps open,
//! over which the centre sends the requests for the edge's pods.
//!
//! The edge asks `GET /api/v1/tunnel` with `Upgrade: xpod-tunnel/1`, signed
//! with its node key (see [`super::EdgeSigned`], purpose `tunnel`). The
//! centre checks the signature against the key the edge enrolled, answers
//! `101 Switching Protocols`, and from then on the connection carries
//! HTTP/2 with the roles turned round: the centre is the client, the edge
//! the server. So the edge needs no open port and no public address, and
//! many requests share the connection at once, each body streaming both
//! ways under HTTP/2's flow control (a 1 MiB window per stream, 4 MiB per
//! connection: memory stays bounded whatever the body's size).
//!
//! Both ends ping every 5 s and give up on a connection that does not
//! answer within 10 s; a closed connection is noticed at once. The centre
//! then answers requests for the edge's pods with 503 until the edge is
//! back; the edge reconnects with backoff (1 s doubling to 15 s).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Mutex as AsyncMutex;

use crate::app::App;
use crate::auth::Credentials;
use crate::db::NodeRecord;
use crate::http::proxy;

/// The protocol token of the tunnel's upgrade.
pub const PROTOCOL: &str = "xpod-tunnel/1";

/// How often each end pings, and how long it waits for the answer.
const PING_INTERVAL: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control windows: what one stream, and the whole connection,
/// may have in flight unacknowledged.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// After the request was sent, the edge's response head must come within
/// this (plus [`UPLOAD_GRACE_PER_MIB`] per MiB of request body).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const UPLOAD_GRACE_PER_MIB: Duration = Duration::from_millis(200);
/// A centre node that forwards an edge pod's request to the node holding
/// the tunnel waits as long as that node waits for the edge, and a second.
pub const PATIENCE_THROUGH_HOLDER: proxy::Patience = proxy::Patience {
    head: HEAD_TIMEOUT.saturating_add(Duration::from_secs(1)),
    per_mib: UPLOAD_GRACE_PER_MIB,
};
/// A tunnel whose every stream is busy, or an upload the edge stops taking,
/// gets this long before the request is answered with 503.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The edge's reconnection backoff.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Marks a request that came from the centre through the tunnel (on the
/// edge): the centre authenticated the caller, whose identity is in
/// `X-Xpod-Agent`, and set `X-Forwarded-*`.
#[derive(Debug, Clone, Copy)]
pub struct FromCentre;

type Sender = hyper::client::conn::http2::SendRequest<Body>;

/// The tunnels edges keep open to this (centre) node.
#[derive(Default)]
pub struct Tunnels {
    open: std::sync::Mutex<HashMap<String, (u64, Sender)>>,
    next_id: AtomicU64,
    /// Serialises the database record of which node holds a tunnel.
    record: AsyncMutex<()>,
}

impl Tunnels {
    fn get(&self, node: &str) -> Option<Sender> {
        let open = self.open.lock().expect("tunnels");
        let (_, sender) = open.get(node)?;
        (!sender.is_closed()).then(|| sender.clone())
    }

    /// Whether this node holds a live tunnel to `node`.
    pub fn holds(&self, node: &str) -> bool {
        self.get(node).is_some()
    }

    fn insert(&self, node: &str, sender: Sender) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A newer tunnel replaces an older one: the edge reconnected and
        // the old connection is dead or about to be.
        self.open
            .lock()
            .expect("tunnels")
            .insert(node.to_string(), (id, sender));
        id
    }

    /// Forgets tunnel `id` of `node`, unless a newer one replaced it.
    fn remove(&self, node: &str, id: u64) -> bool {
        let mut open = self.open.lock().expect("tunnels");
        if open.get(node).is_some_and(|(held, _)| *held == id) {
            open.remove(node);
            return true;
        }
        false
    }
}

/// `GET /api/v1/tunnel` on a centre: checks the edge's signature, then
/// takes the connection over as the client of an HTTP/2 connection.
pub async fn accept(State(app): State<Arc<App>>, mut req: axum::extract::Request) -> Response {
    if app.config.is_edge() {
        return refuse(
            StatusCode::NOT_FOUND,
            "this node is an edge: edges open their tunnel to a centre node",
        );
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case(PROTOCOL) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "a tunnel is opened with `Upgrade: {PROTOCOL}`; if a reverse proxy stands in front of this node, let it pass Upgrade and Connection headers on this path"
            ),
        );
    }
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let edge = match super::check_signed(
        &app.db,
        &app.nonces,
        "tunnel",
        "GET",
        &authority,
        super::TUNNEL_PATH,
        req.headers(),
        b"",
    )
    .await
    {
        Ok(edge) => edge,
        Err(why) => {
            tracing::warn!(reason = %why, "refused an edge's tunnel");
            return refuse(StatusCode::FORBIDDEN, &format!("tunnel refused: {why}"));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(node = %edge.node_id, error = %e, "the edge's tunnel upgrade failed");
                return;
            }
        };
        run_client(app, edge, upgraded).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// Runs the centre's end of one tunnel until it closes.
async fn run_client(app: Arc<App>, edge: NodeRecord, io: hyper::upgrade::Upgraded) {
    let node = edge.node_id.clone();
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake::<_, Body>(io)
        .await;
    let (sender, connection) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(node = %node, error = %e, "HTTP/2 over the edge's tunnel failed to start");
            return;
        }
    };
    let id = app.tunnels.insert(&node, sender);
    record_holder(&app, &node, true).await;
    tracing::info!(node = %node, version = %edge.version, "edge connected its tunnel");
    app.metrics.edges_connected.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = connection.await {
        tracing::warn!(node = %node, error = %e, "the edge's tunnel failed");
    }
    app.metrics.edges_connected.fetch_sub(1, Ordering::Relaxed);
    if app.tunnels.remove(&node, id) {
        record_holder(&app, &node, false).await;
        tracing::warn!(node = %node, "the edge's tunnel closed; its pods answer 503 until it reconnects");
    }
}

/// Records in the database which centre node holds the edge's tunnel, so
/// that the other centre nodes send its requests here.
async fn record_holder(app: &App, node: &str, held: bool) {
    let _one_at_a_time = app.tunnels.record.lock().await;
    // Only if the record still matches what this node holds now.
    if held != app.tunnels.holds(node) {
        return;
    }
    // The edge may have reconnected to another centre node already: only
    // this node's own record is cleared.
    if !held
        && !matches!(app.db.edge_get(node).await, Ok(Some(e)) if e.tunnel_node.as_deref() == Some(app.node.id.as_str()))
    {
        return;
    }
    let holder = held.then_some(app.node.id.as_str());
    if let Err(e) = app.db.edge_tunnel_set(node, holder).await {
        tracing::warn!(node, error = %e, "cannot record which node holds the edge's tunnel");
    }
}

/// The 503 for a pod whose edge is not connected.
pub fn unavailable(edge: &str, pod: &str, why: &str) -> Response {
    tracing::info!(node = edge, pod, reason = why, "edge pod unavailable");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        format!("pod {pod} is kept on edge node {edge}, which {why}; try again when it is back\n"),
    )
        .into_response()
}

/// Sends a client's request for an edge's pod through the edge's tunnel,
/// if this node holds it, and streams the response back. `Err` is the 503
/// to answer when the tunnel is not here or failed.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    app: &Arc<App>,
    edge: &str,
    pod: &str,
    method: Method,
    uri: &Uri,
    mut headers: HeaderMap,
    body: Body,
    client_addr: Option<std::net::SocketAddr>,
    credentials: &Credentials,
) -> Result<Response, Response> {
    let Some(mut sender) = app.tunnels.get(edge) else {
        return Err(unavailable(edge, pod, "is not connected"));
    };
    let out = proxy::outgoing(app, uri, &mut headers, client_addr);
    if matches!(credentials, Credentials::Mover) {
        headers.insert(super::moving::MOVER, HeaderValue::from_static("1"));
    }
    let agent = credentials.to_header();
    if !agent.is_empty()
        && let Ok(v) = HeaderValue::from_str(&agent)
    {
        headers.insert(crate::auth::FORWARDED_AGENT, v);
    }
    // HTTP/2 frames the body itself. The centre checked the caller's
    // credentials; they stay here, and so do the client's cookies.
    headers.remove(header::TRANSFER_ENCODING);
    for name in [header::AUTHORIZATION, header::COOKIE] {
        headers.remove(name);
    }
    headers.remove("dpop");
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target: Uri = match format!(
        "{}://{}{path_and_query}",
        app.config.base_url.scheme(),
        out.authority
    )
    .parse()
    {
        Ok(u) => u,
        Err(_) => {
            return Ok(
                (StatusCode::BAD_REQUEST, "the request's host is malformed\n").into_response(),
            );
        }
    };
    let sent = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let has_body = headers.contains_key(header::CONTENT_LENGTH) || !body_is_empty(&body);
    let body = if has_body {
        let counter = sent.clone();
        let finished = finished.clone();
        let mut done = Some(done_tx);
        let mut inner = body.into_data_stream();
        Body::from_stream(async_stream::stream! {
            use futures::StreamExt;
            while let Some(chunk) = inner.next().await {
                if let Ok(c) = &chunk {
                    counter.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
                yield chunk;
            }
            finished.store(true, Ordering::Relaxed);
            if let Some(tx) = done.take() {
                let _ = tx.send(());
            }
        })
    } else {
        let _ = done_tx.send(());
        Body::empty()
    };
    let mut request = Request::builder().method(method).uri(target);
    if let Some(h) = request.headers_mut() {
        *h = headers;
    }
    let Ok(request) = request.body(body) else {
        return Ok((StatusCode::BAD_REQUEST, "the request cannot be forwarded\n").into_response());
    };
    match tokio::time::timeout(STALL_TIMEOUT, sender.ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(unavailable(edge, pod, "dropped its tunnel")),
        Err(_) => return Err(unavailable(edge, pod, "has no free stream on its tunnel")),
    }
    let send = sender.send_request(request);
    tokio::pin!(send);
    let head_deadline = async {
        // The clock starts once the whole request is on its way.
        let _ = done_rx.await;
        let mib = sent.load(Ordering::Relaxed) / (1024 * 1024);
        tokio::time::sleep(HEAD_TIMEOUT + UPLOAD_GRACE_PER_MIB * mib as u32).await;
    };
    // An upload the edge stops taking (its flow-control window stays shut)
    // would otherwise never reach the head deadline.
    let stalled = async {
        let mut seen = u64::MAX;
        loop {
            tokio::time::sleep(STALL_TIMEOUT).await;
            if finished.load(Ordering::Relaxed) {
                // Sent whole: the head deadline takes over.
                std::future::pending::<()>().await;
            }
            let now = sent.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
        }
    };
    let resp = tokio::select! {
        r = &mut send => r,
        _ = head_deadline => return Err(unavailable(edge, pod, "did not answer within 10 s")),
        _ = stalled, if has_body => return Err(unavailable(edge, pod, "saw the request's body stop flowing for 30 s")),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(node = edge, error = %e, "request through the edge's tunnel failed");
            return Err(unavailable(edge, pod, "dropped the request"));
        }
    };
    let (mut parts, incoming) = resp.into_parts();
    proxy::strip_connection_headers(&mut parts.headers);
    // A pod sets no cookies on the centre's origin.
    parts.headers.remove(header::SET_COOKIE);
    let mut out = Response::from_parts(parts, Body::new(incoming));
    out.headers_mut().remove(header::TRANSFER_ENCODING);
    Ok(out)
}

/// Sends the centre's own request (not a client's) to an edge through its
/// tunnel, held by this node: how the centre holds, creates and deletes an
/// edge's pods when they move. The answer's status and JSON body; `Err`
/// says what went wrong, to follow "edge node X".
pub async fn call(
    app: &App,
    edge: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(StatusCode, serde_json::Value), String> {
    let Some(mut sender) = app.tunnels.get(edge) else {
        return Err("is not connected to this node".into());
    };
    let authority = super::authority_of(&app.config.base_url);
    let uri: Uri = format!("{}://{authority}{path}", app.config.base_url.scheme())
        .parse()
        .map_err(|e| format!("cannot be asked for {path} ({e})"))?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, &authority);
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let request = request
        .body(body)
        .map_err(|e| format!("cannot be asked ({e})"))?;
    sender
        .ready()
        .await
        .map_err(|_| "dropped its tunnel".to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .map_err(|_| "did not answer within 30 s".to_string())?
        .map_err(|e| format!("dropped the request ({e})"))?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 1024 * 1024)
        .await
        .map_err(|e| format!("sent an unreadable answer ({e})"))?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}

fn body_is_empty(body: &Body) -> bool {
    use axum::body::HttpBody as _;
    body.is_end_stream()
}

/// On an edge: keeps the tunnel to the centre open, reconnecting with
/// backoff, for as long as the process runs.
pub fn spawn_client(app: Arc<App>) {
    let Some(signal) = app.config.signal_endpoint.clone() else {
        return;
    };
    let mut url = signal;
    url.set_path(super::TUNNEL_PATH);
    url.set_query(None);
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .http1_only()
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the tunnel's HTTP client");
                return;
            }
        };
        // The centre knows the edge's key once it has enrolled.
        let enrolled = app.config.root.join(super::signal::ENROLLED_FILE);
        while !enrolled.exists() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut backoff = BACKOFF_FIRST;
        loop {
            let started = std::time::Instant::now();
            match connect(&app, &client, &url).await {
                Ok(upgraded) => {
                    tracing::info!(centre = %url, "tunnel to the centre open");
                    serve_tunnel(&app, upgraded).await;
                    tracing::warn!(centre = %url, "tunnel to the centre closed; reconnecting");
                }
                Err(why) => {
                    tracing::warn!(centre = %url, error = %why, "cannot open the tunnel to the centre; will retry")
                }
            }
            // A tunnel that stayed up a while starts the backoff over.
            if started.elapsed() > Duration::from_secs(60) {
                backoff = BACKOFF_FIRST;
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
}

/// Up to a quarter less than `d`, so that many edges do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(1.0 - rand::thread_rng().gen_range(0.0..0.25))
}

/// Opens the tunnel: the signed upgrade request, answered by 101.
async fn connect(
    app: &App,
    client: &reqwest::Client,
    url: &url::Url,
) -> Result<reqwest::Upgraded, String> {
    let mut headers = super::signed_headers(&app.node.key, &app.node.id, "tunnel", "GET", url, b"");
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    let resp = client
        .get(url.clone())
        .headers(headers)
        .send()
        .await
        .map_err(|e| format!("{e}"))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("the centre answered {status}: {}", text.trim()));
    }
    resp.upgrade().await.map_err(|e| e.to_string())
}

/// Serves the centre's requests on an open tunnel until it closes.
async fn serve_tunnel(app: &Arc<App>, upgraded: reqwest::Upgraded) {
    let router = crate::http::router(app.clone());
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let router = router.clone();
        async move {
            req.extensions_mut().insert(FromCentre);
            // HTTP/2 names the host in `:authority`; the router reads `Host`.
            if !req.headers().contains_key(header::HOST)
                && let Some(host) = req
                    .uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(header::HOST, host);
            }
            let resp = tower::ServiceExt::oneshot(router, req.map(Body::new)).await;
            Ok::<_, std::convert::Infallible>(match resp {
                Ok(r) => r,
                Err(never) => match never {},
            })
        }
    });
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .max_concurrent_streams(256)
        .serve_connection(TokioIo::new(upgraded), service)
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the tunnel to the centre failed");
    }
}
