//! Applies Web Access Control ([`crate::auth::wac`]) to a request for a
//! pod this node owns: reads the ACLs that govern the target and its
//! container, decides, and refuses with 401, 403 or 404.
//!
//! Work in progress (branch `wac`): ACLs are read on every request (no
//! cache yet), groups are not resolved, PATCH is judged without reading
//! the patch.

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};

use super::error::LdpError;
use super::target::Target;
use crate::app::App;
use crate::auth::Credentials;
use crate::auth::wac::{self, Acl, Agent, Modes, On, Request};

/// The ACL path for a resource path: `/a/b` → `/a/b.acl`, `/a/` → `/a/.acl`.
fn acl_path(path: &str) -> String {
    format!("{path}.acl")
}

/// The container of a path (`None` for the root).
fn parent(path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let trimmed = path.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    Some(trimmed[..=cut].to_string())
}

/// The resource an `.acl` protects, if the path is one.
fn protected(path: &str) -> Option<&str> {
    path.strip_suffix(".acl")
}

/// Reads one ACL document, if it exists.
async fn read_acl(app: &App, target: &Target, path: &str) -> Result<Option<Arc<Acl>>, LdpError> {
    let Some(record) = app.db.resource_get(&target.pod, path).await? else {
        return Ok(None);
    };
    let bytes = super::write::read_stored(app, &record).await?;
    let syntax =
        crate::rdf::readable_syntax(&record.content_type).unwrap_or(crate::rdf::Syntax::Turtle);
    match Acl::parse(&target.url_of(path), &bytes, syntax) {
        Ok(acl) => Ok(Some(Arc::new(acl))),
        Err(e) => {
            // A damaged ACL grants nothing (its owner can still replace it).
            tracing::warn!(pod = %target.pod, %path, error = %e, "an ACL does not parse");
            Ok(Some(Arc::new(Acl::from_triples(
                &target.url_of(path.trim_end_matches(".acl")),
                &[],
            ))))
        }
    }
}

/// The ACLs governing `path`: its own, then each container's up to the root.
async fn chain(app: &App, target: &Target, path: &str) -> Result<Vec<Option<Arc<Acl>>>, LdpError> {
    let mut out = Vec::new();
    let mut current = Some(path.to_string());
    while let Some(p) = current {
        let acl = read_acl(app, target, &acl_path(&p)).await?;
        let found = acl.is_some();
        out.push(acl);
        if found {
            break;
        }
        current = parent(&p);
    }
    Ok(out)
}

/// The modes an agent has on `path`.
async fn modes_on(
    app: &App,
    target: &Target,
    path: &str,
    agent: &Agent<'_>,
) -> Result<Modes, LdpError> {
    let chain = chain(app, target, path).await?;
    let refs: Vec<Option<&Acl>> = chain.iter().map(|a| a.as_deref()).collect();
    Ok(wac::effective(&refs, agent))
}

/// What the request is allowed to be: `Ok(user and public modes on the
/// target)` to go on, or the refusal.
pub async fn authorize(
    app: &App,
    target: &Target,
    method: &Method,
    _headers: &HeaderMap,
    credentials: &Credentials,
) -> Result<(Modes, Modes), LdpError> {
    let groups = HashSet::new();
    let webid = credentials.agent().map(|a| a.webid.as_str());
    let agent = Agent {
        webid,
        groups: &groups,
    };
    let anonymous = Agent {
        webid: None,
        groups: &groups,
    };
    // An `.acl` is governed by the resource it protects.
    let (subject, on_acl) = match protected(&target.path) {
        Some(p) => (p.to_string(), true),
        None => (target.path.clone(), false),
    };
    let exists = app
        .db
        .resource_get(&target.pod, &target.path)
        .await?
        .is_some();
    let request = match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Request::Read,
        Method::PUT if exists => Request::Replace,
        Method::PUT => Request::Create,
        Method::POST => Request::Post,
        Method::DELETE => Request::Delete,
        Method::PATCH => Request::Patch {
            inserts: true,
            deletes: true,
            reads: false,
            exists,
        },
        _ => Request::Read,
    };
    let user = modes_on(app, target, &subject, &agent).await?;
    let public = modes_on(app, target, &subject, &anonymous).await?;
    for (on, wanted) in wac::required(request, on_acl) {
        let have = match on {
            On::Target => user,
            On::Parent => match parent(&target.path) {
                Some(p) => modes_on(app, target, &p, &agent).await?,
                // The root has no container: creating or deleting it is the
                // pod's own business (refused elsewhere).
                None => Modes::ALL,
            },
        };
        if !have.covers(wanted) {
            let creating = matches!(request, Request::Create)
                || matches!(request, Request::Patch { exists: false, .. });
            let status = wac::refusal(webid.is_some(), user.covers(Modes::READ), exists, creating);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let message = match status {
                StatusCode::NOT_FOUND => "not found".to_string(),
                StatusCode::UNAUTHORIZED => {
                    "log in to do this: this resource is not public".to_string()
                }
                _ => format!("{} may not do this here", webid.unwrap_or("this agent")),
            };
            return Err(LdpError::new(status, message));
        }
    }
    Ok((user, public))
}

/// Writes an ACL document into a pod (at pod creation).
pub async fn write_acl(
    app: &App,
    pod: &str,
    pod_url: &str,
    path: &str,
    text: String,
) -> Result<(), String> {
    let target = Target {
        pod: pod.to_string(),
        path: path.to_string(),
        pod_url: pod_url.to_string(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/turtle"),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&text.len().to_string()) {
        headers.insert(axum::http::header::CONTENT_LENGTH, v);
    }
    super::put::put(app, &target, &headers, text.into())
        .await
        .map(|_| ())
        .map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_and_acl_paths() {
        assert_eq!(parent("/a/b"), Some("/a/".into()));
        assert_eq!(parent("/a/b/"), Some("/a/".into()));
        assert_eq!(parent("/a"), Some("/".into()));
        assert_eq!(parent("/"), None);
        assert_eq!(acl_path("/a/"), "/a/.acl");
        assert_eq!(protected("/a/b.acl"), Some("/a/b"));
        assert_eq!(protected("/a/.acl"), Some("/a/"));
    }
}
