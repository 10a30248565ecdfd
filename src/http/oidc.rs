//! The OpenID provider's endpoints: discovery
//! (`/.well-known/openid-configuration`), the key set (`/.oidc/jwks`) and
//! the token endpoint (`/.oidc/token`, the client-credentials grant with a
//! DPoP proof). Tokens are those of [`crate::idp`]; issue 8's verifier
//! accepts them like any other issuer's.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::{dpop, jose};
use crate::idp::accounts;

pub const JWKS_PATH: &str = "/.oidc/jwks";
pub const TOKEN_PATH: &str = "/.oidc/token";
pub const AUTH_PATH: &str = "/.oidc/auth";

fn url(app: &App, path: &str) -> String {
    format!("{}{}", app.config.base_url, path.trim_start_matches('/'))
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_TYPE, "application/json"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// An OAuth error body (RFC 6749 section 5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// `GET /.well-known/openid-configuration`: what this provider offers,
/// and nothing it does not.
pub async fn discovery(State(app): State<Arc<App>>) -> Response {
    let algs: Vec<&str> = jose::ALGORITHMS.split(' ').collect();
    json_response(
        StatusCode::OK,
        json!({
            "issuer": app.idp.issuer,
            "jwks_uri": url(&app, JWKS_PATH),
            "token_endpoint": url(&app, TOKEN_PATH),
            // Present because clients require the field; it offers no
            // response type yet (`response_types_supported` is empty).
            "authorization_endpoint": url(&app, AUTH_PATH),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "webid", "offline_access"],
            "claims_supported": ["sub", "webid", "client_id", "iss", "aud"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "dpop_signing_alg_values_supported": algs,
            "response_types_supported": [],
        }),
    )
}

/// `GET /.oidc/jwks`: every key whose tokens may still be live.
pub async fn jwks(State(app): State<Arc<App>>) -> Response {
    match app.idp.keys.jwks(&app.db).await {
        Ok(set) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/jwk-set+json")],
            set.to_string(),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot publish the signing keys");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the key set cannot be read right now",
            )
        }
    }
}

/// The client's id and secret: HTTP Basic (form-urlencoded parts, RFC 6749
/// section 2.3.1) or `client_id`/`client_secret` in the form.
fn client_auth(headers: &HeaderMap, form: &[(String, String)]) -> Option<(String, String)> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        };
        return Some((dec(id)?, dec(secret)?));
    }
    Some((field("client_id")?, field("client_secret")?))
}

/// `POST /.oidc/token`: the client-credentials grant. The client proves
/// possession of a DPoP key (a proof for this endpoint), and gets an access
/// token for the WebID its credentials were made for, bound to that key.
pub async fn token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match super::account::small_body(body).await {
        Ok(b) => b,
        Err(_) => {
            return oauth_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the request body is too large",
            );
        }
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let grant = form
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str());
    match grant {
        Some("client_credentials") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("the grant type {other:?} is not supported here"),
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            );
        }
    }
    let Some((client_id, secret)) = client_auth(&headers, &form) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication is required (HTTP Basic or client_id and client_secret)",
        );
    };
    let proofs: Vec<&str> = headers
        .get_all("dpop")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let [proof] = proofs.as_slice() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            "exactly one DPoP proof is required: this provider issues DPoP-bound tokens only",
        );
    };
    // The proof names the endpoint discovery gives, whichever host
    // (a pod subdomain) the request came to.
    let Ok(endpoint) = url::Url::parse(&url(&app, TOKEN_PATH)) else {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the token endpoint has no valid URL",
        );
    };
    let settings = app.oidc.settings();
    let checked = dpop::check(
        proof,
        &dpop::Expected {
            method: "POST",
            url: &endpoint,
            access_token: None,
            jkt: None,
            now: crate::db::now_ms() / 1000,
            max_age: settings.proof_max_age.as_secs() as i64,
            skew: settings.skew.as_secs() as i64,
            require_ath: false,
        },
    );
    let proof = match checked {
        Ok(p) => p,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", &why),
    };
    let credential = match accounts::check_client(&app.db, &client_id, &secret).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
        Err(_) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the account store is unavailable",
            );
        }
    };
    if let Err(failure) = app.oidc.claim(&app.db, &proof).await {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            failure.description(),
        );
    }
    let ttl = crate::idp::CLIENT_TOKEN_TTL;
    match app
        .idp
        .access_token(&app.db, &credential.webid, &client_id, &proof.jkt, ttl)
        .await
    {
        Ok(token) => json_response(
            StatusCode::OK,
            json!({
                "access_token": token,
                "token_type": "DPoP",
                "expires_in": ttl.as_secs(),
                "scope": "webid",
            }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign an access token");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "tokens cannot be signed right now",
            )
        }
    }
}

/// `GET /.oidc/auth`: no response type is offered yet, so every
/// authorization request is refused (RFC 6749 section 4.1.2.1), without a
/// redirect, since no client's redirect URI can be checked.
pub async fn authorize() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "unsupported_response_type",
        "this provider does not offer the authorization-code flow yet; scripts can use client credentials (POST /.oidc/token)",
    )
}
