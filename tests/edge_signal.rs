//! Edge nodes and their signal: a centre on PostgreSQL (127.0.0.1) and an
//! edge on SQLite (127.0.0.2), real processes. The edge enrols with the
//! one-time token `xpod nodes create-edge` printed, and its heartbeats
//! register its pods on the centre; the signal endpoint refuses unknown
//! nodes, wrong and used tokens, bad signatures, replays, and pod names
//! the centre already gives another node.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use support::{Postgres, Server, borrowed, xpod};

/// A centre node on its own PostgreSQL, asking edges to signal every second.
struct Centre {
    _pg: Postgres,
    dir: tempfile::TempDir,
    _server: Server,
    env: Vec<(&'static str, String)>,
    port: u16,
    root: PathBuf,
}

impl Centre {
    fn start() -> Centre {
        let pg = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("centre");
        let port = support::free_port("127.0.0.1");
        let env: Vec<(&'static str, String)> = vec![
            ("CSS_ROOT_FILE_PATH", root.display().to_string()),
            ("CSS_HOST", "127.0.0.1".into()),
            ("CSS_PORT", port.to_string()),
            ("CSS_BASE_URL", format!("http://pods.test:{port}/")),
            ("CSS_DATABASE_URL", pg.create_database("centre")),
            ("CSS_INTERNAL_IP", "127.0.0.1".into()),
            ("CSS_EDGE_SIGNAL_INTERVAL", "1s".into()),
        ];
        let server = Server::start("127.0.0.1", &borrowed(&env), dir.path());
        Centre {
            _pg: pg,
            dir,
            _server: server,
            env,
            port,
            root,
        }
    }

    fn base(&self) -> String {
        format!("http://pods.test:{}/", self.port)
    }

    /// The signal URL as an edge reaches it (the canonical host resolved
    /// to the centre's address, as split DNS would).
    fn signal_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/signal", self.port)
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        xpod(&borrowed(&self.env), args)
    }

    /// `xpod nodes create-edge <name>`: the settings it prints for the box.
    fn create_edge(&self, name: &str) -> Vec<(String, String)> {
        let out = self.cli(&["nodes", "create-edge", name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let settings: Vec<(String, String)> = text
            .lines()
            .filter(|l| l.starts_with("CSS_"))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names: Vec<&str> = settings.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "CSS_NODE_ID",
                "CSS_NODE_TOKEN",
                "CSS_SIGNAL_ENDPOINT",
                "CSS_BASE_URL"
            ],
            "{text}"
        );
        settings
    }

    async fn admin(&self, path: &str) -> (StatusCode, Value) {
        let token = std::fs::read_to_string(self.root.join("admin.token")).unwrap();
        let resp = Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn setting<'a>(settings: &'a [(String, String)], name: &str) -> &'a str {
    &settings.iter().find(|(k, _)| k == name).unwrap().1
}

/// Polls `check` every 100 ms for at most `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn edge_env(root: &Path, port: u16, settings: &[(String, String)]) -> Vec<(&'static str, String)> {
    vec![
        ("CSS_ROOT_FILE_PATH", root.display().to_string()),
        ("CSS_HOST", "127.0.0.2".into()),
        ("CSS_PORT", port.to_string()),
        ("CSS_BASE_URL", setting(settings, "CSS_BASE_URL").into()),
        ("CSS_NODE_ID", setting(settings, "CSS_NODE_ID").into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_enrols_and_its_pods_reach_the_centre() {
    let centre = Centre::start();
    let settings = centre.create_edge("home-box");
    let id = setting(&settings, "CSS_NODE_ID").to_string();
    assert_eq!(
        setting(&settings, "CSS_SIGNAL_ENDPOINT"),
        format!("{}api/v1/signal", centre.base())
    );
    assert_eq!(setting(&settings, "CSS_BASE_URL"), centre.base());
    let again = centre.cli(&["nodes", "create-edge", "home-box"]);
    support::assert_one_line_error(&again, 1, "home-box");

    // The box ran alone before, with a pod of its own.
    let root = centre.dir.path().join("edge");
    let mut env = edge_env(&root, centre.port, &settings);
    {
        let alone = Server::start("127.0.0.2", &borrowed(&env), centre.dir.path());
        let out = xpod(
            &borrowed(&env),
            &["pods", "create", "early", "--public-write"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(alone);
    }

    // Now an edge: it enrols at once, with the pod it has.
    env.push((
        "CSS_NODE_TOKEN",
        setting(&settings, "CSS_NODE_TOKEN").into(),
    ));
    env.push(("CSS_SIGNAL_ENDPOINT", centre.signal_url()));
    let edge = Server::start("127.0.0.2", &borrowed(&env), centre.dir.path());
    let marker = root.join("edge.enrolled");
    eventually(10, "the edge to enrol", || async { marker.exists() }).await;
    let (status, pod) = centre.admin("/.cluster/pods/early").await;
    assert_eq!(status, 200, "{pod}");
    assert_eq!(pod["nodeId"], id.as_str());
    assert_eq!(pod["baseUrl"], format!("{}early/", centre.base()));
    assert_eq!(pod["storageId"], format!("edge:{id}"));

    // A pod created on the edge reaches the centre with the next heartbeat.
    let out = xpod(
        &borrowed(&env),
        &["pods", "create", "alice", "--public-write"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        created.contains(&format!("{}alice/", centre.base())),
        "the edge's pod has its canonical URL under the centre: {created}"
    );
    eventually(5, "alice on the centre", || async {
        let (status, pod) = centre.admin("/.cluster/pods/alice").await;
        status == 200 && pod["nodeId"] == id.as_str()
    })
    .await;
    let out = centre.cli(&["pods", "list"]);
    let pods = String::from_utf8_lossy(&out.stdout);
    assert!(
        pods.lines()
            .any(|l| l.starts_with("alice ") && l.contains(&id)),
        "{pods}"
    );
    let out = centre.cli(&["nodes", "list"]);
    let nodes = String::from_utf8_lossy(&out.stdout);
    let line = nodes
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("the edge is not listed:\n{nodes}"));
    assert!(line.contains("(edge)"), "{line}");
    assert!(line.contains(" up "), "{line}");
    assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
    let (_, edges) = centre.admin("/.cluster/edges").await;
    let listed = &edges[0];
    assert_eq!(listed["name"], "home-box");
    assert_eq!(listed["tokenUnused"], false);
    assert!(listed["enrolledAt"].is_i64() && listed["lastSignal"].is_i64());
    assert!(
        !edges
            .to_string()
            .contains(&xpod::edge::signal::token_hash(setting(
                &settings,
                "CSS_NODE_TOKEN"
            ))),
        "the token's hash stays in the database"
    );

    // The edge takes no signals and creates no edges.
    let resp = Client::new()
        .post(format!("http://127.0.0.2:{}/api/v1/signal", centre.port))
        .json(&json!({"nodeId": "x", "version": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let out = xpod(&borrowed(&env), &["nodes", "create-edge", "attic"]);
    support::assert_one_line_error(&out, 1, "itself an edge");

    // Restarted without its token, it goes on with signed heartbeats.
    drop(edge);
    env.retain(|(k, _)| *k != "CSS_NODE_TOKEN");
    let restarted = xpod::db::now_ms();
    let edge = Server::start("127.0.0.2", &borrowed(&env), centre.dir.path());
    eventually(5, "a heartbeat after the restart", || async {
        let (_, edges) = centre.admin("/.cluster/edges").await;
        edges[0]["lastSignal"].as_i64().unwrap_or(0) > restarted
    })
    .await;
    let log = edge.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("ERROR") && (l.contains("centre") || l.contains("CSS_"))),
        "{log}"
    );

    // An edge whose base URL is not the centre's says so.
    drop(edge);
    for (k, v) in env.iter_mut() {
        if *k == "CSS_BASE_URL" {
            *v = format!("http://elsewhere.test:{}/", centre.port);
        }
    }
    let edge = Server::start("127.0.0.2", &borrowed(&env), centre.dir.path());
    let hint = format!("set CSS_BASE_URL={}", centre.base());
    eventually(5, "the edge's complaint about its base URL", || async {
        edge.log_text().contains(&hint)
    })
    .await;
}

async fn post(url: &str, body: &Value) -> (StatusCode, Value) {
    let resp = Client::new().post(url).json(body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn signed(key: &SigningKey, node: &str, url: &str, body: &[u8]) -> (StatusCode, Value) {
    let target = url::Url::parse(url).unwrap();
    let headers = xpod::edge::signed_headers(key, node, "signal", "POST", &target, body);
    send(url, headers, body.to_vec()).await
}

async fn send(
    url: &str,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let resp = Client::new()
        .post(url)
        .headers(headers)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn error(json: &Value) -> &str {
    json["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signal_endpoint_refuses_what_it_should() {
    let centre = Centre::start();
    let url = centre.signal_url();
    let settings = centre.create_edge("crafted");
    let id = setting(&settings, "CSS_NODE_ID").to_string();
    let token = setting(&settings, "CSS_NODE_TOKEN").to_string();
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = xpod::node::keys::public_key_text(&key);
    let enrolment = |node: &str, token: &str, public: &str, pods: &[&str]| json!({"nodeId": node, "token": token, "publicKey": public, "version": "0.9.0", "pods": pods});

    // An unknown node id never registers itself.
    let (status, json) = post(
        &url,
        &enrolment("no-such-node", &token, &public, &["mallory"]),
    )
    .await;
    assert_eq!(status, 403, "{json}");
    assert!(error(&json).contains("never registers itself"), "{json}");
    assert_eq!(centre.admin("/.cluster/nodes/no-such-node").await.0, 404);
    assert_eq!(centre.admin("/.cluster/pods/mallory").await.0, 404);

    // A wrong token registers nothing.
    let wrong = xpod::edge::signal::new_token();
    let (status, json) = post(&url, &enrolment(&id, &wrong, &public, &["carol"])).await;
    assert_eq!(status, 403, "{json}");
    assert!(error(&json).contains("wrong enrolment token"), "{json}");
    assert_eq!(centre.admin(&format!("/.cluster/nodes/{id}")).await.0, 404);
    assert_eq!(centre.admin("/.cluster/pods/carol").await.0, 404);

    // A key that is not one.
    let (status, json) = post(&url, &enrolment(&id, &token, "not-a-key", &["carol"])).await;
    assert_eq!(status, 400, "{json}");
    assert!(error(&json).contains("public key"), "{json}");

    // A pod name the centre gives another node refuses the whole
    // enrolment, names every clash, and leaves the token usable.
    let out = centre.cli(&["pods", "create", "bob", "--public-write"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, json) = post(&url, &enrolment(&id, &token, &public, &["bob", "carol"])).await;
    assert_eq!(status, 409, "{json}");
    assert!(error(&json).contains("bob"), "{json}");
    assert!(error(&json).contains("xpod pods rename"), "{json}");
    assert_eq!(json["clashes"][0]["name"], "bob");
    assert_eq!(json["clashes"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(centre.admin("/.cluster/pods/carol").await.0, 404);
    assert_eq!(centre.admin(&format!("/.cluster/nodes/{id}")).await.0, 404);

    // The enrolment, which answers as a heartbeat does.
    let (status, reply) = post(&url, &enrolment(&id, &token, &public, &["carol"])).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({
            "nodeId": id,
            "baseUrl": centre.base(),
            "pods": [{"name": "carol", "url": format!("{}carol/", centre.base())}],
            "refused": [],
            "nextSignalSeconds": 1,
            "tunnel": "/api/v1/tunnel",
        })
    );
    let (_, node) = centre.admin(&format!("/.cluster/nodes/{id}")).await;
    assert_eq!(
        (node["kind"].as_str(), node["version"].as_str()),
        (Some("edge"), Some("0.9.0"))
    );

    // The token works once.
    let (status, json) = post(&url, &enrolment(&id, &token, &public, &["carol"])).await;
    assert_eq!(status, 403, "{json}");
    assert!(error(&json).contains("used already"), "{json}");

    // A signed heartbeat registers new pods and refuses taken names.
    let body = serde_json::to_vec(&json!({
        "nodeId": id, "version": "0.9.1", "pods": ["carol", "dave", "bob"]
    }))
    .unwrap();
    let target = url::Url::parse(&url).unwrap();
    let headers = xpod::edge::signed_headers(&key, &id, "signal", "POST", &target, &body);
    let (status, reply) = send(&url, headers.clone(), body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let names: Vec<&str> = reply["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["carol", "dave"]);
    let centre_id = std::fs::read_to_string(centre.root.join(".node-id")).unwrap();
    assert_eq!(
        reply["refused"],
        json!([{"name": "bob", "reason": format!("taken by node {}", centre_id.trim())}])
    );
    let (_, node) = centre.admin(&format!("/.cluster/nodes/{id}")).await;
    assert_eq!(node["version"], "0.9.1");

    // The same request again is a replay.
    let (status, json) = send(&url, headers, body.clone()).await;
    assert_eq!(status, 403, "{json}");
    assert!(error(&json).contains("replayed"), "{json}");

    // Signed by another key; a body changed after signing; a body that
    // names another node; no signature and no token.
    let stranger = SigningKey::generate(&mut rand::rngs::OsRng);
    let (status, json) = signed(&stranger, &id, &url, &body).await;
    assert_eq!(status, 403, "{json}");
    assert!(error(&json).contains("invalid signature"), "{json}");
    let headers = xpod::edge::signed_headers(&key, &id, "signal", "POST", &target, &body);
    let changed = serde_json::to_vec(&json!({
        "nodeId": id, "version": "0.9.1", "pods": ["carol", "erin"]
    }))
    .unwrap();
    let (status, json) = send(&url, headers, changed).await;
    assert_eq!(status, 403, "{json}");
    assert_eq!(centre.admin("/.cluster/pods/erin").await.0, 404);
    let other =
        serde_json::to_vec(&json!({"nodeId": "someone-else", "version": "1", "pods": []})).unwrap();
    let (status, json) = signed(&key, &id, &url, &other).await;
    assert_eq!(status, 403, "{json}");
    assert!(error(&json).contains("signed by node"), "{json}");
    let (status, json) = post(&url, &json!({"nodeId": id, "version": "1", "pods": []})).await;
    assert_eq!(status, 400, "{json}");

    // An edge that never enrolled cannot send heartbeats.
    let never = centre.create_edge("never");
    let never_id = setting(&never, "CSS_NODE_ID");
    let body =
        serde_json::to_vec(&json!({"nodeId": never_id, "version": "1", "pods": []})).unwrap();
    let (status, json) = signed(&key, never_id, &url, &body).await;
    assert_eq!(status, 403, "{json}");

    // A body over 1 MiB.
    let big = vec![b' '; (1 << 20) + 1];
    let (status, _) = send(&url, Default::default(), big).await;
    assert_eq!(status, 413);
}
