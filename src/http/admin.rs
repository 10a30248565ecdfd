//! The administrator API under `/.cluster/`: the credential check, the
//! pod, node and edge routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::App;
use crate::auth::admin_token;
use crate::cluster::registry;
use crate::db::{DbError, NodeRecord, PodRecord};

/// Proof that the request carried a valid administrator token.
pub struct Admin;

pub(crate) fn refuse(status: StatusCode, message: &str) -> Response {
    let mut resp = (status, Json(serde_json::json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"xpod-admin\""),
        );
    }
    resp
}

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "the administrator credential is required (Authorization: Bearer <token from admin.token>)",
            ));
        };
        match admin_token::verify(&app.db, token).await {
            Ok(true) => Ok(Admin),
            Ok(false) => Err(refuse(
                StatusCode::UNAUTHORIZED,
                "invalid administrator token",
            )),
            Err(e) => {
                tracing::error!(error = %e, "cannot check the administrator token");
                Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the metadata store is unavailable",
                ))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePod {
    pub name: String,
    #[serde(default)]
    pub public_write: bool,
    #[serde(default)]
    pub owner: Option<String>,
}

fn pod_json(p: &PodRecord) -> serde_json::Value {
    serde_json::json!({
        "podId": p.pod_id,
        "baseUrl": p.base_url,
        "nodeId": p.node_id,
        "storageId": p.storage_id,
        "createdAt": p.created_at,
        // A move between an edge and the centre (never its secret's hash).
        "moving": crate::edge::moving::Moving::of(p).map(|m| serde_json::json!({
            "from": m.from,
            "to": m.to,
            "startedAt": m.started_at,
        })),
    })
}

pub(crate) fn unavailable(e: DbError) -> Response {
    tracing::error!(error = %e, "metadata store error");
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "the metadata store is unavailable",
    )
}

fn node_json(app: &App, n: &NodeRecord, pods: usize) -> serde_json::Value {
    let reachable = registry::reachable(n, app.config.node_unreachable_after, crate::db::now_ms());
    serde_json::json!({
        "nodeId": n.node_id,
        "kind": n.kind,
        // An edge has no address the centre can reach.
        "internalAddress": (n.kind != "edge").then(|| format!("{}:{}", n.internal_ip, n.internal_port)),
        "publicAddress": n.public_address,
        "storageId": n.storage_id,
        "version": n.version,
        "startedAt": n.started_at,
        "lastHeartbeat": n.last_heartbeat,
        "reachable": reachable,
        "pods": pods,
    })
}

/// `GET /.cluster/nodes`: every registered node, with its reachability.
pub async fn list_nodes(_admin: Admin, State(app): State<Arc<App>>) -> Response {
    let (nodes, pods) = match (app.db.node_list().await, app.db.pod_list().await) {
        (Ok(n), Ok(p)) => (n, p),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let list: Vec<_> = nodes
        .iter()
        .map(|n| {
            let count = pods.iter().filter(|p| p.node_id == n.node_id).count();
            node_json(&app, n, count)
        })
        .collect();
    Json(list).into_response()
}

/// `GET /.cluster/nodes/{id}`.
pub async fn get_node(
    _admin: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    match (app.db.node_get(&id).await, app.db.pod_list().await) {
        (Ok(Some(n)), Ok(pods)) => {
            let count = pods.iter().filter(|p| p.node_id == n.node_id).count();
            Json(node_json(&app, &n, count)).into_response()
        }
        (Ok(None), _) => refuse(StatusCode::NOT_FOUND, &format!("no node {id}")),
        (Err(e), _) | (_, Err(e)) => unavailable(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MoveRequest {
    /// Move the pods even though the node still answers heartbeats.
    #[serde(default)]
    pub force: bool,
}

/// `POST /.cluster/nodes/{id}/reassign` (a node that is gone) and
/// `POST /.cluster/nodes/{id}/drain` (any node, for maintenance): moves the
/// node's pods to live nodes with the same storage id.
pub async fn move_node_pods(
    _admin: Admin,
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(String, String)>,
    body: Option<Json<MoveRequest>>,
) -> Response {
    let force = body.map(|b| b.0.force).unwrap_or(false) || action == "drain";
    if action != "drain" && action != "reassign" {
        return refuse(
            StatusCode::NOT_FOUND,
            "unknown node action; use drain or reassign",
        );
    }
    let node = match app.db.node_get(&id).await {
        Ok(Some(n)) => n,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, &format!("no node {id}")),
        Err(e) => return unavailable(e),
    };
    let window = app.config.node_unreachable_after;
    if !force && registry::reachable(&node, window, crate::db::now_ms()) {
        return refuse(
            StatusCode::CONFLICT,
            &format!(
                "node {id} is still sending heartbeats; use drain to move the pods of a live node, or force"
            ),
        );
    }
    match registry::move_pods(&app.db, &id, window).await {
        Ok((moved, left)) => {
            for m in &moved {
                app.placement.forget_pod(&m.pod_id);
                app.access.forget_pod(&m.pod_id);
            }
            Json(serde_json::json!({ "moved": moved, "leftBehind": left })).into_response()
        }
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// `DELETE /.cluster/nodes/{id}`: forgets a node that is gone and owns no pods.
pub async fn remove_node(
    _admin: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Response {
    if id == app.node.id {
        return refuse(
            StatusCode::CONFLICT,
            "a node cannot remove itself; stop it and ask another node",
        );
    }
    match app.db.node_get(&id).await {
        Ok(Some(n))
            if registry::reachable(&n, app.config.node_unreachable_after, crate::db::now_ms()) =>
        {
            return refuse(
                StatusCode::CONFLICT,
                &format!("node {id} is still sending heartbeats; stop it first"),
            );
        }
        Ok(Some(_)) => {}
        Ok(None) => return refuse(StatusCode::NOT_FOUND, &format!("no node {id}")),
        Err(e) => return unavailable(e),
    }
    match app.db.node_remove(&id).await {
        Ok(_) => {
            app.placement.forget_node(&id);
            // Its followers no longer hold back pruning.
            for name in [
                crate::cluster::follower::placement_name(&id),
                crate::cluster::follower::webhooks_name(&id),
            ] {
                if let Err(e) = app.db.follower_cursor_delete(&name).await {
                    tracing::warn!(error = %e, "cannot delete the removed node's follower cursor");
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(DbError::Conflict(why)) => refuse(StatusCode::CONFLICT, &why),
        Err(e) => unavailable(e),
    }
}

/// `GET /.cluster/pods/{podId}`: the pod, its owner and any migration.
pub async fn get_pod(
    _admin: Admin,
    State(app): State<Arc<App>>,
    Path(pod_id): Path<String>,
) -> Response {
    let pod = match app.db.pod_get(&pod_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, &format!("no pod {pod_id}")),
        Err(e) => return unavailable(e),
    };
    let migration = match app.db.migration_active(&pod_id).await {
        Ok(m) => m,
        Err(e) => return unavailable(e),
    };
    let mut json = pod_json(&pod);
    json["migration"] = migration_json(migration.as_ref());
    Json(json).into_response()
}

/// `POST /.cluster/pods`: creates a pod, owned by this node, with its root container.
pub async fn create_pod(
    _admin: Admin,
    State(app): State<Arc<App>>,
    body: Result<Json<CreatePod>, axum::extract::rejection::JsonRejection>,
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
    if let Err(why) = crate::pod::validate_name(&req.name) {
        return refuse(StatusCode::BAD_REQUEST, &why);
    }
    if !req.public_write && req.owner.is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a pod needs an owner, or nobody could use it: give --owner <e-mail of an account, or a WebID>, or --public-write for a pod anyone may read and change",
        );
    }
    let is_email = |o: &str| o.contains('@') && !o.contains(':');
    if let Some(owner) = req.owner.as_deref().filter(|o| !is_email(o))
        && !url::Url::parse(owner)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.as_str() == owner)
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "the owner {owner:?} is neither an e-mail address nor a WebID: give an absolute http(s) URL such as https://id.example/alice#me"
            ),
        );
    }
    // On an edge, the centre allocates the name first.
    if app.config.is_edge()
        && let Err((status, why)) = crate::edge::signal::claim(&app, &req.name).await
    {
        return refuse(status, &why);
    }
    // An owner given by e-mail is an account: the pod joins it, with a
    // WebID profile, as if the account had created it.
    if let Some(email) = req
        .owner
        .as_deref()
        .filter(|o| o.contains('@') && !o.contains(':'))
    {
        return create_account_pod(&app, &req.name, email).await;
    }
    let record = PodRecord {
        pod_id: req.name.clone(),
        base_url: crate::pod::base_url(&app.config, &req.name).to_string(),
        node_id: app.node.id.clone(),
        storage_id: app.blobs.storage_id().to_string(),
        owner: req.owner.clone(),
        created_at: crate::db::now_ms(),
        moving: None,
    };
    match app.db.pod_create(&record).await {
        Ok(_) => {
            let acl = match req.owner.as_deref() {
                Some(owner) if !req.public_write => crate::auth::wac::pod_root_acl(owner),
                _ => crate::auth::wac::public_write_acl(),
            };
            if let Err(e) =
                crate::ldp::access::write_acl(&app, &record.pod_id, &record.base_url, "/.acl", acl)
                    .await
            {
                tracing::error!(pod = %record.pod_id, error = %e, "cannot write the pod's ACL");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the pod was created but its ACL could not be written; delete it and try again",
                );
            }
            if let Err(e) = crate::ldp::access::mark_baseline(&app, &record.pod_id).await {
                return unavailable(e);
            }
            tracing::info!(pod = %record.pod_id, public_write = req.public_write, "created pod");
            (StatusCode::CREATED, Json(pod_json(&record))).into_response()
        }
        Err(DbError::Conflict(_)) => refuse(
            StatusCode::CONFLICT,
            &format!("a pod named {} already exists", req.name),
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot create pod");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the metadata store is unavailable",
            )
        }
    }
}

async fn create_account_pod(app: &App, name: &str, email: &str) -> Response {
    use crate::idp::accounts;
    let email = match accounts::normalise_email(email) {
        Ok(e) => e,
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("{email:?} is not an e-mail address"),
            );
        }
    };
    let account = match app
        .db
        .record_find(accounts::PASSWORD, &email, crate::db::now_ms())
        .await
    {
        Ok(Some(r)) => r.account_id.unwrap_or_default(),
        Ok(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!(
                    "no account has the e-mail {email}: create one through the account API (/.account/) first, or give a WebID as the owner"
                ),
            );
        }
        Err(e) => return unavailable(e),
    };
    match super::account::new_pod(app, &account, name).await {
        Ok((pod_url, webid, _, _)) => match app.db.pod_get(name).await {
            Ok(Some(record)) => {
                let mut json = pod_json(&record);
                json["webId"] = serde_json::json!(webid);
                tracing::info!(pod = %name, %pod_url, "created pod for an account");
                (StatusCode::CREATED, Json(json)).into_response()
            }
            Ok(None) => refuse(StatusCode::SERVICE_UNAVAILABLE, "the pod vanished"),
            Err(e) => unavailable(e),
        },
        Err(crate::idp::accounts::AccountError::Invalid(why)) => {
            refuse(StatusCode::BAD_REQUEST, &why)
        }
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pod or its WebID profile cannot be stored right now; try again",
        ),
    }
}

fn migration_json(m: Option<&crate::db::MigrationRecord>) -> serde_json::Value {
    m.map(super::migrate::migration_json)
        .unwrap_or(serde_json::Value::Null)
}

/// `GET /.cluster/pods`: every pod with its owner and any active migration.
pub async fn list_pods(_admin: Admin, State(app): State<Arc<App>>) -> Response {
    let migrations = match app.db.migrations_active().await {
        Ok(m) => m,
        Err(e) => return unavailable(e),
    };
    match app.db.pod_list().await {
        Ok(pods) => Json(
            pods.iter()
                .map(|p| {
                    let mut json = pod_json(p);
                    json["migration"] =
                        migration_json(migrations.iter().find(|m| m.pod_id == p.pod_id));
                    json
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot list pods");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the metadata store is unavailable",
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEdge {
    pub name: String,
}

/// `POST /.cluster/edges`: creates an edge node that may enrol once with
/// the token in the answer. The token is shown only here; the database
/// keeps its SHA-256.
pub async fn create_edge(
    _admin: Admin,
    State(app): State<Arc<App>>,
    body: Result<Json<CreateEdge>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use crate::edge::signal;
    if app.config.is_edge() {
        return refuse(
            StatusCode::CONFLICT,
            "this node is itself an edge; create edges on its centre",
        );
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {e}; expected {{\"name\": \"home-box\"}}"),
            );
        }
    };
    if let Err(why) = signal::validate_name(&req.name) {
        return refuse(StatusCode::BAD_REQUEST, &why);
    }
    let node_id = uuid::Uuid::new_v4().to_string();
    let token = signal::new_token();
    match app
        .db
        .edge_create(
            &node_id,
            &req.name,
            &signal::token_hash(&token),
            crate::db::now_ms(),
        )
        .await
    {
        Ok(()) => {
            tracing::info!(node = %node_id, name = %req.name, "created an edge node");
            (
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "nodeId": node_id,
                    "name": req.name,
                    "token": token,
                    "signalEndpoint": signal::endpoint(&app.config.base_url).to_string(),
                    "baseUrl": app.config.base_url.to_string(),
                })),
            )
                .into_response()
        }
        Err(DbError::Conflict(why)) => refuse(StatusCode::CONFLICT, &why),
        Err(e) => unavailable(e),
    }
}

/// `GET /.cluster/edges`: every edge, enrolled or not (never a token hash).
pub async fn list_edges(_admin: Admin, State(app): State<Arc<App>>) -> Response {
    match app.db.edge_list().await {
        Ok(edges) => Json(
            edges
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "nodeId": e.node_id,
                        "name": e.name,
                        "createdAt": e.created_at,
                        "tokenUnused": e.token_hash.is_some(),
                        "enrolledAt": e.enrolled_at,
                        "lastSignal": e.last_signal,
                        "tunnelNode": e.tunnel_node,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /.cluster/metrics`: Prometheus text format, for administrators.
pub async fn metrics(_: Admin, State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(app.blobs.metrics_enabled());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `POST /.cluster/idp/rotate-keys`: the identity provider signs with a new
/// key from now on; the old keys stay published until the tokens they
/// signed have expired.
pub async fn rotate_keys(_admin: Admin, State(app): State<Arc<App>>) -> Response {
    match app
        .idp
        .keys
        .rotate(&app.db, crate::idp::KEY_RETENTION)
        .await
    {
        Ok(kid) => {
            tracing::info!(%kid, "rotated the identity provider's signing key");
            Json(serde_json::json!({ "kid": kid })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot rotate the signing key");
            refuse(StatusCode::SERVICE_UNAVAILABLE, &e)
        }
    }
}
