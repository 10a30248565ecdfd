//! Pod bytes in S3 (a real Garage server) behind the node's local cache:
//! the storage identity, eviction, integrity, and S3 outages.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use sha2::Digest;
use support::{Garage, Postgres, Server, assert_one_line_error, borrowed, create_pod, xpod};

const SECRET: &str = "4f2c9d0e8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d";

/// One node with its pod `data`, talking to `garage`.
struct Node {
    server: Server,
    root: PathBuf,
    cache: PathBuf,
    env: Vec<(&'static str, String)>,
    client: Client,
}

fn node_env(
    dir: &Path,
    garage: &Garage,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CSS_ROOT_FILE_PATH", dir.join("root").display().to_string()),
        ("CSS_CACHE_PATH", dir.join("cache").display().to_string()),
        ("CSS_INTERNAL_IP", "127.0.0.1".to_string()),
    ];
    env.extend(garage.env());
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

impl Node {
    /// Starts a node; creates the pod `data` unless it exists.
    fn start(dir: &Path, env: Vec<(&'static str, String)>, create: bool) -> Node {
        let server = Server::start("127.0.0.1", &borrowed(&env), dir);
        let root = dir.join("root");
        if create {
            create_pod(&root, server.port, "data", &borrowed(&env)[1..]);
        }
        Node {
            server,
            cache: dir.join("cache"),
            root,
            env,
            client: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/data/{path}", self.server.port)
    }

    async fn put(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn get_bytes(&self, path: &str) -> (StatusCode, Result<Vec<u8>, String>) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string());
        (status, body)
    }

    /// The metrics page, read with the administrator token.
    async fn metrics(&self) -> String {
        let token = std::fs::read_to_string(self.root.join("admin.token")).unwrap();
        let resp = self
            .client
            .get(format!(
                "http://127.0.0.1:{}/.cluster/metrics",
                self.server.port
            ))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// The file holding the cache entry of `body`.
    fn entry(&self, body: &[u8]) -> PathBuf {
        let hash = hex::encode(sha2::Sha256::digest(body));
        self.cache
            .join("content-v2/sha256")
            .join(&hash[0..2])
            .join(&hash[2..4])
            .join(&hash[4..])
    }

    fn cached_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            let m = e.metadata().unwrap();
                            if m.is_dir() { walk(&e.path()) } else { m.len() }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.cache.join("content-v2"))
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Distinct, incompressible-looking bytes.
fn body(seed: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = sha2::Sha256::digest(seed.to_be_bytes()).to_vec();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = sha2::Sha256::digest(&block).to_vec();
    }
    out.truncate(len);
    out
}

#[test]
fn five_nodes_on_an_empty_bucket_record_one_storage_id() {
    let pg = Postgres::start();
    let url = pg.create_database("tiered");
    let garage = Garage::start();
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let envs: Vec<_> = dirs
        .iter()
        .map(|d| {
            node_env(
                d.path(),
                &garage,
                &[("CSS_DATABASE_URL", &url), ("CSS_SECRET_KEY", SECRET)],
            )
        })
        .collect();
    // All five race for the empty bucket's marker.
    let servers: Vec<Server> = dirs
        .iter()
        .zip(&envs)
        .map(|(d, env)| Server::spawn("127.0.0.1", &borrowed(env), d.path()))
        .collect();
    for s in &servers {
        s.wait_healthy(Duration::from_secs(60));
    }
    assert_eq!(pg.psql("tiered", "SELECT count(*) FROM nodes"), "5");
    assert_eq!(
        pg.psql("tiered", "SELECT count(DISTINCT storage_id) FROM nodes"),
        "1",
        "every node records the same storage id"
    );
    let id = pg.psql("tiered", "SELECT DISTINCT storage_id FROM nodes");
    assert_eq!(
        pg.psql(
            "tiered",
            "SELECT value FROM cluster_settings WHERE key LIKE 'storage.s3:%'"
        ),
        id,
        "the database records the bucket's id once"
    );
    uuid_like(&id);
    drop(servers);

    // Restarted, a node finds the marker it agreed on.
    let again = Server::start("127.0.0.1", &borrowed(&envs[0]), dirs[0].path());
    drop(again);

    // A database that recorded another id for this bucket is refused.
    pg.psql(
        "tiered",
        "UPDATE cluster_settings SET value = '00000000-0000-4000-8000-000000000000' WHERE key LIKE 'storage.s3:%'",
    );
    let out = xpod(&borrowed(&envs[1]), &["serve"]);
    assert_one_line_error(
        &out,
        1,
        "but the database recorded 00000000-0000-4000-8000-000000000000",
    );
}

fn uuid_like(s: &str) {
    assert_eq!(s.len(), 36, "a UUID: {s:?}");
    assert_eq!(s.matches('-').count(), 4, "a UUID: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_cache_under_its_cap() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    // A bucket that does not exist yet is created.
    let env = node_env(
        dir.path(),
        &garage,
        &[
            ("CSS_CACHE_MAX_SIZE", "1MiB"),
            ("CSS_MINIO_BUCKET_NAME", "created-by-xpod"),
        ],
    );
    let node = Node::start(dir.path(), env, true);
    let cap = 1024 * 1024;
    for i in 0..20 {
        let resp = node.put(&format!("r{i}"), body(i, 200 * 1024)).await;
        assert_eq!(resp.status(), 201);
        assert!(
            node.cached_bytes() <= cap,
            "after write {i}: {} bytes cached",
            node.cached_bytes()
        );
    }
    // Every resource reads back whole, evicted or not; the cache stays capped.
    for i in (0..20).rev() {
        let (status, got) = node.get_bytes(&format!("r{i}")).await;
        assert_eq!(status, 200);
        assert!(got.unwrap() == body(i, 200 * 1024), "r{i} reads back whole");
        // A miss (many body chunks from S3) fills the cache on the way.
        assert!(
            node.entry(&body(i, 200 * 1024)).exists(),
            "r{i} is cached after its read"
        );
        assert!(
            node.cached_bytes() <= cap,
            "after read {i}: {} bytes cached",
            node.cached_bytes()
        );
    }
    let m = node.metrics().await;
    assert!(metric(&m, "xpod_cache_evictions_total") >= 15, "{m}");
    assert!(
        metric(&m, "xpod_cache_misses_total") >= 15,
        "early writes were evicted: {m}"
    );
    assert!(
        metric(&m, "xpod_cache_hits_total") >= 1,
        "recent writes hit: {m}"
    );
    assert!(metric(&m, "xpod_cache_size_bytes") <= cap, "{m}");
    assert!(
        m.contains("xpod_http_requests_total{method=\"PUT\",status=\"2xx\"} 20"),
        "{m}"
    );

    // The metrics need the administrator credential.
    let anon = node
        .client
        .get(format!(
            "http://127.0.0.1:{}/.cluster/metrics",
            node.server.port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_cache_entry_is_detected_and_fetched_again() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), node_env(dir.path(), &garage, &[]), true);
    let small = body(1, 4096);
    let large = body(2, 3 * 1024 * 1024);
    assert_eq!(node.put("small", small.clone()).await.status(), 201);
    assert_eq!(node.put("large", large.clone()).await.status(), 201);

    // Flip bytes in place in both entries.
    for (b, at) in [(&small, 100u64), (&large, 2 * 1024 * 1024)] {
        use std::io::{Seek, Write};
        let path = node.entry(b);
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(std::io::SeekFrom::Start(at)).unwrap();
        f.write_all(b"CORRUPTED").unwrap();
    }

    // Small: caught before sending; the client gets the right bytes at once.
    let (status, got) = node.get_bytes("small").await;
    assert_eq!(status, 200);
    assert!(got.unwrap() == small, "small entry served whole and right");
    // Large: caught while streaming; the response is aborted, never wrong.
    let (status, got) = node.get_bytes("large").await;
    assert_eq!(status, 200);
    match got {
        Err(_) => {}
        Ok(bytes) => assert!(
            bytes.len() < large.len(),
            "a damaged large entry must not arrive whole"
        ),
    }
    // Both entries were evicted and are fetched again.
    let (_, got) = node.get_bytes("large").await;
    assert!(got.unwrap() == large, "large entry fetched again");
    assert_eq!(
        std::fs::read(node.entry(&large)).unwrap(),
        large,
        "cache refilled"
    );
    assert_eq!(
        std::fs::read(node.entry(&small)).unwrap(),
        small,
        "cache refilled"
    );
    let m = node.metrics().await;
    assert_eq!(metric(&m, "xpod_cache_corrupt_total"), 2, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_cache_serves_reads_after_a_restart_with_s3_stopped() {
    let mut garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let env = node_env(dir.path(), &garage, &[]);
    let node = Node::start(dir.path(), env.clone(), true);
    let a = body(7, 5000);
    let big = body(8, 2 * 1024 * 1024);
    assert_eq!(node.put("a", a.clone()).await.status(), 201);
    assert_eq!(node.put("big", big.clone()).await.status(), 201);
    drop(node);
    garage.stop();

    let node = Node::start(dir.path(), env, false);
    let (status, got) = node.get_bytes("a").await;
    assert_eq!(status, 200);
    assert!(got.unwrap() == a);
    let (status, got) = node.get_bytes("big").await;
    assert_eq!(status, 200);
    assert!(got.unwrap() == big);
    let m = node.metrics().await;
    // Both documents, and the pod's ACL, read once to decide the first
    // request and then kept parsed in memory.
    assert_eq!(metric(&m, "xpod_cache_hits_total"), 3, "{m}");
    assert_eq!(metric(&m, "xpod_cache_misses_total"), 0, "{m}");
    assert!(
        node.server.log_text().contains("S3 is unreachable"),
        "{}",
        node.server.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_s3_outage_reads_hit_the_cache_and_writes_fail_cleanly() {
    let mut garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), node_env(dir.path(), &garage, &[]), true);
    let a = body(3, 10_000);
    assert_eq!(node.put("a", a.clone()).await.status(), 201);

    garage.stop();
    let (status, got) = node.get_bytes("a").await;
    assert_eq!(status, 200, "cached content is served during the outage");
    assert!(got.unwrap() == a);

    let resp = node.put("b", body(4, 10_000)).await;
    assert_eq!(resp.status(), 503);
    let text = resp.text().await.unwrap();
    assert!(text.contains("storage is unavailable"), "{text}");
    // Nothing is left behind: no resource, no spool file, no cache entry.
    let (status, _) = node.get_bytes("b").await;
    assert_eq!(status, 404);
    assert_eq!(
        std::fs::read_dir(node.cache.join("spool")).unwrap().count(),
        0
    );
    assert!(!node.entry(&body(4, 10_000)).exists());
    let listing = node
        .client
        .get(node.url(""))
        .header("accept", "text/turtle")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listing.contains("<b>"), "{listing}");

    // S3 comes back: the same node writes again without a restart.
    garage.resume();
    let resp = node.put("b", body(4, 10_000)).await;
    assert_eq!(resp.status(), 201);
    let (status, got) = node.get_bytes("b").await;
    assert_eq!(status, 200);
    assert!(got.unwrap() == body(4, 10_000));
    let _ = &node.env;
}

#[test]
fn wrong_s3_credentials_stop_the_start_with_a_clear_error() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let mut env = node_env(dir.path(), &garage, &[]);
    for (k, v) in env.iter_mut() {
        if *k == "CSS_MINIO_SECRET_KEY" {
            *v = "0".repeat(64);
        }
    }
    let out = xpod(&borrowed(&env), &["serve"]);
    assert_one_line_error(
        &out,
        1,
        "check CSS_MINIO_ACCESS_KEY and CSS_MINIO_SECRET_KEY",
    );
}

/// xpod's own S3 client, pointed at the test's Garage.
fn bucket(garage: &Garage) -> xpod::blob::s3::S3Store {
    let config = xpod::config::S3Config {
        endpoint: garage.endpoint().parse().unwrap(),
        bucket: garage.bucket.clone(),
        access_key: xpod::config::Secret::new(garage.access_key.clone()),
        secret_key: xpod::config::Secret::new(garage.secret_key.clone()),
        region: "us-east-1".into(),
    };
    xpod::blob::s3::S3Store::new(&config, Default::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_deletes_nothing_from_a_bucket_whose_marker_changed() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let env = node_env(
        dir.path(),
        &garage,
        &[
            ("CSS_BLOB_GC_GRACE", "0s"),
            ("CSS_BLOB_GC_INTERVAL", "200ms"),
        ],
    );
    let node = Node::start(dir.path(), env, true);
    let s3 = bucket(&garage);
    let marker = s3.get_small("xpod-storage-id").await.unwrap().unwrap();
    let (kept, collected) = (body(11, 3000), body(12, 3000));
    let hash = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));

    // With the marker intact, unreferenced bytes are collected.
    assert_eq!(node.put("gone", collected.clone()).await.status(), 201);
    assert!(s3.exists(&hash(&collected)).await.unwrap());
    let resp = node.client.delete(node.url("gone")).send().await.unwrap();
    assert_eq!(resp.status(), 205);
    wait_for(|| async { !s3.exists(&hash(&collected)).await.unwrap() }).await;

    // Someone points the bucket at another storage: nothing more is deleted.
    assert_eq!(node.put("kept", kept.clone()).await.status(), 201);
    s3.put_small(
        "xpod-storage-id",
        "0d3c1f5e-0000-4000-8000-000000000000\n".into(),
    )
    .await
    .unwrap();
    let resp = node.client.delete(node.url("kept")).send().await.unwrap();
    assert_eq!(resp.status(), 205);
    wait_for(|| async {
        node.server
            .log_text()
            .contains("not this node's storage id")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        s3.exists(&hash(&kept)).await.unwrap(),
        "bytes survive in a bucket that is not ours"
    );

    // Restored, the collector carries on.
    s3.put_small("xpod-storage-id", marker).await.unwrap();
    wait_for(|| async { !s3.exists(&hash(&kept)).await.unwrap() }).await;
}

async fn wait_for<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_miss_streams_from_s3_and_fills_the_cache_in_bounded_memory() {
    use futures::StreamExt;
    const MIB: usize = 1 << 20;
    const CHUNKS: usize = 256;
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let env = node_env(dir.path(), &garage, &[]);
    let node = Node::start(dir.path(), env.clone(), true);
    let chunk = |i: usize| body(1000 + i as u32, MIB);
    let mut expected = sha2::Sha256::new();
    for i in 0..CHUNKS {
        expected.update(chunk(i));
    }
    let expected = hex::encode(expected.finalize());
    let upload = futures::stream::iter(0..CHUNKS).map(move |i| Ok::<_, std::io::Error>(chunk(i)));
    let resp = node
        .client
        .put(node.url("big.bin"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let peak = support::vm_hwm(node.server.pid());
    eprintln!("peak RSS after the upload: {} MiB", peak >> 20);
    assert!(
        peak < 100 << 20,
        "server peak RSS during the upload {} MiB",
        peak >> 20
    );
    let cache = node.cache.clone();
    drop(node);

    // A cold cache: the read is a miss from S3.
    std::fs::remove_dir_all(&cache).unwrap();
    let node = Node::start(dir.path(), env, false);
    let resp = node.client.get(node.url("big.bin")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = sha2::Sha256::new();
    let mut len = 0;
    let mut stream = resp.bytes_stream();
    while let Some(part) = stream.next().await {
        let part = part.unwrap();
        len += part.len();
        got.update(&part);
    }
    assert_eq!(len, CHUNKS * MIB);
    assert_eq!(
        hex::encode(got.finalize()),
        expected,
        "identical bytes back"
    );
    let peak = support::vm_hwm(node.server.pid());
    eprintln!("peak RSS after the miss: {} MiB", peak >> 20);
    assert!(
        peak < 100 << 20,
        "server peak RSS during the miss {} MiB",
        peak >> 20
    );

    // The miss filled the cache on the way: the next read is a hit.
    let entry = cache
        .join("content-v2/sha256")
        .join(&expected[0..2])
        .join(&expected[2..4])
        .join(&expected[4..]);
    assert_eq!(
        std::fs::metadata(&entry).unwrap().len(),
        (CHUNKS * MIB) as u64
    );
    let resp = node.client.get(node.url("big.bin")).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), CHUNKS * MIB);
    let m = node.metrics().await;
    // Two misses: the pod's ACL (read once, then kept parsed in memory) and
    // the first read of big.bin.
    assert_eq!(metric(&m, "xpod_cache_misses_total"), 2, "{m}");
    assert_eq!(metric(&m, "xpod_cache_hits_total"), 1, "{m}");
}
