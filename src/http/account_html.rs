//! The account API as plain HTML pages, for browsers without any script:
//! a GET that prefers HTML gets the page for where the user is (log in,
//! pick a WebID, consent to an app, or the account's pods), and a form
//! POST that prefers HTML gets a 303 to where it goes on, or the form again
//! with what was wrong. The JSON API underneath is the same. Forms posted
//! from other sites are refused first.

// Handlers stop early with the response to send.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::account::{base, session, small_body};
use super::interaction::{self, Prompt};
use super::pages;
use crate::app::App;
use crate::idp::accounts;

const LOGIN: &str = "/.account/login/password/";
const REGISTER: &str = "/.account/login/password/register/";

pub async fn html(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    // Every request passes here: nothing is allocated for pod requests.
    if !req.uri().path().starts_with("/.account/") {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    if let Some(refusal) = cross_site_form(&app, &req) {
        return refusal;
    }
    if !pages::prefers_html(req.headers()) {
        return next.run(req).await;
    }
    let b = base(&app);
    match *req.method() {
        Method::GET => match path.as_str() {
            "/.account/" => index(&app, req.headers()).await.unwrap_or_else(|resp| resp),
            "/.account/login/" | LOGIN => {
                pages::response(StatusCode::OK, pages::login(&b, "", None))
            }
            REGISTER => pages::response(StatusCode::OK, pages::register(&b, "", None)),
            _ => next.run(req).await,
        },
        Method::POST => {
            let (parts, body) = req.into_parts();
            let bytes = match small_body(body).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let email = url::form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "email")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            answer(&b, &path, &email, resp).await
        }
        _ => next.run(req).await,
    }
}

/// Refuses a form posted to the account API from another origin or site.
/// A browser sends such a form without asking (no CORS preflight), with
/// the same-site cookies; it could log the visitor in to someone else's
/// account, or answer a login step for them. Requests a form cannot make
/// (JSON bodies, which need a preflight this API answers without
/// credentials) and requests from this origin pass.
fn cross_site_form(app: &App, req: &Request) -> Option<Response> {
    let method = req.method();
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        return None;
    }
    let headers = req.headers();
    let ours = app.config.base_url.origin().ascii_serialization();
    let foreign_origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o != ours);
    let foreign_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s == "cross-site" || s == "same-site");
    if !foreign_origin && !foreign_site {
        return None;
    }
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(crate::rdf::essence)
        .unwrap_or_default();
    let form = matches!(
        essence.as_str(),
        "" | "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
    );
    if !form {
        return None;
    }
    let message = format!(
        "Forms from other sites are refused here: submit this one from {ours}, or send JSON with a CSS-Account-Token header."
    );
    Some(if pages::prefers_html(headers) {
        let b = base(app);
        pages::response(
            StatusCode::FORBIDDEN,
            pages::message(
                &b,
                "Refused",
                &message,
                Some((&format!("{b}.account/"), "Your account")),
            ),
        )
    } else {
        super::account::error(StatusCode::FORBIDDEN, &message)
    })
}

/// A JSON answer as a browser needs it: success goes on (303 to its
/// `location`, else the account page), failure shows the form again.
async fn answer(b: &str, path: &str, email: &str, resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut out = if parts.status.is_success() {
        let location = json
            .get("location")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{b}.account/"));
        (StatusCode::SEE_OTHER, [(header::LOCATION, location)], "").into_response()
    } else {
        let message = json
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                parts
                    .status
                    .canonical_reason()
                    .unwrap_or("The request failed")
                    .to_string()
            });
        let page = match path {
            LOGIN => pages::login(b, email, Some(&message)),
            REGISTER => pages::register(b, email, Some(&message)),
            _ => pages::message(
                b,
                "That did not work",
                &message,
                Some((&format!("{b}.account/"), "Back")),
            ),
        };
        pages::response(parts.status, page)
    };
    for name in [header::SET_COOKIE, header::RETRY_AFTER] {
        for v in parts.headers.get_all(&name) {
            out.headers_mut().append(name.clone(), v.clone());
        }
    }
    out
}

/// `GET /.account/` as a page: the next step of a login for an app, or the
/// account's pods, or the login form.
async fn index(app: &App, headers: &HeaderMap) -> Result<Response, Response> {
    let b = base(app);
    let account = session(app, headers)
        .await
        .map_err(IntoResponse::into_response)?;
    let current = interaction::current(app, headers)
        .await
        .map_err(IntoResponse::into_response)?;
    let page = |html: String| Ok(pages::response(StatusCode::OK, html));
    let Some(account) = account else {
        return page(pages::login(&b, "", None));
    };
    let account_url = format!("{b}.account/account/{account}/");
    if let Some((_, i)) = current {
        return match interaction::prompt(&i, Some(&account)) {
            Prompt::Account => page(pages::login(&b, "", None)),
            Prompt::Login => {
                let webids = interaction::webids(app, &account)
                    .await
                    .map_err(IntoResponse::into_response)?;
                page(pages::pick_webid(&b, &account_url, &webids, None))
            }
            Prompt::Consent => {
                let client = pages::Client {
                    id: &i.client_id,
                    name: i.client_name.as_deref(),
                    uri: i.client_uri.as_deref(),
                    redirect_uri: &i.redirect_uri,
                    offline: i.wants_offline(),
                };
                page(pages::consent(
                    &b,
                    &client,
                    i.webid.as_deref().unwrap_or_default(),
                    None,
                ))
            }
        };
    }
    let pods = accounts::list(&app.db, accounts::POD, &account)
        .await
        .map_err(IntoResponse::into_response)?
        .into_iter()
        .filter_map(|r| {
            let url = crate::pod::base_url(&app.config, &r.unique_key?).to_string();
            let webid = format!("{url}profile/card#me");
            Some((url, webid))
        })
        .collect::<Vec<_>>();
    page(pages::account(&b, &account_url, &pods, None))
}
