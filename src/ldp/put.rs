//! PUT: create or replace a document (streamed into the blob store), or
//! create a container. Missing intermediate containers are created.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use futures::{StreamExt, TryStreamExt};

use super::error::LdpError;
use super::target::Target;
use super::write::{self, Written};
use crate::app::App;
use crate::blob::ByteStream;
use crate::db::PutRequest;

pub async fn put(
    app: &App,
    target: &Target,
    req: &HeaderMap,
    body: Body,
) -> Result<Written, LdpError> {
    write::refuse_reserved(target)?;
    let condition = write::condition(req);
    if target.is_container() {
        let outcome = write::put_resource(
            app,
            &PutRequest {
                pod_id: target.pod.clone(),
                path: target.path.clone(),
                content_type: "text/turtle".into(),
                blob: None,
                storage_id: app.blobs.storage_id().to_string(),
                writer_node: app.node.id.clone(),
                condition,
                create_only: false,
            },
        )
        .await
        .map_err(|e| match e {
            crate::db::DbError::Conflict(why) if why.ends_with("already exists") => {
                LdpError::new(StatusCode::CONFLICT, "the container already exists")
            }
            other => other.into(),
        })?;
        return Ok(Written {
            status: StatusCode::CREATED,
            record: outcome.record,
            location: None,
        });
    }
    let content_type = write::content_type(req)?;
    if super::access::protected(&target.path).is_some()
        && crate::rdf::input_syntax(&content_type).is_none()
    {
        return Err(LdpError::bad_request(format!(
            "an ACL must be RDF, not {content_type}: send it as text/turtle"
        )));
    }
    write::check_length(app, req)?;
    let stream = write::body_to_store(app, &content_type, &target.url(), body).await?;
    let upload = app.blobs.put(stream, app.config.max_body_size).await?;
    let blob = upload.info.clone();
    let outcome = write::put_resource(
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
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            write::release(app, upload).await;
            return Err(e.into());
        }
    };
    app.blobs.finish(upload).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::RESET_CONTENT
    };
    Ok(Written {
        status,
        record: outcome.record,
        location: None,
    })
}

/// The request body as a byte stream.
pub fn body_stream(body: Body) -> ByteStream {
    body.into_data_stream()
        .map_err(std::io::Error::other)
        .boxed()
}
