//! DELETE: documents, and containers once they are empty. A pod root is
//! never deleted through LDP.

use axum::http::{HeaderMap, StatusCode, header};

use super::access;
use super::error::LdpError;
use super::target::Target;
use super::write;
use crate::app::App;
use crate::db::{Condition, DbError};

pub async fn delete(app: &App, target: &Target, req: &HeaderMap) -> Result<StatusCode, LdpError> {
    if target.path == "/" {
        return Err(LdpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "the root of a pod cannot be deleted",
        )
        .with(header::ALLOW, "OPTIONS, HEAD, GET, PATCH, POST, PUT"));
    }
    if target.path == "/.acl" {
        return Err(LdpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "the pod's root ACL cannot be deleted (nobody could use the pod); replace it with PUT",
        )
        .with(header::ALLOW, "OPTIONS, HEAD, GET, PATCH, PUT"));
    }
    write::refuse_reserved(target)?;
    let condition = write::condition(req);
    let acl = format!("{}.acl", target.path);
    match write::delete_resource(app, &target.pod, &target.path, &condition).await {
        Ok(_) => {}
        // A container holding nothing but its own ACL is empty to its users.
        Err(DbError::Conflict(why)) if target.is_container() => {
            let children = app
                .db
                .resource_children(&target.pod, &target.path, None, 2)
                .await?;
            if !matches!(children.as_slice(), [only] if only.path == acl) {
                return Err(DbError::Conflict(why).into());
            }
            // The client's condition is on the container as it asked for it
            // (deleting the ACL gives the container a new version).
            let current = app.db.resource_get(&target.pod, &target.path).await?;
            if !condition.allows(current.as_ref()) {
                return Err(DbError::PreconditionFailed.into());
            }
            write::delete_resource(app, &target.pod, &acl, &Condition::default()).await?;
            write::delete_resource(app, &target.pod, &target.path, &Condition::default()).await?;
            return Ok(StatusCode::RESET_CONTENT);
        }
        Err(e) => return Err(e.into()),
    }
    // A resource's ACL goes with it, so that a new resource of the same
    // name starts from its container's rules.
    if !target.is_container() && access::protected(&target.path).is_none() {
        match write::delete_resource(app, &target.pod, &acl, &Condition::default()).await {
            Ok(_) | Err(DbError::NotFound) => {}
            Err(e) => {
                tracing::warn!(pod = %target.pod, path = %acl, error = %e, "deleted a resource but not its ACL");
            }
        }
    }
    Ok(StatusCode::RESET_CONTENT)
}
