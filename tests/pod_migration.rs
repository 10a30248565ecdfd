//! Moving pods between the nodes of a cluster while clients keep using
//! them: real nodes, one PostgreSQL, and one Garage server per storage.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{Cluster, served_by, token};
use support::{Server, borrowed};

/// Bytes that differ per resource and per write.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `n` documents of `len` bytes into `pod` through node `via`, 16 at
/// a time, in a few containers; returns path → bytes.
async fn fill(c: &Cluster, via: usize, pod: &str, n: u64, len: usize) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let items: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("{pod}/d{}/r{i}.bin", i % 7), content(i + 1, len)))
        .collect();
    for chunk in items.chunks(16) {
        let puts = chunk.iter().map(|(path, body)| {
            c.nodes[via]
                .client
                .put(c.url(path))
                .header("content-type", "application/octet-stream")
                .body(body.clone())
                .send()
        });
        for (r, (path, body)) in futures::future::join_all(puts).await.into_iter().zip(chunk) {
            assert_eq!(r.unwrap().status(), 201, "{path}");
            out.insert(path.clone(), body.clone());
        }
    }
    out
}

async fn api(
    c: &Cluster,
    via: usize,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = c.nodes[via]
        .client
        .request(method, c.url(path))
        .bearer_auth(token(&c.nodes[via]));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn migrate(c: &Cluster, via: usize, pod: &str, to: usize) -> (u16, Value) {
    let target = serde_json::json!({ "targetNode": c.nodes[to].id });
    api(
        c,
        via,
        reqwest::Method::POST,
        &format!(".cluster/pods/{pod}/migrate"),
        Some(target),
    )
    .await
}

async fn migration(c: &Cluster, via: usize, pod: &str) -> Value {
    let (status, m) = api(
        c,
        via,
        reqwest::Method::GET,
        &format!(".cluster/pods/{pod}/migration"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{m}");
    m
}

/// Polls the migration until it ends (or `timeout`), returns its last state.
async fn wait_ended(c: &Cluster, via: usize, pod: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let m = migration(c, via, pod).await;
        if matches!(m["status"].as_str(), Some("done" | "failed" | "cancelled")) {
            return m;
        }
        assert!(Instant::now() < deadline, "migration still running: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until the migration is copying and has copied something.
async fn wait_copying(c: &Cluster, via: usize, pod: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = migration(c, via, pod).await;
        if m["status"] == "copying" && m["copied"].as_i64().unwrap_or(0) > 0 {
            return m;
        }
        assert!(
            m["status"] != "done",
            "the migration finished before it could be observed copying: {m}"
        );
        assert!(Instant::now() < deadline, "never copying: {m}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads every resource through node `via` and checks the bytes and that
/// node `owner` served it.
async fn assert_all_readable(
    c: &Cluster,
    via: usize,
    owner: usize,
    expected: &BTreeMap<String, Vec<u8>>,
) {
    let paths: Vec<_> = expected.iter().collect();
    for chunk in paths.chunks(32) {
        let gets = chunk
            .iter()
            .map(|(path, _)| c.nodes[via].client.get(c.url(path)).send());
        for (r, (path, body)) in futures::future::join_all(gets).await.into_iter().zip(chunk) {
            let r = r.unwrap();
            assert_eq!(r.status(), 200, "{path} is readable");
            assert_eq!(
                served_by(&r),
                c.nodes[owner].id,
                "{path} served by the new owner"
            );
            assert!(r.bytes().await.unwrap() == **body, "{path}: same bytes");
        }
    }
}

/// An acknowledged write: path, bytes, and the phase seen when it was sent.
type Acked = (String, Vec<u8>, String);

/// A client that keeps writing new documents into `pod` through node `via`
/// until stopped, and notes each acknowledged write with the migration
/// phase an observer saw when the write was sent.
struct Writer {
    acked: Arc<Mutex<Vec<Acked>>>,
    refused: Arc<Mutex<Vec<u16>>>,
    phase: Arc<Mutex<String>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writer {
    fn start(c: &Cluster, via: usize, pod: &str) -> Writer {
        let w = Writer {
            acked: Default::default(),
            refused: Default::default(),
            phase: Arc::new(Mutex::new("before".into())),
            stop: Default::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        {
            let (client, url) = (c.nodes[via].client.clone(), c.url(""));
            let (acked, refused, phase, stop) = (
                w.acked.clone(),
                w.refused.clone(),
                w.phase.clone(),
                w.stop.clone(),
            );
            let pod = pod.to_string();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let path = format!("{pod}/live/w{i}.bin");
                    let body = content(1_000_000 + i, 2048 + (i as usize % 5000));
                    let issued = phase.lock().unwrap().clone();
                    let r = client
                        .put(format!("{url}{path}"))
                        .header("content-type", "application/octet-stream")
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            acked.lock().unwrap().push((path, body, issued));
                        }
                        Ok(r) => {
                            let status = r.status().as_u16();
                            if status == 503 {
                                assert!(
                                    r.headers().contains_key("retry-after"),
                                    "a 503 says when to retry"
                                );
                            }
                            refused.lock().unwrap().push(status);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
        Writer { tasks, ..w }
    }

    /// Follows the migration's phase through node `via`'s API.
    fn observe(&mut self, c: &Cluster, via: usize, pod: &str) {
        let (client, url, tok) = (
            c.nodes[via].client.clone(),
            c.url(&format!(".cluster/pods/{pod}/migration")),
            token(&c.nodes[via]),
        );
        let (phase, stop) = (self.phase.clone(), self.stop.clone());
        self.tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = client.get(&url).bearer_auth(&tok).send().await
                    && let Ok(m) = r.json::<Value>().await
                    && let Some(s) = m["status"].as_str()
                {
                    *phase.lock().unwrap() = s.to_string();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    async fn stop(self) -> (Vec<Acked>, Vec<u16>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let refused = self.refused.lock().unwrap().clone();
        (acked, refused)
    }
}

/// Subscribes to `topic` through node `via` and connects the WebSocket
/// there; a task collects the JSON notifications.
async fn listen(c: &Cluster, via: usize, topic: &str) -> Arc<Mutex<Vec<Value>>> {
    use futures::StreamExt;
    let channel: Value = c.nodes[via]
        .client
        .post(c.url(".notifications/WebSocketChannel2023/"))
        .header("content-type", "application/ld+json")
        .body(
            serde_json::json!({
                "type": "http://www.w3.org/ns/solid/notifications#WebSocketChannel2023",
                "topic": topic,
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let receive_from = channel["receiveFrom"].as_str().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect((format!("127.0.0.{}", via + 1), c.port))
        .await
        .unwrap();
    let (mut socket, upgrade) = tokio_tungstenite::client_async(receive_from, tcp)
        .await
        .unwrap();
    assert_eq!(upgrade.status(), 101);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg
                && let Ok(v) = serde_json::from_str::<Value>(&t)
            {
                sink.lock().unwrap().push(v);
            }
        }
    });
    heard
}

fn per_phase(acked: &[Acked]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, _, phase) in acked {
        *counts.entry(phase.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_storage_switches_in_a_metadata_change() {
    let c = Cluster::start();
    c.create_pod(0, "big");
    let mut expected = fill(&c, 0, "big", 1000, 300).await;

    // The requests the API refuses.
    let (status, body) = api(
        &c,
        2,
        reqwest::Method::POST,
        ".cluster/pods/big/migrate",
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("targetNode"));
    let (status, body) = api(
        &c,
        2,
        reqwest::Method::POST,
        ".cluster/pods/big/migrate",
        Some(serde_json::json!({ "targetNode": "no-such-node" })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(migrate(&c, 2, "big", 0).await.0, 400, "already there");
    assert_eq!(migrate(&c, 2, "nobody", 1).await.0, 404);
    let anonymous = c.nodes[2]
        .client
        .post(c.url(".cluster/pods/big/migrate"))
        .json(&serde_json::json!({ "targetNode": c.nodes[1].id }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let (status, _) = api(
        &c,
        2,
        reqwest::Method::GET,
        ".cluster/pods/big/migration",
        None,
    )
    .await;
    assert_eq!(status, 404, "never migrated");

    // Any node takes the request; the target drives it.
    let (status, job) = migrate(&c, 2, "big", 1).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["sourceNode"], c.nodes[0].id);
    assert_eq!(job["targetNode"], c.nodes[1].id);
    let done = wait_ended(&c, 2, "big", Duration::from_secs(30)).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["progress"], 100);
    let fence_ms = done["fenceMs"].as_i64().unwrap();
    let total_ms = done["finishedAt"].as_i64().unwrap() - done["startedAt"].as_i64().unwrap();
    eprintln!(
        "shared storage, 1000 resources: writes fenced {fence_ms} ms; request to done {total_ms} ms"
    );
    assert!(
        fence_ms < 1000,
        "the switch is a metadata change: {fence_ms} ms"
    );

    // Every resource, through every node, from the new owner.
    assert_all_readable(&c, 2, 1, &expected).await;
    assert_all_readable(&c, 0, 1, &expected).await;
    // And writes go on there.
    let put = c.nodes[0]
        .client
        .put(c.url("big/after.txt"))
        .header("content-type", "text/plain")
        .body("after the move")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(served_by(&put), c.nodes[1].id);
    expected.insert("big/after.txt".into(), b"after the move".to_vec());

    // The CLI moves it on to a third node and says so.
    let out = c.cli(0, &["pods", "migrate", "big", "--to", &c.nodes[2].id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved to node"));
    assert_all_readable(&c, 1, 2, &expected).await;
    // A refused migration makes the CLI fail with the reason.
    let out = c.cli(0, &["pods", "migrate", "big", "--to", &c.nodes[2].id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already on node"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_storage_loses_no_acknowledged_write() {
    // A (0) and C (2) share a bucket; B (1) has its own.
    let c = Cluster::start_layout(&[0, 1, 0], &[]);
    c.create_pod(0, "busy");
    let mut expected = fill(&c, 0, "busy", 1500, 8192).await;

    // A channel on the pod's root, held by the third node, hears how the
    // migration goes.
    let heard = listen(&c, 2, &c.url("busy/")).await;
    let mut writer = Writer::start(&c, 2, "busy");
    writer.observe(&c, 2, "busy");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, job) = migrate(&c, 2, "busy", 1).await;
    assert_eq!(status, 202, "{job}");
    // One migration of a pod at a time.
    assert_eq!(migrate(&c, 0, "busy", 2).await.0, 409);
    let done = wait_ended(&c, 2, "busy", Duration::from_secs(120)).await;
    assert_eq!(done["status"], "done", "{done}");
    // Writes go on after the switch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, refused) = writer.stop().await;
    let phases = per_phase(&acked);
    eprintln!(
        "separate storage, 1500 x 8 KiB: acknowledged writes per phase {phases:?}; refused {} ({:?}); fence {} ms; copied {}/{}",
        refused.len(),
        refused.iter().collect::<std::collections::BTreeSet<_>>(),
        done["fenceMs"],
        done["copied"],
        done["total"]
    );
    assert!(
        phases.get("copying").copied().unwrap_or(0) > 0,
        "{phases:?}"
    );
    assert!(phases.get("done").copied().unwrap_or(0) > 0, "{phases:?}");
    assert!(refused.iter().all(|s| *s == 503), "{refused:?}");
    let heard = heard.lock().unwrap().clone();
    let progress: Vec<_> = heard
        .iter()
        .filter(|n| n["type"] == "migration:progress")
        .collect();
    assert!(
        progress.iter().any(|n| n["status"] == "copying"),
        "progress was published: {heard:?}"
    );
    let ended: Vec<_> = heard
        .iter()
        .filter(|n| n["type"] == "migration:done")
        .collect();
    assert_eq!(ended.len(), 1, "{heard:?}");
    assert_eq!(ended[0]["status"], "done");
    assert_eq!(ended[0]["object"], c.url("busy/"));
    assert_eq!(ended[0]["targetNode"], c.nodes[1].id);

    // Every acknowledged write is at the new owner, with its bytes: 0 lost.
    for (path, body, _) in acked {
        expected.insert(path, body);
    }
    assert_all_readable(&c, 2, 1, &expected).await;
    assert_all_readable(&c, 1, 1, &expected).await;

    // The source storage's copies are released (the collector takes them
    // after its grace period); the target's are referenced.
    let storage = |i: usize| {
        c.pg.psql(
            "cluster",
            &format!(
                "SELECT storage_id FROM nodes WHERE node_id = '{}'",
                c.nodes[i].id
            ),
        )
    };
    let (sa, sb) = (storage(0), storage(1));
    assert_ne!(sa, sb);
    let referenced = |s: &str| {
        c.pg.psql(
            "cluster",
            &format!("SELECT count(*) FROM blobs WHERE storage_id = '{s}' AND refcount > 0"),
        )
    };
    assert_eq!(referenced(&sa), "0", "the source's references are released");
    assert_eq!(
        c.pg.psql(
            "cluster",
            "SELECT count(DISTINCT content_hash) FROM resources WHERE pod_id = 'busy'"
        ),
        referenced(&sb),
        "the target storage holds a reference for every hash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_driver_resumes_the_migration() {
    let mut c = Cluster::start_layout(&[0, 1, 0], &[]);
    c.create_pod(0, "crash");
    let mut expected = fill(&c, 0, "crash", 1500, 4096).await;
    let mut writer = Writer::start(&c, 2, "crash");
    writer.observe(&c, 2, "crash");

    assert_eq!(migrate(&c, 2, "crash", 1).await.0, 202);
    let before = wait_copying(&c, 2, "crash").await;
    // Hold the source still so the copy cannot finish, then kill the
    // target, which drives the migration.
    let source = c.nodes[0].server.pid() as i32;
    unsafe { libc::kill(source, libc::SIGSTOP) };
    c.nodes[1].server.stop_with(libc::SIGKILL);
    unsafe { libc::kill(source, libc::SIGCONT) };
    let stalled = migration(&c, 2, "crash").await;
    assert_eq!(stalled["status"], "copying", "{stalled}");
    eprintln!(
        "killed the driver at {}/{} copied (first seen copying at {})",
        stalled["copied"], stalled["total"], before["copied"]
    );
    // The source keeps serving the pod meanwhile.
    let get = c.nodes[2]
        .client
        .get(c.url("crash/d0/r0.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(served_by(&get), c.nodes[0].id);

    let dir = c.nodes[1].root.parent().unwrap().to_path_buf();
    c.nodes[1].server = Server::start("127.0.0.2", &borrowed(&c.nodes[1].env), &dir);
    let done = wait_ended(&c, 2, "crash", Duration::from_secs(120)).await;
    assert_eq!(done["status"], "done", "{done}");
    let log = c.nodes[1].server.log_text();
    assert!(
        log.contains("driving migration") && log.contains("resuming the copy where it stopped"),
        "the restarted node took the copy up again from its cursor"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (acked, _) = writer.stop().await;
    eprintln!("acknowledged writes per phase {:?}", per_phase(&acked));
    for (path, body, _) in acked {
        expected.insert(path, body);
    }
    assert_all_readable(&c, 2, 1, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_migration_leaves_the_pod_whole_on_its_source() {
    let c = Cluster::start_layout(&[0, 1, 0], &[]);
    c.create_pod(0, "stay");
    let mut expected = fill(&c, 0, "stay", 1500, 4096).await;
    assert_eq!(migrate(&c, 2, "stay", 1).await.0, 202);
    wait_copying(&c, 2, "stay").await;
    // Cancel while the source is held still, so the copy is surely unfinished.
    let source = c.nodes[0].server.pid() as i32;
    unsafe { libc::kill(source, libc::SIGSTOP) };
    let (status, m) = api(
        &c,
        2,
        reqwest::Method::DELETE,
        ".cluster/pods/stay/migration",
        None,
    )
    .await;
    unsafe { libc::kill(source, libc::SIGCONT) };
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["status"], "cancelled");
    let (status, _) = api(
        &c,
        2,
        reqwest::Method::DELETE,
        ".cluster/pods/stay/migration",
        None,
    )
    .await;
    assert_eq!(status, 404, "nothing left to cancel");
    // The driver stops; the pod never moved.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = migration(&c, 1, "stay").await;
    assert_eq!(m["status"], "cancelled", "{m}");
    let (_, pod) = api(&c, 1, reqwest::Method::GET, ".cluster/pods/stay", None).await;
    assert_eq!(pod["nodeId"], c.nodes[0].id);
    assert_all_readable(&c, 1, 0, &expected).await;
    // It takes writes as before, and can be moved later.
    let put = c.nodes[1]
        .client
        .put(c.url("stay/later.txt"))
        .header("content-type", "text/plain")
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(served_by(&put), c.nodes[0].id);
    expected.insert("stay/later.txt".into(), b"still here".to_vec());
    assert_eq!(migrate(&c, 2, "stay", 1).await.0, 202);
    let done = wait_ended(&c, 2, "stay", Duration::from_secs(120)).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_all_readable(&c, 2, 1, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_left_by_a_dead_target_is_lifted() {
    let mut c = Cluster::start();
    c.create_pod(0, "held");
    // The target dies in the middle of its switch: the pod is fenced.
    c.nodes[1].server.stop_with(libc::SIGKILL);
    let (client, url) = (c.nodes[2].client.clone(), c.url("held/doc.txt"));
    let put = |body: &'static str| {
        client
            .put(&url)
            .header("content-type", "text/plain")
            .body(body)
            .send()
    };
    assert_eq!(put("before").await.unwrap().status(), 201);
    let (a, b) = (c.nodes[0].id.clone(), c.nodes[1].id.clone());
    c.pg.psql(
        "cluster",
        &format!(
            "WITH m AS (INSERT INTO migrations (pod_id, source_node, target_node, status, started_at, updated_at, fenced_at)
               VALUES ('held', '{a}', '{b}', 'switching', 1, 1, 1) RETURNING id)
             UPDATE pods SET fence = (SELECT id FROM m) WHERE pod_id = 'held'"
        ),
    );
    // Writes wait a moment, then are refused with a time to retry; reads go on.
    let started = Instant::now();
    let refused = put("during").await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "writes wait first"
    );
    let get = c.nodes[2]
        .client
        .get(c.url("held/doc.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.text().await.unwrap(), "before");
    // Once the target misses its heartbeats, the owner lifts the fence.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = put("after").await.unwrap();
        if r.status() == 205 {
            assert_eq!(served_by(&r), a);
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "the fence stayed");
    }
    let m = migration(&c, 2, "held").await;
    assert_eq!(m["status"], "failed");
    assert!(
        m["error"]
            .as_str()
            .unwrap()
            .contains("stopped sending heartbeats"),
        "{m}"
    );
}
