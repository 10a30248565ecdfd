//! WebhookChannel2023: notifications POSTed to the subscriber's `sendTo`.
//!
//! Each node queues the notifications of the pods it owns: its follower
//! `webhooks:<node id>` turns events into rows of `webhook_queue`, once per
//! channel and event, and moves its cursor only after they are stored. So a
//! node killed mid-batch queues the rest when it comes back, and nothing
//! twice. A delivery loop on the same node sends each channel's queue in
//! order, one notification at a time; a failed one is retried with backoff
//! (0.5 s doubling, at most 30 s) while the later ones wait. A receiver that
//! keeps failing for `CSS_WEBHOOK_RETRY_WINDOW` loses its channel. Delivery
//! never blocks a write: writes only add events to the outbox.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Activity, activities};
use crate::app::App;
use crate::db::{EventRecord, SubscriptionRecord, WebhookItem, now_ms};

/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the delivery loop looks for due notifications.
const TICK: Duration = Duration::from_millis(200);
const MAX_BACKOFF_MS: i64 = 30_000;

/// The wait before attempt `attempts + 1`.
pub fn backoff_ms(attempts: i32) -> i64 {
    (500i64 << attempts.clamp(0, 16).saturating_sub(1)).min(MAX_BACKOFF_MS)
}

/// Starts this node's follower (queueing) and delivery loop.
pub fn spawn(app: Arc<App>) {
    let rates: Arc<Mutex<HashMap<String, i64>>> = Default::default();
    let queue_app = app.clone();
    crate::cluster::follower::spawn_async(
        app.db.clone(),
        crate::cluster::follower::webhooks_name(&app.node.id),
        Arc::new(move |batch: Vec<EventRecord>| {
            let app = queue_app.clone();
            let rates = rates.clone();
            Box::pin(async move { queue(&app, &batch, &rates).await })
        }),
    );
    tokio::spawn(deliver_loop(app));
}

/// Queues what a batch of events means to the webhook channels of pods this
/// node owns.
async fn queue(
    app: &App,
    batch: &[EventRecord],
    rates: &Mutex<HashMap<String, i64>>,
) -> Result<(), String> {
    let relevant: Vec<&EventRecord> = batch
        .iter()
        .filter(|e| {
            matches!(
                e.kind.as_str(),
                "create" | "update" | "delete" | "migration"
            )
        })
        .collect();
    if relevant.is_empty() {
        return Ok(());
    }
    let channels = app
        .db
        .subscriptions_of_type(super::ChannelType::Webhook.stored())
        .await
        .map_err(|e| e.to_string())?;
    if channels.is_empty() {
        return Ok(());
    }
    let mut by_topic: HashMap<(&str, &str), Vec<&SubscriptionRecord>> = HashMap::new();
    for c in &channels {
        by_topic
            .entry((c.pod_id.as_str(), c.path.as_str()))
            .or_default()
            .push(c);
    }
    let mut items = Vec::new();
    let mut owned: HashMap<String, bool> = HashMap::new();
    for (i, event) in batch.iter().enumerate() {
        if event.kind == "migration" {
            // The node a migration moves the pod to queues its
            // notifications, once, for every channel of the pod.
            let base = crate::pod::base_url(&app.config, &event.pod_id).to_string();
            let Some(activity) = super::migration_activity(&base, event) else {
                continue;
            };
            let target = activity
                .extra
                .iter()
                .find(|(k, _)| *k == "targetNode")
                .and_then(|(_, v)| v.as_str());
            if target != Some(app.node.id.as_str()) {
                continue;
            }
            for ch in channels.iter().filter(|c| c.pod_id == event.pod_id) {
                if super::is_after(event, &ch.after) == Some(false) || !wanted(ch, &activity, rates)
                {
                    continue;
                }
                items.push((
                    ch.id.clone(),
                    event.id,
                    activity.render(ch.accept.as_deref()),
                ));
            }
            continue;
        }
        if !matches!(event.kind.as_str(), "create" | "update" | "delete") {
            continue;
        }
        let mine = match owned.get(&event.pod_id) {
            Some(m) => *m,
            None => {
                let m = app
                    .placement
                    .pod(&app.db, &event.pod_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some_and(|p| p.node_id == app.node.id);
                owned.insert(event.pod_id.clone(), m);
                m
            }
        };
        if !mine {
            continue;
        }
        let base = crate::pod::base_url(&app.config, &event.pod_id).to_string();
        for activity in activities(&base, event, &batch[i + 1..]) {
            let path = match activity.topic.strip_prefix(base.as_str()) {
                Some(p) => format!("/{p}"),
                None => continue,
            };
            let Some(list) = by_topic.get(&(event.pod_id.as_str(), path.as_str())) else {
                continue;
            };
            for ch in list {
                if super::is_after(event, &ch.after) == Some(false) {
                    continue;
                }
                if !wanted(ch, &activity, rates) {
                    continue;
                }
                items.push((
                    ch.id.clone(),
                    event.id,
                    activity.render(ch.accept.as_deref()),
                ));
            }
        }
    }
    if items.is_empty() {
        return Ok(());
    }
    app.db
        .webhook_enqueue(&items, now_ms())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The features that drop notifications: `startAt`, `endAt` and `rate`.
fn wanted(
    ch: &SubscriptionRecord,
    activity: &Activity,
    rates: &Mutex<HashMap<String, i64>>,
) -> bool {
    let at = activity.published;
    if ch.start_at.is_some_and(|t| at < t) || ch.end_at.is_some_and(|t| at > t) {
        return false;
    }
    if let Some(rate) = ch.rate_ms {
        let mut rates = rates.lock().expect("rates");
        if rates.get(&ch.id).is_some_and(|last| at - last < rate) {
            return false;
        }
        rates.insert(ch.id.clone(), at);
    }
    true
}

/// The `state` feature of a new webhook channel: queue an `Update` (or
/// `Delete`) at once if the topic is not in the state the subscriber knows.
pub async fn queue_state(app: &App, channel: &SubscriptionRecord) -> Result<(), String> {
    let Some(known) = app
        .db
        .subscription_take_state(&channel.id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let Some(activity) = super::ws::state_activity(app, channel, &known).await else {
        return Ok(());
    };
    // Event 0: before every real event, and queued once.
    app.db
        .webhook_enqueue(
            &[(
                channel.id.clone(),
                0,
                activity.render(channel.accept.as_deref()),
            )],
            now_ms(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn deliver_loop(app: Arc<App>) {
    let client = app.config.outbound.client(TIMEOUT);
    let busy: Arc<Mutex<HashSet<String>>> = Default::default();
    loop {
        tokio::time::sleep(TICK).await;
        let heads = match app.db.webhook_heads(1000).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook queue");
                continue;
            }
        };
        let now = now_ms();
        for head in heads {
            if head.next_attempt_at > now {
                continue;
            }
            let mine = matches!(
                app.placement.pod(&app.db, &head.pod_id).await,
                Ok(Some(p)) if p.node_id == app.node.id
            );
            if !mine || !busy.lock().expect("busy").insert(head.channel_id.clone()) {
                continue;
            }
            let (app, client, busy) = (app.clone(), client.clone(), busy.clone());
            tokio::spawn(async move {
                let channel = head.channel_id.clone();
                drain(&app, &client, head).await;
                busy.lock().expect("busy").remove(&channel);
            });
        }
    }
}

/// Sends a channel's queue in order until it is empty or a delivery fails.
async fn drain(app: &App, client: &reqwest::Client, mut item: WebhookItem) {
    loop {
        match post(client, &item).await {
            Ok(()) => {
                if let Err(e) = app.db.webhook_delivered(item.id).await {
                    tracing::warn!(error = %e, "cannot mark a webhook notification delivered");
                    return;
                }
            }
            Err(why) => {
                let now = now_ms();
                let first = item.first_failed_at.unwrap_or(now);
                if now - first >= app.config.webhook_retry_window.as_millis() as i64 {
                    // Only the receiver's origin: its path or query may hold a secret.
                    tracing::warn!(channel = %item.channel_id, target = %origin(&item.send_to), error = %why,
                        "webhook receiver kept failing for the retry window; its channel is removed");
                    if let Err(e) = app.db.subscription_delete(&item.channel_id).await {
                        tracing::warn!(error = %e, "cannot remove the webhook channel");
                    }
                    return;
                }
                let attempts = item.attempts + 1;
                tracing::debug!(channel = %item.channel_id, attempts, error = %why, "webhook delivery failed; will retry");
                if let Err(e) = app
                    .db
                    .webhook_retry(item.id, attempts, first, now + backoff_ms(attempts))
                    .await
                {
                    tracing::warn!(error = %e, "cannot record a webhook retry");
                }
                return;
            }
        }
        // The next one of the same channel, if it is queued already.
        let next = app.db.webhook_next(&item.channel_id).await.ok().flatten();
        match next {
            Some(n) if n.next_attempt_at <= now_ms() => item = n,
            _ => return,
        }
    }
}

/// The scheme, host and port of a URL, for logs.
fn origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "(invalid URL)".into())
}

async fn post(client: &reqwest::Client, item: &WebhookItem) -> Result<(), String> {
    let resp = client
        .post(&item.send_to)
        .header(
            "content-type",
            super::media_type(item.accept.as_deref()).unwrap_or("application/ld+json"),
        )
        .body(item.body.clone())
        .send()
        .await
        .map_err(|e| {
            // The resolver's refusal is the useful part of the chain; the
            // URL is not (it may carry a secret).
            let e = e.without_url();
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            why
        })?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::{backoff_ms, origin};

    #[test]
    fn logs_name_only_the_receivers_origin() {
        assert_eq!(
            origin("https://hooks.example:8443/in/abc?token=s3cret"),
            "https://hooks.example:8443"
        );
        assert_eq!(origin("not a url"), "(invalid URL)");
    }

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        assert_eq!(backoff_ms(1), 500);
        assert_eq!(backoff_ms(2), 1000);
        assert_eq!(backoff_ms(3), 2000);
        assert_eq!(backoff_ms(7), 30_000);
        assert_eq!(backoff_ms(40), 30_000);
    }
}
