//! The OpenID provider's endpoints: discovery
//! (`/.well-known/openid-configuration`), the key set (`/.oidc/jwks`),
//! dynamic client registration (`/.oidc/reg`), the authorization endpoint
//! (`/.oidc/auth`, the code flow with PKCE; the user logs in and consents
//! through the account API and its pages, then comes back to
//! `/.oidc/auth/<uid>`), and the token endpoint (`/.oidc/token`: the
//! authorization-code, refresh-token and client-credentials grants, always
//! with a DPoP proof). Tokens are those of [`crate::idp`]; issue 8's
//! verifier accepts them like any other issuer's.

// Handlers stop early with the response to send.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::{dpop, jose};
use crate::idp::{accounts, oauth};

use super::pages;

pub const JWKS_PATH: &str = "/.oidc/jwks";
pub const TOKEN_PATH: &str = "/.oidc/token";
pub const AUTH_PATH: &str = "/.oidc/auth";
pub const REGISTRATION_PATH: &str = "/.oidc/reg";

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
            "authorization_endpoint": url(&app, AUTH_PATH),
            "registration_endpoint": url(&app, REGISTRATION_PATH),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "scopes_supported": ["openid", "webid", "offline_access"],
            "claims_supported": ["azp", "sub", "webid", "iss", "aud", "auth_time", "nonce", "client_id"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "dpop_signing_alg_values_supported": algs,
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
    let field = |name: &str| form_field(form, name).map(str::to_string);
    Some((field("client_id")?, field("client_secret")?))
}

/// The client's id and, if it sent one, its secret: HTTP Basic or the
/// form's `client_id` (and `client_secret`). Public clients send no secret.
fn client_identity(
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Option<(String, Option<String>)> {
    if let Some((id, secret)) = client_auth(headers, form) {
        // One client per request: a form client_id must name the same.
        if form_field(form, "client_id").is_some_and(|other| other != id) {
            return None;
        }
        return Some((id, Some(secret)));
    }
    Some((form_field(form, "client_id")?.to_string(), None))
}

fn form_field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn unavailable(what: &str) -> Response {
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        &format!("{what} cannot be reached right now; try again shortly"),
    )
}

/// The request's one DPoP proof, checked for this endpoint (not yet
/// claimed against replay).
fn token_proof(app: &App, headers: &HeaderMap) -> Result<dpop::Proof, Response> {
    let proofs: Vec<&str> = headers
        .get_all("dpop")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let [proof] = proofs.as_slice() else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            "exactly one DPoP proof is required: this provider issues DPoP-bound tokens only",
        ));
    };
    // The proof names the endpoint discovery gives, whichever host
    // (a pod subdomain) the request came to.
    let Ok(endpoint) = url::Url::parse(&url(app, TOKEN_PATH)) else {
        return Err(unavailable("the token endpoint"));
    };
    let settings = app.oidc.settings();
    dpop::check(
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
    )
    .map_err(|why| oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", &why))
}

/// Claims a proof's `jti`: a proof is used once, at any node.
async fn claim(app: &App, proof: &dpop::Proof) -> Result<(), Response> {
    app.oidc.claim(&app.db, proof).await.map_err(|failure| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            failure.description(),
        )
    })
}

/// `POST /.oidc/token`: the authorization-code, refresh-token and
/// client-credentials grants. Every grant needs a DPoP proof for this
/// endpoint, and every access token is bound to the proof's key.
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
    let result = match form_field(&form, "grant_type") {
        Some("client_credentials") => client_credentials(&app, &headers, &form).await,
        Some("authorization_code") => code_grant(&app, &headers, &form).await,
        Some("refresh_token") => refresh_grant(&app, &headers, &form).await,
        Some(other) => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!(
                "the grant type {other:?} is not supported here (authorization_code, refresh_token, client_credentials)"
            ),
        )),
        None => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        )),
    };
    result.unwrap_or_else(|resp| resp)
}

/// The client-credentials grant: the client proves possession of a DPoP
/// key and gets an access token for the WebID its credentials were made
/// for, bound to that key.
async fn client_credentials(
    app: &App,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Response, Response> {
    let Some((client_id, secret)) = client_auth(headers, form) else {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication is required (HTTP Basic or client_id and client_secret)",
        ));
    };
    let proof = token_proof(app, headers)?;
    let credential = match accounts::check_client(&app.db, &client_id, &secret).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            ));
        }
        Err(_) => return Err(unavailable("the account store")),
    };
    claim(app, &proof).await?;
    let ttl = crate::idp::CLIENT_TOKEN_TTL;
    let token = app
        .idp
        .access_token(
            &app.db,
            &client_id,
            &credential.webid,
            &client_id,
            &proof.jkt,
            ttl,
        )
        .await
        .map_err(signing_failed)?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "access_token": token,
            "token_type": "DPoP",
            "expires_in": ttl.as_secs(),
            "scope": "webid",
        }),
    ))
}

fn signing_failed(e: String) -> Response {
    tracing::error!(error = %e, "cannot sign a token");
    unavailable("the signing keys")
}

/// The client a code or refresh grant comes from, authenticated.
async fn grant_client(
    app: &App,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(String, oauth::Metadata), Response> {
    let Some((client_id, secret)) = client_identity(headers, form) else {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "no client authentication: send HTTP Basic, or client_id (and client_secret)",
        ));
    };
    match oauth::authenticate(&app.db, &client_id, secret.as_deref()).await {
        Ok(Some(m)) => Ok((client_id, m)),
        Ok(None) => Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )),
        Err(_) => Err(unavailable("the client store")),
    }
}

fn invalid_grant(e: oauth::GrantError) -> Response {
    match e {
        oauth::GrantError::Invalid(why) => {
            tracing::info!(reason = why, "grant refused");
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why)
        }
        oauth::GrantError::Db(e) => {
            tracing::warn!(error = %e, "grant store");
            unavailable("the grant store")
        }
    }
}

/// The tokens a user's login gives an app: a DPoP-bound access token, an
/// ID token and, if granted, the refresh token.
async fn user_tokens(
    app: &App,
    webid: &str,
    client_id: &str,
    jkt: &str,
    (nonce, auth_time): (Option<&str>, i64),
    scope: &[String],
    refresh_token: Option<String>,
) -> Result<Response, Response> {
    let ttl = oauth::ACCESS_TOKEN_TTL;
    let access = app
        .idp
        .access_token(&app.db, webid, webid, client_id, jkt, ttl)
        .await
        .map_err(signing_failed)?;
    let login = crate::idp::Login {
        webid,
        client_id,
        nonce,
        auth_time,
    };
    let id = app
        .idp
        .id_token(&app.db, &login, &access, ttl)
        .await
        .map_err(signing_failed)?;
    let mut body = json!({
        "access_token": access,
        "token_type": "DPoP",
        "expires_in": ttl.as_secs(),
        "id_token": id,
        "scope": scope.join(" "),
    });
    if let Some(rt) = refresh_token {
        body["refresh_token"] = json!(rt);
    }
    Ok(json_response(StatusCode::OK, body))
}

/// The authorization-code grant, with PKCE.
async fn code_grant(
    app: &App,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Response, Response> {
    let need = |name: &str| {
        form_field(form, name).ok_or_else(|| {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("missing required parameter {name:?}"),
            )
        })
    };
    let (code, redirect_uri, verifier) =
        (need("code")?, need("redirect_uri")?, need("code_verifier")?);
    let (client_id, client) = grant_client(app, headers, form).await?;
    let proof = token_proof(app, headers)?;
    // Claimed first: a replayed proof must not spend the code.
    claim(app, &proof).await?;
    let (grant_id, grant) = oauth::redeem(&app.db, code, &client_id, redirect_uri, verifier)
        .await
        .map_err(invalid_grant)?;
    let refresh = if grant.offline && client.allows_refresh() {
        let data = oauth::Refresh {
            client_id: client_id.clone(),
            webid: grant.webid.clone(),
            scope: grant.scope.clone(),
            auth_time: grant.auth_time,
            // A public client's refresh token works only with its key.
            jkt: client.public().then(|| proof.jkt.clone()),
        };
        let token = oauth::issue_refresh(&app.db, &grant_id, &grant.account, &data)
            .await
            .map_err(|e| invalid_grant(oauth::GrantError::Db(e)))?;
        Some(token)
    } else {
        None
    };
    user_tokens(
        app,
        &grant.webid,
        &client_id,
        &proof.jkt,
        (grant.nonce.as_deref(), grant.auth_time),
        &grant.scope,
        refresh,
    )
    .await
}

/// The refresh-token grant: new tokens, bound to this request's key. The
/// refresh token is not rotated (a public client's is bound to its key).
async fn refresh_grant(
    app: &App,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Response, Response> {
    let Some(token) = form_field(form, "refresh_token") else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing required parameter \"refresh_token\"",
        ));
    };
    let (client_id, client) = grant_client(app, headers, form).await?;
    if !client.allows_refresh() {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client did not register the refresh_token grant",
        ));
    }
    let proof = token_proof(app, headers)?;
    claim(app, &proof).await?;
    let grant = oauth::refresh(&app.db, token, &client_id, &proof.jkt)
        .await
        .map_err(invalid_grant)?;
    user_tokens(
        app,
        &grant.webid,
        &client_id,
        &proof.jkt,
        (None, grant.auth_time),
        &grant.scope,
        Some(token.to_string()),
    )
    .await
}

/// The cookie that ties a browser to its login in progress, sent to the
/// account API...
pub const INTERACTION_COOKIE: &str = "_interaction";
/// ...and to this interaction's resume URL.
const RESUME_COOKIE: &str = "_interaction_resume";

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(
    app: &App,
    resp: &mut Response,
    (name, value): (&str, &str),
    path: &str,
    clear: bool,
) {
    let life = if clear {
        "Max-Age=0".to_string()
    } else {
        format!("Max-Age={}", oauth::INTERACTION_TTL.as_secs())
    };
    let secure = super::account::secure(app);
    let text = format!("{name}={value}; Path={path}; {life}; HttpOnly{secure}; SameSite=Lax");
    if let Ok(v) = header::HeaderValue::from_str(&text) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The interaction's resume URL.
pub fn resume_url(app: &App, uid: &str) -> String {
    url(app, &format!("{AUTH_PATH}/{uid}"))
}

fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)], "").into_response()
}

/// Back to the app: `redirect_uri` with `params`, the state and the issuer
/// (RFC 9207).
fn back_to_app(
    app: &App,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let Ok(mut target) = url::Url::parse(redirect_uri) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "the redirect_uri is not a URL",
        );
    };
    {
        let mut query = target.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        if let Some(s) = state {
            query.append_pair("state", s);
        }
        query.append_pair("iss", &app.idp.issuer);
    }
    see_other(target.as_str())
}

/// The longest `state` or `nonce` an app may send (they are stored and
/// sent back).
const MAX_ECHOED: usize = 1024;
/// Logins one address may start per throttling window (15 minutes).
const MAX_LOGINS_PER_ADDRESS: usize = 100;

/// A refusal shown to the user (the app cannot be trusted with it): a
/// page for browsers, an OAuth error body otherwise.
fn refuse(headers: &HeaderMap, app: &App, error: &str, description: &str) -> Response {
    if pages::prefers_html(headers) {
        let base = app.config.base_url.to_string();
        return pages::response(
            StatusCode::BAD_REQUEST,
            pages::message(&base, "This login cannot go on", description, None),
        );
    }
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

/// `GET|POST /.oidc/auth`: an app asks a user to log in (the
/// authorization-code flow; PKCE with S256 is required). The user is sent
/// to the account pages with a new interaction; a request that cannot be
/// trusted to redirect (unknown client, unregistered redirect URI) is
/// refused here.
pub async fn authorize(State(app): State<Arc<App>>, req: axum::extract::Request) -> Response {
    let address = super::account::address(&req);
    let (parts, body) = req.into_parts();
    let (method, headers, uri) = (parts.method, parts.headers, parts.uri);
    let params: Vec<(String, String)> = if method == axum::http::Method::POST {
        match super::account::small_body(body).await {
            Ok(b) => url::form_urlencoded::parse(&b).into_owned().collect(),
            Err(resp) => return resp,
        }
    } else {
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    };
    if let Some((name, _)) = params
        .iter()
        .find(|(k, _)| params.iter().filter(|(o, _)| o == k).count() > 1)
    {
        return refuse(
            &headers,
            &app,
            "invalid_request",
            &format!("The parameter {name:?} appears more than once."),
        );
    }
    let get = |name: &str| form_field(&params, name).filter(|v| !v.is_empty());
    let Some(client_id) = get("client_id") else {
        return refuse(
            &headers,
            &app,
            "invalid_request",
            "The application sent no client_id.",
        );
    };
    let client = match oauth::client(&app.db, &app.oidc, client_id).await {
        Ok(c) => c,
        Err(why) => return refuse(&headers, &app, "invalid_client", &why),
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return refuse(
            &headers,
            &app,
            "invalid_request",
            "The application sent no redirect_uri.",
        );
    };
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return refuse(
            &headers,
            &app,
            "invalid_redirect_uri",
            "The redirect_uri did not match any of the application's registered redirect_uris.",
        );
    }
    // From here on, errors go back to the app.
    let state = get("state");
    let back = |error: &str, description: &str| {
        back_to_app(
            &app,
            redirect_uri,
            state,
            &[("error", error), ("error_description", description)],
        )
    };
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return back(
            "unauthorized_client",
            "this client did not register the authorization_code grant",
        );
    }
    if get("response_type") != Some("code") {
        return back(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    if get("response_mode").is_some_and(|m| m != "query") {
        return back("invalid_request", "only response_mode=query is supported");
    }
    if get("request").is_some() {
        return back("request_not_supported", "request objects are not supported");
    }
    if get("request_uri").is_some() {
        return back("request_uri_not_supported", "request_uri is not supported");
    }
    let challenge = get("code_challenge").unwrap_or_default();
    if challenge.is_empty() {
        return back(
            "invalid_request",
            "Authorization Server policy requires PKCE to be used for this request",
        );
    }
    if get("code_challenge_method") != Some("S256") {
        return back("invalid_request", "code_challenge_method must be S256");
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return back(
            "invalid_request",
            "code_challenge is not a base64url SHA-256 digest",
        );
    }
    let scope: Vec<String> = get("scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| matches!(*s, "openid" | "webid" | "offline_access"))
        .map(str::to_string)
        .collect();
    if !scope.iter().any(|s| s == "openid") {
        return back("invalid_scope", "the scope must include openid");
    }
    if [state, get("nonce")]
        .iter()
        .any(|v| v.is_some_and(|v| v.len() > MAX_ECHOED))
    {
        return back(
            "invalid_request",
            &format!("state and nonce may be at most {MAX_ECHOED} bytes"),
        );
    }
    let prompt: Vec<&str> = get("prompt").unwrap_or_default().split(' ').collect();
    if prompt.contains(&"none") {
        return back(
            "login_required",
            "this provider always asks the user; prompt=none cannot be met",
        );
    }
    let interaction = oauth::Interaction {
        client_id: client_id.to_string(),
        client_name: client.client_name.clone(),
        client_uri: client.client_uri.clone(),
        logo_uri: client.logo_uri.clone(),
        client_scope: client.scope.clone(),
        client_grant_types: client.grant_types.clone(),
        redirect_uri: redirect_uri.to_string(),
        scope,
        state: state.map(str::to_string),
        nonce: get("nonce").map(str::to_string),
        code_challenge: challenge.to_string(),
        // A maximum age is met by a password login now.
        force_login: prompt.contains(&"login") || get("max_age").is_some(),
        ..Default::default()
    };
    match accounts::creation_allowed(&app.db, "interaction", address, MAX_LOGINS_PER_ADDRESS).await
    {
        Ok(true) => {}
        Ok(false) => {
            return back(
                "temporarily_unavailable",
                "too many logins were started from this address; try again later",
            );
        }
        Err(_) => return unavailable("the login store"),
    }
    let uid = match oauth::start(&app.db, &interaction).await {
        Ok(uid) => uid,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start an interaction");
            return unavailable("the login store");
        }
    };
    let mut resp = see_other(&url(&app, "/.account/"));
    set_cookie(
        &app,
        &mut resp,
        (INTERACTION_COOKIE, &uid),
        "/.account/",
        false,
    );
    set_cookie(
        &app,
        &mut resp,
        (RESUME_COOKIE, &uid),
        &format!("{AUTH_PATH}/{uid}"),
        false,
    );
    resp
}

/// `GET /.oidc/auth/{uid}`: where each step of a login comes back to. A
/// finished login goes back to the app with a code; a cancelled one with
/// `access_denied`; otherwise the user is sent to the next step.
pub async fn resume(
    State(app): State<Arc<App>>,
    axum::extract::Path(uid): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let lost = "This login cannot continue here: it expired, or it was started in another browser. Start again from the application.";
    if cookie(&headers, RESUME_COOKIE).as_deref() != Some(uid.as_str()) {
        return refuse(&headers, &app, "invalid_request", lost);
    }
    let interaction = match oauth::interaction(&app.db, &uid).await {
        Ok(Some(i)) => i,
        Ok(None) => return refuse(&headers, &app, "invalid_request", lost),
        Err(_) => return unavailable("the login store"),
    };
    let done = |mut resp: Response| {
        set_cookie(
            &app,
            &mut resp,
            (INTERACTION_COOKIE, ""),
            "/.account/",
            true,
        );
        set_cookie(
            &app,
            &mut resp,
            (RESUME_COOKIE, ""),
            &format!("{AUTH_PATH}/{uid}"),
            true,
        );
        resp
    };
    let state = interaction.state.as_deref();
    // The login ends without a code: the app hears why.
    let denied = |why: &str| {
        done(back_to_app(
            &app,
            &interaction.redirect_uri,
            state,
            &[("error", "access_denied"), ("error_description", why)],
        ))
    };
    if interaction.cancelled {
        let _ = oauth::finish(&app.db, &uid).await;
        return denied("User cancelled the interaction.");
    }
    let (Some(remember), Some(account), Some(webid)) = (
        interaction.consent,
        interaction.account.as_deref(),
        interaction.webid.as_deref(),
    ) else {
        return see_other(&url(&app, "/.account/"));
    };
    match accounts::owns_webid(&app.db, account, webid).await {
        Ok(true) => {}
        Ok(false) => {
            let _ = oauth::finish(&app.db, &uid).await;
            return denied("The WebID is no longer linked to the account.");
        }
        Err(_) => return unavailable("the account store"),
    }
    let offline = remember && interaction.wants_offline();
    let scope = interaction
        .scope
        .iter()
        .filter(|s| offline || s.as_str() != "offline_access")
        .cloned()
        .collect();
    let grant = oauth::Grant {
        client_id: interaction.client_id.clone(),
        redirect_uri: interaction.redirect_uri.clone(),
        code_challenge: interaction.code_challenge.clone(),
        account: account.to_string(),
        webid: webid.to_string(),
        scope,
        nonce: interaction.nonce.clone(),
        auth_time: interaction
            .auth_time
            .unwrap_or_else(|| crate::db::now_ms() / 1000),
        offline,
    };
    // The interaction ends first: only one code per login.
    match oauth::finish(&app.db, &uid).await {
        Ok(true) => {}
        Ok(false) => return refuse(&headers, &app, "invalid_request", lost),
        Err(_) => return unavailable("the login store"),
    }
    match oauth::issue_code(&app.db, &grant).await {
        Ok(code) => done(back_to_app(
            &app,
            &interaction.redirect_uri,
            state,
            &[("code", &code)],
        )),
        Err(e) => {
            tracing::warn!(error = %e, "cannot issue a code");
            unavailable("the login store")
        }
    }
}

/// A client's metadata as registration answers it.
fn client_document(
    app: &App,
    client_id: &str,
    metadata: &oauth::Metadata,
    issued_at: i64,
) -> Value {
    let mut doc = serde_json::to_value(metadata).expect("serialises");
    doc["client_id"] = json!(client_id);
    doc["client_id_issued_at"] = json!(issued_at);
    doc["registration_client_uri"] = json!(url(app, &format!("{REGISTRATION_PATH}/{client_id}")));
    doc
}

/// `POST /.oidc/reg`: dynamic client registration (RFC 7591).
pub async fn register(State(app): State<Arc<App>>, req: axum::extract::Request) -> Response {
    let address = super::account::address(&req);
    let (_, body) = req.into_parts();
    let body = match super::account::small_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Ok(request @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "the registration must be a JSON object",
        );
    };
    let metadata = match oauth::metadata(&request) {
        Ok(m) => m,
        Err((error, why)) => return oauth_error(StatusCode::BAD_REQUEST, error, &why),
    };
    match accounts::creation_allowed(
        &app.db,
        "client",
        address,
        accounts::MAX_CREATIONS_PER_ADDRESS,
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => {
            let mut resp = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "too many clients were registered from this address; try again later",
            );
            if let Ok(v) =
                header::HeaderValue::from_str(&accounts::CREATION_WAIT.as_secs().to_string())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
        Err(_) => return unavailable("the client store"),
    }
    let registration = match oauth::register(&app.db, metadata.clone()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register a client");
            return unavailable("the client store");
        }
    };
    let mut doc = client_document(
        &app,
        &registration.client_id,
        &metadata,
        registration.issued_at,
    );
    doc["registration_access_token"] = json!(registration.registration_token);
    if let Some(secret) = registration.secret {
        doc["client_secret"] = json!(secret);
        doc["client_secret_expires_at"] = json!(0);
    }
    json_response(StatusCode::CREATED, doc)
}

/// `GET /.oidc/reg/{client_id}`: a registered client's metadata, for the
/// holder of its registration access token (RFC 7592).
pub async fn registration(
    State(app): State<Arc<App>>,
    axum::extract::Path(client_id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let found = match token {
        Some(t) => oauth::registration(&app.db, &client_id, &t).await,
        None => Ok(None),
    };
    match found {
        Ok(Some((metadata, issued_at))) => json_response(
            StatusCode::OK,
            client_document(&app, &client_id, &metadata, issued_at),
        ),
        Ok(None) => {
            let mut resp = oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the registration access token is missing or wrong",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            resp
        }
        Err(_) => unavailable("the client store"),
    }
}
