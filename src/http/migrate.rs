//! Pod migration over HTTP: the administrator's routes
//! (`/.cluster/pods/{pod}/migrate` and `/.cluster/pods/{pod}/migration`)
//! and the blob route another node copies bytes from (node credentials only).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::admin::{Admin, refuse, unavailable};
use crate::app::App;
use crate::blob::BlobError;
use crate::cluster::registry;
use crate::db::{DbError, MigrationRecord};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrateRequest {
    pub target_node: Option<String>,
}

/// A migration as the API shows it.
pub fn migration_json(m: &MigrationRecord) -> serde_json::Value {
    serde_json::json!({
        "id": m.id,
        "podId": m.pod_id,
        "status": m.status.as_str(),
        "sourceNode": m.source_node,
        "targetNode": m.target_node,
        "progress": m.progress,
        "copied": m.copied,
        "total": m.total,
        "startedAt": m.started_at,
        "updatedAt": m.updated_at,
        "finishedAt": m.finished_at,
        "fenceMs": m.fenced_at.zip(m.finished_at).map(|(f, d)| d - f),
        "error": m.error,
    })
}

/// `POST /.cluster/pods/{pod}/migrate` with `{"targetNode": "…"}`: records
/// the migration (202); the target node drives it.
pub async fn start(
    _admin: Admin,
    State(app): State<Arc<App>>,
    Path(pod_id): Path<String>,
    body: Result<Json<MigrateRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let pod = match app.db.pod_get(&pod_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, &format!("no pod {pod_id}")),
        Err(e) => return unavailable(e),
    };
    let target = match body {
        Ok(Json(MigrateRequest {
            target_node: Some(t),
        })) if !t.is_empty() => t,
        Ok(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "say where to move the pod: {\"targetNode\": \"<node id>\"}",
            );
        }
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {e}"),
            );
        }
    };
    let node = match app.db.node_get(&target).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("no node {target}; `xpod nodes list` shows the nodes"),
            );
        }
        Err(e) => return unavailable(e),
    };
    if pod.node_id == target {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("pod {pod_id} is already on node {target}"),
        );
    }
    if node.kind != "centre" {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("node {target} is an edge node; pods move to centre nodes"),
        );
    }
    if !registry::reachable(
        &node,
        app.config.node_unreachable_after,
        crate::db::now_ms(),
    ) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("node {target} is not sending heartbeats; start it first"),
        );
    }
    match app.db.migration_start(&pod_id, &pod.node_id, &target).await {
        Ok(m) => {
            tracing::info!(pod = %pod_id, from = %pod.node_id, to = %target, migration = m.id, "migration requested");
            app.migrations.wake();
            let location = format!("/.cluster/pods/{pod_id}/migration");
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(migration_json(&m)),
            )
                .into_response()
        }
        Err(DbError::Conflict(why)) => refuse(StatusCode::CONFLICT, &why),
        Err(DbError::NotFound) => refuse(StatusCode::NOT_FOUND, &format!("no pod {pod_id}")),
        Err(e) => unavailable(e),
    }
}

/// `GET /.cluster/pods/{pod}/migration`: the pod's newest migration.
pub async fn status(
    _admin: Admin,
    State(app): State<Arc<App>>,
    Path(pod_id): Path<String>,
) -> Response {
    match app.db.migration_latest(&pod_id).await {
        Ok(Some(m)) => Json(migration_json(&m)).into_response(),
        Ok(None) => refuse(
            StatusCode::NOT_FOUND,
            &format!("pod {pod_id} has never been migrated (or does not exist)"),
        ),
        Err(e) => unavailable(e),
    }
}

/// `DELETE /.cluster/pods/{pod}/migration`: cancels the running migration,
/// unless its switch has begun.
pub async fn cancel(
    _admin: Admin,
    State(app): State<Arc<App>>,
    Path(pod_id): Path<String>,
) -> Response {
    match app.db.migration_cancel(&pod_id).await {
        Ok(m) => {
            tracing::info!(pod = %pod_id, migration = m.id, "migration cancelled");
            Json(migration_json(&m)).into_response()
        }
        Err(DbError::NotFound) => refuse(
            StatusCode::NOT_FOUND,
            &format!("no migration of pod {pod_id} is running"),
        ),
        Err(DbError::Conflict(why)) => refuse(StatusCode::CONFLICT, &why),
        Err(e) => unavailable(e),
    }
}

/// `GET /.cluster/blobs/{hash}`: bytes of this node's storage, for a node
/// that copies a pod (signed node requests only).
pub async fn blob(
    State(app): State<Arc<App>>,
    Path(hash): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !headers.contains_key(crate::cluster::signature::HOP) {
        return refuse(
            StatusCode::FORBIDDEN,
            "only nodes of the cluster may read blobs",
        );
    }
    if let Err(why) = super::proxy::verify(&app, &method, &uri, &headers).await {
        tracing::warn!(error = %why, "refused a blob request");
        return super::proxy::refused(&why);
    }
    if !crate::blob::is_hash(&hash) {
        return refuse(StatusCode::BAD_REQUEST, "not a SHA-256 hash");
    }
    match app.blobs.get(&hash, None).await {
        Ok(stream) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from_stream(stream),
        )
            .into_response(),
        Err(BlobError::NotFound) => refuse(StatusCode::NOT_FOUND, "no such blob here"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a blob for another node");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "blob storage unavailable")
        }
    }
}
