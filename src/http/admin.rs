//! The administrator API under `/.cluster/`: the credential check and the
//! pod routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::App;
use crate::auth::admin_token;
use crate::db::{DbError, PodRecord};

/// Proof that the request carried a valid administrator token.
pub struct Admin;

fn refuse(status: StatusCode, message: &str) -> Response {
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
    })
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
    let record = PodRecord {
        pod_id: req.name.clone(),
        base_url: crate::pod::base_url(&app.config, &req.name).to_string(),
        node_id: app.node.id.clone(),
        storage_id: app.blobs.storage_id().to_string(),
        owner: req.owner.clone(),
        created_at: crate::db::now_ms(),
    };
    match app.db.pod_create(&record).await {
        Ok(_) => {
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

/// `GET /.cluster/pods`.
pub async fn list_pods(_admin: Admin, State(app): State<Arc<App>>) -> Response {
    match app.db.pod_list().await {
        Ok(pods) => Json(pods.iter().map(pod_json).collect::<Vec<_>>()).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot list pods");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the metadata store is unavailable",
            )
        }
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
