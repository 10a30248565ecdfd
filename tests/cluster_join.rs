//! A box that ran alone on SQLite joins a cluster (PostgreSQL and an S3
//! bucket): it refuses to start until `xpod cluster join --import` has
//! brought its pods along, then serves every resource from the cluster.

mod support;

use reqwest::Client;
use support::{Garage, Postgres, Server, assert_one_line_error, borrowed, create_pod, xpod};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_box_joins_a_cluster_with_its_pods() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = support::free_port("127.0.0.1");
    let mut env: Vec<(&'static str, String)> = vec![
        ("CSS_ROOT_FILE_PATH", root.display().to_string()),
        ("CSS_HOST", "127.0.0.1".into()),
        ("CSS_PORT", port.to_string()),
        ("CSS_BASE_URL", format!("http://127.0.0.1:{port}/")),
        ("CSS_INTERNAL_IP", "127.0.0.1".into()),
        (
            "CSS_CACHE_PATH",
            dir.path().join("cache").display().to_string(),
        ),
    ];
    let url = |path: &str| format!("http://127.0.0.1:{port}/boxed/{path}");
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let files: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "a.ttl",
            "text/turtle",
            b"<#it> <http://schema.org/name> \"box\" .\n".to_vec(),
        ),
        ("docs/b.bin", "application/octet-stream", binary),
        ("docs/deep/c.txt", "text/plain", b"deep".to_vec()),
    ];

    // The box alone, on SQLite and local disk.
    let client = Client::new();
    {
        let server = Server::start("127.0.0.1", &borrowed(&env), dir.path());
        create_pod(&root, server.port, "boxed", &borrowed(&env)[1..]);
        for (path, ty, body) in &files {
            let r = client
                .put(url(path))
                .header("content-type", *ty)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{path}");
        }
    }

    // Pointed at a cluster, it refuses to start and names the command.
    let pg = Postgres::start();
    let garage = Garage::start();
    env.push(("CSS_DATABASE_URL", pg.create_database("cluster")));
    env.extend(garage.env());
    let out = xpod(&borrowed(&env), &["serve"]);
    assert_one_line_error(&out, 1, "xpod cluster join --import");
    assert!(root.join("xpod.sqlite").exists(), "nothing changed");

    // The offline import.
    let out = xpod(&borrowed(&env), &["cluster", "join", "--import"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("imported 1 pod(s) (boxed)"), "{text}");
    assert!(!root.join("xpod.sqlite").exists());
    assert!(
        root.join("xpod.sqlite.imported").exists(),
        "the box's database is kept"
    );
    assert!(root.join("blobs").exists(), "the box's bytes are kept");
    // A second import has nothing left to do.
    let out = xpod(&borrowed(&env), &["cluster", "join", "--import"]);
    assert_one_line_error(&out, 1, "nothing to import");

    // Served from the cluster: metadata from PostgreSQL, bytes from S3 (the
    // cache is emptied so that every read goes to the bucket).
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    let _server = Server::start("127.0.0.1", &borrowed(&env), dir.path());
    for (path, ty, body) in &files {
        let r = client.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"].to_str().unwrap(), *ty, "{path}");
        assert!(r.bytes().await.unwrap() == *body, "{path} has its bytes");
    }
    let listing = client
        .get(url("docs/"))
        .header("accept", "text/turtle")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains("b.bin") && listing.contains("deep/"),
        "{listing}"
    );
    assert_eq!(
        pg.psql(
            "cluster",
            "SELECT count(*) FROM resources WHERE pod_id = 'boxed'"
        ),
        "7",
        "root, its .acl (the pod is --public-write), a.ttl, docs/, docs/b.bin, docs/deep/, docs/deep/c.txt"
    );
}
