//! What PUT, POST and DELETE share: conditions, content types, limits, and
//! the response to a successful write.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::error::LdpError;
use super::headers::{describe, etag_list, validators};
use super::target::Target;
use crate::app::App;
use crate::db::{Condition, DbError, DbResult, PutOutcome, PutRequest, ResourceRecord};

/// How long a write waits while a migration switches its pod to another
/// node before it gives up with 503. Below the 2 s a forwarding node waits
/// for a response head, so a write forwarded here is answered by this node.
pub const FENCE_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Runs a metadata commit, retrying it while the pod is fenced by a
/// migration's switch (bounded by [`FENCE_WAIT`]).
async fn unfenced<T, F, Fut>(mut commit: F) -> DbResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = DbResult<T>>,
{
    let deadline = tokio::time::Instant::now() + FENCE_WAIT;
    loop {
        match commit().await {
            Err(DbError::Fenced) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

/// Commits a resource row (see [`crate::db::MetadataStore::resource_put`]),
/// waiting out a migration's fence.
pub async fn put_resource(app: &App, req: &PutRequest) -> DbResult<PutOutcome> {
    let outcome = unfenced(|| app.db.resource_put(req)).await;
    // An ACL or group document may have changed: decide with it from now on.
    app.access.forget(&req.pod_id, &req.path);
    outcome
}

/// Commits several resource rows in one transaction (see
/// [`crate::db::MetadataStore::resource_put_all`]), waiting out a
/// migration's fence.
pub async fn put_resources(app: &App, reqs: &[PutRequest]) -> DbResult<Vec<PutOutcome>> {
    let outcome = unfenced(|| app.db.resource_put_all(reqs)).await;
    for req in reqs {
        app.access.forget(&req.pod_id, &req.path);
    }
    outcome
}

/// Deletes a resource row, waiting out a migration's fence.
pub async fn delete_resource(
    app: &App,
    pod: &str,
    path: &str,
    condition: &Condition,
) -> DbResult<ResourceRecord> {
    let deleted = unfenced(|| app.db.resource_delete(pod, path, condition, &app.node.id)).await;
    app.access.forget(pod, path);
    deleted
}

/// A committed write: the status to answer and the stored version.
pub struct Written {
    pub status: StatusCode,
    pub record: ResourceRecord,
    /// For POST: the URL of the new resource.
    pub location: Option<String>,
}

impl Written {
    pub fn into_response(self, target: &Target) -> Response {
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        if self.status != StatusCode::RESET_CONTENT || self.location.is_none() {
            validators(h, &self.record);
        }
        if let Some(loc) = &self.location
            && let Ok(v) = HeaderValue::from_str(loc)
        {
            h.insert(header::LOCATION, v);
        }
        let described = Target {
            path: self.record.path.clone(),
            ..target.clone()
        };
        for (name, value) in describe(&described, true).iter() {
            if name == header::LINK {
                h.insert(name, value.clone());
            }
        }
        resp
    }
}

pub fn condition(req: &HeaderMap) -> Condition {
    Condition {
        if_match: etag_list(req, header::IF_MATCH),
        if_none_match: etag_list(req, header::IF_NONE_MATCH),
    }
}

/// The Content-Type of a write; the Solid Protocol requires one.
pub fn content_type(req: &HeaderMap) -> Result<String, LdpError> {
    let value = req
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| LdpError::bad_request("a Content-Type header is required"))?;
    let mime: &str = value.split(';').next().unwrap_or_default().trim();
    if !mime.contains('/') || mime.contains(char::is_whitespace) {
        return Err(LdpError::bad_request(format!(
            "invalid Content-Type {value:?}"
        )));
    }
    Ok(value.to_string())
}

/// Refuses a body announced as larger than the limit before reading it.
pub fn check_length(app: &App, req: &HeaderMap) -> Result<(), LdpError> {
    let declared = req
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > app.config.max_body_size
    {
        return Err(LdpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than the limit of {} bytes",
                app.config.max_body_size
            ),
        ));
    }
    Ok(())
}

/// Paths that are not ordinary resources and cannot be written.
pub fn refuse_reserved(target: &Target) -> Result<(), LdpError> {
    let segments: Vec<&str> = target.path.split('/').collect();
    let inner = &segments[..segments.len().saturating_sub(1)];
    if target.path.ends_with(".acl.acl") || inner.iter().any(|s| s.ends_with(".acl")) {
        return Err(LdpError::bad_request(
            "an ACL has no ACL of its own and cannot be a container: the ACL of /x is /x.acl, governed by Control on /x",
        ));
    }
    if target.path == "/.well-known/" || target.path.starts_with("/.well-known/") {
        return Err(LdpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "the storage description is read-only",
        )
        .with(header::ALLOW, "OPTIONS, HEAD, GET"));
    }
    Ok(())
}

/// The largest RDF document accepted: RDF is parsed in memory to validate it.
pub const MAX_RDF: u64 = 64 << 20;

/// The body to store. RDF is read whole and parsed first, so malformed RDF
/// is refused (400, with the parser's line) before anything is stored;
/// other bodies stream straight to the blob store.
pub async fn body_to_store(
    app: &App,
    content_type: &str,
    target_url: &str,
    body: axum::body::Body,
) -> Result<crate::blob::ByteStream, LdpError> {
    use futures::StreamExt;
    let Some(syntax) = crate::rdf::input_syntax(content_type) else {
        return Ok(super::put::body_stream(body));
    };
    let limit = MAX_RDF.min(app.config.max_body_size);
    let bytes = read_limited(super::put::body_stream(body), limit).await?;
    crate::rdf::parse(&bytes, syntax, target_url).map_err(LdpError::bad_request)?;
    Ok(futures::stream::once(async move { Ok(bytes) }).boxed())
}

/// Reads a stream into memory, refusing more than `limit` bytes (413).
pub async fn read_limited(
    mut stream: crate::blob::ByteStream,
    limit: u64,
) -> Result<bytes::Bytes, LdpError> {
    use futures::StreamExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| LdpError::bad_request(format!("reading the body failed: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(LdpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("RDF bodies are limited to {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Reads a stored document whole (RDF documents only: they are bounded).
pub async fn read_stored(app: &App, record: &ResourceRecord) -> Result<bytes::Bytes, LdpError> {
    let Some(hash) = &record.content_hash else {
        return Ok(bytes::Bytes::new());
    };
    if record.size == 0 {
        return Ok(bytes::Bytes::new());
    }
    let stream = app.blobs.get(hash, None).await?;
    read_limited(stream, u64::MAX).await
}

/// A write was refused after its bytes were stored: leave them to the
/// collector instead of on disk forever.
pub async fn release(app: &App, upload: crate::blob::Upload) {
    let info = &upload.info;
    if let Err(e) = app
        .db
        .blob_orphan(app.blobs.storage_id(), &info.hash, info.size as i64)
        .await
    {
        tracing::warn!(error = %e, hash = %info.hash, "cannot record unreferenced bytes");
    }
}
