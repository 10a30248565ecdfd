//! POST to a container: a new child, named from `Slug` when it is free and
//! safe, never overwriting anything.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};

use super::error::LdpError;
use super::headers::{LDP_BASIC_CONTAINER, LDP_CONTAINER};
use super::target::Target;
use super::write::{self, Written};
use crate::app::App;
use crate::db::{DbError, PutRequest};

pub async fn post(
    app: &App,
    target: &Target,
    req: &HeaderMap,
    body: Body,
) -> Result<Written, LdpError> {
    if !target.is_container() {
        return Err(LdpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST is only allowed on containers",
        )
        .with(header::ALLOW, "OPTIONS, HEAD, GET, PATCH, PUT, DELETE"));
    }
    write::refuse_reserved(target)?;
    if app
        .db
        .resource_get(&target.pod, &target.path)
        .await?
        .is_none()
    {
        return Err(LdpError::not_found());
    }
    let make_container = wants_container(req);
    let content_type = if make_container {
        "text/turtle".to_string()
    } else {
        write::content_type(req)?
    };
    write::check_length(app, req)?;
    let mut upload = None;
    let blob = if make_container {
        None
    } else {
        // Relative IRIs resolve against the container until the name is known.
        let stream = write::body_to_store(app, &content_type, &target.url(), body).await?;
        let u = app.blobs.put(stream, app.config.max_body_size).await?;
        let b = (u.info.hash.clone(), u.info.size as i64);
        upload = Some(u);
        Some(b)
    };
    let slug = req
        .get("slug")
        .and_then(|v| v.to_str().ok())
        .map(sanitize_slug)
        .filter(|s| !s.is_empty());
    for attempt in 0..5 {
        let name = match (&slug, attempt) {
            (Some(s), 0) => s.clone(),
            (Some(s), _) => format!("{s}-{}", short_id()),
            (None, _) => short_id(),
        };
        let path = format!(
            "{}{name}{}",
            target.path,
            if make_container { "/" } else { "" }
        );
        let result = write::put_resource(
            app,
            &PutRequest {
                pod_id: target.pod.clone(),
                path: path.clone(),
                content_type: content_type.clone(),
                blob: blob.clone(),
                storage_id: app.blobs.storage_id().to_string(),
                writer_node: app.node.id.clone(),
                condition: Default::default(),
                create_only: true,
            },
        )
        .await;
        match result {
            Ok(outcome) => {
                if let Some(u) = upload {
                    app.blobs.finish(u).await?;
                }
                return Ok(Written {
                    status: StatusCode::CREATED,
                    location: Some(target.url_of(&path)),
                    record: outcome.record,
                });
            }
            // The name is taken (by a document or a container): pick another.
            Err(DbError::Conflict(_)) => continue,
            Err(e) => {
                if let Some(u) = upload {
                    write::release(app, u).await;
                }
                return Err(e.into());
            }
        }
    }
    if let Some(u) = upload {
        write::release(app, u).await;
    }
    Err(LdpError::new(
        StatusCode::CONFLICT,
        "could not find a free name for the new resource",
    ))
}

/// `Link: <…ldp#BasicContainer>; rel="type"` asks for a container.
fn wants_container(req: &HeaderMap) -> bool {
    req.get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|link| {
            let link = link.trim();
            (link.contains(&format!("<{LDP_BASIC_CONTAINER}>"))
                || link.contains(&format!("<{LDP_CONTAINER}>")))
                && link.replace(' ', "").contains("rel=\"type\"")
        })
}

/// A slug becomes one safe path segment: unreserved characters kept, the
/// rest percent-encoded, never `.`/`..`/`-` alone.
fn sanitize_slug(slug: &str) -> String {
    let trimmed = slug.trim().trim_matches('/');
    let decoded = percent_encoding::percent_decode_str(trimmed).decode_utf8_lossy();
    let mut out = String::new();
    for c in decoded.chars().take(200) {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' | '~' => out.push(c),
            '/' | '\\' => out.push('-'),
            c if c.is_control() => {}
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    // A Slug is a hint: it never names an ACL (which needs Control, not
    // the Append a POST needs).
    while let Some(stem) = out.strip_suffix(".acl") {
        out.truncate(stem.len());
    }
    if matches!(out.as_str(), "." | ".." | "-") {
        return String::new();
    }
    out
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::sanitize_slug;

    #[test]
    fn slugs_become_safe_segments() {
        assert_eq!(sanitize_slug("notes.ttl"), "notes.ttl");
        assert_eq!(sanitize_slug("a/b"), "a-b");
        assert_eq!(sanitize_slug("../x"), "..-x");
        assert_eq!(sanitize_slug(".."), "");
        assert_eq!(sanitize_slug("-"), "");
        assert_eq!(sanitize_slug("hé llo"), "h%C3%A9%20llo");
        assert_eq!(sanitize_slug("notes.acl"), "notes");
        assert_eq!(sanitize_slug(".acl.acl"), "");
    }
}
