//! Errors of the resource server and the status codes they map to.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::blob::BlobError;
use crate::db::DbError;

/// A refused or failed request: its status and a short plain-text reason.
#[derive(Debug)]
pub struct LdpError {
    pub status: StatusCode,
    pub message: String,
    /// Extra headers, e.g. `Allow` on 405 or `Content-Range` on 416.
    pub headers: Vec<(header::HeaderName, String)>,
}

impl LdpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        LdpError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "no resource at this URL")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message).with(header::RETRY_AFTER, "5")
    }
}

impl From<DbError> for LdpError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => LdpError::not_found(),
            DbError::Conflict(why) => LdpError::new(StatusCode::CONFLICT, why),
            DbError::PreconditionFailed => {
                LdpError::new(StatusCode::PRECONDITION_FAILED, "a precondition failed")
            }
            DbError::Fenced => LdpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this pod is moving to another node; try again in a moment",
            )
            .with(header::RETRY_AFTER, "1"),
            DbError::NotOwner(owner) => {
                LdpError::unavailable(format!("this pod is served by node {owner}; try again"))
            }
            DbError::Unavailable(why) => {
                tracing::error!(error = %why, "database unavailable");
                LdpError::unavailable("the metadata store is unavailable; try again shortly")
            }
            other => {
                tracing::error!(error = %other, "database error");
                LdpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl From<BlobError> for LdpError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound => {
                tracing::error!("a resource row points at missing bytes");
                LdpError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "stored bytes are missing",
                )
            }
            BlobError::TooLarge(max) => LdpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than the limit of {max} bytes"),
            ),
            BlobError::Body(why) => {
                LdpError::bad_request(format!("reading the body failed: {why}"))
            }
            BlobError::Unavailable(why) => {
                tracing::error!(error = %why, "blob storage unavailable");
                LdpError::unavailable("storage is unavailable; try again shortly")
            }
        }
    }
}

impl IntoResponse for LdpError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, format!("{}\n", self.message)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().append(name, v);
            }
        }
        resp
    }
}
