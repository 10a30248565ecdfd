//! PATCH with N3 Patch or SPARQL Update. The document is read, patched in
//! memory and written back with `If-Match` on the version that was read, so
//! a concurrent write makes the patch start over instead of being lost.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};

use super::error::LdpError;
use super::put::body_stream;
use super::target::Target;
use super::write::{self, Written};
use crate::app::App;
use crate::db::{Condition, DbError, PutRequest};
use crate::rdf::{self, Syntax, patch::PatchError};

enum Language {
    N3,
    SparqlUpdate,
}

/// The largest patch accepted.
const MAX_PATCH: u64 = 1 << 20;

/// Reads a PATCH body and what it does (`None` when it is not a patch
/// this server can read: [`patch`] then says why).
pub async fn read_body(
    target: &Target,
    req: &HeaderMap,
    body: Body,
) -> Result<(bytes::Bytes, Option<rdf::patch::Shape>), LdpError> {
    let bytes = write::read_limited(body_stream(body), MAX_PATCH).await?;
    let content_type = write::content_type(req).unwrap_or_default();
    let url = target.url();
    let shape = match rdf::essence(&content_type).as_str() {
        "text/n3" => rdf::patch::n3_shape(&bytes, &url).ok(),
        "application/sparql-update" => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| rdf::patch::sparql_shape(text, &url).ok()),
        _ => None,
    };
    Ok((bytes, shape))
}

pub async fn patch(
    app: &App,
    target: &Target,
    req: &HeaderMap,
    body: Body,
) -> Result<Written, LdpError> {
    write::refuse_reserved(target)?;
    let content_type = write::content_type(req)?;
    let language = match rdf::essence(&content_type).as_str() {
        "text/n3" => Language::N3,
        "application/sparql-update" => Language::SparqlUpdate,
        other => {
            return Err(LdpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "cannot PATCH with {other}; use text/n3 (N3 Patch) or application/sparql-update"
                ),
            )
            .with(
                header::HeaderName::from_static("accept-patch"),
                crate::ldp::headers::ACCEPT_PATCH,
            ));
        }
    };
    if target.is_container() {
        return Err(LdpError::new(
            StatusCode::CONFLICT,
            "containers are managed by the server and cannot be patched",
        ));
    }
    let patch_body = write::read_limited(body_stream(body), MAX_PATCH).await?;
    let _serial = app.patch_locks.lock(&target.pod, &target.path).await;
    let client_condition = write::condition(req);
    let url = target.url();
    for _ in 0..16 {
        let current = app.db.resource_get(&target.pod, &target.path).await?;
        if !client_condition.allows(current.as_ref()) {
            return Err(DbError::PreconditionFailed.into());
        }
        let (syntax, content_type, triples) = match &current {
            None => (Syntax::Turtle, "text/turtle".to_string(), Vec::new()),
            Some(record) => {
                let syntax = rdf::input_syntax(&record.content_type).ok_or_else(|| {
                    LdpError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!(
                            "cannot patch a {} document: only RDF can be patched",
                            record.content_type
                        ),
                    )
                })?;
                let bytes = write::read_stored(app, record).await?;
                let triples = rdf::parse(&bytes, syntax, &url).map_err(|e| {
                    tracing::error!(error = %e, "a stored RDF document does not parse");
                    LdpError::new(StatusCode::INTERNAL_SERVER_ERROR, "stored RDF is damaged")
                })?;
                (syntax, record.content_type.clone(), triples)
            }
        };
        let patched = match language {
            Language::N3 => rdf::patch::n3_patch(&triples, &patch_body, &url),
            Language::SparqlUpdate => {
                let text = std::str::from_utf8(&patch_body)
                    .map_err(|_| LdpError::bad_request("the SPARQL Update is not UTF-8"))?;
                rdf::patch::sparql_update(&triples, text, &url)
            }
        }
        .map_err(|e| match e {
            PatchError::Syntax(why) => LdpError::bad_request(why),
            PatchError::Unprocessable(why) => LdpError::new(StatusCode::UNPROCESSABLE_ENTITY, why),
            PatchError::Conflict(why) => LdpError::new(StatusCode::CONFLICT, why),
        })?;
        let bytes = bytes::Bytes::from(rdf::serialize(&patched, syntax, &url));
        let stream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
        let upload = app.blobs.put(stream, app.config.max_body_size).await?;
        let blob = upload.info.clone();
        // Write only over the version that was patched.
        let condition = match &current {
            Some(r) => Condition {
                if_match: Some(vec![r.etag.clone()]),
                if_none_match: None,
            },
            None => Condition {
                if_match: None,
                if_none_match: Some(vec!["*".into()]),
            },
        };
        let result = write::put_resource(
            app,
            &PutRequest {
                pod_id: target.pod.clone(),
                path: target.path.clone(),
                content_type,
                blob: Some((blob.hash, blob.size as i64)),
                storage_id: app.blobs.storage_id().to_string(),
                writer_node: app.node.id.clone(),
                condition,
                create_only: false,
            },
        )
        .await;
        match result {
            Ok(outcome) => {
                app.blobs.finish(upload).await?;
                return Ok(Written {
                    status: if outcome.created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::RESET_CONTENT
                    },
                    record: outcome.record,
                    location: None,
                });
            }
            // Someone wrote in between: patch the new version.
            Err(DbError::PreconditionFailed) => {
                write::release(app, upload).await;
                continue;
            }
            Err(e) => {
                write::release(app, upload).await;
                return Err(e.into());
            }
        }
    }
    Err(LdpError::unavailable(
        "the document kept changing while it was being patched; try again",
    ))
}
