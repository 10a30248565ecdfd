//! The subscription services: `GET`/`HEAD` describe one, `POST` sets up a
//! channel, `DELETE` on a channel's id ends it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{CONTEXT, ChannelType, MAX_DURATION_MS, NOTIFY, features};
use crate::app::App;
use crate::db::{SubscriptionRecord, now_ms};

const LD_JSON: &str = "application/ld+json";

fn problem(status: StatusCode, why: impl Into<String>) -> Response {
    let mut why = why.into();
    why.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        why,
    )
        .into_response()
}

fn unprocessable(why: impl std::fmt::Display) -> Response {
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("unable to process the notification channel: {why}"),
    )
}

/// The URL of a channel type's subscription service.
pub fn service_url(app: &App, channel: ChannelType) -> String {
    format!(
        "{}{}{}/",
        app.config.base_url,
        &super::PREFIX[1..],
        channel.name()
    )
}

fn channel_type(name: &str) -> Result<ChannelType, Box<Response>> {
    ChannelType::from_name(name).ok_or_else(|| {
        Box::new(problem(
            StatusCode::NOT_FOUND,
            format!(
                "no subscription service {name:?}; this server offers {}",
                ChannelType::all().map(|t| t.name()).join(", ")
            ),
        ))
    })
}

const FEATURES: [&str; 5] = ["accept", "endAt", "rate", "startAt", "state"];

/// `GET`/`HEAD /.notifications/{type}/`: what the service offers.
pub async fn describe(
    State(app): State<Arc<App>>,
    method: Method,
    Path(name): Path<String>,
) -> Response {
    let channel = match channel_type(&name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let body = json!({
        "@context": [CONTEXT],
        "id": service_url(&app, channel),
        "channelType": channel.iri(),
        "feature": FEATURES,
    });
    let body = if method == Method::HEAD {
        String::new()
    } else {
        serde_json::to_string_pretty(&body).unwrap_or_default()
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, LD_JSON),
            (header::ALLOW, "OPTIONS, HEAD, GET, POST"),
        ],
        body,
    )
        .into_response()
}

/// A JSON-LD value as a string: `"x"`, `{"@value": "x"}` or `{"@id": "x"}`.
fn text(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => o
            .get("@value")
            .or_else(|| o.get("@id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{key} must be a string")),
        _ => Err(format!("{key} must be a string")),
    }
}

/// The request's properties by short name (`topic`, not the full IRI).
fn properties(body: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("the body must be one JSON object".into());
    };
    let mut out = Map::new();
    for (key, v) in object {
        let short = key
            .strip_prefix(NOTIFY)
            .or_else(|| key.strip_prefix("notify:"))
            .unwrap_or(&key)
            .to_string();
        if key == "@type" {
            out.insert("type".into(), v);
            continue;
        }
        if out.insert(short.clone(), v).is_some() {
            return Err(format!("{short} is given twice"));
        }
    }
    Ok(out)
}

/// `POST /.notifications/{type}/`: sets up a channel.
pub async fn subscribe(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    axum::Extension(credentials): axum::Extension<crate::auth::Credentials>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let channel = match channel_type(&name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "the request has a body but no Content-Type; send application/ld+json",
        );
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media != LD_JSON && media != "application/json" {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("subscription requests must be application/ld+json, not {media}"),
        );
    }
    let mut props = match properties(&body) {
        Ok(p) => p,
        Err(why) => return unprocessable(why),
    };
    props.remove("@context");
    let kind = match props.remove("type").map(|v| text("type", &v)) {
        Some(Ok(t)) => t,
        Some(Err(why)) => return unprocessable(why),
        None => {
            return unprocessable(format!(
                "type is missing; send \"type\": \"{}\"",
                channel.iri()
            ));
        }
    };
    let kind_short = kind
        .strip_prefix(NOTIFY)
        .or_else(|| kind.strip_prefix("notify:"))
        .unwrap_or(&kind);
    if kind_short != channel.name() {
        return unprocessable(format!(
            "type {kind:?} does not match this service ({})",
            channel.iri()
        ));
    }
    let topic = match props.remove("topic").map(|v| text("topic", &v)) {
        Some(Ok(t)) => t,
        Some(Err(why)) => return unprocessable(why),
        None => return unprocessable("topic is missing: name the resource to follow"),
    };
    let mut feature = |key: &str| props.remove(key).map(|v| text(key, &v)).transpose();
    let parsed = (|| -> Result<_, String> {
        let state = feature("state")?;
        let start_at = feature("startAt")?
            .map(|t| features::parse_date_time(&t).map_err(|e| format!("startAt: {e}")))
            .transpose()?;
        let end_at = feature("endAt")?
            .map(|t| features::parse_date_time(&t).map_err(|e| format!("endAt: {e}")))
            .transpose()?;
        let rate_ms = feature("rate")?
            .map(|t| features::parse_duration(&t).map_err(|e| format!("rate: {e}")))
            .transpose()?;
        let accept = feature("accept")?;
        let send_to = match channel {
            ChannelType::Webhook => Some(
                feature("sendTo")?
                    .ok_or("sendTo is missing: name the URL to POST notifications to")?,
            ),
            ChannelType::WebSocket => None,
        };
        Ok((state, start_at, end_at, rate_ms, accept, send_to))
    })();
    let (state, start_at, end_at, rate_ms, accept, send_to) = match parsed {
        Ok(p) => p,
        Err(why) => return unprocessable(why),
    };
    if let Some(a) = &accept
        && super::media_type(Some(a)).is_none()
    {
        return unprocessable(format!(
            "accept {a:?} is not offered; notifications come as {}",
            super::MEDIA_TYPES.join(", ")
        ));
    }
    if let Some(key) = props.keys().next() {
        return unprocessable(format!(
            "{key} is not a property of a {} request",
            channel.name()
        ));
    }
    if let Some(target) = &send_to
        && let Err(why) = check_target(&app, target).await
    {
        return unprocessable(format!("sendTo: {why}"));
    }
    // The topic must be a resource URL of this server, in canonical form.
    let target = match topic_target(&app, &topic) {
        Some(t) => t,
        None => {
            return unprocessable(format!(
                "topic {topic:?} is not a resource of this server (under {})",
                app.config.base_url
            ));
        }
    };
    match app.db.pod_get(&target.pod).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                format!("there is no pod {:?} for topic {topic}", target.pod),
            );
        }
        Err(e) => return crate::ldp::error::LdpError::from(e).into_response(),
    }
    // Only someone who may read the topic hears of its changes.
    let status = crate::http::routing::read_status(
        &app,
        &target,
        &topic,
        headers.get(header::ORIGIN),
        &credentials,
    )
    .await;
    match status {
        // A resource the subscriber may read but that does not exist yet.
        s if s.is_success() || s == StatusCode::NOT_FOUND => {}
        StatusCode::UNAUTHORIZED => {
            return problem(
                StatusCode::UNAUTHORIZED,
                format!("{topic} is not public: log in (Solid-OIDC, DPoP) to subscribe to it"),
            );
        }
        StatusCode::FORBIDDEN => {
            return problem(
                StatusCode::FORBIDDEN,
                format!("you may not read {topic}, so you may not subscribe to it"),
            );
        }
        s => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check access to {topic} right now ({s}); try again"),
            );
        }
    }
    let now = now_ms();
    let end_at = Some(end_at.unwrap_or(i64::MAX).min(now + MAX_DURATION_MS));
    // Changes already in the outbox happened before the channel existed.
    let after = match app.db.events_head().await {
        Ok(h) => h,
        Err(e) => return crate::ldp::error::LdpError::from(e).into_response(),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let record = SubscriptionRecord {
        id: id.clone(),
        channel_type: channel.stored().into(),
        pod_id: target.pod.clone(),
        path: target.path.clone(),
        topic: topic.clone(),
        send_to: send_to.clone(),
        state,
        start_at,
        end_at,
        rate_ms,
        accept,
        agent: credentials.agent().map(|a| a.webid.clone()),
        created_at: now,
        after,
    };
    if let Err(e) = app.db.subscription_create(&record).await {
        return crate::ldp::error::LdpError::from(e).into_response();
    }
    let channel_url = format!("{}{id}", service_url(&app, channel));
    let mut out = Map::new();
    out.insert("@context".into(), json!([CONTEXT]));
    out.insert("id".into(), channel_url.clone().into());
    out.insert("type".into(), channel.iri().into());
    out.insert("topic".into(), topic.into());
    if let Some(s) = &record.state {
        out.insert("state".into(), s.clone().into());
    }
    if let Some(t) = record.start_at {
        out.insert("startAt".into(), features::format_date_time(t).into());
    }
    if let Some(t) = record.end_at {
        out.insert("endAt".into(), features::format_date_time(t).into());
    }
    if let Some(r) = record.rate_ms {
        out.insert("rate".into(), features::format_duration(r).into());
    }
    if let Some(a) = &record.accept {
        out.insert("accept".into(), a.clone().into());
    }
    match channel {
        ChannelType::Webhook => {
            out.insert("sendTo".into(), send_to.unwrap_or_default().into());
            if let Err(e) = super::webhook::queue_state(&app, &record).await {
                tracing::warn!(channel = %record.id, error = %e, "cannot queue the state notification");
            }
        }
        ChannelType::WebSocket => {
            let receive_from = match channel_url.split_once("://") {
                Some(("https", rest)) => format!("wss://{rest}"),
                Some((_, rest)) => format!("ws://{rest}"),
                None => channel_url.clone(),
            };
            out.insert("receiveFrom".into(), receive_from.into());
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, LD_JSON)],
        Value::Object(out).to_string(),
    )
        .into_response()
}

/// A webhook target must be http(s) and reach only allowed addresses.
async fn check_target(app: &App, target: &str) -> Result<(), String> {
    let url = app.config.outbound.check_url(target)?;
    if let Some(url::Host::Domain(host)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(80);
        let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        if found.is_empty() {
            return Err(format!("{host} has no address"));
        }
        for addr in found {
            app.config.outbound.check(addr.ip())?;
        }
    }
    Ok(())
}

/// The pod and path of a topic URL, if it is one of this server's resources.
pub fn topic_target(app: &App, topic: &str) -> Option<crate::ldp::target::Target> {
    let uri: Uri = topic.parse().ok()?;
    let authority = uri.authority()?.as_str().to_string();
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_str(&authority).ok()?);
    let target = crate::ldp::target::resolve(&app.config, &uri, &headers).ok()?;
    // A SPARQL sidecar is not a resource: it has no changes to tell of.
    (target.url() == topic && target.sidecar().is_none()).then_some(target)
}

/// `DELETE /.notifications/{type}/{id}`: ends a channel. The id is the
/// capability, as it is for connecting to it.
pub async fn unsubscribe(
    State(app): State<Arc<App>>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let channel = match channel_type(&name) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match app.db.subscription_get(&id).await {
        Ok(Some(s)) if s.channel_type == channel.stored() => {}
        Ok(_) => {
            return problem(
                StatusCode::NOT_FOUND,
                format!("there is no {} channel {id}", channel.name()),
            );
        }
        Err(e) => return crate::ldp::error::LdpError::from(e).into_response(),
    }
    match app.db.subscription_delete(&id).await {
        Ok(_) => StatusCode::RESET_CONTENT.into_response(),
        Err(e) => crate::ldp::error::LdpError::from(e).into_response(),
    }
}
