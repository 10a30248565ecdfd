//! Moving a pod between an edge and the centre, keeping its canonical URL
//! (`xpod pods migrate <pod> --to <node>` when either end is an edge).
//!
//! The bytes move with the container-walking migrator ([`crate::walk`]):
//! the command line walks the pod through its local centre node, reading
//! from the side that holds it and writing to the other. Both sides answer
//! under the same canonical URL, so nothing is rebased. What tells the
//! node which side a request is for is the move's secret (`X-Xpod-Move`,
//! stored hashed with the move) and `X-Xpod-Move-Side: source|target`; a
//! request with the secret acts as the cluster's mover, with every mode on
//! the pod (so private pods move too).
//!
//! While a pod moves, everyone else reads it from its source and every write
//! gets 503 with `Retry-After` (refused, never lost):
//!
//! - **edge → centre**: the edge first holds the pod (its writes, from the
//!   centre and from the LAN, get 503; the hold survives a restart). Then,
//!   in one transaction, the centre takes the pod (owner, storage, an empty
//!   root container) and records the move; its routing sends reads to the
//!   edge until the end. At the end the edge deletes its copy and the move
//!   record goes.
//! - **centre → edge**: the move record and a fence on the pod (the centre's
//!   writes fail at commit) go in one transaction; the edge creates an empty,
//!   held pod. At the end the centre hands the pod to the edge and deletes
//!   its copy in one transaction, then the edge lifts its hold.
//!
//! Each step can be run again: a failed walk resumes, and a move can be
//! cancelled, which leaves the pod whole where it was.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::auth::Credentials;
use crate::db::{DbError, NodeRecord, PodRecord};
use crate::http::admin::{Admin, refuse};

/// The move's secret, on the command line's requests.
pub const MOVE: &str = "x-xpod-move";
/// Which side a mover's request is for: `source` or `target`.
pub const SIDE: &str = "x-xpod-move-side";
/// On a request through the tunnel: it comes from the centre's mover.
pub const MOVER: &str = "x-xpod-mover";

/// A pod on its way (the `moving` column of `pods`, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Moving {
    /// The node that holds the pod until the move ends.
    pub from: String,
    /// The node that holds it afterwards.
    pub to: String,
    /// SHA-256 (hex) of the move's secret.
    pub secret_hash: String,
    pub started_at: i64,
    /// The copy is complete and verified and the move is ending: it can
    /// only be finished (never cancelled), and the pod is read from `to`.
    #[serde(default)]
    pub finishing: bool,
    /// For a rename (`from` and `to` are this node): the new name, on both
    /// the old pod and the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<String>,
}

impl Moving {
    pub fn of(pod: &PodRecord) -> Option<Moving> {
        serde_json::from_str(pod.moving.as_deref()?).ok()
    }

    /// Whether `headers` carry this move's secret; `Some(side)` if so.
    fn side(&self, headers: &HeaderMap) -> Option<Side> {
        let secret = headers.get(MOVE)?.to_str().ok()?;
        let hash = crate::idp::accounts::hash(secret);
        if !crate::idp::accounts::subtle_eq(hash.as_bytes(), self.secret_hash.as_bytes()) {
            return None;
        }
        match headers.get(SIDE).and_then(|v| v.to_str().ok()) {
            Some("target") => Some(Side::Target),
            _ => Some(Side::Source),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

/// Routes a request for a pod that is moving: the mover's to the side it
/// names, everyone else's reads to the source, and writes to a 503.
#[allow(clippy::too_many_arguments)]
pub async fn route(
    app: &Arc<App>,
    target: &crate::ldp::target::Target,
    moving: &Moving,
    method: Method,
    writes: bool,
    uri: &axum::http::Uri,
    headers: HeaderMap,
    body: Body,
    client_addr: Option<std::net::SocketAddr>,
    credentials: &Credentials,
) -> Response {
    let forwarded = headers.contains_key(crate::cluster::signature::HOP);
    let (node, credentials) = match moving.side(&headers) {
        Some(Side::Source) => (&moving.from, Credentials::Mover),
        Some(Side::Target) => (&moving.to, Credentials::Mover),
        None if !writes => {
            let holder = if moving.finishing {
                &moving.to
            } else {
                &moving.from
            };
            (holder, credentials.clone())
        }
        None => return busy(&target.pod),
    };
    if *node == app.node.id {
        return crate::ldp::serve(
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
    let record = match app.placement.node(&app.db, node).await {
        Ok(Some(n)) => n,
        Ok(None) => return busy(&target.pod),
        Err(e) => return crate::ldp::error::LdpError::from(e).into_response(),
    };
    if record.kind == "edge" && !matches!(credentials, Credentials::Mover) {
        return crate::http::routing::to_edge(
            app,
            &record,
            &target.pod,
            crate::http::routing::Routed {
                method,
                uri: uri.clone(),
                headers,
                client_addr,
                credentials,
            },
            Some(body),
            forwarded,
        )
        .await;
    }
    if record.kind == "edge" {
        return super::tunnel::forward(
            app,
            node,
            &target.pod,
            method,
            uri,
            headers,
            body,
            client_addr,
            &credentials,
        )
        .await
        .unwrap_or_else(|resp| resp);
    }
    if matches!(credentials, Credentials::Mover) {
        // The command line talks to the node that drives the move.
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this node does not drive the move; run the command on the node that started it",
        );
    }
    crate::http::proxy::forward(
        app,
        &record,
        &target.pod,
        method,
        uri,
        headers,
        body,
        client_addr,
        &credentials,
        crate::http::proxy::Patience::NODE,
    )
    .await
    .unwrap_or_else(|resp| resp)
}

/// The 503 for a write to a pod that is moving.
pub fn busy(pod: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "5")],
        format!("pod {pod} is moving between nodes and takes no writes until it is done; try again shortly\n"),
    )
        .into_response()
}

/// On an edge: the pods held read-only while they move, one file each
/// under `<root>/moving/`, so that a restart keeps them held.
pub struct Holds {
    dir: PathBuf,
    pods: Mutex<HashSet<String>>,
}

impl Holds {
    pub fn open(root: &Path) -> Holds {
        let dir = root.join("moving");
        let pods = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| crate::pod::validate_name(name).is_ok())
            .collect();
        Holds {
            dir,
            pods: Mutex::new(pods),
        }
    }

    pub fn holds(&self, pod: &str) -> bool {
        self.pods.lock().expect("holds").contains(pod)
    }

    fn hold(&self, pod: &str) -> std::io::Result<()> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.dir)?;
        crate::fsutil::write_atomic(&self.dir.join(pod), b"", 0o600)?;
        self.pods.lock().expect("holds").insert(pod.to_string());
        Ok(())
    }

    fn release(&self, pod: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(pod)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.pods.lock().expect("holds").remove(pod);
        Ok(())
    }
}

/// What the centre asks of an edge's pod, through the tunnel only.
#[derive(Debug, Default, Deserialize)]
pub struct EdgePodRequest {
    /// For a pod the edge is to receive: its owner.
    pub owner: Option<String>,
}

/// `PUT|DELETE /.cluster/edge/pods/{pod}/hold` on an edge, from the centre:
/// holds the pod read-only (answering its owner), or lifts the hold.
pub async fn edge_hold(
    State(app): State<Arc<App>>,
    UrlPath(pod): UrlPath<String>,
    method: Method,
    centre: Option<axum::Extension<super::tunnel::FromCentre>>,
) -> Response {
    if centre.is_none() {
        return refuse(
            StatusCode::FORBIDDEN,
            "only the centre may hold or release pods, through the tunnel",
        );
    }
    if method == Method::DELETE {
        if let Err(e) = app.db.pod_fence(&pod, false).await {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
        return match app.holds.release(&pod) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot lift the hold: {e}"),
            ),
        };
    }
    let record = match app.db.pod_get(&pod).await {
        Ok(Some(p)) if p.node_id == app.node.id => p,
        Ok(_) => {
            return refuse(
                StatusCode::NOT_FOUND,
                &format!("this edge has no pod {pod}"),
            );
        }
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    if let Err(e) = app.holds.hold(&pod) {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot hold the pod: {e}"),
        );
    }
    // A write already past the hold (a long upload) fails when it commits.
    if let Err(e) = app.db.pod_fence(&pod, true).await {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    tracing::info!(pod, "holding the pod read-only: it is moving to the centre");
    Json(serde_json::json!({ "owner": record.owner })).into_response()
}

/// `PUT|DELETE /.cluster/edge/pods/{pod}` on an edge, from the centre:
/// creates an empty, held pod to receive a move, or deletes the edge's
/// copy of a pod that moved away (or whose move here was cancelled).
pub async fn edge_pod(
    State(app): State<Arc<App>>,
    UrlPath(pod): UrlPath<String>,
    method: Method,
    centre: Option<axum::Extension<super::tunnel::FromCentre>>,
    body: Option<Json<EdgePodRequest>>,
) -> Response {
    if centre.is_none() {
        return refuse(
            StatusCode::FORBIDDEN,
            "only the centre may create or delete pods here, through the tunnel",
        );
    }
    if let Err(why) = crate::pod::validate_name(&pod) {
        return refuse(StatusCode::BAD_REQUEST, &why);
    }
    if method == Method::DELETE {
        match app.db.pod_delete(&pod).await {
            Ok(_) => {}
            Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
        app.placement.forget_pod(&pod);
        app.access.forget_pod(&pod);
        if let Err(e) = app.holds.release(&pod) {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot lift the hold: {e}"),
            );
        }
        tracing::info!(pod, "deleted this edge's copy of the pod");
        return StatusCode::NO_CONTENT.into_response();
    }
    let owner = body.and_then(|Json(b)| b.owner);
    if let Err(e) = app.holds.hold(&pod) {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot hold the pod: {e}"),
        );
    }
    let record = PodRecord {
        pod_id: pod.clone(),
        base_url: crate::pod::base_url(&app.config, &pod).to_string(),
        node_id: app.node.id.clone(),
        storage_id: app.storage_id.clone(),
        owner,
        created_at: crate::db::now_ms(),
        moving: None,
    };
    let created = match app.db.pod_create(&record).await {
        Ok(_) => StatusCode::CREATED.into_response(),
        // Created by an earlier attempt of the same move.
        Err(DbError::Conflict(_)) => match app.db.pod_get(&pod).await {
            Ok(Some(p)) if p.node_id == app.node.id => StatusCode::NO_CONTENT.into_response(),
            _ => refuse(
                StatusCode::CONFLICT,
                &format!("pod {pod} exists on this edge under another node"),
            ),
        },
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    // Its ACLs come with it: the start-up pass must leave them alone.
    if let Err(e) = crate::ldp::access::mark_baseline(&app, &pod).await {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    created
}

/// `POST /.cluster/pods/{pod}/move` (administrator) on a centre node:
/// starts moving an edge's pod here, or one of this node's pods to an edge.
/// Answers the move's secret, which the command line's walk presents.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMove {
    pub target_node: String,
}

pub async fn start(
    _admin: Admin,
    State(app): State<Arc<App>>,
    UrlPath(pod): UrlPath<String>,
    body: Result<Json<StartMove>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {e}"),
            );
        }
    };
    if app.config.is_edge() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "run this on a centre node: edges do not drive moves",
        );
    }
    let record = match app.placement.pod_fresh(&app.db, &pod).await {
        Ok(Some(p)) => p,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, &format!("no pod {pod}")),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let secret = crate::idp::oauth::random_token();
    let secret_hash = crate::idp::accounts::hash(&secret);
    // A move already under way is taken up again (with a new secret): the
    // walk resumes where it stopped.
    let (from, to) = match Moving::of(&record) {
        Some(m) if m.to == req.target_node => (m.from, m.to),
        Some(m) => {
            return refuse(
                StatusCode::CONFLICT,
                &format!(
                    "pod {pod} is already moving from node {} to node {}; finish it with `xpod pods migrate {pod} --to {}`{}",
                    m.from,
                    m.to,
                    m.to,
                    if m.finishing {
                        ""
                    } else {
                        ", or add --cancel to give it up"
                    }
                ),
            );
        }
        None => (record.node_id.clone(), req.target_node.clone()),
    };
    if from == to {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("pod {pod} is on node {to} already"),
        );
    }
    // A move that was finishing only needs finishing: no walk, no hold.
    if Moving::of(&record).is_some_and(|m| m.finishing) {
        return (
            StatusCode::CREATED,
            Json(serde_json::json!({
                "podId": pod,
                "baseUrl": record.base_url,
                "from": from,
                "to": to,
                "finishing": true,
            })),
        )
            .into_response();
    }
    let (from_kind, to_kind) = (kind(&app, &from).await, kind(&app, &to).await);
    let result = match (from_kind.as_deref(), to_kind.as_deref()) {
        (Some("edge"), Some("centre")) if to == app.node.id => {
            edge_to_centre(&app, &pod, &from, &secret_hash).await
        }
        (Some("centre"), Some("edge")) if from == app.node.id => {
            centre_to_edge(&app, &pod, &to, record.owner.clone(), &secret_hash).await
        }
        (Some("edge"), Some("centre")) | (Some("centre"), Some("edge")) => Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "run this on node {}, the centre end of the move",
                if from_kind.as_deref() == Some("centre") {
                    &from
                } else {
                    &to
                }
            ),
        )),
        (_, None) => Err(refuse(StatusCode::BAD_REQUEST, &format!("no node {to}"))),
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            "a move goes between an edge and a centre node; between centre nodes use a migration",
        )),
    };
    if let Err(resp) = result {
        return resp;
    }
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "podId": pod,
            "baseUrl": record.base_url,
            "from": from,
            "to": to,
            "secret": secret,
        })),
    )
        .into_response()
}

async fn kind(app: &App, node: &str) -> Option<String> {
    app.db
        .node_get(node)
        .await
        .ok()
        .flatten()
        .map(|n: NodeRecord| n.kind)
}

/// Sends the centre's request to an edge through its tunnel (held here).
async fn ask_edge(
    app: &Arc<App>,
    edge: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Response> {
    let (status, reply) = match super::tunnel::call(app, edge, method, path, body).await {
        Ok(answer) => answer,
        Err(why) => {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("edge node {edge} {why}; {}", holder_hint(app, edge).await),
            ));
        }
    };
    if !status.is_success() {
        return Err(refuse(
            StatusCode::BAD_GATEWAY,
            &format!(
                "edge node {edge} answered {status}: {}",
                reply["error"].as_str().unwrap_or_default()
            ),
        ));
    }
    Ok(reply)
}

/// Where the edge's tunnel is, for an error that asks the operator to run
/// the command elsewhere or later.
async fn holder_hint(app: &App, edge: &str) -> String {
    match app.db.edge_get(edge).await.ok().flatten().and_then(|e| e.tunnel_node) {
        Some(node) if node != app.node.id => format!(
            "its tunnel is open to centre node {node}: run the command there (a move to the edge also needs the pod on that node first: `xpod pods migrate <pod> --to {node}`)"
        ),
        _ => "it is not connected: run the command again once it is (`xpod nodes list` shows it reachable)".into(),
    }
}

fn moving_json(from: &str, to: &str, secret_hash: &str, rename: Option<&str>) -> String {
    serde_json::to_string(&Moving {
        from: from.to_string(),
        to: to.to_string(),
        secret_hash: secret_hash.to_string(),
        started_at: crate::db::now_ms(),
        finishing: false,
        rename: rename.map(str::to_string),
    })
    .expect("a move serialises")
}

/// Records that a move is finishing (its copy is complete and verified).
async fn mark_finishing(app: &App, pod: &str, m: &Moving) -> Result<(), DbError> {
    let json = serde_json::to_string(&Moving {
        finishing: true,
        ..m.clone()
    })
    .expect("a move serialises");
    if m.to == app.node.id {
        app.db
            .pod_move_in(pod, &m.from, &m.to, &app.storage_id, None, &json)
            .await
    } else {
        app.db.pod_move_out(pod, &m.from, &json).await
    }
}

async fn edge_to_centre(
    app: &Arc<App>,
    pod: &str,
    edge: &str,
    secret_hash: &str,
) -> Result<(), Response> {
    // The hold first: from here on no write reaches the edge's copy.
    let reply = ask_edge(
        app,
        edge,
        Method::PUT,
        &format!("/.cluster/edge/pods/{pod}/hold"),
        None,
    )
    .await?;
    let owner = reply["owner"].as_str().map(str::to_string);
    let taken = app
        .db
        .pod_move_in(
            pod,
            edge,
            &app.node.id,
            &app.storage_id,
            owner.as_deref(),
            &moving_json(edge, &app.node.id, secret_hash, None),
        )
        .await;
    if let Err(e) = taken {
        // No move was recorded: the edge takes writes again.
        let hold = format!("/.cluster/edge/pods/{pod}/hold");
        if ask_edge(app, edge, Method::DELETE, &hold, None)
            .await
            .is_err()
        {
            tracing::error!(
                pod,
                edge,
                "a move failed to start and the edge could not be told to lift its hold; run the command again"
            );
        }
        return Err(db_refusal(e));
    }
    app.placement.forget_pod(pod);
    app.access.forget_pod(pod);
    // Its ACLs come with it: the start-up pass must leave them alone.
    crate::ldp::access::mark_baseline(app, pod)
        .await
        .map_err(db_refusal)?;
    tracing::info!(pod, edge, "moving the pod from the edge to this node");
    Ok(())
}

async fn centre_to_edge(
    app: &Arc<App>,
    pod: &str,
    edge: &str,
    owner: Option<String>,
    secret_hash: &str,
) -> Result<(), Response> {
    if !app.tunnels.holds(edge) {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "edge node {edge} has no tunnel open to this node; {}",
                holder_hint(app, edge).await
            ),
        ));
    }
    // The fence first: from here on no write commits here.
    app.db
        .pod_move_out(
            pod,
            &app.node.id,
            &moving_json(&app.node.id, edge, secret_hash, None),
        )
        .await
        .map_err(db_refusal)?;
    app.placement.forget_pod(pod);
    ask_edge(
        app,
        edge,
        Method::PUT,
        &format!("/.cluster/edge/pods/{pod}"),
        Some(serde_json::json!({ "owner": owner })),
    )
    .await?;
    tracing::info!(pod, edge, "moving the pod from this node to the edge");
    Ok(())
}

fn db_refusal(e: DbError) -> Response {
    match e {
        DbError::NotFound => refuse(StatusCode::NOT_FOUND, "no such pod"),
        DbError::Conflict(why) => refuse(StatusCode::CONFLICT, &why),
        e => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `POST /.cluster/pods/{pod}/move/finish` and `.../move/cancel`
/// (administrator): ends the move one way or the other.
pub async fn end(
    _admin: Admin,
    State(app): State<Arc<App>>,
    UrlPath((pod, action)): UrlPath<(String, String)>,
) -> Response {
    let record = match app.placement.pod_fresh(&app.db, &pod).await {
        Ok(Some(p)) => p,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, &format!("no pod {pod}")),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let Some(m) = Moving::of(&record) else {
        return refuse(StatusCode::CONFLICT, &format!("pod {pod} is not moving"));
    };
    let finish = match action.as_str() {
        "finish" => true,
        "cancel" => false,
        _ => return refuse(StatusCode::NOT_FOUND, "finish or cancel"),
    };
    let into_centre = m.to == app.node.id;
    if !into_centre && m.from != app.node.id {
        return refuse(
            StatusCode::BAD_REQUEST,
            "run this on the centre node that started the move",
        );
    }
    let edge = if into_centre {
        m.from.clone()
    } else {
        m.to.clone()
    };
    let hold = format!("/.cluster/edge/pods/{pod}/hold");
    let copy = format!("/.cluster/edge/pods/{pod}");
    if !finish && m.finishing {
        return refuse(
            StatusCode::CONFLICT,
            &format!(
                "the move of pod {pod} is finishing (its copy is complete) and cannot be cancelled; run `xpod pods migrate {pod} --to {}` again to finish it",
                m.to
            ),
        );
    }
    // Each step can be repeated, so a failure at any point is mended by
    // running the same command again.
    let outcome: Result<(), Response> = async {
        if finish {
            mark_finishing(&app, &pod, &m).await.map_err(db_refusal)?;
        }
        match (into_centre, finish) {
            // The edge's copy goes, then the record: the pod is here.
            (true, true) => {
                ask_edge(&app, &edge, Method::DELETE, &copy, None).await?;
                app.db.pod_move_end(&pod, None).await.map_err(db_refusal)
            }
            // The edge takes writes again, then has the pod back; the
            // partial copy here goes.
            (true, false) | (false, true) => {
                ask_edge(&app, &edge, Method::DELETE, &hold, None).await?;
                app.db
                    .pod_move_end(&pod, Some((&edge, &crate::db::edge_storage_id(&edge))))
                    .await
                    .map_err(db_refusal)
            }
            // The edge's partial copy goes; the pod stays here.
            (false, false) => {
                ask_edge(&app, &edge, Method::DELETE, &copy, None).await?;
                app.db.pod_move_end(&pod, None).await.map_err(db_refusal)
            }
        }
    }
    .await;
    app.placement.forget_pod(&pod);
    app.access.forget_pod(&pod);
    match outcome {
        Ok(()) => {
            tracing::info!(pod, action, "move ended");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(resp) => resp,
    }
}

/// `POST /.cluster/pods/{pod}/rename` (administrator) with `{"to": name}`:
/// starts renaming one of this node's pods, for instance one whose name
/// the centre already has when an edge enrols. The new pod is made empty
/// (and, on an enrolled edge, its name is allocated by the centre first);
/// both pods carry a move record with one secret, so the command line's
/// walk reads the old one and writes the new one as the mover, rebasing
/// IRIs from the old URL to the new. Meanwhile the old pod is read as
/// usual and refuses writes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub to: String,
}

pub async fn rename_start(
    _admin: Admin,
    State(app): State<Arc<App>>,
    UrlPath(pod): UrlPath<String>,
    body: Result<Json<Rename>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {e}"),
            );
        }
    };
    if let Err(why) = crate::pod::validate_name(&req.to) {
        return refuse(StatusCode::BAD_REQUEST, &why);
    }
    let old = match app.placement.pod_fresh(&app.db, &pod).await {
        Ok(Some(p)) if p.node_id == app.node.id => p,
        Ok(Some(p)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("pod {pod} is on node {}: rename it there", p.node_id),
            );
        }
        Ok(None) => return refuse(StatusCode::NOT_FOUND, &format!("no pod {pod}")),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    if req.to == pod {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("pod {pod} has that name already"),
        );
    }
    // An account's pod holds the WebID its logins name.
    if old.owner.as_deref() == Some(format!("{}profile/card#me", old.base_url).as_str()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "pod {pod} belongs to an account whose WebID ({}profile/card#me) its logins name, so it keeps its name; copy its data into a new pod with `xpod pods export` and `xpod pods import` instead",
                old.base_url
            ),
        );
    }
    let renaming_to = |p: &PodRecord| Moving::of(p).and_then(|m| m.rename) == Some(req.to.clone());
    if app.holds.holds(&pod) {
        return refuse(
            StatusCode::CONFLICT,
            &format!("pod {pod} is moving to the centre; rename it once that is done"),
        );
    }
    if let Some(m) = Moving::of(&old)
        && !renaming_to(&old)
    {
        let what = match &m.rename {
            Some(other) => format!(
                "being renamed to {other}: finish that with `xpod pods rename {pod} {other}`, or add --cancel"
            ),
            None => format!(
                "moving from node {} to node {}: rename it once that is done",
                m.from, m.to
            ),
        };
        return refuse(StatusCode::CONFLICT, &format!("pod {pod} is {what}"));
    }
    let me = app.node.id.clone();
    let secret = crate::idp::oauth::random_token();
    let moving = moving_json(
        &me,
        &me,
        &crate::idp::accounts::hash(&secret),
        Some(&req.to),
    );
    let new_base = crate::pod::base_url(&app.config, &req.to).to_string();
    let mut created = false;
    match app.placement.pod_fresh(&app.db, &req.to).await {
        // Taken up again after an interruption.
        Ok(Some(p)) if p.node_id == me && renaming_to(&p) && renaming_to(&old) => {}
        Ok(Some(_)) => {
            return refuse(
                StatusCode::CONFLICT,
                &format!("a pod {} exists already; choose another name", req.to),
            );
        }
        Ok(None) => {
            if app.config.is_edge()
                && app.config.root.join(super::signal::ENROLLED_FILE).exists()
                && let Err((status, why)) = super::signal::claim(&app, &req.to).await
            {
                return refuse(status, &why);
            }
            let record = PodRecord {
                pod_id: req.to.clone(),
                base_url: new_base.clone(),
                node_id: me.clone(),
                storage_id: app.storage_id.clone(),
                owner: old.owner.clone(),
                created_at: crate::db::now_ms(),
                moving: None,
            };
            if let Err(e) = app.db.pod_create(&record).await {
                return db_refusal(e);
            }
            created = true;
        }
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
    let started = async {
        app.db
            .pod_move_in(&req.to, &me, &me, &app.storage_id, None, &moving)
            .await?;
        app.db.pod_move_out(&pod, &me, &moving).await
    };
    if let Err(e) = started.await {
        // Nothing half made stays behind.
        if created && let Err(undo) = app.db.pod_delete(&req.to).await {
            tracing::error!(pod = %req.to, error = %undo, "cannot delete the pod a failed rename made");
        }
        app.placement.forget_pod(&req.to);
        return db_refusal(e);
    }
    for p in [&pod, &req.to] {
        app.placement.forget_pod(p);
    }
    if let Err(e) = crate::ldp::access::mark_baseline(&app, &req.to).await {
        return db_refusal(e);
    }
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "podId": pod,
            "from": old.base_url,
            "to": new_base,
            "secret": secret,
        })),
    )
        .into_response()
}

/// `POST /.cluster/pods/{pod}/rename/finish` or `.../cancel` with
/// `{"to": name}`: deletes the old pod (finish) or the new one (cancel),
/// and lets the other take writes again.
pub async fn rename_end(
    _admin: Admin,
    State(app): State<Arc<App>>,
    UrlPath((pod, action)): UrlPath<(String, String)>,
    body: Result<Json<Rename>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {e}"),
            );
        }
    };
    let (gone, kept) = match action.as_str() {
        "finish" => (&pod, &req.to),
        "cancel" => (&req.to, &pod),
        _ => return refuse(StatusCode::NOT_FOUND, "finish or cancel"),
    };
    if pod == req.to {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("pod {pod} has that name already"),
        );
    }
    let look = |p: String| {
        let app = app.clone();
        async move { app.placement.pod_fresh(&app.db, &p).await }
    };
    let (gone_pod, kept_pod) = match (look(gone.clone()).await, look(kept.clone()).await) {
        (Ok(g), Ok(k)) => (g, k),
        (Err(e), _) | (_, Err(e)) => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
    };
    let renaming = |p: &Option<PodRecord>| {
        p.as_ref()
            .filter(|p| p.node_id == app.node.id)
            .and_then(Moving::of)
            .filter(|m| m.rename.as_deref() == Some(req.to.as_str()))
    };
    match (renaming(&gone_pod), renaming(&kept_pod), &gone_pod) {
        // Both halves of this rename: one goes, the other stays.
        (Some(g), Some(k), _) if g.secret_hash == k.secret_hash => {}
        // Ended before, but for lifting the mark on the pod that stays.
        (None, Some(_), None) => {}
        // Ended before.
        (None, None, None) if kept_pod.as_ref().is_some_and(|k| k.node_id == app.node.id) => {
            return StatusCode::NO_CONTENT.into_response();
        }
        _ => {
            return refuse(
                StatusCode::CONFLICT,
                &format!(
                    "there is no rename of pod {pod} to {} under way on this node",
                    req.to
                ),
            );
        }
    }
    let ended = async {
        app.db.pod_delete(gone).await?;
        app.db.pod_move_end(kept, None).await
    };
    if let Err(e) = ended.await {
        return db_refusal(e);
    }
    for p in [gone, kept] {
        app.placement.forget_pod(p);
        app.access.forget_pod(p);
    }
    tracing::info!(from = %pod, to = %req.to, action, "rename ended");
    StatusCode::NO_CONTENT.into_response()
}
