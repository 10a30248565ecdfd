//! The HTTP front: one router, the served-by header on every response, and
//! the server loop with graceful shutdown.

pub mod account;
pub mod account_html;
pub mod admin;
pub mod auth;
pub mod cors;
pub mod forwarded;
pub mod interaction;
pub mod migrate;
pub mod oidc;
pub mod pages;
pub mod proxy;
pub mod routing;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::{App, StartupError};

/// Every response names the node that executed it.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-xpod-served-by");

/// The path of the public health check.
pub const HEALTH_PATH: &str = "/.cluster/health";

pub fn router(app: Arc<App>) -> Router {
    let served_by = HeaderValue::from_str(&app.node.id).expect("node ids are header-safe");
    Router::new()
        .route(HEALTH_PATH, get(health))
        .route(crate::edge::TUNNEL_PATH, get(crate::edge::tunnel::accept))
        .route("/.cluster/metrics", get(admin::metrics))
        .route("/.cluster/nodes", get(admin::list_nodes))
        .route(
            "/.cluster/nodes/{id}",
            get(admin::get_node).delete(admin::remove_node),
        )
        .route("/.cluster/nodes/{id}/{action}", post(admin::move_node_pods))
        .route("/.cluster/pods/{pod}", get(admin::get_pod))
        .route("/.cluster/pods/{pod}/migrate", post(migrate::start))
        .route(
            "/.cluster/pods/{pod}/migration",
            get(migrate::status).delete(migrate::cancel),
        )
        .route("/.cluster/blobs/{hash}", get(migrate::blob))
        // Moving pods between an edge and the centre: the centre's API,
        // and what the centre asks of an edge through the tunnel.
        .route(
            "/.cluster/pods/{pod}/move",
            post(crate::edge::moving::start),
        )
        .route(
            "/.cluster/pods/{pod}/move/{action}",
            post(crate::edge::moving::end),
        )
        .route(
            "/.cluster/pods/{pod}/rename",
            post(crate::edge::moving::rename_start),
        )
        .route(
            "/.cluster/pods/{pod}/rename/{action}",
            post(crate::edge::moving::rename_end),
        )
        .route(
            "/.cluster/edge/pods/{pod}",
            axum::routing::put(crate::edge::moving::edge_pod).delete(crate::edge::moving::edge_pod),
        )
        .route(
            "/.cluster/edge/pods/{pod}/hold",
            axum::routing::put(crate::edge::moving::edge_hold)
                .delete(crate::edge::moving::edge_hold),
        )
        .route("/.cluster/idp/rotate-keys", post(admin::rotate_keys))
        .route(
            "/.cluster/edges",
            post(admin::create_edge).get(admin::list_edges),
        )
        .route(crate::edge::SIGNAL_PATH, post(crate::edge::signal::receive))
        .route(
            "/.cluster/pods",
            post(admin::create_pod).get(admin::list_pods),
        )
        .route(
            "/.notifications/{kind}/",
            get(crate::notify::http::describe).post(crate::notify::http::subscribe),
        )
        .route(
            "/.notifications/{kind}/{id}",
            get(crate::notify::ws::connect).delete(crate::notify::http::unsubscribe),
        )
        .route(auth::WHOAMI_PATH, get(auth::whoami))
        .route("/.account/", get(account::index))
        .route("/.account/login/", get(account::logins))
        .route(
            "/.account/login/password/",
            get(account::login).post(account::login),
        )
        .route(
            "/.account/account/",
            get(account::create_account).post(account::create_account),
        )
        .route(
            "/.account/account/{id}/login/password/",
            get(account::account_logins).post(account::account_logins),
        )
        .route(
            "/.account/account/{id}/{section}/",
            get(account::account_section).post(account::account_section),
        )
        .route(
            "/.account/account/{id}/login/password/{item}/",
            axum::routing::delete(account::delete_login),
        )
        .route(
            "/.account/account/{id}/{section}/{item}/",
            axum::routing::delete(account::delete_item),
        )
        .route(
            "/.account/login/password/register/",
            get(account::register).post(account::register),
        )
        .route(
            "/.account/oidc/{action}/",
            get(interaction::action).post(interaction::action),
        )
        .route("/.well-known/openid-configuration", get(oidc::discovery))
        .route(oidc::JWKS_PATH, get(oidc::jwks))
        .route(oidc::TOKEN_PATH, post(oidc::token))
        .route(oidc::AUTH_PATH, get(oidc::authorize).post(oidc::authorize))
        .route("/.oidc/auth/{uid}", get(oidc::resume))
        .route(oidc::REGISTRATION_PATH, post(oidc::register))
        .route("/.oidc/reg/{client_id}", get(oidc::registration))
        .fallback(routing::route)
        // Pages for browsers over the account API.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            account_html::html,
        ))
        // An edge shares its centre's base URL but not its accounts.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            no_accounts_on_edges,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        // Inside CORS, so a refusal carries the CORS headers a browser
        // needs to show it.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(cors::cors))
        // A proxied response keeps the owner's name.
        .layer(SetResponseHeaderLayer::if_not_present(SERVED_BY, served_by))
        .layer(axum::middleware::from_fn_with_state(app.clone(), count))
        // First: who the client is and which host it asked for.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            forwarded::forwarded,
        ))
        .with_state(app)
}

/// On an edge: accounts, logins and the identity provider live on the
/// centre, whose base URL the edge shares. Answering them here would issue
/// tokens in the centre's name with the edge's keys; LAN clients are sent
/// to the centre's address instead.
async fn no_accounts_on_edges(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let identity = path.starts_with("/.account/")
        || path.starts_with("/.oidc/")
        || path == "/.well-known/openid-configuration";
    match &app.config.signal_endpoint {
        Some(centre) if identity => (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this is an edge node: accounts and logins are on its centre ({}); log in from outside the home network, or through a second name of the centre that the home network's DNS leaves alone\n",
                centre.host_str().unwrap_or("?")
            ),
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

/// Counts every request and times it to the response head.
async fn count(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let resp = next.run(req).await;
    app.metrics
        .requests
        .record(method.as_str(), resp.status().as_u16(), started.elapsed());
    resp
}

/// Public and minimal: says whether this node can serve, nothing more.
async fn health(State(app): State<Arc<App>>) -> Response {
    match app.db.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "5")],
                axum::Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// Binds the listener and serves until SIGTERM or SIGINT, then lets in-flight
/// requests finish.
pub async fn serve(app: Arc<App>) -> Result<(), StartupError> {
    crate::ldp::access::give_old_pods_an_acl(&app).await?;
    let addr = std::net::SocketAddr::new(app.config.host, app.config.port);
    let tls = app.config.https.as_ref().map(tls::acceptor).transpose()?;
    let listener = bind(addr, "CSS_PORT (or CSS_HOST)").await?;
    // With HTTPS the command line and the other nodes use plain HTTP on the
    // internal port (on loopback only when this node runs alone).
    let internal = match app.config.internal_listen_addr() {
        Some(internal) => {
            let listener = bind(internal, "CSS_INTERNAL_PORT").await?;
            tracing::info!(address = %internal, "listening for the command line and other nodes (plain HTTP)");
            Some(listener)
        }
        _ => None,
    };
    tracing::info!(address = %addr, base_url = %app.config.base_url, tls = tls.is_some(), "listening");
    crate::systemd::notify(&format!(
        "READY=1\nSTATUS=serving {} on {addr}",
        app.config.base_url
    ));
    // Spent DPoP proofs, expired sessions, login counts and retired keys.
    {
        let db = app.db.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let now = crate::db::now_ms();
                if let Err(e) = db.dpop_proofs_prune(now).await {
                    tracing::warn!(error = %e, "cannot prune spent DPoP proofs");
                }
                if let Err(e) = db.records_prune(now).await {
                    tracing::warn!(error = %e, "cannot prune expired identity records");
                }
            }
        });
    }
    crate::cluster::follower::spawn(
        app.db.clone(),
        crate::cluster::follower::placement_name(&app.node.id),
        {
            // The placement cache forgets pods whose owner changed, and the
            // notification hub hears of every change.
            let app = app.clone();
            Box::new(move |events: &[crate::db::EventRecord]| {
                for e in events {
                    match e.kind.as_str() {
                        "owner" => {
                            app.placement.forget_pod(&e.pod_id);
                            app.access.forget_pod(&e.pod_id);
                        }
                        // A migration may be waiting for this node to drive it.
                        "migration" => {
                            app.migrations.observe(e);
                            app.migrations.wake();
                        }
                        // A changed ACL or group document counts at once.
                        _ => app.access.forget(&e.pod_id, &e.path),
                    }
                }
                // WebSocket channels connected here hear of every change.
                app.notify.dispatch(events, |pod| {
                    crate::pod::base_url(&app.config, pod).to_string()
                });
            })
        },
    );
    crate::notify::webhook::spawn(app.clone());
    if app.config.is_edge() {
        drop(crate::edge::signal::spawn(app.clone()));
        crate::edge::tunnel::spawn_client(app.clone());
    }
    crate::cluster::migration::spawn(app.clone());
    crate::cluster::registry::spawn_heartbeat(
        app.db.clone(),
        app.node.id.clone(),
        app.config.heartbeat_interval,
    );
    if app.config.auto_reassign {
        crate::cluster::registry::spawn_auto_reassign(
            app.db.clone(),
            app.node.id.clone(),
            app.config.node_unreachable_after,
            app.config.heartbeat_interval,
        );
    }
    crate::blob::gc::spawn(
        app.db.clone(),
        app.blobs.clone(),
        app.config.blob_gc_grace,
        app.config.blob_gc_interval,
    );
    // One signal stops every listener; each lets its requests finish.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let service =
        || router(app.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let failed = |e: std::io::Error| StartupError(format!("server failed: {e}"));
    let plain = |listener: tokio::net::TcpListener| {
        // Without TCP_NODELAY, small keep-alive responses wait on the
        // client's delayed ACK (~40 ms each); see docs/benchmarks.md.
        axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    };
    match tls {
        Some(acceptor) => {
            let public = tls::TlsListener::new(listener, acceptor)
                .map_err(|e| StartupError(format!("cannot listen on {addr}: {e}")))?;
            // (Tapped only so that requests see the client's address.)
            let public = axum::serve::ListenerExt::tap_io(public, |_| {});
            let public = axum::serve(public, service()).with_graceful_shutdown(stopped());
            match internal {
                Some(internal) => {
                    let internal =
                        axum::serve(plain(internal), service()).with_graceful_shutdown(stopped());
                    let (a, b) = tokio::join!(public.into_future(), internal.into_future());
                    a.and(b).map_err(failed)?;
                }
                None => public.await.map_err(failed)?,
            }
        }
        None => axum::serve(plain(listener), service())
            .with_graceful_shutdown(stopped())
            .await
            .map_err(failed)?,
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds a listening socket; the error names the setting to change.
async fn bind(
    addr: std::net::SocketAddr,
    setting: &str,
) -> Result<tokio::net::TcpListener, StartupError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        StartupError(format!(
            "cannot listen on {addr}: {e}; set {setting} to a free address"
        ))
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down; finishing in-flight requests");
    crate::systemd::notify("STOPPING=1");
}
