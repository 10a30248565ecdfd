//! The Solid/LDP resource server: parse the request into a target, then one
//! `match` on the method. One file per method; shared rules in `write.rs`,
//! `headers.rs`, `target.rs`.

pub mod container;
pub mod delete;
pub mod error;
pub mod get;
pub mod headers;
pub mod locks;
pub mod patch;
pub mod post;
pub mod put;
pub mod target;
pub mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use error::LdpError;
use target::{Target, TargetError};

/// The fallback service: every request that is not a cluster route.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let target = match target::resolve(&app.config, &uri, &headers) {
        Ok(t) => t,
        Err(TargetError::Bad(why)) => return LdpError::bad_request(why).into_response(),
        Err(TargetError::NoPod) => return LdpError::not_found().into_response(),
    };
    match dispatch(&app, &target, &method, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => {
            let mut resp = e.into_response();
            if resp.status() == StatusCode::NOT_FOUND {
                resp.headers_mut().extend(headers::describe(&target, false));
            }
            resp
        }
    }
}

async fn dispatch(
    app: &App,
    target: &Target,
    method: &Method,
    req: &HeaderMap,
    body: Body,
) -> Result<Response, LdpError> {
    // The pod must exist, whatever the method.
    if app.db.pod_get(&target.pod).await?.is_none() {
        return Err(LdpError::not_found());
    }
    match *method {
        Method::GET | Method::HEAD => get::get(app, target, method, req).await,
        Method::PUT => Ok(put::put(app, target, req, body)
            .await?
            .into_response(target)),
        Method::POST => Ok(post::post(app, target, req, body)
            .await?
            .into_response(target)),
        Method::DELETE => {
            let status = delete::delete(app, target, req).await?;
            Ok(status.into_response())
        }
        Method::OPTIONS => {
            let exists = app
                .db
                .resource_get(&target.pod, &target.path)
                .await?
                .is_some();
            let mut resp = StatusCode::NO_CONTENT.into_response();
            resp.headers_mut().extend(headers::describe(target, exists));
            Ok(resp)
        }
        Method::PATCH => Ok(patch::patch(app, target, req, body)
            .await?
            .into_response(target)),
        _ => Err(LdpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported"),
        )
        .with(header::ALLOW, headers::allow(target, true))),
    }
}
