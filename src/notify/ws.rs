//! WebSocketChannel2023: a client connects to its channel's `receiveFrom`
//! at any node, and that node holds the socket and feeds it from the outbox.
//! The channel id in the URL is the capability.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::{Activity, ChannelType};
use crate::app::App;
use crate::db::{SubscriptionRecord, now_ms};

/// How often a connected socket checks that its channel still exists.
pub const RECHECK: Duration = Duration::from_secs(60);

/// `GET /.notifications/WebSocketChannel2023/{id}` with an upgrade.
pub async fn connect(
    State(app): State<Arc<App>>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if kind != ChannelType::WebSocket.name() {
        return (
            axum::http::StatusCode::NOT_FOUND,
            format!("there is no WebSocket to open under /.notifications/{kind}/\n"),
        )
            .into_response();
    }
    // Any subprotocol the client offers is fine; answer with its first.
    let offered = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty());
    let upgrade = match offered {
        Some(p) => upgrade.protocols([p]),
        None => upgrade,
    };
    let channel = live_channel(&app, &id).await;
    upgrade.on_upgrade(move |socket| serve(app, channel, socket))
}

/// The channel if it exists, is a WebSocket channel and has not ended.
async fn live_channel(app: &App, id: &str) -> Result<SubscriptionRecord, String> {
    match app.db.subscription_get(id).await {
        Ok(Some(s))
            if s.channel_type == ChannelType::WebSocket.stored()
                && s.end_at.is_none_or(|t| now_ms() <= t) =>
        {
            Ok(s)
        }
        Ok(_) => Err(format!("Unknown or expired WebSocket channel {id}")),
        Err(e) => Err(format!("cannot look up channel {id}: {e}")),
    }
}

async fn serve(app: Arc<App>, channel: Result<SubscriptionRecord, String>, mut socket: WebSocket) {
    let channel = match channel {
        Ok(c) => c,
        Err(why) => {
            // The upgrade is done, so the reason goes in a message, as CSS does.
            let text = format!("There was an error opening this WebSocket: {why}");
            let _ = socket.send(Message::Text(text.into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    // Changes committed before the socket connected are not for it.
    let head = match app.db.events_head().await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox head; a socket may hear of an earlier change");
            None
        }
    };
    let mut registration = app.notify.register(channel.clone(), head.as_ref());
    // The state feature: on the first connection, say at once if the topic
    // changed since the state the subscriber knows.
    match app.db.subscription_take_state(&channel.id).await {
        Ok(Some(known)) => {
            if let Some(activity) = state_activity(&app, &channel, &known).await {
                let body = activity.render(channel.accept.as_deref());
                if socket.send(Message::Text(body.into())).await.is_err() {
                    return;
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(channel = %channel.id, error = %e, "cannot read the channel's state feature")
        }
    }
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.tick().await;
    loop {
        tokio::select! {
            note = registration.rx.recv() => {
                let Some(note) = note else { break };
                if socket.send(Message::Text(note.as_ref().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    // Clients have nothing to say; pings are answered for us.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
            _ = recheck.tick() => {
                if live_channel(&app, &channel.id).await.is_err() {
                    let text = "Notification channel has expired";
                    let _ = socket.send(Message::Text(text.into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            }
        }
    }
}

/// `Update` (or `Delete`, if the topic is gone) when the topic's state is
/// not the one the subscriber knows.
pub async fn state_activity(
    app: &App,
    channel: &SubscriptionRecord,
    known: &str,
) -> Option<Activity> {
    let current = match app.db.resource_get(&channel.pod_id, &channel.path).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(channel = %channel.id, error = %e, "cannot read the topic's state");
            return None;
        }
    };
    let now = now_ms();
    match current {
        Some(r) if r.etag == known => None,
        Some(r) => Some(Activity {
            kind: "Update",
            topic: channel.topic.clone(),
            object: channel.topic.clone(),
            target: None,
            state: Some(r.etag),
            published: now,
            extra: Vec::new(),
        }),
        None => Some(Activity {
            kind: "Delete",
            topic: channel.topic.clone(),
            object: channel.topic.clone(),
            target: None,
            state: None,
            published: now,
            extra: Vec::new(),
        }),
    }
}
