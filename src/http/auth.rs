//! Authentication of client requests. Every request that carries an
//! `Authorization: DPoP` (or `Bearer`) header, except the node and
//! administrator routes under `/.cluster/` and the OpenID provider's under
//! `/.oidc/` (which have credentials of their own) and requests
//! forwarded by another node (which carry the identity that node verified,
//! under its signature), is checked by the Solid-OIDC verifier
//! ([`crate::auth::oidc`]). A request passes on with its [`Credentials`]
//! as a request extension; a refused one gets 401 and a `DPoP` challenge
//! that says what was wrong. Requests without credentials stay anonymous.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use crate::app::App;
use crate::auth::Credentials;
use crate::auth::oidc::Presented;
use crate::config::Config;

/// The path that tells a client who the server takes it for.
pub const WHOAMI_PATH: &str = "/.auth/whoami";

pub async fn authenticate(
    State(app): State<Arc<App>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The provider's endpoints take credentials of their own (a client's
    // Basic secret, a registration token as Bearer).
    if req.uri().path().starts_with("/.cluster/")
        || req.uri().path().starts_with("/.oidc/")
        || req.headers().contains_key(crate::cluster::signature::HOP)
    {
        return next.run(req).await;
    }
    // Only the Solid-OIDC schemes are checked here; others (the account
    // API's `CSS-Account-Token`, a token endpoint's `Basic`) belong to the
    // route that takes them.
    // Through its tunnel the centre sends the caller it verified.
    if req
        .extensions()
        .get::<crate::edge::tunnel::FromCentre>()
        .is_some()
    {
        let agent = req
            .headers()
            .get(crate::auth::FORWARDED_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mover = req
            .headers()
            .get(crate::edge::moving::MOVER)
            .is_some_and(|v| v == "1");
        let credentials = match Credentials::from_header(agent) {
            Ok(_) if mover => Credentials::Mover,
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(reason = %why, "refused a request from the centre");
                return (axum::http::StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
            }
        };
        req.extensions_mut().insert(credentials);
        return next.run(req).await;
    }
    let oidc = req.headers().get(header::AUTHORIZATION).filter(|v| {
        let scheme = v
            .as_bytes()
            .split(|b| *b == b' ')
            .next()
            .unwrap_or_default();
        scheme.eq_ignore_ascii_case(b"dpop") || scheme.eq_ignore_ascii_case(b"bearer")
    });
    let credentials = match oidc {
        None => Credentials::Anonymous,
        Some(value) => {
            let Ok(authorization) = value.to_str() else {
                return crate::auth::oidc::Failure::Token(
                    "the Authorization header is not ASCII".into(),
                )
                .into_response();
            };
            let Some(url) = canonical_url(&app.config, req.uri(), req.headers()) else {
                return crate::auth::oidc::Failure::Proof(format!(
                    "the request's Host is not this server's ({}): DPoP proofs are bound to this server's URLs",
                    app.config.base_url
                ))
                .into_response();
            };
            let proofs: Vec<&str> = req
                .headers()
                .get_all("dpop")
                .iter()
                .map(|v| v.to_str().unwrap_or_default())
                .collect();
            let presented = Presented {
                authorization,
                proofs,
                method: req.method().as_str(),
                url: &url,
            };
            match app.oidc.verify(&app.db, presented).await {
                Ok(agent) => {
                    app.metrics
                        .oidc
                        .accepted
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Credentials::Agent(agent)
                }
                Err(failure) => {
                    app.metrics
                        .oidc
                        .refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        method = %req.method(),
                        path = req.uri().path(),
                        reason = failure.description(),
                        "refused a request's credentials"
                    );
                    return failure.into_response();
                }
            }
        }
    };
    req.extensions_mut().insert(credentials);
    next.run(req).await
}

/// The URL the client addressed, as a DPoP proof's `htu` must name it:
/// this server's scheme, the `Host` the client sent (the base URL's, or
/// with pod subdomains a pod's), and the path. `None` for a `Host` that is
/// not this server's: no proof is accepted for it.
pub fn canonical_url(config: &Config, uri: &Uri, headers: &HeaderMap) -> Option<Url> {
    let base = &config.base_url;
    let scheme = base.scheme();
    let Some(sent) = headers.get(header::HOST) else {
        // HTTP/1.0 without a Host: the base URL's.
        let mut url = base.clone();
        url.set_path(uri.path());
        return Some(url);
    };
    let mut url = sent
        .to_str()
        .ok()
        .and_then(|h| Url::parse(&format!("{scheme}://{h}/")).ok())
        .filter(|sent| {
            sent.port_or_known_default() == base.port_or_known_default()
                && match (sent.host_str(), base.host_str()) {
                    (Some(s), Some(b)) => {
                        s == b
                            || (config.pod_subdomains
                                && s.strip_suffix(b)
                                    .and_then(|p| p.strip_suffix('.'))
                                    .is_some_and(|p| crate::pod::validate_name(p).is_ok()))
                    }
                    _ => false,
                }
        })?;
    url.set_path(uri.path());
    Some(url)
}

/// `GET /.auth/whoami`: the agent this request authenticated as, or
/// `{"webId": null}` for an anonymous one.
pub async fn whoami(axum::Extension(credentials): axum::Extension<Credentials>) -> Response {
    let body = match credentials {
        Credentials::Anonymous | Credentials::Mover => serde_json::json!({"webId": null}),
        Credentials::Agent(agent) => serde_json::to_value(agent).unwrap_or_default(),
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base: &str, subdomains: bool) -> Config {
        let mut c = Config::from_parts(
            &Default::default(),
            &[
                ("CSS_BASE_URL".to_string(), base.to_string()),
                (
                    "CSS_ROOT_FILE_PATH".to_string(),
                    "/tmp/xpod-unused".to_string(),
                ),
            ],
        )
        .unwrap();
        c.pod_subdomains = subdomains;
        c
    }

    fn url(c: &Config, host: &str, path: &str) -> String {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        canonical_url(c, &path.parse().unwrap(), &h)
            .map(|u| u.to_string())
            .unwrap_or_else(|| "refused".into())
    }

    #[test]
    fn the_canonical_url_is_this_servers() {
        let c = config("http://pods.example:3000/", false);
        assert_eq!(
            url(&c, "pods.example:3000", "/alice/x?q=1"),
            "http://pods.example:3000/alice/x"
        );
        assert_eq!(
            url(&c, "PODS.example:3000", "/alice/"),
            "http://pods.example:3000/alice/"
        );
        // No proof is accepted for another server's name.
        assert_eq!(url(&c, "evil.example:3000", "/alice/x"), "refused");
        assert_eq!(url(&c, "pods.example:3001", "/alice/x"), "refused");
        assert_eq!(url(&c, "alice.pods.example:3000", "/x"), "refused");
        let sub = config("https://pods.example/", true);
        assert_eq!(
            url(&sub, "alice.pods.example", "/x"),
            "https://alice.pods.example/x"
        );
        assert_eq!(
            url(&sub, "alice.pods.example:443", "/x"),
            "https://alice.pods.example/x"
        );
        assert_eq!(url(&sub, "a.b.pods.example", "/x"), "refused");
        assert_eq!(url(&sub, "alice.pods.example:8443", "/x"), "refused");
    }
}
