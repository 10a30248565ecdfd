//! Blob garbage collection over real HTTP: unreferenced bytes go after the
//! grace period; identical uploads racing an eager collector never lose data.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use sha2::{Digest, Sha256};
use support::{Server, create_pod};

fn blob_path(root: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let hash = hex::encode(Sha256::digest(bytes));
    root.join("blobs")
        .join(&hash[0..2])
        .join(&hash[2..4])
        .join(hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_bytes_are_collected_and_racing_uploads_survive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let env = [
        ("CSS_ROOT_FILE_PATH", root.to_str().unwrap()),
        ("CSS_BLOB_GC_GRACE", "0s"),
        ("CSS_BLOB_GC_INTERVAL", "20ms"),
    ];
    let server = Server::start("127.0.0.1", &env, dir.path());
    create_pod(&root, server.port, "gc", &[]);
    let base = format!("http://127.0.0.1:{}/gc", server.port);
    let client = Client::new();
    let put = |path: &str, body: &'static [u8]| {
        client
            .put(format!("{base}{path}"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };

    // Deleted bytes disappear from disk; shared bytes stay while referenced.
    assert_eq!(
        put("/a.bin", b"only-a").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put("/shared-1.bin", b"shared").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put("/shared-2.bin", b"shared").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert!(blob_path(&root, b"only-a").exists());
    for path in ["/a.bin", "/shared-1.bin"] {
        let resp = client.delete(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::RESET_CONTENT);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while blob_path(&root, b"only-a").exists() {
        assert!(
            Instant::now() < deadline,
            "unreferenced bytes were never collected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        blob_path(&root, b"shared").exists(),
        "bytes still referenced by shared-2 stay"
    );
    let got = client
        .get(format!("{base}/shared-2.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"shared");

    // Bytes of a refused write (412) do not stay on disk.
    let refused = client
        .put(format!("{base}/shared-2.bin"))
        .header("content-type", "application/octet-stream")
        .header("if-match", "\"stale\"")
        .body(&b"refused bytes"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::PRECONDITION_FAILED);
    let deadline = Instant::now() + Duration::from_secs(10);
    while blob_path(&root, b"refused bytes").exists() {
        assert!(
            Instant::now() < deadline,
            "bytes of a refused write were never collected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Identical uploads racing the collector (grace 0, every 20 ms): the
    // same bytes are released and referenced again and again.
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let client = client.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..60 {
                let a = format!("{base}/race/{worker}-{i}-a");
                let b = format!("{base}/race/{worker}-{i}-b");
                let send = |url: String| {
                    client
                        .put(url)
                        .header("content-type", "application/octet-stream")
                        .body(&b"racing bytes"[..])
                        .send()
                };
                assert_eq!(send(a.clone()).await.unwrap().status(), StatusCode::CREATED);
                assert_eq!(
                    client.delete(&a).send().await.unwrap().status(),
                    StatusCode::RESET_CONTENT
                );
                assert_eq!(send(b.clone()).await.unwrap().status(), StatusCode::CREATED);
                let got = client.get(&b).send().await.unwrap();
                assert_eq!(got.status(), StatusCode::OK, "{b}");
                assert_eq!(got.bytes().await.unwrap().as_ref(), b"racing bytes", "{b}");
                if i % 2 == 0 {
                    assert_eq!(
                        client.delete(&b).send().await.unwrap().status(),
                        StatusCode::RESET_CONTENT
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Let the collector run a few more times, then every survivor still reads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for worker in 0..4 {
        for i in (1..60).step_by(2) {
            let url = format!("{base}/race/{worker}-{i}-b");
            let got = client.get(&url).send().await.unwrap();
            assert_eq!(got.status(), StatusCode::OK, "{url}");
            assert_eq!(got.bytes().await.unwrap().as_ref(), b"racing bytes");
        }
    }
    assert!(blob_path(&root, b"racing bytes").exists());
}
