//! The account API under `/.account/`, compatible with Community Solid
//! Server 7's (version "0.5"): every JSON answer carries the `controls`
//! (the URLs a client follows) and `version`, so a tool written for CSS
//! works unchanged. Authorization is the account token from account
//! creation or password login, as `Authorization: CSS-Account-Token <t>`
//! or the `css-account` cookie. Errors have CSS's shape (`name`,
//! `message`, `statusCode`, `errorCode`, `details`).
//!
//! Covered: the index and its controls, account creation, password login
//! (rate-limited) and logout, adding and listing password logins, pods
//! (each with a WebID profile naming this server as its issuer), linked
//! WebIDs, and client credentials.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::db::{DbError, PodRecord};
use crate::idp::accounts::{self, AccountError};

const VERSION: &str = "0.5";
const COOKIE: &str = "css-account";

pub(super) fn base(app: &App) -> String {
    app.config.base_url.to_string()
}

/// The controls: the public ones, plus an account's own when logged in.
fn controls(app: &App, account: Option<&str>, interaction: bool) -> Value {
    let b = base(app);
    let login = format!("{b}.account/login/password/");
    let mut password = json!({
        "forgot": format!("{b}.account/login/password/forgot/"),
        "login": login,
        "reset": format!("{b}.account/login/password/reset/"),
    });
    let mut account_controls = json!({"create": format!("{b}.account/account/")});
    let mut html = json!({
        "password": {"register": format!("{b}.account/login/password/register/"),
                     "forgot": format!("{b}.account/login/password/forgot/"), "login": login},
        "main": {"login": format!("{b}.account/login/")},
    });
    if let Some(id) = account {
        let acc = format!("{b}.account/account/{id}/");
        password["create"] = json!(format!("{acc}login/password/"));
        account_controls["clientCredentials"] = json!(format!("{acc}client-credentials/"));
        account_controls["webId"] = json!(format!("{acc}webid/"));
        account_controls["pod"] = json!(format!("{acc}pod/"));
        account_controls["logout"] = json!(format!("{acc}logout/"));
        html["password"]["create"] = json!(format!("{acc}login/password/"));
        html["account"] = json!({
            "createClientCredentials": format!("{acc}client-credentials/"),
            "linkWebId": format!("{acc}webid/"),
            "createPod": format!("{acc}pod/"),
            "account": acc,
        });
    }
    let mut all = json!({
        "password": password,
        "account": account_controls,
        "main": {"index": format!("{b}.account/"), "logins": format!("{b}.account/login/")},
    });
    // During a login for an app: the steps of the interaction.
    if interaction {
        all["oidc"] = json!({
            "cancel": format!("{b}.account/oidc/cancel/"),
            "consent": format!("{b}.account/oidc/consent/"),
            "forgetWebId": format!("{b}.account/oidc/forget-webid/"),
            "prompt": format!("{b}.account/oidc/prompt/"),
            "webId": format!("{b}.account/oidc/pick-webid/"),
        });
    }
    all["html"] = html;
    all
}

/// A 200 answer: `fields` plus the controls and version.
fn ok(app: &App, account: Option<&str>, fields: Value) -> Response {
    ok_in(app, account, false, fields)
}

/// A 200 answer, with the interaction's controls when `interaction`.
pub(super) fn ok_in(
    app: &App,
    account: Option<&str>,
    interaction: bool,
    fields: Value,
) -> Response {
    let mut body = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    body.insert("controls".into(), controls(app, account, interaction));
    body.insert("version".into(), json!(VERSION));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Value::Object(body).to_string(),
    )
        .into_response()
}

/// An error in CSS's shape.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    let name = match status {
        StatusCode::BAD_REQUEST => "BadRequestHttpError",
        StatusCode::UNAUTHORIZED => "UnauthorizedHttpError",
        StatusCode::FORBIDDEN => "ForbiddenHttpError",
        StatusCode::NOT_FOUND => "NotFoundHttpError",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowedHttpError",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequestsHttpError",
        _ => "InternalServerError",
    };
    let body = json!({
        "name": name,
        "message": message,
        "statusCode": status.as_u16(),
        "errorCode": format!("H{}", status.as_u16()),
        "details": {},
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for AccountError {
    fn into_response(self) -> Response {
        match self {
            AccountError::Invalid(m) => error(StatusCode::BAD_REQUEST, &m),
            AccountError::BadLogin => {
                error(StatusCode::FORBIDDEN, "Invalid email/password combination.")
            }
            AccountError::Throttled(secs) => {
                let mut resp = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed logins; wait before trying again.",
                );
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            }
            AccountError::Unavailable => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The account store is unavailable; try again shortly.",
            ),
        }
    }
}

/// The account token a request carries: the header first, else the cookie.
pub(super) fn token(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("css-account-token")
                .then(|| rest.trim().to_string())
        })
    {
        return Some(t);
    }
    super::oidc::cookie(headers, COOKIE)
}

/// The logged-in account, if any.
pub(super) async fn session(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<String>, AccountError> {
    match token(headers) {
        Some(t) => accounts::session_account(&app.db, &t).await,
        None => Ok(None),
    }
}

/// The longest request body the account API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads a body of at most [`MAX_BODY`] bytes (413 beyond).
pub async fn small_body(body: axum::body::Body) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("The request body is larger than {MAX_BODY} bytes."),
        )
    })
}

/// The request body as a JSON object: JSON or a form, empty as `{}`.
pub(super) fn body_object(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, Value>, AccountError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let essence = crate::rdf::essence(ctype);
    if essence != "application/json" && essence != "application/x-www-form-urlencoded" {
        return Err(AccountError::Invalid(format!(
            "The request body must be application/json or application/x-www-form-urlencoded, not {essence}."
        )));
    }
    if essence == "application/x-www-form-urlencoded" {
        return Ok(url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AccountError::Invalid(
            "The request body must be a JSON object.".into(),
        )),
    }
}

pub(super) fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, AccountError> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| AccountError::Invalid(format!("{name} is a required field")))
}

/// `; Secure` when this server is reached over https: its cookies then
/// never travel in the clear.
pub(super) fn secure(app: &App) -> &'static str {
    if app.config.base_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    }
}

/// The account cookie, kept by the browser for the session's lifetime
/// (the login's "remember me").
fn with_lasting_cookie(app: &App, mut resp: Response, token: &str) -> Response {
    let cookie = format!(
        "{COOKIE}={token}; Path=/.account/; HttpOnly{}; Max-Age={}; SameSite=Lax",
        secure(app),
        accounts::SESSION_TTL.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A login's email and password.
fn credentials(body: &Map<String, Value>) -> Result<(&str, &str), AccountError> {
    Ok((field(body, "email")?, field(body, "password")?))
}

pub(super) fn with_cookie(app: &App, mut resp: Response, token: &str, expire: bool) -> Response {
    // HttpOnly and scoped to the account API: pages never see it.
    let secure = secure(app);
    let cookie = if expire {
        format!(
            "{COOKIE}={token}; Path=/.account/; HttpOnly{secure}; Expires=Thu, 01 Jan 1970 00:00:00 GMT; SameSite=Lax"
        )
    } else {
        format!("{COOKIE}={token}; Path=/.account/; HttpOnly{secure}; SameSite=Lax")
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /.account/`: the controls.
pub async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let interaction = match super::interaction::current(&app, &headers).await {
        Ok(i) => i.is_some(),
        Err(e) => return e.into_response(),
    };
    match session(&app, &headers).await {
        Ok(account) => ok_in(&app, account.as_deref(), interaction, json!({})),
        Err(e) => e.into_response(),
    }
}

/// `GET /.account/login/`: the login methods.
pub async fn logins(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let account = session(&app, &headers).await.ok().flatten();
    let login = format!("{}.account/login/password/", base(&app));
    ok(
        &app,
        account.as_deref(),
        json!({"logins": {"Email/password combination": login}}),
    )
}

/// `GET|POST /.account/account/`: creates an account and logs it in.
pub async fn create_account(State(app): State<Arc<App>>, req: axum::extract::Request) -> Response {
    let (method, headers, address) = (req.method().clone(), req.headers().clone(), address(&req));
    if method == Method::GET {
        let account = session(&app, &headers).await.ok().flatten();
        return ok(&app, account.as_deref(), json!({}));
    }
    if let Err(resp) = may_create(&app, address).await {
        return resp;
    }
    // A token presented here is replaced, as a new login replaces it.
    if let Some(old) = token(&headers) {
        let _ = accounts::end_session(&app.db, &old).await;
    }
    match accounts::create_account(&app.db).await {
        Ok((id, token)) => with_cookie(
            &app,
            ok(&app, Some(&id), json!({"authorization": token})),
            &token,
            false,
        ),
        Err(e) => e.into_response(),
    }
}

/// The client's address.
pub(super) fn address(req: &axum::extract::Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Counts an account creation against the client's address: 429 past the
/// limit.
async fn may_create(app: &App, address: Option<std::net::IpAddr>) -> Result<(), Response> {
    match accounts::creation_allowed(
        &app.db,
        "account",
        address,
        accounts::MAX_CREATIONS_PER_ADDRESS,
    )
    .await
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many accounts were created from this address; try again later.",
            );
            if let Ok(v) = HeaderValue::from_str(&accounts::CREATION_WAIT.as_secs().to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Err(resp)
        }
        Err(e) => Err(e.into_response()),
    }
}

/// `GET|POST /.account/login/password/`: password login.
pub async fn login(State(app): State<Arc<App>>, req: axum::extract::Request) -> Response {
    let address = address(&req);
    let (parts, body) = req.into_parts();
    let (method, headers) = (parts.method, parts.headers);
    let body = match small_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if method == Method::GET {
        let account = session(&app, &headers).await.ok().flatten();
        return ok(
            &app,
            account.as_deref(),
            json!({"fields": {
                "email": {"required": true, "type": "string"},
                "password": {"required": true, "type": "string"},
                "remember": {"required": false, "type": "boolean"},
            }}),
        );
    }
    let body = match body_object(&headers, &body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let (email, password) = match credentials(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match accounts::login(&app.db, email, password, address).await {
        Ok((account, token)) => {
            if let Some(old) = self::token(&headers) {
                let _ = accounts::end_session(&app.db, &old).await;
            }
            let mut fields = json!({"authorization": token});
            // During a login for an app: where it goes on.
            match super::interaction::logged_in(&app, &headers, &account).await {
                Ok(Some(location)) => fields["location"] = json!(location),
                Ok(None) => {}
                Err(e) => return e.into_response(),
            }
            let interaction = fields.get("location").is_some();
            let resp = ok_in(&app, Some(&account), interaction, fields);
            if super::interaction::flag(&body, "remember") {
                with_lasting_cookie(&app, resp, &token)
            } else {
                with_cookie(&app, resp, &token, false)
            }
        }
        Err(e) => e.into_response(),
    }
}

/// The account a `/.account/account/{id}/…` request acts on: 401 without a
/// session, 403 for another account's.
async fn own_account(app: &App, headers: &HeaderMap, id: &str) -> Result<String, Response> {
    match session(app, headers).await {
        Ok(Some(account)) if account == id => Ok(account),
        Ok(Some(_)) => Err(error(StatusCode::FORBIDDEN, "")),
        Ok(None) => Err(error(StatusCode::UNAUTHORIZED, "")),
        Err(e) => Err(e.into_response()),
    }
}

/// An account needs a login before it gets pods, WebIDs or credentials.
async fn needs_login(app: &App, account: &str) -> Result<(), Response> {
    match accounts::list(&app.db, accounts::PASSWORD, account).await {
        Ok(l) if !l.is_empty() => Ok(()),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "An account needs at least 1 login method.",
        )),
        Err(e) => Err(e.into_response()),
    }
}

/// `/.account/account/{id}/{section}/`: the account's own resources.
pub async fn account_section(
    State(app): State<Arc<App>>,
    Path((id, section)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match small_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let account = match own_account(&app, &headers, &id).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let acc = format!("{}.account/account/{account}/", base(&app));
    let body = match body_object(&headers, &body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let result = match (section.as_str(), &method) {
        ("logout", &Method::POST) => {
            if let Some(t) = token(&headers) {
                let _ = accounts::end_session(&app.db, &t).await;
                return with_cookie(&app, ok(&app, None, json!({})), &t, true);
            }
            Ok(ok(&app, None, json!({})))
        }
        ("login/password", &Method::GET) => {
            let fields = json!({"email": {"required": true, "type": "string"},
                                "password": {"required": true, "type": "string"}});
            let what = (accounts::PASSWORD, "login/password/", "passwordLogins");
            list_section(&app, &account, &acc, what, fields).await
        }
        ("login/password", &Method::POST) => {
            let (email, password) = match credentials(&body) {
                Ok(c) => c,
                Err(e) => return e.into_response(),
            };
            accounts::add_password(&app.db, &account, email, password)
                .await
                .map(|login| {
                    ok(
                        &app,
                        Some(&account),
                        json!({"resource": format!("{acc}login/password/{login}/")}),
                    )
                })
                .map_err(IntoResponse::into_response)
        }
        ("pod", &Method::GET) => list_pods(&app, &account, &acc).await,
        ("pod", &Method::POST) => create_pod(&app, &account, &acc, &body).await,
        ("webid", &Method::GET) => {
            let fields = json!({"webId": {"required": true, "type": "string"}});
            let what = (accounts::WEBID, "webid/", "webIdLinks");
            list_section(&app, &account, &acc, what, fields).await
        }
        ("webid", &Method::POST) => link_webid(&app, &account, &acc, &body).await,
        ("client-credentials", &Method::GET) => {
            let fields = json!({"name": {"required": false, "type": "string"},
                                "webId": {"required": true, "type": "string"}});
            let what = (accounts::CLIENT, "client-credentials/", "clientCredentials");
            list_section(&app, &account, &acc, what, fields).await
        }
        ("client-credentials", &Method::POST) => create_client(&app, &account, &acc, &body).await,
        (_, &Method::GET | &Method::POST) => Err(error(StatusCode::NOT_FOUND, "")),
        _ => Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only GET/POST requests are supported.",
        )),
    };
    result.unwrap_or_else(|resp| resp)
}

/// `/.account/account/{id}/login/password/` (the router strips one level).
pub async fn account_logins(
    state: State<Arc<App>>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    account_section(
        state,
        Path((id, "login/password".into())),
        method,
        headers,
        body,
    )
    .await
}

/// A map from each record's unique key (or id) to its resource URL.
async fn listing(
    app: &App,
    kind: &str,
    account: &str,
    prefix: &str,
) -> Result<Map<String, Value>, Response> {
    let records = accounts::list(&app.db, kind, account)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(records
        .into_iter()
        .map(|r| {
            let key = r.unique_key.clone().unwrap_or_else(|| r.id.clone());
            (key, json!(format!("{prefix}{}/", r.id)))
        })
        .collect())
}

/// A listing of the account's records of one kind, under `listed`, with
/// the fields a POST to the same URL takes.
async fn list_section(
    app: &App,
    account: &str,
    acc: &str,
    (kind, path, listed): (&str, &str, &str),
    fields: Value,
) -> Result<Response, Response> {
    let records = listing(app, kind, account, &format!("{acc}{path}")).await?;
    Ok(ok(
        app,
        Some(account),
        json!({"fields": fields, listed: records}),
    ))
}

/// Proves that the account controls an outside WebID, as CSS does: the
/// first request gets a token to publish in the WebID document; a later one
/// finds it there.
async fn prove_webid(app: &App, account: &str, webid: &str) -> Result<(), Response> {
    const TOKEN: &str = "http://www.w3.org/ns/solid/terms#oidcIssuerRegistrationToken";
    let key = format!("{account}\n{webid}");
    let now = crate::db::now_ms();
    let pending = app
        .db
        .record_find(accounts::WEBID_TOKEN, &key, now)
        .await
        .map_err(|e| AccountError::from(e).into_response())?;
    let token = match &pending {
        Some(r) => r.id.clone(),
        None => {
            let token = uuid::Uuid::new_v4().to_string();
            let record = crate::db::IdpRecord {
                kind: accounts::WEBID_TOKEN.into(),
                id: token.clone(),
                account_id: Some(account.to_string()),
                unique_key: Some(key.clone()),
                data: "{}".into(),
                expires_at: Some(now + 30 * 60 * 1000),
                created_at: now,
            };
            app.db
                .record_insert(&record)
                .await
                .map_err(|e| AccountError::from(e).into_response())?;
            token
        }
    };
    if pending.is_some() {
        match app.oidc.webid_values(webid, TOKEN).await {
            Ok(values) if values.iter().any(|(iri, v)| !iri && *v == token) => {
                let _ = app.db.record_delete(accounts::WEBID_TOKEN, &token).await;
                return Ok(());
            }
            Ok(_) => {}
            Err(why) => return Err(error(StatusCode::BAD_REQUEST, &why)),
        }
    }
    let mut doc = webid.to_string();
    if let Some(i) = doc.find('#') {
        doc.truncate(i);
    }
    let quad = format!("<{webid}> <{TOKEN}> \"{token}\".");
    let message = format!(
        "Verification token not found. Please add the RDF triple {quad} to the WebID document at {doc} to prove it belongs to you. You can remove this triple again after validation."
    );
    let mut resp = error(StatusCode::BAD_REQUEST, &message);
    let body = json!({
        "name": "BadRequestHttpError", "message": message, "statusCode": 400,
        "errorCode": "H400", "details": {"quad": quad},
    });
    *resp.body_mut() = body.to_string().into();
    Err(resp)
}

/// `DELETE /.account/account/{id}/{section}/{item}/`: removes a password
/// login (not the last), a WebID link, or client credentials.
pub async fn delete_item(
    State(app): State<Arc<App>>,
    Path((id, section, item)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let account = match own_account(&app, &headers, &id).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let kind = match section.as_str() {
        "password" => accounts::PASSWORD,
        "webid" => accounts::WEBID,
        "client-credentials" => accounts::CLIENT,
        _ => return error(StatusCode::NOT_FOUND, ""),
    };
    let now = crate::db::now_ms();
    match app.db.record_get(kind, &item, now).await {
        Ok(Some(r)) if r.account_id.as_deref() == Some(account.as_str()) => {}
        Ok(_) => return error(StatusCode::NOT_FOUND, ""),
        Err(e) => return AccountError::from(e).into_response(),
    }
    if kind == accounts::PASSWORD {
        match accounts::list(&app.db, accounts::PASSWORD, &account).await {
            Ok(l) if l.len() <= 1 => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "An account needs at least 1 login method.",
                );
            }
            Ok(_) => {}
            Err(e) => return e.into_response(),
        }
    }
    match app.db.record_delete(kind, &item).await {
        Ok(_) => ok(&app, Some(&account), json!({})),
        Err(e) => AccountError::from(e).into_response(),
    }
}

/// `DELETE /.account/account/{id}/login/password/{item}/`.
pub async fn delete_login(
    state: State<Arc<App>>,
    Path((id, item)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete_item(state, Path((id, "password".into(), item)), headers).await
}

async fn list_pods(app: &App, account: &str, acc: &str) -> Result<Response, Response> {
    let records = accounts::list(&app.db, accounts::POD, account)
        .await
        .map_err(IntoResponse::into_response)?;
    let pods: Map<String, Value> = records
        .into_iter()
        .filter_map(|r| {
            let name = r.unique_key?;
            Some((
                crate::pod::base_url(&app.config, &name).to_string(),
                json!(format!("{acc}pod/{}/", r.id)),
            ))
        })
        .collect();
    Ok(ok(
        app,
        Some(account),
        json!({
            "fields": {"name": {"required": true, "type": "string"},
                       "settings": {"required": false, "type": "object",
                                    "fields": {"webId": {"required": false, "type": "string"}}}},
            "pods": pods,
        }),
    ))
}

/// The WebID profile of a new pod: it names this server as the issuer.
fn profile(pod_url: &str, issuer: &str) -> String {
    format!(
        "@prefix foaf: <http://xmlns.com/foaf/0.1/>.\n\
         @prefix solid: <http://www.w3.org/ns/solid/terms#>.\n\
         @prefix space: <http://www.w3.org/ns/pim/space#>.\n\n\
         <> a foaf:PersonalProfileDocument;\n    foaf:maker <#me>;\n    foaf:primaryTopic <#me>.\n\n\
         <#me> a foaf:Person;\n    solid:oidcIssuer <{issuer}>;\n    space:storage <{pod_url}>.\n"
    )
}

/// Creates a pod on this node, owned by `account`, with a WebID profile
/// linked to the account; returns the pod's URL, the WebID, and the ids of
/// the account's pod record and WebID link. Shared with
/// `xpod pods create --owner`.
pub async fn new_pod(
    app: &App,
    account: &str,
    name: &str,
) -> Result<(String, String, String, String), AccountError> {
    // As CSS does: anything but letters and digits becomes '-'.
    let name: String = name
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    crate::pod::validate_name(&name).map_err(AccountError::Invalid)?;
    let pod_url = crate::pod::base_url(&app.config, &name).to_string();
    let webid = format!("{pod_url}profile/card#me");
    let record = PodRecord {
        pod_id: name.clone(),
        base_url: pod_url.clone(),
        node_id: app.node.id.clone(),
        storage_id: app.blobs.storage_id().to_string(),
        owner: Some(webid.clone()),
        created_at: crate::db::now_ms(),
        moving: None,
    };
    // The account's claim first: a pod never exists without its account.
    let record_id = accounts::add_pod(&app.db, account, &name).await?;
    if let Err(e) = app.db.pod_create(&record).await {
        let _ = app.db.record_delete(accounts::POD, &record_id).await;
        return Err(match e {
            DbError::Conflict(_) => AccountError::Invalid(format!(
                "Pod creation failed: There already is a resource at {pod_url}"
            )),
            other => other.into(),
        });
    }
    let target = crate::ldp::target::Target {
        pod: name.clone(),
        path: "/profile/card".into(),
        pod_url: pod_url.clone(),
    };
    let text = profile(&pod_url, &app.idp.issuer);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/turtle"),
    );
    if let Ok(v) = HeaderValue::from_str(&text.len().to_string()) {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    if let Err(e) = crate::ldp::put::put(app, &target, &headers, text.into()).await {
        tracing::error!(pod = %name, error = %e.message, "cannot write a new pod's WebID profile");
        return Err(AccountError::Unavailable);
    }
    for (path, text) in [
        ("/.acl", crate::auth::wac::pod_root_acl(&webid)),
        ("/profile/card.acl", crate::auth::wac::profile_acl(&webid)),
    ] {
        if let Err(e) = crate::ldp::access::write_acl(app, &name, &pod_url, path, text).await {
            tracing::error!(pod = %name, %path, error = %e, "cannot write a new pod's ACL");
            return Err(AccountError::Unavailable);
        }
    }
    crate::ldp::access::mark_baseline(app, &name).await?;
    let link = accounts::link_webid(&app.db, account, &webid).await?;
    tracing::info!(pod = %name, %webid, "created a pod with a WebID");
    Ok((pod_url, webid, record_id, link))
}

async fn create_pod(
    app: &App,
    account: &str,
    acc: &str,
    body: &Map<String, Value>,
) -> Result<Response, Response> {
    let name = field(body, "name").map_err(IntoResponse::into_response)?;
    if name.trim().is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "name must be at least 1 characters",
        ));
    }
    needs_login(app, account).await?;
    let (pod_url, webid, pod_record, link) = new_pod(app, account, name)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(ok(
        app,
        Some(account),
        json!({
            "pod": pod_url,
            "webId": webid,
            "podResource": format!("{acc}pod/{pod_record}/"),
            "webIdResource": format!("{acc}webid/{link}/"),
        }),
    ))
}

async fn link_webid(
    app: &App,
    account: &str,
    acc: &str,
    body: &Map<String, Value>,
) -> Result<Response, Response> {
    let webid = field(body, "webId").map_err(IntoResponse::into_response)?;
    if url::Url::parse(webid).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("{webid:?} is not a valid URL"),
        ));
    }
    needs_login(app, account).await?;
    // A WebID in one of the account's own pods needs no proof.
    let pods = accounts::list(&app.db, accounts::POD, account)
        .await
        .map_err(IntoResponse::into_response)?;
    let own = pods
        .iter()
        .filter_map(|r| r.unique_key.as_deref())
        .any(|name| webid.starts_with(crate::pod::base_url(&app.config, name).as_str()));
    if !own {
        prove_webid(app, account, webid).await?;
    }
    let link = accounts::link_webid(&app.db, account, webid)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(ok(
        app,
        Some(account),
        json!({
            "resource": format!("{acc}webid/{link}/"),
            "webId": webid,
            "oidcIssuer": app.idp.issuer,
        }),
    ))
}

async fn create_client(
    app: &App,
    account: &str,
    acc: &str,
    body: &Map<String, Value>,
) -> Result<Response, Response> {
    let webid = field(body, "webId").map_err(IntoResponse::into_response)?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
    needs_login(app, account).await?;
    let (id, client_id, secret) = accounts::create_client(&app.db, account, name, webid)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(ok(
        app,
        Some(account),
        json!({
            "id": client_id,
            "secret": secret,
            "resource": format!("{acc}client-credentials/{id}/"),
        }),
    ))
}

/// `GET|POST /.account/login/password/register/`: an account with a
/// password login in one step (what the registration page posts), and a
/// pod with a WebID if `podName` is given. The new account is logged in.
pub async fn register(State(app): State<Arc<App>>, req: axum::extract::Request) -> Response {
    let address = address(&req);
    let (parts, body) = req.into_parts();
    let (method, headers) = (parts.method, parts.headers);
    let body = match small_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if method == Method::GET {
        let account = session(&app, &headers).await.ok().flatten();
        return ok(
            &app,
            account.as_deref(),
            json!({"fields": {
                "email": {"required": true, "type": "string"},
                "password": {"required": true, "type": "string"},
                "podName": {"required": false, "type": "string"},
            }}),
        );
    }
    let body = match body_object(&headers, &body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let (email, password) = match credentials(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let pod = body
        .get("podName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty());
    // Checked before anything is made.
    if let Err(e) = accounts::normalise_email(email) {
        return e.into_response();
    }
    if let Err(resp) = may_create(&app, address).await {
        return resp;
    }
    let (account, token) = match accounts::create_account(&app.db).await {
        Ok(made) => made,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = accounts::add_password(&app.db, &account, email, password).await {
        // No account without a login.
        let _ = accounts::end_session(&app.db, &token).await;
        let _ = app.db.record_delete(accounts::ACCOUNT, &account).await;
        return e.into_response();
    }
    if let Some(old) = self::token(&headers) {
        let _ = accounts::end_session(&app.db, &old).await;
    }
    let mut fields = json!({"authorization": token});
    if let Some(name) = pod {
        match new_pod(&app, &account, name).await {
            Ok((pod_url, webid, _, _)) => {
                fields["pod"] = json!(pod_url);
                fields["webId"] = json!(webid);
            }
            Err(e) => {
                let why = match e {
                    AccountError::Invalid(m) => m,
                    _ => "the pod store is unavailable".into(),
                };
                let message = format!(
                    "Your account was created and you are logged in, but the pod was not: {why}"
                );
                return with_cookie(
                    &app,
                    error(StatusCode::BAD_REQUEST, &message),
                    &token,
                    false,
                );
            }
        }
    }
    let interaction = match super::interaction::logged_in(&app, &headers, &account).await {
        Ok(Some(location)) => {
            fields["location"] = json!(location);
            true
        }
        Ok(None) => false,
        Err(e) => return e.into_response(),
    };
    with_cookie(
        &app,
        ok_in(&app, Some(&account), interaction, fields),
        &token,
        false,
    )
}
