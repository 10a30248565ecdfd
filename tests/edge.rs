//! An edge node behind a centre: the edge runs in a network namespace of
//! its own and listens only on that namespace's loopback, which the centre
//! cannot reach. The only way from the edge to the centre is a relay this
//! test runs (the edge's "internet uplink"); nothing leads back. So every
//! request the centre serves for an edge pod went through the tunnel the
//! edge opened.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};
use sha2::Digest;
use support::account::{Agent, account_sequence};
use support::cluster::served_by;
use support::{Postgres, Server, borrowed, vm_hwm};

/// The relay's port inside the edge's namespace.
const UPLINK_PORT: u16 = 4000;

/// A network namespace with only a loopback interface.
struct Netns(String);

impl Netns {
    fn create() -> Netns {
        let name = format!("xpod-edge-{}-{}", std::process::id(), rand_suffix());
        run(&["ip", "netns", "add", &name]);
        run(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        Netns(name)
    }

    fn file(&self) -> std::fs::File {
        std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap()
    }

    /// Runs `work` on a thread that lives in this namespace: sockets it
    /// makes are the namespace's.
    fn run<R: Send + 'static>(&self, work: impl FnOnce() -> R + Send + 'static) -> R {
        let ns = self.file();
        std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            work()
        })
        .join()
        .unwrap()
    }

    /// An async block run on a runtime of its own inside the namespace.
    fn block_on<R: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = R> + Send + 'static,
    ) -> R {
        self.run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(work)
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The edge's way out: accepts on the namespace's loopback and connects to
/// the centre on the host's loopback, copying bytes both ways.
struct Uplink {
    stop: Arc<AtomicBool>,
}

impl Uplink {
    fn start(ns: &Netns, centre_port: u16) -> Uplink {
        let listener = ns.run(|| TcpListener::bind(("127.0.0.1", UPLINK_PORT)).unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inner, _)) => {
                        inner.set_nonblocking(false).unwrap();
                        // Made on this thread: a socket of the host's namespace.
                        let Ok(outer) = TcpStream::connect(("127.0.0.1", centre_port)) else {
                            continue;
                        };
                        pipe(inner.try_clone().unwrap(), outer.try_clone().unwrap());
                        pipe(outer, inner);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Uplink { stop }
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}

/// The edge process, run inside the namespace.
struct Edge {
    child: Option<Child>,
    log: PathBuf,
}

impl Edge {
    fn start(ns: &Netns, env: &[(&str, &str)], log: &Path, port: u16) -> Edge {
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, support::XPOD, "serve"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let edge = Edge {
            child: Some(child),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ns
            .run(move || support::http_get("127.0.0.1", port, "/.cluster/health"))
            .map(|r| r.0)
            != Some(200)
        {
            assert!(
                Instant::now() < deadline,
                "the edge never became healthy; log:\n{}",
                edge.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        edge
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `xpod` run inside the namespace (the edge's command line).
fn edge_cli(ns: &Netns, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.0, support::XPOD])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A client that reaches `pods.test` (the canonical host) at 127.0.0.1 of
/// the namespace it is used in: the centre from the host, the edge from the
/// edge's namespace (split DNS).
fn canonical_client(port: u16) -> Client {
    Client::builder()
        .resolve("pods.test", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap()
}

/// Deterministic bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Polls `check` until it holds (at most `limit`).
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the agent reads of each path: status, content type, and the bytes
/// (RDF as its canonical graph, since a move may write it out anew).
async fn snapshot(
    http: &Client,
    agent: &Agent,
    base: &str,
    paths: &[&str],
) -> Vec<(u16, String, Vec<String>)> {
    let mut out = Vec::new();
    for path in paths {
        let url = format!("{base}{path}");
        let resp = agent
            .sign(http.get(&url), "GET", &url)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
        let bytes = resp.bytes().await.unwrap();
        let content = if ctype.starts_with("text/turtle") {
            let triples =
                xpod::rdf::parse(&bytes, xpod::rdf::Syntax::Turtle, &url).expect("Turtle");
            xpod::walk::rebase::canonical(&triples)
                .into_iter()
                .collect()
        } else {
            vec![hex::encode(sha2::Sha256::digest(&bytes))]
        };
        out.push((status, ctype, content));
    }
    out
}

/// Waits until a GET of `url` answers 200.
async fn until_ok(http: &Client, url: &str, limit: Duration, what: &str) {
    eventually(limit, what, || async move {
        http.get(url).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_behind_nat_serves_its_pods_through_the_centre() {
    if !support::is_root() {
        panic!("this test creates network namespaces: run it as root (scripts/test does)");
    }
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let db = pg.create_database("centre");
    let port = support::free_port("127.0.0.1");
    let base = format!("http://pods.test:{port}/");
    let centre_root = dir.path().join("centre");
    let centre_env: Vec<(&'static str, String)> = vec![
        ("CSS_ROOT_FILE_PATH", centre_root.display().to_string()),
        ("CSS_HOST", "127.0.0.1".into()),
        ("CSS_PORT", port.to_string()),
        ("CSS_BASE_URL", base.clone()),
        ("CSS_DATABASE_URL", db),
        (
            "CSS_SECRET_KEY",
            "4f2c9d0e8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d".into(),
        ),
        ("CSS_INTERNAL_IP", "127.0.0.1".into()),
    ];
    let mut centre = Server::start("127.0.0.1", &borrowed(&centre_env), dir.path());
    // A second centre node, which the edge does not connect to.
    let mut second_env = centre_env.clone();
    for (name, value) in second_env.iter_mut() {
        match *name {
            "CSS_ROOT_FILE_PATH" => *value = dir.path().join("centre-2").display().to_string(),
            "CSS_HOST" | "CSS_INTERNAL_IP" => *value = "127.0.0.2".into(),
            _ => {}
        }
    }
    let _second = Server::start("127.0.0.2", &borrowed(&second_env), dir.path());
    let via_second = Client::builder()
        .resolve("pods.test", format!("127.0.0.2:{port}").parse().unwrap())
        .build()
        .unwrap();
    let admin = std::fs::read_to_string(centre_root.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let http = canonical_client(port);

    // A WebID of the centre's identity provider, for the DPoP request later.
    let carol = account_sequence(&http, &base, "carol", "carol@example.test").await;

    // The operator creates the edge on the centre.
    let resp = http
        .post(format!("{base}.cluster/edges"))
        .bearer_auth(&admin)
        .json(&json!({"name": "home-box"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let edge_id = created["nodeId"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();

    // The home box: its own namespace, SQLite and local disk, the centre's
    // base URL (its pods' canonical URLs), the same port number.
    let ns = Netns::create();
    let _uplink = Uplink::start(&ns, port);
    let edge_root = dir.path().join("edge");
    let edge_log = dir.path().join("edge.log");
    let mut edge_env: Vec<(&'static str, String)> = vec![
        ("CSS_ROOT_FILE_PATH", edge_root.display().to_string()),
        ("CSS_HOST", "127.0.0.1".into()),
        ("CSS_PORT", port.to_string()),
        ("CSS_BASE_URL", base.clone()),
        ("CSS_NODE_ID", edge_id.clone()),
    ];
    // It held pods before it was enrolled: one open to all, one of Carol's.
    {
        let mut edge = Edge::start(&ns, &borrowed(&edge_env), &edge_log, port);
        for args in [
            vec!["pods", "create", "alice", "--public-write"],
            vec!["pods", "create", "bob", "--owner", &carol.webid],
        ] {
            let out = edge_cli(&ns, &borrowed(&edge_env), &args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A pod renamed on the box keeps its resources; IRIs follow its URL.
        let out = edge_cli(
            &ns,
            &borrowed(&edge_env),
            &["pods", "create", "erin-old", "--public-write"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let card = format!("<#me> <http://xmlns.com/foaf/0.1/knows> <{base}erin-old/other#it> .\n");
        let put = ns.block_on(async move {
            let http = canonical_client(port);
            http.put(format!("http://pods.test:{port}/erin-old/card.ttl"))
                .header("content-type", "text/turtle")
                .body(card)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        assert_eq!(put, 201);
        let out = edge_cli(
            &ns,
            &borrowed(&edge_env),
            &["pods", "rename", "erin-old", "erin"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (new, old) = ns.block_on(async move {
            let http = canonical_client(port);
            let new = http
                .get(format!("http://pods.test:{port}/erin/card.ttl"))
                .send()
                .await
                .unwrap();
            let new = (new.status().as_u16(), new.text().await.unwrap());
            let old = http
                .get(format!("http://pods.test:{port}/erin-old/card.ttl"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            (new, old)
        });
        assert_eq!((new.0, old), (200, 404), "{new:?}");
        let card_url = format!("{base}erin/card.ttl");
        let triples =
            xpod::rdf::parse(new.1.as_bytes(), xpod::rdf::Syntax::Turtle, &card_url).unwrap();
        let objects: Vec<String> = triples.iter().map(|t| t.object.to_string()).collect();
        assert_eq!(objects, [format!("<{base}erin/other#it>")], "{}", new.1);
        // No rename is under way: nothing to cancel, and nothing deleted.
        for (args, said) in [
            (
                vec!["pods", "rename", "erin", "erin"],
                "has that name already",
            ),
            (
                vec!["pods", "rename", "alice", "erin", "--cancel"],
                "no rename of pod alice to erin",
            ),
        ] {
            let out = edge_cli(&ns, &borrowed(&edge_env), &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && stderr.contains(said), "{stderr}");
        }
        let still = ns.block_on(async move {
            support::http_get("127.0.0.1", port, "/erin/card.ttl").map(|r| r.0)
        });
        assert_eq!(still, Some(200));
        edge.kill();
    }
    edge_env.push(("CSS_NODE_TOKEN", token));
    edge_env.push((
        "CSS_SIGNAL_ENDPOINT",
        format!("http://127.0.0.1:{UPLINK_PORT}/api/v1/signal"),
    ));
    let mut edge = Edge::start(&ns, &borrowed(&edge_env), &edge_log, port);

    // Enrolment registered both pods under the edge, and the tunnel opened.
    let url = |path: &str| format!("{base}{path}");
    until_ok(
        &http,
        &url("alice/"),
        Duration::from_secs(20),
        "the edge's pods answering through the centre",
    )
    .await;
    let pod: Value = http
        .get(url(".cluster/pods/bob"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pod["nodeId"], edge_id.as_str(), "{pod}");

    // A pod made on the enrolled edge gets its name from the centre: one
    // the centre has is refused, a free one is registered at once.
    let out = edge_cli(
        &ns,
        &borrowed(&edge_env),
        &["pods", "create", "carol", "--public-write"],
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused the pod name carol"), "{said}");
    let out = edge_cli(
        &ns,
        &borrowed(&edge_env),
        &["pods", "create", "dave", "--public-write"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dave = http.get(url("dave/")).send().await.unwrap();
    assert_eq!(
        (dave.status().as_u16(), served_by(&dave)),
        (200, edge_id.clone())
    );

    // Writes and reads through the centre are executed by the edge.
    let put = http
        .put(url("alice/notes/hello.txt"))
        .header("content-type", "text/plain")
        .body("hello from afar")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(served_by(&put), edge_id);
    let get = http.get(url("alice/notes/hello.txt")).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(served_by(&get), edge_id);
    assert_eq!(get.text().await.unwrap(), "hello from afar");
    let list = http.get(url("alice/notes/")).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let listing = list.text().await.unwrap();
    assert!(
        listing.contains(&format!("{base}alice/notes/hello.txt")) || listing.contains("hello.txt"),
        "{listing}"
    );

    // The other centre node sends them to the node that holds the tunnel.
    let get = via_second
        .get(url("alice/notes/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (get.status().as_u16(), served_by(&get)),
        (200, edge_id.clone())
    );
    assert_eq!(get.text().await.unwrap(), "hello from afar");
    let put = via_second
        .put(url("alice/notes/second.txt"))
        .header("content-type", "text/plain")
        .body("through two centre nodes")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (put.status().as_u16(), served_by(&put)),
        (201, edge_id.clone())
    );

    // Many requests at once share the tunnel.
    let many = (0..32).map(|i| {
        let http = http.clone();
        let url = url(&format!("alice/many/{i}.txt"));
        async move {
            let r = http
                .put(&url)
                .header("content-type", "text/plain")
                .body(format!("item {i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let r = http.get(&url).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), format!("item {i}"));
        }
    });
    futures::future::join_all(many).await;

    // 50 MiB each way, streamed: neither end holds the body.
    let big = noise(50 << 20);
    let (centre_before, edge_before) = (vm_hwm(centre.pid()), vm_hwm(edge.pid()));
    let put = http
        .put(url("alice/big.bin"))
        .header("content-type", "application/octet-stream")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let got = http
        .get(url("alice/big.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        got.len() == big.len() && got[..] == big[..],
        "the same 50 MiB back"
    );
    drop(got);
    let (centre_after, edge_after) = (vm_hwm(centre.pid()), vm_hwm(edge.pid()));
    for (who, before, after) in [
        ("centre", centre_before, centre_after),
        ("edge", edge_before, edge_after),
    ] {
        assert!(
            after.saturating_sub(before) < 20 << 20,
            "the {who}'s peak memory grew by {} MiB for a 50 MiB body",
            (after - before) >> 20
        );
    }

    // Carol's pod on the edge: her DPoP-bound token, checked by the centre,
    // opens it; nobody else gets in.
    let agent = Agent::log_in(&http, &base, &carol).await;
    let doc = url("bob/private.txt");
    let put = agent
        .sign(http.put(&doc), "PUT", &doc)
        .header("content-type", "text/plain")
        .body("carol's")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(served_by(&put), edge_id);
    let get = agent
        .sign(http.get(&doc), "GET", &doc)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.text().await.unwrap(), "carol's");
    let anonymous = http.get(&doc).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(served_by(&anonymous), edge_id, "the edge decided");
    // A proof for another URL does not pass the centre.
    let wrong = agent
        .sign(http.get(&doc), "GET", &url("bob/other.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // The edge dies: remote users get a quick 503, not a hang.
    edge.kill();
    let started = Instant::now();
    let down = http.get(url("alice/notes/hello.txt")).send().await.unwrap();
    assert_eq!(down.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(down.headers().contains_key("retry-after"));
    assert!(down.text().await.unwrap().contains(&edge_id));
    let started = Instant::now();
    let down = via_second
        .get(url("alice/notes/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(5));

    // It comes back and is served again, with nobody doing anything.
    let edge = Edge::start(&ns, &borrowed(&edge_env), &edge_log, port);
    until_ok(
        &http,
        &url("alice/notes/hello.txt"),
        Duration::from_secs(30),
        "the edge's pod answering again",
    )
    .await;
    until_ok(
        &via_second,
        &url("alice/notes/hello.txt"),
        Duration::from_secs(10),
        "the edge's pod answering again through the other centre node",
    )
    .await;

    // Carol's private pod moves to the centre and back, under the same URL,
    // with every resource and its access control intact.
    let centre_id = std::fs::read_to_string(centre_root.join(".node-id"))
        .unwrap()
        .trim()
        .to_string();
    let about = format!(
        "<{base}bob/private.txt> <http://purl.org/dc/terms/title> \"secret\" .\n<#me> <http://xmlns.com/foaf/0.1/knows> <{base}alice/profile#me> .\n"
    );
    for (path, ctype, body) in [
        ("bob/notes/about.ttl", "text/turtle", about.into_bytes()),
        (
            "bob/data/deep/blob.bin",
            "application/octet-stream",
            noise(300_000),
        ),
    ] {
        let doc = url(path);
        let put = agent
            .sign(http.put(&doc), "PUT", &doc)
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "{path}");
    }
    let paths = [
        "bob/private.txt",
        "bob/notes/about.ttl",
        "bob/data/deep/blob.bin",
        "bob/.acl",
    ];
    let before = snapshot(&http, &agent, &base, &paths).await;
    assert!(
        before.iter().all(|(status, ..)| *status == 200),
        "{before:?}"
    );
    let migrate = |to: &str| {
        support::xpod(
            &borrowed(&centre_env),
            &["pods", "migrate", "bob", "--to", to],
        )
    };

    // While a move is under way the pod is read from the edge and refuses
    // writes, on the centre and on the LAN; cancelled, it takes them again.
    let started = http
        .post(url(".cluster/pods/bob/move"))
        .bearer_auth(&admin)
        .json(&json!({"targetNode": centre_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let pod: Value = http
        .get(url(".cluster/pods/bob"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pod["moving"]["from"], edge_id.as_str(), "{pod}");
    let put = agent
        .sign(http.put(&doc), "PUT", &doc)
        .header("content-type", "text/plain")
        .body("lost?")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 503);
    assert!(put.headers().contains_key("retry-after"));
    let get = agent
        .sign(http.get(&doc), "GET", &doc)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (get.status().as_u16(), served_by(&get)),
        (200, edge_id.clone())
    );
    assert_eq!(get.text().await.unwrap(), "carol's");
    // A SPARQL query POSTed to a sidecar only reads: answered by the edge,
    // as a body or as a form. An update is a write: 503, and nothing moves.
    let sidecar = url("bob/notes/-/sparql");
    let ask = "ASK { ?s <http://purl.org/dc/terms/title> \"secret\" }";
    for (ctype, body, status) in [
        ("application/sparql-query", ask.to_string(), 200),
        (
            "application/x-www-form-urlencoded",
            format!("query={}", support::form_encode(ask)),
            200,
        ),
        (
            "application/sparql-update",
            "INSERT DATA { GRAPH <about.ttl> { <#x> <#y> 1 } }".to_string(),
            503,
        ),
        (
            "application/x-www-form-urlencoded",
            format!(
                "update={}",
                support::form_encode("INSERT DATA { GRAPH <about.ttl> { <#x> <#y> 1 } }")
            ),
            503,
        ),
    ] {
        let resp = agent
            .sign(http.post(&sidecar), "POST", &sidecar)
            .header("content-type", ctype)
            .header("accept", "application/sparql-results+json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (code, by) = (resp.status().as_u16(), served_by(&resp));
        let text = resp.text().await.unwrap();
        assert_eq!(code, status, "{ctype} {body}: {text}");
        if status == 200 {
            assert_eq!(by, edge_id, "{ctype}");
            assert!(text.contains("\"boolean\":true"), "{text}");
        }
    }
    let lan_put = ns.block_on(async move {
        support::raw_request(
            "127.0.0.1",
            port,
            "PUT",
            "/bob/private.txt",
            &[("content-type", "text/plain")],
            b"from the LAN",
        )
        .map(|r| r.0)
    });
    assert_eq!(lan_put, Some(503), "the edge holds the pod");
    let out = support::xpod(
        &borrowed(&centre_env),
        &["pods", "migrate", "bob", "--to", &centre_id, "--cancel"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put = agent
        .sign(http.put(&doc), "PUT", &doc)
        .header("content-type", "text/plain")
        .body("carol's")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (put.status().as_u16(), served_by(&put)),
        (205, edge_id.clone())
    );
    assert_eq!(snapshot(&http, &agent, &base, &paths).await, before);

    let out = migrate(&centre_id);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("moved pod bob"), "{said}");
    assert_eq!(snapshot(&http, &agent, &base, &paths).await, before);
    let get = agent
        .sign(http.get(&doc), "GET", &doc)
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&get), centre_id, "the centre holds the pod now");
    assert_eq!(http.get(&doc).send().await.unwrap().status(), 401);
    let gone = ns.block_on(async move {
        support::http_get("127.0.0.1", port, "/bob/private.txt").map(|r| r.0)
    });
    assert_eq!(gone, Some(404), "the edge deleted its copy");
    let out = migrate(&edge_id);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&http, &agent, &base, &paths).await, before);
    let get = agent
        .sign(http.get(&doc), "GET", &doc)
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&get), edge_id, "back on the edge");
    assert_eq!(http.get(&doc).send().await.unwrap().status(), 401);
    let put = agent
        .sign(http.put(&doc), "PUT", &doc)
        .header("content-type", "text/plain")
        .body("carol's, again")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 205, "the pod takes writes again");

    // Logins are the centre's: the edge does not answer them in its name.
    let account = ns.block_on(async move {
        support::http_get("127.0.0.1", port, "/.account/").map(|r| (r.0, r.2))
    });
    assert!(
        matches!(&account, Some((421, why)) if why.contains("accounts and logins are on its centre")),
        "{account:?}"
    );

    // The centre dies: the edge keeps serving its LAN, where split DNS
    // sends the canonical host name to the edge.
    centre.stop_with(libc::SIGKILL);
    let lan = ns.block_on(async move {
        let http = canonical_client(port);
        let url = format!("http://pods.test:{port}/alice/notes/hello.txt");
        let get = http.get(&url).send().await.unwrap();
        let status = get.status().as_u16();
        let by = served_by(&get);
        let text = get.text().await.unwrap();
        let put = http
            .put(format!("http://pods.test:{port}/alice/notes/local.txt"))
            .header("content-type", "text/plain")
            .body("written while the centre was down")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        (status, by, text, put)
    });
    assert_eq!(
        lan,
        (200, edge_id.clone(), "hello from afar".to_string(), 201),
        "edge log:\n{}",
        edge.log_text()
    );
}
