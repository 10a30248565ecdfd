//! DELETE: documents, and containers once they are empty. A pod root is
//! never deleted through LDP.

use axum::http::{HeaderMap, StatusCode, header};

use super::error::LdpError;
use super::target::Target;
use super::write;
use crate::app::App;

pub async fn delete(app: &App, target: &Target, req: &HeaderMap) -> Result<StatusCode, LdpError> {
    if target.path == "/" {
        return Err(LdpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "the root of a pod cannot be deleted",
        )
        .with(header::ALLOW, "OPTIONS, HEAD, GET, PATCH, POST, PUT"));
    }
    write::refuse_reserved(target)?;
    write::delete_resource(app, &target.pod, &target.path, &write::condition(req)).await?;
    Ok(StatusCode::RESET_CONTENT)
}
