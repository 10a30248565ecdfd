//! Solid Notifications on one node (SQLite): discovery, the WebSocket
//! subscription service, every activity type and feature, and refusals.
//! The cluster-wide case is in `cluster_routing.rs`.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

use support::account::{Agent, account_sequence, signed};
use support::{Server, create_pod};
use tokio_tungstenite::tungstenite::Message;

const WS_TYPE: &str = "http://www.w3.org/ns/solid/notifications#WebSocketChannel2023";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Node {
    server: Server,
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    base: String,
    client: Client,
}

impl Node {
    fn start() -> Node {
        Self::start_with(&[])
    }

    fn start_with(extra: &[(&'static str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let port = support::free_port("127.0.0.1");
        let base = format!("http://127.0.0.1:{port}/");
        let mut env = vec![
            ("CSS_PORT", port.to_string()),
            ("CSS_BASE_URL", base.clone()),
            ("CSS_ROOT_FILE_PATH", root.display().to_string()),
            ("CSS_INTERNAL_IP", "127.0.0.1".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let borrowed = support::borrowed(&env);
        let server = Server::start("127.0.0.1", &borrowed, dir.path());
        create_pod(&root, port, "alice", &borrowed[1..]);
        Node {
            server,
            dir,
            env,
            base,
            client: Client::new(),
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same root.
    fn kill_and_restart(&mut self) {
        self.server.stop_with(libc::SIGKILL);
        self.server = Server::start("127.0.0.1", &support::borrowed(&self.env), self.dir.path());
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn subscribe(&self, body: Value) -> reqwest::Response {
        self.subscribe_to("WebSocketChannel2023", body).await
    }

    async fn subscribe_to(&self, service: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!(".notifications/{service}/")))
            .header("content-type", "application/ld+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Subscribes and returns the channel description.
    async fn channel(&self, topic: &str, features: Value) -> Value {
        let mut body = json!({
            "@context": ["https://www.w3.org/ns/solid/notification/v1"],
            "type": WS_TYPE,
            "topic": topic,
        });
        for (k, v) in features.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = self.subscribe(body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/ld+json");
        resp.json().await.unwrap()
    }

    async fn put(&self, path: &str, body: &'static str) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

async fn connect(channel: &Value) -> Socket {
    let url = channel["receiveFrom"].as_str().unwrap();
    let (socket, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), 101);
    socket
}

/// The next notification, within 5 s.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a notification within 5 s")
            .expect("the socket stays open")
            .unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Nothing arrives within `wait`.
async fn silent(socket: &mut Socket, wait: Duration) {
    if let Ok(Some(msg)) = tokio::time::timeout(wait, socket.next()).await {
        panic!("expected no notification, got {msg:?}");
    }
}

fn check(n: &Value, kind: &str, object: &str, state: Option<&str>) {
    assert_eq!(n["type"], kind, "{n}");
    assert_eq!(n["object"], object, "{n}");
    assert_eq!(
        n["@context"],
        json!([
            "https://www.w3.org/ns/activitystreams",
            "https://www.w3.org/ns/solid/notification/v1"
        ])
    );
    assert!(n["id"].as_str().unwrap().starts_with("urn:"), "{n}");
    assert!(n["published"].as_str().unwrap().ends_with('Z'), "{n}");
    match state {
        Some(s) => assert_eq!(n["state"], s, "{n}"),
        None => assert!(n.get("state").is_none(), "{n}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_hears_every_change_of_its_topic() {
    let node = Node::start();
    // Discovery: resources link the storage description, which names the service.
    let root = node.client.get(node.url("alice/")).send().await.unwrap();
    let links = root.headers()["link"].to_str().unwrap().to_string();
    assert!(
        links.contains(
            "alice/.well-known/solid>; rel=\"http://www.w3.org/ns/solid/terms#storageDescription\""
        ),
        "{links}"
    );
    let description = node
        .client
        .get(node.url("alice/.well-known/solid"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let service = node.url(".notifications/WebSocketChannel2023/");
    assert!(
        description.contains(&format!("notify:subscription <{service}>")),
        "{description}"
    );
    assert!(description.contains("notify:channelType notify:WebSocketChannel2023"));
    let about: Value = node
        .client
        .get(&service)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(about["channelType"], WS_TYPE);

    // A channel for a resource that does not exist yet.
    let topic = node.url("alice/foo");
    let channel = node.channel(&topic, json!({})).await;
    assert_eq!(channel["type"], WS_TYPE);
    assert_eq!(channel["topic"], topic.as_str());
    let id = channel["id"].as_str().unwrap();
    assert!(id.starts_with(&service), "{id}");
    assert_eq!(
        channel["receiveFrom"].as_str().unwrap(),
        id.replacen("http://", "ws://", 1)
    );
    assert!(channel["endAt"].is_string(), "endAt is always set");
    let mut socket = connect(&channel).await;

    let put = node.put("alice/foo", "one").await;
    assert_eq!(put.status(), 201);
    let etag = put.headers()["etag"].to_str().unwrap().to_string();
    check(&next(&mut socket).await, "Create", &topic, Some(&etag));
    let put = node.put("alice/foo", "two").await;
    assert_eq!(put.status(), 205);
    let etag = put.headers()["etag"].to_str().unwrap().to_string();
    check(&next(&mut socket).await, "Update", &topic, Some(&etag));
    // Changes elsewhere say nothing here.
    assert_eq!(node.put("alice/bar", "x").await.status(), 201);
    silent(&mut socket, Duration::from_millis(1200)).await;
    let del = node.client.delete(&topic).send().await.unwrap();
    assert_eq!(del.status(), 205);
    check(&next(&mut socket).await, "Delete", &topic, None);

    // A container's channel hears of children added and removed.
    let container = node.url("alice/");
    let channel = node.channel(&container, json!({})).await;
    let mut socket = connect(&channel).await;
    assert_eq!(node.put("alice/new.txt", "n").await.status(), 201);
    let n = next(&mut socket).await;
    check(&n, "Add", &node.url("alice/new.txt"), n["state"].as_str());
    assert_eq!(n["target"], container.as_str());
    assert!(n["state"].is_string(), "the container's new state: {n}");
    let del = node
        .client
        .delete(node.url("alice/new.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 205);
    let n = next(&mut socket).await;
    assert_eq!(n["type"], "Remove");
    assert_eq!(n["object"], node.url("alice/new.txt").as_str());

    // Unsubscribing: 205, then the id is unknown.
    let del = node.client.delete(id).send().await.unwrap();
    assert_eq!(del.status(), 205);
    let del = node.client.delete(id).send().await.unwrap();
    assert_eq!(del.status(), 404);
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_state_end_and_rate() {
    let node = Node::start();
    let topic = node.url("alice/doc");
    let put = node.put("alice/doc", "v1").await;
    let etag = put.headers()["etag"].to_str().unwrap().to_string();

    // state: a stale state gets an Update at once, on the first connection only.
    let channel = node.channel(&topic, json!({"state": "\"stale\""})).await;
    assert_eq!(channel["state"], "\"stale\"");
    let mut socket = connect(&channel).await;
    check(&next(&mut socket).await, "Update", &topic, Some(&etag));
    let mut again = connect(&channel).await;
    silent(&mut again, Duration::from_millis(700)).await;
    // The current state: nothing to say.
    let channel = node.channel(&topic, json!({"state": etag})).await;
    let mut current = connect(&channel).await;
    silent(&mut current, Duration::from_millis(700)).await;

    // endAt in the past: the socket is told and closed.
    let channel = node
        .channel(&topic, json!({"endAt": "1988-03-09T14:48:00.000Z"}))
        .await;
    assert_eq!(channel["endAt"], "1988-03-09T14:48:00.000Z");
    let mut ended = connect(&channel).await;
    match tokio::time::timeout(Duration::from_secs(5), ended.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => {
            assert!(
                t.contains("There was an error opening this WebSocket"),
                "{t}"
            )
        }
        other => panic!("expected the error message, got {other:?}"),
    }

    // rate: at most one notification per period; the rest are dropped.
    let channel = node.channel(&topic, json!({"rate": "PT10S"})).await;
    assert_eq!(channel["rate"], "PT10S");
    let mut rated = connect(&channel).await;
    assert_eq!(node.put("alice/doc", "v2").await.status(), 205);
    assert_eq!(next(&mut rated).await["type"], "Update");
    assert_eq!(node.put("alice/doc", "v3").await.status(), 205);
    silent(&mut rated, Duration::from_millis(1200)).await;

    // startAt in the future: nothing yet.
    let channel = node
        .channel(&topic, json!({"startAt": "2999-01-01T00:00:00Z"}))
        .await;
    let mut later = connect(&channel).await;
    assert_eq!(node.put("alice/doc", "v4").await.status(), 205);
    silent(&mut later, Duration::from_millis(1200)).await;
    // ...while the first socket still hears it.
    assert_eq!(next(&mut socket).await["type"], "Update");

    // accept: notifications in Turtle.
    let channel = node.channel(&topic, json!({"accept": "text/turtle"})).await;
    assert_eq!(channel["accept"], "text/turtle");
    let mut turtle = connect(&channel).await;
    let put = node.put("alice/doc", "v5").await;
    let etag = put.headers()["etag"].to_str().unwrap().to_string();
    let msg = tokio::time::timeout(Duration::from_secs(5), turtle.next())
        .await
        .expect("a notification within 5 s")
        .unwrap()
        .unwrap();
    let text = msg.to_text().unwrap().to_string();
    assert!(text.contains("a as:Update"), "{text}");
    assert!(text.contains(&format!("as:object <{topic}>")), "{text}");
    assert!(
        text.contains(&format!("notify:state \"{}\"", etag.replace('"', "\\\""))),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_and_store_nothing() {
    let node = Node::start();
    let topic = node.url("alice/doc");
    let ok = json!({"type": WS_TYPE, "topic": topic});
    let service = node.url(".notifications/WebSocketChannel2023/");
    let no_type = node
        .client
        .post(&service)
        .body(ok.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), StatusCode::BAD_REQUEST);
    let turtle = node
        .client
        .post(&service)
        .header("content-type", "text/n3")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(turtle.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for (body, needle) in [
        (json!({"topic": topic}), "type is missing"),
        (
            json!({"type": "http://www.w3.org/ns/solid/notifications#WebhookChannel2023", "topic": topic}),
            "does not match",
        ),
        (json!({"type": WS_TYPE}), "topic is missing"),
        (
            json!({"type": WS_TYPE, "topic": "http://elsewhere.test/x"}),
            "not a resource of this server",
        ),
        (
            json!({"type": WS_TYPE, "topic": topic, "rate": "soon"}),
            "rate",
        ),
        (
            json!({"type": WS_TYPE, "topic": topic, "endAt": "tomorrow"}),
            "endAt",
        ),
        (
            json!({"type": WS_TYPE, "topic": topic, "accept": "text/html"}),
            "accept",
        ),
        (
            json!({"type": WS_TYPE, "topic": topic, "sendTo": "http://x.test/"}),
            "sendTo",
        ),
        (json!(["not", "an", "object"]), "one JSON object"),
    ] {
        let resp = node.subscribe(body.clone()).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(needle), "{body}: {text}");
    }
    let nobody = node
        .subscribe(json!({"type": WS_TYPE, "topic": node.url("nobody/x")}))
        .await;
    assert_eq!(nobody.status(), StatusCode::NOT_FOUND);
    // The short type name is accepted too.
    let short = node
        .subscribe(json!({"type": "WebSocketChannel2023", "topic": topic}))
        .await;
    assert_eq!(short.status(), 200);
    // An unknown channel id gets the error message on the socket.
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "{}/not-a-channel",
        service
            .replacen("http://", "ws://", 1)
            .trim_end_matches('/')
    ))
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => assert!(t.contains("Unknown or expired"), "{t}"),
        other => panic!("expected the error message, got {other:?}"),
    }
    let _ = socket.send(Message::Close(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_an_unreadable_topic_is_refused() {
    // A subscriber without Read on the topic gets 401 (anonymous) or 403
    // (authenticated), and no channel is stored; the owner subscribes.
    let node = Node::start();
    let http = &node.client;
    let owner_account = account_sequence(http, &node.base, "owner", "owner@example.org").await;
    let other_account = account_sequence(http, &node.base, "other", "other@example.org").await;
    let owner = Agent::log_in(http, &node.base, &owner_account).await;
    let other = Agent::log_in(http, &node.base, &other_account).await;
    let topic = format!("{}private.txt", owner_account.pod);
    let put = owner
        .sign(http.put(&topic), "PUT", &topic)
        .header("content-type", "text/plain")
        .body("v1")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let db = node.dir.path().join("root").join("xpod.sqlite");
    let stored = || {
        let c =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        c.query_row("SELECT count(*) FROM subscriptions", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };
    let service = node.url(".notifications/WebSocketChannel2023/");
    let subscribe = |who: Option<&Agent>, topic: &str| {
        let body = json!({"type": WS_TYPE, "topic": topic}).to_string();
        signed(who, http.post(&service), "POST", &service)
            .header("content-type", "application/ld+json")
            .body(body)
            .send()
    };
    let missing = format!("{}nothing-here.txt", owner_account.pod);
    for (who, topic, status) in [
        (None, &topic, StatusCode::UNAUTHORIZED),
        (Some(&other), &topic, StatusCode::FORBIDDEN),
        // Whether the topic exists is not revealed either.
        (None, &missing, StatusCode::UNAUTHORIZED),
        (Some(&other), &missing, StatusCode::FORBIDDEN),
    ] {
        let resp = subscribe(who, topic).await.unwrap();
        let label = who.map(|a| a.webid.as_str()).unwrap_or("anonymous");
        assert_eq!(resp.status(), status, "{label} on {topic}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains("receiveFrom"), "{text}");
    }
    assert_eq!(stored(), 0, "no channel was stored");

    // The owner's subscription works, and hears the next change.
    let resp = subscribe(Some(&owner), &topic).await.unwrap();
    assert_eq!(resp.status(), 200);
    let channel: Value = resp.json().await.unwrap();
    assert_eq!(channel["topic"], topic.as_str());
    assert_eq!(stored(), 1);
    let mut socket = connect(&channel).await;
    let put = owner
        .sign(http.put(&topic), "PUT", &topic)
        .header("content-type", "text/plain")
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 205);
    let etag = put.headers()["etag"].to_str().unwrap().to_string();
    let n = next(&mut socket).await;
    check(&n, "Update", &topic, Some(&etag));
}

// ---------------------------------------------------------------- webhooks

const HOOK_TYPE: &str = "http://www.w3.org/ns/solid/notifications#WebhookChannel2023";

/// A webhook receiver on a fixed port that can go down and come back.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Value>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver {
            port: support::free_port("127.0.0.1"),
            got: Default::default(),
            stop: None,
            task: None,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn start(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(format!("127.0.0.1:{}", self.port).parse().unwrap())
            .unwrap();
        let listener = socket.listen(64).unwrap();
        let got = self.got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: String| async move {
                    assert_eq!(headers["content-type"], "application/ld+json");
                    got.lock()
                        .unwrap()
                        .push(serde_json::from_str::<Value>(&body).unwrap());
                    axum::http::StatusCode::OK
                },
            ),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        }));
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Waits (at most `within`) until `n` notifications arrived; returns them.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn hook_channel(node: &Node, topic: &str, send_to: &str, extra: Value) -> Value {
    let mut body = json!({"type": HOOK_TYPE, "topic": topic, "sendTo": send_to});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let resp = node.subscribe_to("WebhookChannel2023", body).await;
    assert_eq!(resp.status(), 200);
    let channel: Value = resp.json().await.unwrap();
    assert_eq!(channel["type"], HOOK_TYPE);
    assert_eq!(channel["sendTo"], send_to);
    channel
}

/// PUTs `n` versions of a resource; returns the ETags in order.
async fn puts(node: &Node, path: &str, from: usize, n: usize) -> Vec<String> {
    let mut etags = Vec::new();
    for i in from..from + n {
        let resp = node
            .client
            .put(node.url(path))
            .header("content-type", "text/plain")
            .body(format!("version {i}"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        etags.push(resp.headers()["etag"].to_str().unwrap().to_string());
    }
    etags
}

fn states(got: &[Value]) -> Vec<String> {
    got.iter()
        .map(|n| n["state"].as_str().unwrap_or("-").to_string())
        .collect()
}

const ALLOW_LOOPBACK: (&str, &str) = ("CSS_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_gets_every_change_in_order_across_its_restart() {
    let node = Node::start_with(&[ALLOW_LOOPBACK]);
    let mut receiver = Receiver::new();
    receiver.start();
    let topic = node.url("alice/doc");
    let first = puts(&node, "alice/doc", 0, 1).await;

    // state: a stale state is answered at once with the current one.
    let stale = hook_channel(
        &node,
        &topic,
        &receiver.url(),
        json!({"state": "\"stale\""}),
    )
    .await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    check(&got[0], "Update", &topic, Some(&first[0]));
    let stale_id = stale["id"].as_str().unwrap();
    assert_eq!(
        node.client.delete(stale_id).send().await.unwrap().status(),
        205
    );
    receiver.got.lock().unwrap().clear();

    let channel = hook_channel(&node, &topic, &receiver.url(), json!({})).await;
    let expected = puts(&node, "alice/doc", 1, 5).await;
    let got = receiver.wait_for(5, Duration::from_secs(5)).await;
    assert_eq!(states(&got), expected, "every change, in order");
    assert!(got.iter().all(|n| n["type"] == "Update"));

    // The receiver goes down; changes made meanwhile wait and come in order.
    receiver.stop().await;
    receiver.got.lock().unwrap().clear();
    let expected = puts(&node, "alice/doc", 6, 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    receiver.start();
    let got = receiver.wait_for(5, Duration::from_secs(20)).await;
    assert_eq!(
        states(&got),
        expected,
        "nothing lost, nothing twice, in order"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 5, "and nothing more");

    // Unsubscribing stops it.
    let id = channel["id"].as_str().unwrap();
    assert_eq!(node.client.delete(id).send().await.unwrap().status(), 205);
    puts(&node, "alice/doc", 11, 1).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 5);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_queues_the_rest_when_it_restarts() {
    let mut node = Node::start_with(&[ALLOW_LOOPBACK]);
    let mut receiver = Receiver::new();
    let topic = node.url("alice/log");
    hook_channel(&node, &topic, &receiver.url(), json!({})).await;
    // The receiver is down: everything queues. Kill the node right after
    // the last write, before its follower can have queued it all.
    let expected = puts(&node, "alice/log", 0, 20).await;
    node.kill_and_restart();
    receiver.start();
    receiver.wait_for(20, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(states(&got), expected, "every change once, in order");
    assert_eq!(got[0]["type"], "Create");
    assert!(got[1..].iter().all(|n| n["type"] == "Update"));
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_stays_down_loses_its_channel() {
    let node = Node::start_with(&[ALLOW_LOOPBACK, ("CSS_WEBHOOK_RETRY_WINDOW", "2s")]);
    let receiver = Receiver::new(); // never started
    let channel = hook_channel(&node, &node.url("alice/x"), &receiver.url(), json!({})).await;
    let id = channel["id"].as_str().unwrap().to_string();
    let channel_id = id.rsplit('/').next().unwrap().to_string();
    puts(&node, "alice/x", 0, 1).await;
    // Read the store itself: a DELETE would end the channel by itself.
    let db = node.dir.path().join("root").join("xpod.sqlite");
    let stored = || {
        let c =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        c.query_row(
            "SELECT count(*) FROM subscriptions WHERE id = ?1",
            [&channel_id],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    assert_eq!(stored(), 1);
    let started = std::time::Instant::now();
    while stored() == 1 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the channel outlived its retry window"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "it was retried first"
    );
    assert!(node.server.log_text().contains("kept failing"));
    assert_eq!(node.client.delete(&id).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_targets_inside_the_network_are_refused() {
    let node = Node::start();
    let topic = node.url("alice/x");
    for target in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/",
    ] {
        let resp = node
            .subscribe_to(
                "WebhookChannel2023",
                json!({"type": HOOK_TYPE, "topic": topic, "sendTo": target}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{target}");
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("CSS_OUTBOUND_ALLOWED_NETWORKS"),
            "{target}: {text}"
        );
    }
    let missing = node
        .subscribe_to(
            "WebhookChannel2023",
            json!({"type": HOOK_TYPE, "topic": topic}),
        )
        .await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(missing.text().await.unwrap().contains("sendTo is missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparql_update_is_heard_like_any_write() {
    let node = Node::start();
    for doc in ["alice/tasks/a.ttl", "alice/tasks/sub/b.ttl"] {
        let put = node
            .client
            .put(node.url(doc))
            .header("content-type", "text/turtle")
            .body("<#t> <http://example.org/status> \"open\".")
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
    }
    let mut a = connect(
        &node
            .channel(&node.url("alice/tasks/a.ttl"), json!({}))
            .await,
    )
    .await;
    let mut b = connect(
        &node
            .channel(&node.url("alice/tasks/sub/b.ttl"), json!({}))
            .await,
    )
    .await;
    let mut untouched = connect(&node.channel(&node.url("alice/tasks/"), json!({})).await).await;

    // One update changes both documents through the sidecar.
    let update = node
        .client
        .post(node.url("alice/tasks/-/sparql"))
        .header("content-type", "application/sparql-update")
        .body(
            "DELETE { GRAPH ?g { ?t <http://example.org/status> \"open\" } } \
             INSERT { GRAPH ?g { ?t <http://example.org/status> \"done\" } } \
             WHERE { GRAPH ?g { ?t <http://example.org/status> \"open\" } }",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(update.status(), 204);
    for (socket, doc) in [
        (&mut a, "alice/tasks/a.ttl"),
        (&mut b, "alice/tasks/sub/b.ttl"),
    ] {
        let got = node.client.get(node.url(doc)).send().await.unwrap();
        let etag = got.headers()["etag"].to_str().unwrap().to_string();
        assert!(got.text().await.unwrap().contains("\"done\""));
        check(&next(socket).await, "Update", &node.url(doc), Some(&etag));
    }
    // The container's membership did not change: it hears nothing.
    silent(&mut untouched, Duration::from_millis(700)).await;

    // The sidecar is no resource: there is nothing to subscribe to.
    let refused = node
        .subscribe(json!({
            "@context": ["https://www.w3.org/ns/solid/notification/v1"],
            "type": WS_TYPE,
            "topic": node.url("alice/tasks/-/sparql"),
        }))
        .await;
    assert_eq!(refused.status(), 422);
}
