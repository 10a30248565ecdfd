//! The Solid/LDP resource server: parse the request into a target, then one
//! `match` on the method. One file per method; shared rules in `write.rs`,
//! `headers.rs`, `target.rs`.

pub mod access;
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
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use error::LdpError;
use target::Target;

/// Serves a request for a pod this node owns (`query`: the request URL's
/// query string, read only by a SPARQL sidecar).
pub async fn serve(
    app: &Arc<App>,
    target: &Target,
    method: Method,
    headers: HeaderMap,
    query: Option<&str>,
    body: Body,
    credentials: &crate::auth::Credentials,
) -> Response {
    // The handler gets the body through a slot, so that a body it refused
    // without reading (413 on the declared length, 412, 415 …) can be
    // drained after the response: a client still sending would otherwise
    // see a broken pipe instead of the answer.
    let caller = access::Caller::of(app, target, &headers, credentials);
    if let Some(container) = target.sidecar() {
        let container = target.at(container);
        return crate::sparql::serve(app, &container, &method, &headers, query, body, &caller)
            .await;
    }
    // A PATCH needs the modes of what it does: read it first (it is small).
    let mut body = Some(body);
    let mut shape = None;
    if method == Method::PATCH {
        match patch::read_body(target, &headers, body.take().unwrap_or_default()).await {
            Ok((bytes, s)) => {
                shape = s;
                body = Some(Body::from(bytes));
            }
            Err(e) => {
                // Refused for want of access first, if it is, so that the
                // error tells nothing about the resource.
                if let Err(refusal) = access::authorize(app, target, &method, &caller, None).await {
                    return refusal.into_response();
                }
                return e.into_response();
            }
        }
    }
    let slot = Arc::new(std::sync::Mutex::new(body));
    let result = if method == Method::OPTIONS {
        options(app, target, &caller).await
    } else {
        match access::authorize(app, target, &method, &caller, shape).await {
            Ok(decision) => {
                // The write must find the resource as the decision saw it.
                let mut headers = headers.clone();
                match &decision.pin {
                    Some(access::Pin::Absent) => {
                        headers
                            .insert(header::IF_NONE_MATCH, header::HeaderValue::from_static("*"));
                    }
                    Some(access::Pin::Version(etag)) => {
                        if let Ok(v) = header::HeaderValue::from_str(etag) {
                            headers.insert(header::IF_MATCH, v);
                        }
                    }
                    None => {}
                }
                dispatch(app, target, &method, &headers, from_slot(slot.clone()))
                    .await
                    .map(|mut resp| {
                        let value = crate::auth::wac::wac_allow(decision.user, decision.public);
                        if let Ok(v) = header::HeaderValue::from_str(&value)
                            && !value.is_empty()
                        {
                            resp.headers_mut().insert("wac-allow", v);
                        }
                        resp
                    })
            }
            Err(e) => Err(e),
        }
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            if e.status == StatusCode::SERVICE_UNAVAILABLE {
                // Perhaps the pod moved: look it up afresh next time.
                app.placement.forget_pod(&target.pod);
            }
            let mut resp = e.into_response();
            if resp.status() == StatusCode::NOT_FOUND {
                resp.headers_mut().extend(headers::describe(target, false));
            }
            resp
        }
    };
    let unread = slot.lock().expect("body slot").take();
    if let Some(body) = unread
        && resp.status().is_client_error()
        && (headers.contains_key(header::CONTENT_LENGTH)
            || headers.contains_key(header::TRANSFER_ENCODING))
    {
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        tokio::spawn(drain(body));
    }
    resp
}

/// A body read from `slot` on first use.
fn from_slot(slot: Arc<std::sync::Mutex<Option<Body>>>) -> Body {
    use futures::StreamExt;
    let stream = futures::stream::unfold((slot, None), |(slot, current)| async move {
        let mut current: axum::body::BodyDataStream = match current {
            Some(c) => c,
            None => slot.lock().expect("body slot").take()?.into_data_stream(),
        };
        let item = current.next().await?;
        Some((item, (slot, Some(current))))
    });
    Body::from_stream(stream)
}

/// Reads and discards what a client still sends of a refused body, for at
/// most 5 s and 64 MiB, then lets the connection close.
async fn drain(body: Body) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut read = 0usize;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        read += chunk.len();
        if read > 64 << 20 {
            break;
        }
    }
}

/// OPTIONS is never refused, but it tells whether the resource exists
/// (through `Allow`) only to a caller who may read it.
async fn options(
    app: &App,
    target: &Target,
    caller: &access::Caller<'_>,
) -> Result<Response, LdpError> {
    let exists = access::may_read(app, target, caller).await.is_ok()
        && app
            .db
            .resource_get(&target.pod, &target.path)
            .await?
            .is_some();
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().extend(headers::describe(target, exists));
    Ok(resp)
}

async fn dispatch(
    app: &App,
    target: &Target,
    method: &Method,
    req: &HeaderMap,
    body: Body,
) -> Result<Response, LdpError> {
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
