//! Solid Notifications: subscription services under `/.notifications/`,
//! channels persisted in the metadata store, and notifications built from the
//! outbox (invariant 9), so a change committed on any node reaches
//! subscribers on every node.
//!
//! Each node's outbox follower hands every batch of events to its [`Hub`],
//! which turns them into Activity Streams notifications and passes them to
//! the WebSocket channels connected to this node.

pub mod features;
pub mod http;
pub mod webhook;
pub mod ws;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::db::{EventCursor, EventRecord, SubscriptionRecord, now_ms};

/// The path under which the subscription services live.
pub const PREFIX: &str = "/.notifications/";
pub const NOTIFY: &str = "http://www.w3.org/ns/solid/notifications#";
pub const CONTEXT: &str = "https://www.w3.org/ns/solid/notification/v1";
pub const AS_CONTEXT: &str = "https://www.w3.org/ns/activitystreams";
/// Channels end at most this long after they were set up.
pub const MAX_DURATION_MS: i64 = 14 * 24 * 3600 * 1000;
/// Notifications a slow WebSocket may have queued before it is dropped.
const QUEUE: usize = 1024;

/// The channel types xpod offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelType {
    WebSocket,
    Webhook,
}

impl ChannelType {
    /// The name in URLs and in `notify:`.
    pub fn name(self) -> &'static str {
        match self {
            ChannelType::WebSocket => "WebSocketChannel2023",
            ChannelType::Webhook => "WebhookChannel2023",
        }
    }

    /// The value of `subscriptions.channel_type`.
    pub fn stored(self) -> &'static str {
        match self {
            ChannelType::WebSocket => "websocket",
            ChannelType::Webhook => "webhook",
        }
    }

    pub fn iri(self) -> String {
        format!("{NOTIFY}{}", self.name())
    }

    pub fn all() -> [ChannelType; 2] {
        [ChannelType::WebSocket, ChannelType::Webhook]
    }

    pub fn from_name(name: &str) -> Option<ChannelType> {
        Self::all().into_iter().find(|t| t.name() == name)
    }
}

/// One notification, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// `Create`, `Update`, `Delete`, `Add` or `Remove`.
    pub kind: &'static str,
    /// The URL the channel follows (the object, or for Add/Remove the target).
    pub topic: String,
    pub object: String,
    pub target: Option<String>,
    pub state: Option<String>,
    pub published: i64,
    /// Further members (a migration's status and progress).
    pub extra: Vec<(&'static str, serde_json::Value)>,
}

impl Activity {
    /// The JSON-LD body, keys in the order CSS writes them.
    pub fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("@context".into(), serde_json::json!([AS_CONTEXT, CONTEXT]));
        m.insert(
            "id".into(),
            format!("urn:{}:{}", self.published, self.topic).into(),
        );
        m.insert("type".into(), self.kind.into());
        m.insert("object".into(), self.object.clone().into());
        if let Some(t) = &self.target {
            m.insert("target".into(), t.clone().into());
        }
        if let Some(s) = &self.state {
            m.insert("state".into(), s.clone().into());
        }
        m.insert(
            "published".into(),
            features::format_date_time(self.published).into(),
        );
        for (k, v) in &self.extra {
            m.insert((*k).into(), v.clone());
        }
        serde_json::Value::Object(m).to_string()
    }
}

/// The media types notifications come in (the `accept` feature).
pub const MEDIA_TYPES: [&str; 3] = ["application/ld+json", "application/json", "text/turtle"];

/// The media type a channel's `accept` asks for, if xpod offers it.
pub fn media_type(accept: Option<&str>) -> Option<&'static str> {
    let wanted = accept
        .map(|a| {
            a.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "application/ld+json".into());
    match wanted.as_str() {
        "application/ld+json" | "application/json" => Some("application/ld+json"),
        "text/turtle" => Some("text/turtle"),
        _ => None,
    }
}

/// A Turtle string literal.
fn turtle_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Activity {
    /// The notification in the media type a channel asked for.
    pub fn render(&self, accept: Option<&str>) -> String {
        match media_type(accept) {
            Some("text/turtle") => self.to_turtle(),
            _ => self.to_json(),
        }
    }

    /// The same statements as [`Activity::to_json`], in Turtle.
    pub fn to_turtle(&self) -> String {
        let mut out = format!(
            "@prefix as: <{AS_CONTEXT}#>.\n\
             @prefix notify: <{NOTIFY}>.\n\
             @prefix xsd: <http://www.w3.org/2001/XMLSchema#>.\n\n\
             <urn:{}:{}> a {};\n    as:object <{}>",
            self.published,
            self.topic,
            // Activity Streams types, or an IRI of its own (`migration:done`).
            if self.kind.contains(':') {
                format!("<{}>", self.kind)
            } else {
                format!("as:{}", self.kind)
            },
            self.object
        );
        if let Some(t) = &self.target {
            out.push_str(&format!(";\n    as:target <{t}>"));
        }
        if let Some(s) = &self.state {
            out.push_str(&format!(";\n    notify:state {}", turtle_string(s)));
        }
        for (k, v) in &self.extra {
            let literal = match v {
                serde_json::Value::String(text) => turtle_string(text),
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            out.push_str(&format!(";\n    <{MIGRATION_NS}{k}> {literal}"));
        }
        out.push_str(&format!(
            ";\n    as:published \"{}\"^^xsd:dateTime.\n",
            features::format_date_time(self.published)
        ));
        out
    }
}

/// What an event means to the channels of its resource and of its container.
/// `next` are the events after it in the same batch: the container's
/// `update` that follows a child's creation or deletion carries the
/// container's new state.
pub fn activities(pod_url: &str, event: &EventRecord, next: &[EventRecord]) -> Vec<Activity> {
    let url = format!("{pod_url}{}", &event.path[1..]);
    let parent = parent_of(&event.path);
    let mut out = Vec::new();
    let own = |kind: &'static str, state: Option<String>| Activity {
        kind,
        topic: url.clone(),
        object: url.clone(),
        target: None,
        state,
        published: event.created_at,
        extra: Vec::new(),
    };
    match event.kind.as_str() {
        "create" => out.push(own("Create", event.etag.clone())),
        // A container's own update is the trace of a child's change, which
        // its channels hear about as Add or Remove.
        "update" if !event.path.ends_with('/') => out.push(own("Update", event.etag.clone())),
        "delete" => out.push(own("Delete", None)),
        _ => return out,
    }
    // ACLs are not listed in their container, so its channels do not hear
    // of them either (their own channels do, for those with Control).
    if let Some(parent) = parent
        && event.kind != "update"
        && !event.path.ends_with(".acl")
    {
        let parent_url = format!("{pod_url}{}", &parent[1..]);
        let state = next
            .iter()
            .take(4)
            .find(|e| e.pod_id == event.pod_id && e.path == parent && e.kind == "update")
            .and_then(|e| e.etag.clone());
        out.push(Activity {
            kind: if event.kind == "create" {
                "Add"
            } else {
                "Remove"
            },
            topic: parent_url.clone(),
            object: url,
            target: Some(parent_url),
            state,
            published: event.created_at,
            extra: Vec::new(),
        });
    }
    out
}

/// Where the members of a migration notification live, in Turtle.
pub const MIGRATION_NS: &str = "urn:xpod:migration:";

/// What a `migration` event means to every channel of the pod:
/// `migration:progress` while it runs, `migration:done` once it ended (its
/// `status` says how: done, failed or cancelled).
pub fn migration_activity(pod_url: &str, event: &EventRecord) -> Option<Activity> {
    if event.kind != "migration" {
        return None;
    }
    let detail: serde_json::Value = serde_json::from_str(event.detail.as_deref()?).ok()?;
    let status = detail["status"].as_str()?.to_string();
    let ended = matches!(status.as_str(), "done" | "failed" | "cancelled");
    let mut extra = vec![("status", serde_json::Value::from(status))];
    for key in ["progress", "sourceNode", "targetNode", "error"] {
        extra.push((key, detail[key].clone()));
    }
    Some(Activity {
        kind: if ended {
            "migration:done"
        } else {
            "migration:progress"
        },
        topic: pod_url.to_string(),
        object: pod_url.to_string(),
        target: None,
        state: None,
        published: event.created_at,
        extra,
    })
}

/// Whether an event comes after an outbox position (`None` if either
/// position is unreadable).
pub fn is_after(event: &EventRecord, cursor: &EventCursor) -> Option<bool> {
    let at = position(&EventCursor {
        xid: event.xid.clone(),
        id: event.id,
    })?;
    Some(at > position(cursor)?)
}

/// An outbox position as comparable numbers (`xid` is decimal text).
fn position(cursor: &EventCursor) -> Option<(u64, i64)> {
    Some((cursor.xid.parse().ok()?, cursor.id))
}

fn parent_of(path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let trimmed = path.trim_end_matches('/');
    trimmed.rfind('/').map(|i| trimmed[..=i].to_string())
}

/// A WebSocket connected to this node, and what its channel asked for.
struct Listener {
    socket: u64,
    channel: SubscriptionRecord,
    /// Events at or before this outbox position happened before the socket
    /// connected, and are not for it.
    after: Option<(u64, i64)>,
    tx: mpsc::Sender<Arc<str>>,
    last_emit: Option<Instant>,
}

/// The channels connected to this node, by the resource they follow.
#[derive(Default)]
pub struct Hub {
    listeners: Mutex<HashMap<(String, String), Vec<Listener>>>,
    next_socket: std::sync::atomic::AtomicU64,
}

/// A connected socket's registration; dropping it unregisters the socket.
pub struct Registration {
    hub: Arc<Hub>,
    key: (String, String),
    socket: u64,
    pub rx: mpsc::Receiver<Arc<str>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut listeners = self.hub.listeners.lock().expect("hub");
        if let Some(list) = listeners.get_mut(&self.key) {
            list.retain(|l| l.socket != self.socket);
            if list.is_empty() {
                listeners.remove(&self.key);
            }
        }
    }
}

impl Hub {
    /// Registers a socket for `channel`; notifications of events after
    /// outbox position `after` (the head when it connected) arrive on `rx`.
    pub fn register(
        self: &Arc<Self>,
        channel: SubscriptionRecord,
        after: Option<&EventCursor>,
    ) -> Registration {
        let (tx, rx) = mpsc::channel(QUEUE);
        let socket = self
            .next_socket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = (channel.pod_id.clone(), channel.path.clone());
        self.listeners
            .lock()
            .expect("hub")
            .entry(key.clone())
            .or_default()
            .push(Listener {
                socket,
                channel,
                after: after.and_then(position),
                tx,
                last_emit: None,
            });
        Registration {
            hub: self.clone(),
            key,
            socket,
            rx,
        }
    }

    /// How many sockets are connected.
    pub fn sockets(&self) -> usize {
        self.listeners
            .lock()
            .expect("hub")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Sends what a batch of events means to the sockets that follow the
    /// resources concerned. `pod_url` gives each pod's base URL.
    pub fn dispatch(&self, events: &[EventRecord], pod_url: impl Fn(&str) -> String) {
        let mut listeners = self.listeners.lock().expect("hub");
        if listeners.is_empty() {
            return;
        }
        let now = now_ms();
        for (i, event) in events.iter().enumerate() {
            let base = pod_url(&event.pod_id);
            let at = position(&EventCursor {
                xid: event.xid.clone(),
                id: event.id,
            });
            if let Some(activity) = migration_activity(&base, event) {
                // Every channel of the pod hears of its migration.
                for ((pod, _), list) in listeners.iter_mut() {
                    if *pod == event.pod_id {
                        deliver(list, &activity, at, now);
                    }
                }
                continue;
            }
            if !matches!(event.kind.as_str(), "create" | "update" | "delete") {
                continue;
            }
            for activity in activities(&base, event, &events[i + 1..]) {
                let path = activity
                    .topic
                    .strip_prefix(base.as_str())
                    .map(|p| format!("/{p}"))
                    .unwrap_or_default();
                if let Some(list) = listeners.get_mut(&(event.pod_id.clone(), path)) {
                    deliver(list, &activity, at, now);
                }
            }
        }
    }
}

/// Passes one notification to the sockets of one topic that want it.
fn deliver(list: &mut [Listener], activity: &Activity, at: Option<(u64, i64)>, now: i64) {
    let json: Arc<str> = activity.to_json().into();
    let mut turtle: Option<Arc<str>> = None;
    for l in list.iter_mut() {
        let ch = &l.channel;
        if let (Some(after), Some(at)) = (l.after, at)
            && at <= after
        {
            continue;
        }
        if ch.start_at.is_some_and(|t| now < t) || ch.end_at.is_some_and(|t| now > t) {
            continue;
        }
        if let (Some(rate), Some(last)) = (ch.rate_ms, l.last_emit)
            && (last.elapsed().as_millis() as i64) < rate
        {
            continue;
        }
        let body = if media_type(ch.accept.as_deref()) == Some("text/turtle") {
            turtle
                .get_or_insert_with(|| activity.to_turtle().into())
                .clone()
        } else {
            json.clone()
        };
        match l.tx.try_send(body) {
            Ok(()) => {
                if ch.rate_ms.is_some() {
                    l.last_emit = Some(Instant::now());
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(channel = %ch.id, "a WebSocket is not reading its notifications; dropped one");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, path: &str, kind: &str, etag: Option<&str>) -> EventRecord {
        EventRecord {
            xid: "0".into(),
            id,
            pod_id: "alice".into(),
            path: path.into(),
            kind: kind.into(),
            version: id,
            etag: etag.map(str::to_string),
            created_at: 1_769_860_800_000,
            detail: None,
        }
    }

    #[test]
    fn an_acl_is_not_announced_to_its_container() {
        let pod = "http://x.test/alice/";
        for (path, kind) in [("/c/r.acl", "create"), ("/c/.acl", "delete")] {
            let acts = activities(pod, &event(1, path, kind, None), &[]);
            assert_eq!(acts.len(), 1, "{path}");
            assert_eq!(acts[0].topic, format!("http://x.test/alice{path}"));
        }
    }

    #[test]
    fn a_new_child_is_created_and_added_to_its_container() {
        let pod = "http://x.test/alice/";
        let batch = [
            event(1, "/c/r", "create", Some("\"1-ab\"")),
            event(2, "/c/", "update", Some("\"2-c\"")),
        ];
        let acts = activities(pod, &batch[0], &batch[1..]);
        assert_eq!(acts.len(), 2);
        assert_eq!(acts[0].kind, "Create");
        assert_eq!(acts[0].object, "http://x.test/alice/c/r");
        assert_eq!(acts[0].state.as_deref(), Some("\"1-ab\""));
        assert_eq!(acts[1].kind, "Add");
        assert_eq!(acts[1].topic, "http://x.test/alice/c/");
        assert_eq!(acts[1].target.as_deref(), Some("http://x.test/alice/c/"));
        assert_eq!(acts[1].state.as_deref(), Some("\"2-c\""));
        // The container's own update says nothing more.
        assert!(activities(pod, &batch[1], &[]).is_empty());
        let json: serde_json::Value = serde_json::from_str(&acts[1].to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "@context": [AS_CONTEXT, CONTEXT],
                "id": "urn:1769860800000:http://x.test/alice/c/",
                "type": "Add",
                "object": "http://x.test/alice/c/r",
                "target": "http://x.test/alice/c/",
                "state": "\"2-c\"",
                "published": "2026-01-31T12:00:00.000Z",
            })
        );
    }

    #[test]
    fn turtle_notifications_say_the_same() {
        let batch = [event(1, "/c/r", "create", Some("\"1-ab\""))];
        let acts = activities("http://x.test/alice/", &batch[0], &[]);
        let ttl = acts[0].render(Some("text/turtle"));
        let triples = oxttl::TurtleParser::new()
            .for_slice(ttl.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(triples.len(), 4, "{ttl}");
        assert!(ttl.contains("a as:Create"), "{ttl}");
        assert!(ttl.contains("notify:state \"\\\"1-ab\\\"\""), "{ttl}");
        assert_eq!(acts[0].render(None), acts[0].to_json());
        assert_eq!(media_type(Some("text/html")), None);
    }

    #[test]
    fn updates_and_deletes() {
        let pod = "http://x.test/alice/";
        let acts = activities(pod, &event(3, "/c/r", "update", Some("\"3-cd\"")), &[]);
        assert_eq!(acts.len(), 1);
        assert_eq!(acts[0].kind, "Update");
        let acts = activities(pod, &event(4, "/c/r", "delete", None), &[]);
        assert_eq!(
            acts.iter().map(|a| a.kind).collect::<Vec<_>>(),
            ["Delete", "Remove"]
        );
        assert_eq!(acts[0].state, None);
        assert!(activities(pod, &event(5, "/", "owner", None), &[]).is_empty());
    }

    #[test]
    fn migrations_are_published_to_the_pod() {
        let pod = "http://x.test/alice/";
        let mut e = event(6, "/", "migration", None);
        e.detail = Some(
            r#"{"status":"copying","progress":40,"sourceNode":"a","targetNode":"b","error":null}"#
                .into(),
        );
        let act = migration_activity(pod, &e).unwrap();
        assert_eq!(act.kind, "migration:progress");
        let json: serde_json::Value = serde_json::from_str(&act.to_json()).unwrap();
        assert_eq!(json["object"], pod);
        assert_eq!(
            (json["status"].as_str(), json["progress"].as_i64()),
            (Some("copying"), Some(40))
        );
        let ttl = act.to_turtle();
        let triples = oxttl::TurtleParser::new()
            .for_slice(ttl.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        // type, object, status, progress, source, target, published
        assert_eq!(triples.len(), 7, "{ttl}");
        e.detail = Some(r#"{"status":"cancelled","progress":40}"#.into());
        assert_eq!(migration_activity(pod, &e).unwrap().kind, "migration:done");
        assert!(migration_activity(pod, &event(7, "/", "owner", None)).is_none());
    }
}
