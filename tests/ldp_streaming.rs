//! Bodies stream: a 1 GiB upload and download keep the server's peak memory
//! under 100 MB, and a download in flight when SIGTERM arrives completes.

mod support;

use futures::StreamExt;
use reqwest::{Client, StatusCode};
use sha2::{Digest, Sha256};
use support::{Server, create_pod, vm_hwm};

const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 1024; // 1 GiB

/// Deterministic, incompressible-looking chunk `i`.
fn chunk(i: usize) -> Vec<u8> {
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_through_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let env = [("CSS_ROOT_FILE_PATH", root.to_str().unwrap())];
    let mut server = Server::start("127.0.0.1", &env, dir.path());
    create_pod(&root, server.port, "big", &[]);
    let url = format!("http://127.0.0.1:{}/big/large.bin", server.port);
    let client = Client::new();

    let mut expected = Sha256::new();
    for i in 0..CHUNKS {
        expected.update(chunk(i));
    }
    let expected = hex::encode(expected.finalize());

    let body = futures::stream::iter(0..CHUNKS).map(|i| Ok::<_, std::io::Error>(chunk(i)));
    let put = client
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-length"],
        (CHUNK * CHUNKS).to_string().as_str()
    );
    let mut got = Sha256::new();
    let mut len = 0usize;
    let mut stream = resp.bytes_stream();
    while let Some(part) = stream.next().await {
        let part = part.unwrap();
        len += part.len();
        got.update(&part);
    }
    assert_eq!(len, CHUNK * CHUNKS);
    assert_eq!(
        hex::encode(got.finalize()),
        expected,
        "identical bytes back"
    );

    let peak = vm_hwm(server.pid());
    assert!(peak < 100 << 20, "server peak RSS {} MiB", peak >> 20);

    // A download in flight when SIGTERM arrives still completes.
    let resp = client.get(&url).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let mut got = Sha256::new();
    let mut len = 0usize;
    let first = stream.next().await.unwrap().unwrap();
    len += first.len();
    got.update(&first);
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    while let Some(part) = stream.next().await {
        let part = part.expect("the in-flight download is not cut off");
        len += part.len();
        got.update(&part);
    }
    assert_eq!(len, CHUNK * CHUNKS);
    assert_eq!(hex::encode(got.finalize()), expected);
    let status = server.stop_with(libc::SIGTERM);
    assert!(status.success(), "graceful exit, got {status}");
}
