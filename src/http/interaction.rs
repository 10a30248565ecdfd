//! The steps of a login for an app, under `/.account/oidc/`, as CSS 7's
//! account API has them: `prompt` says what is next (`account`: log in;
//! `login`: pick a WebID; `consent`), `pick-webid`, `consent`,
//! `forget-webid` and `cancel` do it, and each answers the `location` to
//! go on to (the interaction's resume URL, `/.oidc/auth/<uid>`). The
//! browser is tied to its interaction by the `_interaction` cookie that
//! the authorization endpoint set.

// Handlers stop early with the response to send.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::account::{base, body_object, error, ok_in, session, small_body, token};
use super::oidc;
use crate::app::App;
use crate::idp::accounts::{self, AccountError};
use crate::idp::oauth::{self, Interaction};

/// The interaction this browser is in, if any: its id and state.
pub async fn current(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<(String, Interaction)>, AccountError> {
    let Some(uid) = oidc::cookie(headers, oidc::INTERACTION_COOKIE) else {
        return Ok(None);
    };
    Ok(oauth::interaction(&app.db, &uid).await?.map(|i| (uid, i)))
}

/// What the user has to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// Log in to an account.
    Account,
    /// Pick the WebID to log in to the app with.
    Login,
    /// Allow the app.
    Consent,
}

impl Prompt {
    fn name(self) -> &'static str {
        match self {
            Prompt::Account => "account",
            Prompt::Login => "login",
            Prompt::Consent => "consent",
        }
    }
}

pub fn prompt(interaction: &Interaction, account: Option<&str>) -> Prompt {
    match account {
        None => Prompt::Account,
        Some(a) if interaction.force_login && interaction.logged_in.as_deref() != Some(a) => {
            Prompt::Account
        }
        Some(a) if interaction.account.as_deref() != Some(a) || interaction.webid.is_none() => {
            Prompt::Login
        }
        Some(_) => Prompt::Consent,
    }
}

/// Records a password login made during an interaction; the location to
/// go on to, if there is one.
pub async fn logged_in(
    app: &App,
    headers: &HeaderMap,
    account: &str,
) -> Result<Option<String>, AccountError> {
    let Some((uid, mut interaction)) = current(app, headers).await? else {
        return Ok(None);
    };
    interaction.logged_in = Some(account.to_string());
    interaction.auth_time = Some(crate::db::now_ms() / 1000);
    if interaction.account.as_deref() != Some(account) {
        interaction.account = None;
        interaction.webid = None;
        interaction.consent = None;
    }
    oauth::save(&app.db, &uid, &interaction).await?;
    Ok(Some(oidc::resume_url(app, &uid)))
}

/// A boolean form or JSON field: `true`, or a checkbox's `true`/`on`.
pub(super) fn flag(body: &Map<String, Value>, name: &str) -> bool {
    match body.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "on" | "1"),
        _ => false,
    }
}

/// The client as the consent step shows it (CSS's selection of fields).
pub fn client_view(interaction: &Interaction) -> Value {
    let mut client = json!({"client_id": interaction.client_id});
    for (name, value) in [
        ("client_name", &interaction.client_name),
        ("client_uri", &interaction.client_uri),
        ("logo_uri", &interaction.logo_uri),
        ("scope", &interaction.client_scope),
    ] {
        if let Some(v) = value {
            client[name] = json!(v);
        }
    }
    client["grant_types"] = json!(interaction.client_grant_types);
    client
}

/// The account's linked WebIDs.
pub async fn webids(app: &App, account: &str) -> Result<Vec<String>, AccountError> {
    Ok(accounts::list(&app.db, accounts::WEBID, account)
        .await?
        .into_iter()
        .filter_map(|r| r.unique_key)
        .collect())
}

/// `GET|POST /.account/oidc/{action}/`.
pub async fn action(
    State(app): State<Arc<App>>,
    Path(action): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match small_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    run(&app, &action, &method, &headers, &body)
        .await
        .unwrap_or_else(|resp| resp)
}

async fn run(
    app: &App,
    action: &str,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Response> {
    let body = body_object(headers, body).map_err(IntoResponse::into_response)?;
    let Some((uid, mut interaction)) = current(app, headers)
        .await
        .map_err(IntoResponse::into_response)?
    else {
        // CSS's code for "not in a login for an app".
        let body = json!({
            "name": "BadRequestHttpError",
            "message": "This action can only be performed as part of an OIDC authentication flow.",
            "statusCode": 400,
            "errorCode": "E0002",
            "details": {},
        });
        return Err((
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response());
    };
    let account = session(app, headers)
        .await
        .map_err(IntoResponse::into_response)?;
    let b = base(app);
    let location = oidc::resume_url(app, &uid);
    let need_account = || {
        account
            .clone()
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "Log in to your account first."))
    };
    let save = |interaction: Interaction| {
        let (app, uid, location, account) = (app, uid.clone(), location.clone(), account.clone());
        async move {
            match oauth::save(&app.db, &uid, &interaction).await {
                Ok(true) => Ok(go_on(app, account.as_deref(), &location)),
                Ok(false) => Err(error(
                    StatusCode::BAD_REQUEST,
                    "This login expired; start again from the application.",
                )),
                Err(e) => Err(AccountError::from(e).into_response()),
            }
        }
    };
    match (action, method) {
        ("prompt", &Method::GET) => {
            let p = prompt(&interaction, account.as_deref());
            let next = match p {
                Prompt::Account => format!("{b}.account/login/"),
                _ => format!("{b}.account/oidc/consent/"),
            };
            Ok(ok_in(
                app,
                account.as_deref(),
                true,
                json!({"prompt": p.name(), "location": next}),
            ))
        }
        ("pick-webid", &Method::GET) => {
            let account = need_account()?;
            let webids = webids(app, &account)
                .await
                .map_err(IntoResponse::into_response)?;
            Ok(ok_in(
                app,
                Some(&account),
                true,
                json!({
                    "fields": {"webId": {"required": true, "type": "string"},
                               "remember": {"required": false, "type": "boolean"}},
                    "webIds": webids,
                }),
            ))
        }
        ("pick-webid", &Method::POST) => {
            let account = need_account()?;
            let webid =
                super::account::field(&body, "webId").map_err(IntoResponse::into_response)?;
            let owned = accounts::owns_webid(&app.db, &account, webid)
                .await
                .map_err(IntoResponse::into_response)?;
            if !owned {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "WebID does not belong to this account.",
                ));
            }
            if interaction.auth_time.is_none() || interaction.logged_in.as_deref() != Some(&account)
            {
                let started = match token(headers) {
                    Some(t) => accounts::session_started(&app.db, &t)
                        .await
                        .map_err(IntoResponse::into_response)?,
                    None => None,
                };
                interaction.auth_time = started.or(Some(crate::db::now_ms() / 1000));
            }
            interaction.account = Some(account);
            interaction.webid = Some(webid.to_string());
            interaction.consent = None;
            save(interaction).await
        }
        ("consent", &Method::GET) => {
            let mut fields = json!({"client": client_view(&interaction)});
            if account.is_some()
                && interaction.account == account
                && let Some(w) = &interaction.webid
            {
                fields["webId"] = json!(w);
            }
            Ok(ok_in(app, account.as_deref(), true, fields))
        }
        ("consent", &Method::POST) => {
            let account = need_account()?;
            if prompt(&interaction, Some(&account)) != Prompt::Consent {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "Pick the WebID to log in with before consenting.",
                ));
            }
            interaction.consent = Some(flag(&body, "remember"));
            save(interaction).await
        }
        ("forget-webid", &Method::POST) => {
            interaction.webid = None;
            interaction.consent = None;
            save(interaction).await
        }
        ("cancel", &Method::POST) => {
            interaction.cancelled = true;
            save(interaction).await
        }
        ("prompt" | "pick-webid" | "consent" | "forget-webid" | "cancel", _) => Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "This method is not supported here.",
        )),
        _ => Err(error(StatusCode::NOT_FOUND, "")),
    }
}

/// The answer to a step: where to go on, in the body and as `Location`.
fn go_on(app: &App, account: Option<&str>, location: &str) -> Response {
    let mut resp = ok_in(app, account, true, json!({"location": location}));
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
