//! A container with 100,000 children (built through the store) streams its
//! listing without holding the server up, on both backends.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Client, StatusCode};
use sha2::{Digest, Sha256};
use support::{Postgres, Server, create_pod, vm_hwm};
use xpod::config::{DatabaseConfig, Secret};
use xpod::db::ImportItem;

const CHILDREN: usize = 100_000;

async fn run(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut env = vec![("CSS_ROOT_FILE_PATH", root.to_str().unwrap().to_string())];
    if let Some(url) = &database {
        env.push(("CSS_DATABASE_URL", url.clone()));
        env.push(("CSS_INTERNAL_IP", "127.0.0.1".into()));
    }
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start("127.0.0.1", &env_ref, dir.path());
    create_pod(&root, server.port, "big", &env_ref[1..]);
    let base = format!("http://127.0.0.1:{}/big", server.port);
    let client = Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let seed = client
        .put(format!("{base}/seed.txt"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(seed.status(), StatusCode::CREATED);

    // Build the fixture through the store, in one transaction.
    let config = match &database {
        None => DatabaseConfig::Sqlite(root.join("xpod.sqlite")),
        Some(url) => DatabaseConfig::Postgres(Secret::new(url.clone())),
    };
    let store = xpod::db::open(&config).await.unwrap();
    let storage = std::fs::read_to_string(root.join("blobs/xpod-storage-id")).unwrap();
    let hash = hex::encode(Sha256::digest(b"hello"));
    let mut items = vec![ImportItem {
        path: "/many/".into(),
        content_type: "text/turtle".into(),
        blob: None,
    }];
    items.extend((0..CHILDREN).map(|i| ImportItem {
        path: format!("/many/child-{i:06}"),
        content_type: "text/plain".into(),
        blob: Some((hash.clone(), 5)),
    }));
    let started = Instant::now();
    let n = store
        .resource_import("big", storage.trim(), items)
        .await
        .unwrap();
    eprintln!("imported {n} resources in {:?}", started.elapsed());

    // Start the listing, read a little, and pause it: the server keeps serving.
    let started = Instant::now();
    let listing = client.get(format!("{base}/many/")).send().await.unwrap();
    assert_eq!(listing.status(), StatusCode::OK);
    let first_byte = started.elapsed();
    let mut stream = listing.bytes_stream();
    let mut text = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();
    let other = client
        .get(format!("{base}/many/child-050000"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("other requests are served while a huge listing is in flight");
    assert_eq!(other.text().await.unwrap(), "hello");
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let total = started.elapsed();
    let contains = text.matches("<> ldp:contains <child-").count();
    assert_eq!(contains, CHILDREN);
    assert!(text.contains("<> ldp:contains <child-099999>."));
    eprintln!(
        "listed {CHILDREN} children: first byte after {first_byte:?}, all {} MB in {total:?}",
        text.len() >> 20
    );
    let peak = vm_hwm(server.pid());
    assert!(peak < 100 << 20, "server peak RSS {} MiB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_children_on_sqlite() {
    run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_children_on_postgres() {
    let pg = Postgres::start();
    let url = pg.create_database("large");
    run(Some(url)).await;
}
