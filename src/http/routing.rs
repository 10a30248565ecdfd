//! Pod routing: serve a request here if this node owns the pod, else forward
//! it to the owner.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::proxy;
use crate::app::App;
use crate::auth::Credentials;
use crate::cluster::placement;
use crate::ldp::{self, error::LdpError};

/// The fallback service: every request that is not a cluster route. Finds
/// the pod's owner; serves the request if that is this node, forwards it if
/// not (see [`proxy`]).
pub async fn route(State(app): State<Arc<App>>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let client_addr = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let target = match ldp::target::resolve(&app.config, &uri, &headers) {
        Ok(t) => t,
        Err(ldp::target::TargetError::Bad(why)) => {
            return LdpError::bad_request(why).into_response();
        }
        Err(ldp::target::TargetError::NoPod) => return LdpError::not_found().into_response(),
    };
    let forwarded = headers.contains_key(crate::cluster::signature::HOP);
    let mut accept = None;
    // A client's request was authenticated by `super::auth`; a forwarded
    // one carries what the forwarding node verified.
    let mut credentials = parts
        .extensions
        .get::<Credentials>()
        .cloned()
        .unwrap_or_default();
    if forwarded {
        match proxy::verify(&app, &method, &uri, &headers).await {
            Ok(v) => {
                accept = v.accept;
                credentials = v.credentials;
            }
            Err(why) => {
                app.metrics
                    .node_auth
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %why, "refused a forwarded request");
                return proxy::refused(&why);
            }
        }
    }
    let request = Routed {
        method,
        uri,
        headers,
        client_addr,
        credentials,
    };
    let mut resp = route_verified(&app, request, body, &target).await;
    if let Some(accept) = accept
        && let Ok(v) = axum::http::HeaderValue::from_str(&accept)
    {
        resp.headers_mut()
            .insert(crate::cluster::session::ACCEPT, v);
    }
    resp
}

/// A request whose sender was checked, and who it acts for.
pub(crate) struct Routed {
    pub method: axum::http::Method,
    pub uri: axum::http::Uri,
    pub headers: axum::http::HeaderMap,
    pub client_addr: Option<std::net::SocketAddr>,
    pub credentials: Credentials,
}

async fn route_verified(
    app: &Arc<App>,
    request: Routed,
    body: axum::body::Body,
    target: &ldp::target::Target,
) -> Response {
    let Routed {
        method,
        uri,
        headers,
        client_addr,
        credentials,
    } = request;
    let forwarded = headers.contains_key(crate::cluster::signature::HOP);
    let has_body = headers.contains_key(axum::http::header::CONTENT_LENGTH)
        || headers.contains_key(axum::http::header::TRANSFER_ENCODING);
    // Placements come from the cache: the follower drops an entry within
    // moments of a move, and a write re-checks ownership when it commits. A
    // forwarded request trusts only a placement cached within the last
    // second, and the database is asked itself before such a request is
    // refused as misrouted (or a dead owner is tried again).
    let mut fresh = false;
    // A SPARQL query POSTed to a sidecar only reads, and is served like a
    // GET while its pod moves. The request's head tells, except for a form:
    // its body is read to tell only where a moving or held pod makes it
    // matter (`undecided`); until then it counts as a write.
    let (writes, undecided) = match crate::sparql::protocol::writes_by_head(
        target.sidecar().is_some(),
        &method,
        &headers,
    ) {
        Some(writes) => (writes, false),
        None => (true, true),
    };
    let mut body = Some(body);
    let mut failed_owner: Option<(String, Response)> = None;
    // A write to a pod whose switch to another node is under way waits
    // for it here, before its body is read, and then goes to the new
    // owner. (A forwarded one was held by the node that forwarded it.)
    if writes
        && !forwarded
        && !app
            .migrations
            .wait_switched(&target.pod, ldp::write::FENCE_WAIT)
            .await
    {
        return LdpError::from(crate::db::DbError::Fenced).into_response();
    }
    loop {
        let pod = if fresh {
            app.placement.pod_fresh(&app.db, &target.pod).await
        } else if forwarded {
            app.placement
                .pod_within(&app.db, &target.pod, placement::FORWARDED_TTL)
                .await
        } else {
            app.placement.pod(&app.db, &target.pod).await
        };
        let pod = match pod {
            Ok(Some(p)) => p,
            Ok(None) => {
                let mut resp = LdpError::not_found().into_response();
                resp.headers_mut()
                    .extend(ldp::headers::describe(target, false));
                return resp;
            }
            Err(e) => return LdpError::from(e).into_response(),
        };
        let held = writes
            && pod.node_id == app.node.id
            && app.holds.holds(&target.pod)
            && !matches!(credentials, Credentials::Mover);
        let moving = crate::edge::moving::Moving::of(&pod);
        let mut writes = writes;
        if undecided && (held || moving.is_some()) {
            let form = body.take().unwrap_or_default();
            match crate::sparql::protocol::form_writes(form).await {
                Ok((w, form)) => (writes, body) = (w, Some(form)),
                Err(e) => return e.into_response(),
            }
        }
        if let Some(moving) = moving {
            return crate::edge::moving::route(
                app,
                target,
                &moving,
                method,
                writes,
                &uri,
                headers,
                body.take().unwrap_or_default(),
                client_addr,
                &credentials,
            )
            .await;
        }
        if pod.node_id == app.node.id {
            // On an edge, a pod on its way to the centre takes no writes.
            if writes && held {
                return crate::edge::moving::busy(&target.pod);
            }
            let body = body.take().unwrap_or_default();
            if let Some(agent) = credentials.agent() {
                tracing::debug!(pod = %target.pod, webid = %agent.webid, "serving an authenticated request");
            }
            return ldp::serve(
                app,
                target,
                method,
                headers,
                uri.query(),
                body,
                &credentials,
            )
            .await;
        }
        if let Some((owner, resp)) = failed_owner.take() {
            // Still the same unreachable owner: answer without waiting again.
            if owner == pod.node_id {
                return resp;
            }
        }
        let owner = app.placement.node(&app.db, &pod.node_id).await;
        // An edge's pod goes through the edge's tunnel.
        if let Ok(Some(owner)) = &owner
            && owner.kind == "edge"
        {
            let request = Routed {
                method,
                uri,
                headers,
                client_addr,
                credentials,
            };
            return to_edge(app, owner, &pod.pod_id, request, body.take(), forwarded).await;
        }
        if forwarded && !fresh {
            // Our cache may be the stale one: ask the database before refusing.
            fresh = true;
            continue;
        }
        if forwarded {
            return LdpError::new(
                StatusCode::LOOP_DETECTED,
                format!(
                    "node {} does not own pod {} (node {} does); a forwarded request is never forwarded again",
                    app.node.id, pod.pod_id, pod.node_id
                ),
            )
            .into_response();
        }
        if !app.config.pod_routing_enabled {
            return LdpError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "pod {} is served by node {}; send the request there, or set CSS_POD_ROUTING_ENABLED=true",
                    pod.pod_id, pod.node_id
                ),
            )
            .into_response();
        }
        let owner = match owner {
            Ok(Some(n)) => n,
            Ok(None) => {
                return LdpError::unavailable(format!(
                    "pod {} belongs to node {}, which is not registered; an administrator must reassign the pod",
                    pod.pod_id, pod.node_id
                ))
                .into_response();
            }
            Err(e) => return LdpError::from(e).into_response(),
        };
        match proxy::forward(
            app,
            &owner,
            &pod.pod_id,
            method.clone(),
            &uri,
            headers.clone(),
            body.take().unwrap_or_default(),
            client_addr,
            &credentials,
            proxy::Patience::NODE,
        )
        .await
        {
            Ok(resp) => return resp,
            // The pod may have moved off a dead node since it was cached:
            // look again (a body already sent cannot be sent twice).
            Err(resp) if !fresh && !has_body => {
                app.placement.forget_pod(&pod.pod_id);
                app.placement.forget_node(&owner.node_id);
                failed_owner = Some((owner.node_id, resp));
                fresh = true;
            }
            Err(resp) => return resp,
        }
    }
}

/// Sends a request for an edge's pod through the edge's tunnel: from this
/// node if it holds the tunnel, else from the centre node that does (one
/// signed hop, as between any two nodes). 503 while the edge is not
/// connected anywhere.
pub(crate) async fn to_edge(
    app: &Arc<App>,
    edge: &crate::db::NodeRecord,
    pod: &str,
    request: Routed,
    body: Option<axum::body::Body>,
    forwarded: bool,
) -> Response {
    let Routed {
        method,
        uri,
        headers,
        client_addr,
        credentials,
    } = request;
    let body = body.unwrap_or_default();
    if app.tunnels.holds(&edge.node_id) || forwarded {
        return crate::edge::tunnel::forward(
            app,
            &edge.node_id,
            pod,
            method,
            &uri,
            headers,
            body,
            client_addr,
            &credentials,
        )
        .await
        .unwrap_or_else(|resp| resp);
    }
    let holder = match app.db.edge_get(&edge.node_id).await {
        Ok(record) => record.and_then(|e| e.tunnel_node),
        Err(e) => return LdpError::from(e).into_response(),
    };
    let holder = match holder.filter(|h| *h != app.node.id) {
        Some(h) => app.placement.node(&app.db, &h).await.ok().flatten(),
        None => None,
    };
    let Some(holder) = holder else {
        return crate::edge::tunnel::unavailable(&edge.node_id, pod, "is not connected");
    };
    proxy::forward(
        app,
        &holder,
        pod,
        method,
        &uri,
        headers,
        body,
        client_addr,
        &credentials,
        // The holder waits for the edge; this node waits a little longer.
        crate::edge::tunnel::PATIENCE_THROUGH_HOLDER,
    )
    .await
    .unwrap_or_else(|resp| resp)
}

/// What a `HEAD` of `url` by the caller gets from the pod's owner (this
/// node or the one it is forwarded to): how a notification subscription
/// learns whether its subscriber may read the topic, decided by the same
/// rules and on the same node as a read.
pub async fn read_status(
    app: &Arc<App>,
    target: &ldp::target::Target,
    url: &str,
    origin: Option<&axum::http::HeaderValue>,
    credentials: &Credentials,
) -> StatusCode {
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return StatusCode::BAD_REQUEST;
    };
    let mut headers = axum::http::HeaderMap::new();
    if let Some(Ok(host)) = uri
        .authority()
        .map(|a| axum::http::HeaderValue::from_str(a.as_str()))
    {
        headers.insert(axum::http::header::HOST, host);
    }
    if let Some(origin) = origin {
        headers.insert(axum::http::header::ORIGIN, origin.clone());
    }
    let request = Routed {
        method: axum::http::Method::HEAD,
        uri,
        headers,
        client_addr: None,
        credentials: credentials.clone(),
    };
    route_verified(app, request, axum::body::Body::empty(), target)
        .await
        .status()
}
