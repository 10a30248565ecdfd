//! Three nodes on 127.0.0.1, .2 and .3 sharing one base URL and port, one
//! PostgreSQL and one S3 bucket: any node answers for any pod, by forwarding
//! to the owner.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, served_by, token};
use support::{Server, borrowed};

/// A request signed as node `from` would sign it, for node `to`.
fn signed_get(c: &Cluster, from: usize, to: usize, path: &str) -> reqwest::RequestBuilder {
    use xpod::cluster::signature::{self, Signed};
    let key = xpod::node::keys::load_or_create(&c.nodes[from].root.join("node.key")).unwrap();
    let nonce = signature::nonce();
    let authority = format!("pods.test:{}", c.port);
    let path_and_query = format!("/{path}");
    let signed = Signed {
        method: "GET",
        authority: &authority,
        path_and_query: &path_and_query,
        date: xpod::db::now_ms(),
        nonce: &nonce,
        from: &c.nodes[from].id,
        to: &c.nodes[to].id,
        hop: "1",
        forwarded_for: "10.9.9.9",
        forwarded_host: &authority,
        forwarded_proto: "http",
        session: "",
        offer: "",
        agent: "",
    };
    let sig = signed.sign(&key);
    c.nodes[to]
        .client
        .get(c.url(path))
        .header(signature::HOP, "1")
        .header(signature::FROM, &c.nodes[from].id)
        .header(signature::TO, &c.nodes[to].id)
        .header(signature::DATE, signed.date.to_string())
        .header(signature::NONCE, &nonce)
        .header(signature::SIGNATURE, sig)
        .header("x-forwarded-for", "10.9.9.9")
        .header("x-forwarded-host", &authority)
        .header("x-forwarded-proto", "http")
}

/// Node `i`'s count of forwarded requests it accepted, by how they were
/// authenticated ("signature", "session", "refused").
async fn forwarded_auth(c: &Cluster, i: usize) -> std::collections::HashMap<String, u64> {
    let text = c.nodes[i]
        .client
        .get(c.url(".cluster/metrics"))
        .bearer_auth(token(&c.nodes[i]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("xpod_forwarded_requests_total{auth=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(how, n)| (how.to_string(), n.parse().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_for_any_pod() {
    let c = Cluster::start();
    let (a, b, cc) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    c.create_pod(0, "alice");

    // Written through B, read through C: A executes both.
    let body: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let put = b
        .client
        .put(c.url("alice/notes/n1.bin"))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(served_by(&put), a.id, "the owner executed the write");
    let get = cc
        .client
        .get(c.url("alice/notes/n1.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(served_by(&get), a.id, "the owner executed the read");
    assert!(get.bytes().await.unwrap() == body, "identical bytes");
    // Containers too, and a 404 for a pod nobody has.
    let list = b.client.get(c.url("alice/notes/")).send().await.unwrap();
    assert_eq!(list.status(), 200);
    assert!(list.text().await.unwrap().contains("n1.bin"));
    let none = b.client.get(c.url("nobody/x")).send().await.unwrap();
    assert_eq!(none.status(), 404);
    // A container's SPARQL sidecar too: written through B, queried
    // through C with its query string, answered by A.
    let put = b
        .client
        .put(c.url("alice/notes/n2.ttl"))
        .header("content-type", "text/turtle")
        .body("<#n2> <http://example.org/title> \"through B\".")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let query = cc
        .client
        .get(c.url("alice/notes/-/sparql"))
        .query(&[(
            "query",
            "SELECT ?t WHERE { ?s <http://example.org/title> ?t }",
        )])
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 200);
    assert_eq!(served_by(&query), a.id, "the owner answered the query");
    assert_eq!(query.text().await.unwrap(), "t\r\nthrough B\r\n");

    // The cluster API needs the administrator credential.
    for path in [".cluster/nodes", ".cluster/pods", ".cluster/pods/alice"] {
        let r = b.client.get(c.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let nodes: serde_json::Value = b
        .client
        .get(c.url(".cluster/nodes"))
        .bearer_auth(token(a))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["reachable"] == true), "{nodes:?}");
    let pod: serde_json::Value = cc
        .client
        .get(c.url(".cluster/pods/alice"))
        .bearer_auth(token(cc))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pod["nodeId"], a.id.as_str());
    assert_eq!(pod["migration"], serde_json::Value::Null);
    let pods: serde_json::Value = b
        .client
        .get(c.url(".cluster/pods"))
        .bearer_auth(token(b))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = pods
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podId"] == "alice")
        .unwrap();
    assert_eq!(listed["nodeId"], a.id.as_str(), "the list names the owner");
    assert_eq!(listed["migration"], serde_json::Value::Null);
    let out = c.cli(2, &["nodes", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.matches(" up ").count(), 3, "{text}");
    // Each node's version, to follow a rolling upgrade.
    assert!(text.lines().next().unwrap().contains("VERSION"), "{text}");
    assert_eq!(
        text.matches(&format!(" {} ", env!("CARGO_PKG_VERSION")))
            .count(),
        3,
        "{text}"
    );

    // A request that claims to come from B, for A, with a made-up signature.
    let forged_get = |nonce: &str| {
        a.client
            .get(c.url("alice/notes/n1.bin"))
            .header("x-xpod-hop", "1")
            .header("x-xpod-from", b.id.as_str())
            .header("x-xpod-to", a.id.as_str())
            .header("x-xpod-date", xpod::db::now_ms().to_string())
            .header("x-xpod-nonce", nonce)
            .header("x-xpod-signature", "AAAA")
    };
    // A forwarded request must be signed by a registered node...
    let forged = forged_get("00112233445566778899aabbccddeeff")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let unsigned = a
        .client
        .get(c.url("alice/notes/n1.bin"))
        .header("x-xpod-hop", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403);
    // ...and is accepted once: a replay is refused.
    let valid = signed_get(&c, 1, 0, "alice/notes/n1.bin");
    let replay = valid.try_clone().unwrap();
    assert_eq!(valid.send().await.unwrap().status(), 200);
    assert_eq!(replay.send().await.unwrap().status(), 403);

    // B forwards under a session key once A accepted its offer: a handful of
    // reads through B, and A counts them as session-authenticated.
    for _ in 0..5 {
        let r = b
            .client
            .get(c.url("alice/notes/n1.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let auth = forwarded_auth(&c, 0).await;
    assert!(auth["session"] >= 3, "{auth:?}");
    assert!(auth["signature"] >= 1, "{auth:?}");
    // A session A never set up is refused, and marked so a node would sign.
    let made_up = forged_get("00112233445566778899aabbccddeef0")
        .header("x-xpod-session", "00112233445566778899aabbccddeeff")
        .send()
        .await
        .unwrap();
    assert_eq!(made_up.status(), 403);
    assert_eq!(made_up.headers()["x-xpod-session-unknown"], "1");

    // No loops: a validly signed request at a non-owner is answered, not forwarded.
    let misdirected = signed_get(&c, 1, 2, "alice/notes/n1.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(misdirected.status(), 508);
    assert_eq!(served_by(&misdirected), cc.id);

    // A stale placement: B believes C owns "loop", C knows A does.
    c.create_pod(0, "loop");
    let set_owner = |who: &str| {
        c.pg.psql(
            "cluster",
            &format!("UPDATE pods SET node_id = '{who}' WHERE pod_id = 'loop'"),
        )
    };
    set_owner(&cc.id);
    let warm = b.client.get(c.url("loop/")).send().await.unwrap();
    assert_eq!(served_by(&warm), cc.id, "B learnt that C owns it");
    set_owner(&a.id);
    // C cached its own ownership while serving the warm-up; for a forwarded
    // request it trusts that for at most a second, then asks the database.
    tokio::time::sleep(xpod::cluster::placement::FORWARDED_TTL + Duration::from_millis(100)).await;
    let looped = b.client.get(c.url("loop/")).send().await.unwrap();
    assert_eq!(looped.status(), 508, "C refuses to forward again");
    assert_eq!(served_by(&looped), cc.id);

    // A drain (asked of C) moves A's pods; B, which cached A as the owner,
    // learns of the move from the outbox follower, well before its cache
    // would expire.
    let warm = b
        .client
        .get(c.url("alice/notes/n1.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&warm), a.id);
    let out = c.cli(2, &["nodes", "drain", &a.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved pod alice"));
    let moved_at = Instant::now();
    loop {
        let r = b
            .client
            .get(c.url("alice/notes/n1.bin"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 && served_by(&r) != a.id {
            assert!(r.bytes().await.unwrap() == body, "all data after the move");
            break;
        }
        assert!(
            moved_at.elapsed() < Duration::from_secs(3),
            "B still routes to the old owner: {} from {}",
            r.status(),
            served_by(&r)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_owner_loses_its_sessions_and_no_request_fails() {
    let mut c = Cluster::start();
    c.create_pod(0, "alice");
    let b = 1;
    let put = c.nodes[b]
        .client
        .put(c.url("alice/a.txt"))
        .header("content-type", "text/plain")
        .body("kept")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    for _ in 0..3 {
        let r = c.nodes[b]
            .client
            .get(c.url("alice/a.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(forwarded_auth(&c, 0).await["session"] >= 1);

    // A restarts and knows none of B's sessions: B's next requests are
    // refused by A as unknown sessions, and B signs them again instead.
    let status = c.nodes[0].server.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status:?}");
    let dir = c.nodes[0].root.parent().unwrap().to_path_buf();
    c.nodes[0].server = Server::start("127.0.0.1", &borrowed(&c.nodes[0].env), &dir);
    for i in 0..5 {
        let r = c.nodes[b]
            .client
            .get(c.url("alice/a.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "read {i} after the restart");
        assert_eq!(served_by(&r), c.nodes[0].id);
        assert_eq!(r.text().await.unwrap(), "kept");
    }
    let put = c.nodes[b]
        .client
        .put(c.url("alice/b.txt"))
        .header("content-type", "text/plain")
        .body("new")
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status(),
        201,
        "a write with a body is signed, never retried"
    );
    let auth = forwarded_auth(&c, 0).await;
    assert_eq!(
        auth["refused"], 1,
        "one unknown session, then a new one: {auth:?}"
    );
    assert!(auth["session"] >= 3, "{auth:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_at_one_node_hears_a_write_made_through_another() {
    use futures::StreamExt;
    let c = Cluster::start_with(&[("CSS_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")]);
    c.create_pod(0, "alice");
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    // Subscribe through C, listen at B (which does not own the pod), write
    // through A.
    let channel: serde_json::Value = c.nodes[2]
        .client
        .post(c.url(".notifications/WebSocketChannel2023/"))
        .header("content-type", "application/ld+json")
        .body(
            serde_json::json!({
                "type": "http://www.w3.org/ns/solid/notifications#WebSocketChannel2023",
                "topic": c.url("alice/shared.txt"),
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let receive_from = channel["receiveFrom"].as_str().unwrap();
    assert!(receive_from.starts_with(&format!("ws://pods.test:{}/", c.port)));
    // pods.test is B for this client: connect to B's address with that name.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.2", c.port))
        .await
        .unwrap();
    let (mut socket, upgrade) = tokio_tungstenite::client_async(receive_from, tcp)
        .await
        .unwrap();
    assert_eq!(upgrade.status(), 101);
    assert_eq!(
        upgrade.headers()["x-xpod-served-by"].to_str().unwrap(),
        b.id,
        "the node the client reached holds the socket"
    );
    let put = a
        .client
        .put(c.url("alice/shared.txt"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(served_by(&put), a.id);
    let etag = put.headers()["etag"].to_str().unwrap().to_string();
    let msg = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("a notification within 5 s")
        .unwrap()
        .unwrap();
    let note: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(note["type"], "Create");
    assert_eq!(note["object"], c.url("alice/shared.txt").as_str());
    assert_eq!(note["state"], etag.as_str(), "the state is the new ETag");

    // A webhook set up through C hears a write made through B, once: only
    // the owner (A) queues and delivers it, though every node follows the
    // outbox.
    let got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let sink = got.clone();
    let receiver = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| async move {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::OK
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    let subscribed = c.nodes[2]
        .client
        .post(c.url(".notifications/WebhookChannel2023/"))
        .header("content-type", "application/ld+json")
        .body(
            serde_json::json!({
                "type": "http://www.w3.org/ns/solid/notifications#WebhookChannel2023",
                "topic": c.url("alice/shared.txt"),
                "sendTo": hook,
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(subscribed.status(), 200);
    let put = b
        .client
        .put(c.url("alice/shared.txt"))
        .header("content-type", "text/plain")
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 205);
    let etag = put.headers()["etag"].to_str().unwrap().to_string();
    let started = Instant::now();
    while got.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no webhook within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for any duplicate from another node to arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_eq!(got[0]["type"], "Update");
    assert_eq!(got[0]["state"], etag.as_str());
    receiver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_body_streams_through_the_proxy() {
    use futures::StreamExt;
    use sha2::Digest;
    const MIB: usize = 1 << 20;
    let c = Cluster::start();
    c.create_pod(0, "big");
    let b = &c.nodes[1];
    let chunk = |i: usize| vec![(i % 251) as u8; MIB];
    let mut expected = sha2::Sha256::new();
    for i in 0..100 {
        expected.update(chunk(i));
    }
    let expected = hex::encode(expected.finalize());
    let upload = futures::stream::iter(0..100).map(move |i| Ok::<_, std::io::Error>(chunk(i)));
    let put = b
        .client
        .put(c.url("big/file.bin"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(served_by(&put), c.nodes[0].id);
    let get = b.client.get(c.url("big/file.bin")).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let mut got = sha2::Sha256::new();
    let mut len = 0;
    let mut stream = get.bytes_stream();
    while let Some(part) = stream.next().await {
        let part = part.unwrap();
        len += part.len();
        got.update(&part);
    }
    assert_eq!(len, 100 * MIB);
    assert_eq!(hex::encode(got.finalize()), expected);
    let peak = support::vm_hwm(b.server.pid());
    assert!(peak < 100 << 20, "proxy peak RSS {} MiB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owner_costs_two_seconds_and_its_pods_can_be_reassigned() {
    let mut c = Cluster::start();
    c.create_pod(0, "alice");
    let put = c.nodes[1]
        .client
        .put(c.url("alice/data.txt"))
        .header("content-type", "text/plain")
        .body("survives its node")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);

    // Stopped (connections accepted, nothing answered): 503 in about 2 s.
    let pid = c.nodes[0].server.pid() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    support::wait_stopped(pid as u32);
    let started = Instant::now();
    let resp = c.nodes[1]
        .client
        .get(c.url("alice/data.txt"))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(took < Duration::from_millis(3500), "took {took:?}");

    // Killed (connections refused): 503 at once.
    c.nodes[0].server.stop_with(libc::SIGKILL);
    let started = Instant::now();
    let resp = c.nodes[2]
        .client
        .get(c.url("alice/data.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(started.elapsed() < Duration::from_millis(2500));

    // A live node refuses to be reassigned without --force.
    let out = c.cli(1, &["nodes", "reassign", &c.nodes[2].id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still sending heartbeats"));

    // Once A is unreachable, its pods move to a live node sharing its storage.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = c.cli(1, &["nodes", "reassign", &c.nodes[0].id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved pod alice"));
    for i in [1, 2] {
        let resp = c.nodes[i]
            .client
            .get(c.url("alice/data.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "through node {i}");
        let by = served_by(&resp);
        assert!(by == c.nodes[1].id || by == c.nodes[2].id, "{by}");
        assert_eq!(resp.text().await.unwrap(), "survives its node");
    }
    // The gone node can now be removed.
    let out = c.cli(2, &["nodes", "remove", &c.nodes[0].id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.pg.psql("cluster", "SELECT count(*) FROM nodes"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_reassign_the_pods_of_a_dead_node_move_by_themselves() {
    let mut c = Cluster::start_with(&[("CSS_AUTO_REASSIGN", "true")]);
    c.create_pod(0, "alice");
    let put = c.nodes[2]
        .client
        .put(c.url("alice/x.txt"))
        .header("content-type", "text/plain")
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    c.nodes[0].server.stop_with(libc::SIGKILL);
    // Unreachable after 2 s of silence; a live node then moves the pod.
    let killed = Instant::now();
    loop {
        let r = c.nodes[1]
            .client
            .get(c.url("alice/x.txt"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            assert_ne!(served_by(&r), c.nodes[0].id);
            assert_eq!(r.text().await.unwrap(), "still here");
            break;
        }
        assert_eq!(r.status(), 503, "until the move, the dead owner gives 503");
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "not reassigned within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let owner =
        c.pg.psql("cluster", "SELECT node_id FROM pods WHERE pod_id = 'alice'");
    assert_ne!(owner, c.nodes[0].id);
}
