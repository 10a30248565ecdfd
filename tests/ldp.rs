//! The Solid/LDP resource server over real HTTP, on SQLite and on PostgreSQL:
//! every status code and header this slice promises.

mod support;

use std::path::Path;

use reqwest::{Client, Method, StatusCode};
use support::{Postgres, Server, create_pod, raw_request};

struct Pod {
    _server: Server,
    client: Client,
    base: String,
    host: String,
    port: u16,
}

impl Pod {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn put(
        &self,
        path: &str,
        body: &'static str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.put(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }
}

fn start(dir: &Path, database_url: Option<&str>, extra: &[(&'static str, String)]) -> Pod {
    let root = dir.join("root");
    let root_s = root.to_str().unwrap().to_string();
    let port = support::free_port("127.0.0.1");
    let port_s = port.to_string();
    let base_url = format!("http://localhost:{port}/");
    let mut env = vec![
        ("CSS_PORT", port_s.as_str()),
        ("CSS_BASE_URL", base_url.as_str()),
        ("CSS_ROOT_FILE_PATH", root_s.as_str()),
        ("CSS_MAX_BODY_SIZE", "1MiB"),
        ("CSS_INTERNAL_IP", "127.0.0.1"),
    ];
    if let Some(url) = database_url {
        env.push(("CSS_DATABASE_URL", url));
    }
    for (k, v) in extra {
        env.push((k, v.as_str()));
    }
    let server = Server::start("127.0.0.1", &env, dir);
    create_pod(&root, server.port, "crud", &env[1..]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Pod {
        base: format!("http://localhost:{port}/crud"),
        host: server.host.clone(),
        port: server.port,
        _server: server,
        client: Client::builder()
            .resolve("localhost", addr)
            .build()
            .unwrap(),
    }
}

fn h<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn links(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn battery(pod: Pod) {
    // PUT creates intermediate containers; 201 with validators.
    let created = pod
        .put(
            "/notes/2026/a.txt",
            "hello",
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let etag1 = h(&created, "etag").to_string();
    assert!(!h(&created, "x-xpod-served-by").is_empty());

    let got = pod.get("/notes/2026/a.txt", &[]).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(h(&got, "content-type"), "text/plain");
    assert_eq!(h(&got, "etag"), etag1);
    assert!(h(&got, "last-modified").ends_with("GMT"));
    assert_eq!(h(&got, "allow"), "OPTIONS, HEAD, GET, PATCH, PUT, DELETE");
    assert_eq!(
        h(&got, "accept-patch"),
        "text/n3, application/sparql-update"
    );
    assert_eq!(h(&got, "accept-put"), "*/*");
    let l = links(&got);
    assert!(
        l.contains("<http://www.w3.org/ns/ldp#Resource>; rel=\"type\""),
        "{l}"
    );
    assert!(!l.contains("ldp#Container"), "{l}");
    assert!(
        l.contains(&format!(
            "<{}>; rel=\"acl\"",
            pod.url("/notes/2026/a.txt.acl")
        )),
        "{l}"
    );
    assert!(l.contains("rel=\"describedby\""), "{l}");
    assert!(
        l.contains("rel=\"http://www.w3.org/ns/solid/terms#storageDescription\""),
        "{l}"
    );
    assert_eq!(got.text().await.unwrap(), "hello");

    // HEAD: the same headers, no body.
    let head = pod
        .client
        .head(pod.url("/notes/2026/a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(h(&head, "content-length"), "5");
    assert_eq!(head.bytes().await.unwrap().len(), 0);

    // Containers list their children, with Link types and Accept-Post.
    let listing = pod.get("/notes/", &[]).await;
    assert_eq!(listing.status(), StatusCode::OK);
    assert_eq!(h(&listing, "content-type"), "text/turtle");
    assert_eq!(h(&listing, "accept-post"), "*/*");
    let l = links(&listing);
    assert!(
        l.contains("ldp#BasicContainer") && l.contains("ldp#Container"),
        "{l}"
    );
    let text = listing.text().await.unwrap();
    assert!(text.contains("<> ldp:contains <2026/>."), "{text}");
    assert!(
        text.contains("posix:size") && text.contains("dc:modified"),
        "{text}"
    );

    // The pod root is a pim:Storage, cannot be deleted, and the storage
    // description names it.
    let root = pod.get("/", &[]).await;
    assert!(links(&root).contains("<http://www.w3.org/ns/pim/space#Storage>; rel=\"type\""));
    assert!(!h(&root, "allow").contains("DELETE"));
    let desc = pod.get("/.well-known/solid", &[]).await;
    assert_eq!(desc.status(), StatusCode::OK);
    assert!(
        desc.text()
            .await
            .unwrap()
            .contains(&format!("<{}/> a pim:Storage.", pod.base))
    );
    let del_root = pod.client.delete(pod.url("/")).send().await.unwrap();
    assert_eq!(del_root.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Replacing: 205 and a new ETag. Conditions: 412 changes nothing, 304 on a match.
    let replaced = pod
        .put(
            "/notes/2026/a.txt",
            "hello again",
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(replaced.status(), StatusCode::RESET_CONTENT);
    let etag2 = h(&replaced, "etag").to_string();
    assert_ne!(etag1, etag2);
    let stale = pod
        .put(
            "/notes/2026/a.txt",
            "lost update",
            &[("content-type", "text/plain"), ("if-match", &etag1)],
        )
        .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let exists = pod
        .put(
            "/notes/2026/a.txt",
            "lost update",
            &[("content-type", "text/plain"), ("if-none-match", "*")],
        )
        .await;
    assert_eq!(exists.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        pod.get("/notes/2026/a.txt", &[])
            .await
            .text()
            .await
            .unwrap(),
        "hello again"
    );
    let not_modified = pod
        .get("/notes/2026/a.txt", &[("if-none-match", &etag2)])
        .await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(h(&not_modified, "etag"), etag2);
    let failed_get = pod.get("/notes/2026/a.txt", &[("if-match", &etag1)]).await;
    assert_eq!(failed_get.status(), StatusCode::PRECONDITION_FAILED);
    let fresh = pod
        .put(
            "/notes/2026/a.txt",
            "0123456789",
            &[("content-type", "text/plain"), ("if-match", &etag2)],
        )
        .await;
    assert_eq!(fresh.status(), StatusCode::RESET_CONTENT);
    let create_only = pod
        .put(
            "/notes/new.txt",
            "new",
            &[("content-type", "text/plain"), ("if-none-match", "*")],
        )
        .await;
    assert_eq!(create_only.status(), StatusCode::CREATED);

    // Ranges.
    let part = pod
        .get("/notes/2026/a.txt", &[("range", "bytes=2-5")])
        .await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(h(&part, "content-range"), "bytes 2-5/10");
    assert_eq!(part.text().await.unwrap(), "2345");
    let suffix = pod.get("/notes/2026/a.txt", &[("range", "bytes=-3")]).await;
    assert_eq!(suffix.text().await.unwrap(), "789");
    let bad_range = pod
        .get("/notes/2026/a.txt", &[("range", "bytes=50-")])
        .await;
    assert_eq!(bad_range.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h(&bad_range, "content-range"), "bytes */10");

    // POST: Slug honoured, never overwriting; containers by Link type.
    let post = |slug: &'static str| {
        pod.client
            .post(pod.url("/notes/"))
            .header("content-type", "text/plain")
            .header("slug", slug)
            .body("posted")
            .send()
    };
    let first = post("memo.txt").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(h(&first, "location"), pod.url("/notes/memo.txt"));
    let second = post("memo.txt").await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    let loc2 = h(&second, "location").to_string();
    assert_ne!(loc2, pod.url("/notes/memo.txt"));
    assert!(loc2.starts_with(&pod.url("/notes/memo.txt-")), "{loc2}");
    let sneaky = post("../escape").await.unwrap();
    assert!(h(&sneaky, "location").starts_with(&pod.url("/notes/")));
    let folder = pod
        .client
        .post(pod.url("/notes/"))
        .header("slug", "folder")
        .header(
            "link",
            "<http://www.w3.org/ns/ldp#BasicContainer>; rel=\"type\"",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(folder.status(), StatusCode::CREATED);
    assert_eq!(h(&folder, "location"), pod.url("/notes/folder/"));
    let on_doc = pod
        .client
        .post(pod.url("/notes/new.txt"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(on_doc.status(), StatusCode::METHOD_NOT_ALLOWED);
    let to_missing = pod
        .client
        .post(pod.url("/nowhere/"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(to_missing.status(), StatusCode::NOT_FOUND);

    // DELETE: 409 for a non-empty container, 205, then 404.
    let busy = pod
        .client
        .delete(pod.url("/notes/2026/"))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), StatusCode::CONFLICT);
    let gone = pod
        .client
        .delete(pod.url("/notes/2026/a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::RESET_CONTENT);
    assert_eq!(
        pod.get("/notes/2026/a.txt", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
    let empty = pod
        .client
        .delete(pod.url("/notes/2026/"))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::RESET_CONTENT);
    let again = pod
        .client
        .delete(pod.url("/notes/2026/"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    // A document and a container cannot share a name.
    let clash = pod.put("/notes/new.txt/", "", &[]).await;
    assert_eq!(clash.status(), StatusCode::CONFLICT);
    let under_doc = pod
        .put(
            "/notes/new.txt/child",
            "x",
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(under_doc.status(), StatusCode::CONFLICT);

    // Bad input: 400/413, and nothing is created.
    let no_type = pod
        .client
        .put(pod.url("/notes/untyped"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), StatusCode::BAD_REQUEST);
    let big = vec![b'x'; 2 << 20];
    // A server refusing a body early closes the connection: use unpooled ones.
    let once = Client::builder()
        .pool_max_idle_per_host(0)
        .resolve(
            "localhost",
            format!("127.0.0.1:{}", pod.port).parse().unwrap(),
        )
        .build()
        .unwrap();
    let too_big = once
        .put(pod.url("/notes/big.bin"))
        .header("content-type", "application/octet-stream")
        .body(big.clone())
        .send()
        .await
        .expect("a declared oversized body is refused before it is read");
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Without Content-Length the limit is enforced while streaming.
    let stream = futures::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = once
        .put(pod.url("/notes/big2.bin"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("the server answers once the limit is crossed");
    assert_eq!(chunked.status(), StatusCode::PAYLOAD_TOO_LARGE);
    for path in ["/notes/untyped", "/notes/big.bin", "/notes/big2.bin"] {
        assert_eq!(
            pod.get(path, &[]).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for (path, why) in [
        ("/crud/notes/../x", "'..'"),
        ("/crud/notes/%2e%2e/x", "'..'"),
        ("/crud/a%2Fb", "encoded slash"),
        ("/crud/a%00b", "NUL"),
        ("/crud/-/x", "reserved"),
        ("/crud/-/sparql/x", "reserved"),
    ] {
        let (status, _, body) = raw_request(
            &pod.host,
            pod.port,
            "PUT",
            path,
            &[("Content-Type", "text/plain")],
            b"x",
        )
        .unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(why), "{path}: {body}");
    }
    // `-/sparql` is a container's SPARQL endpoint: nothing can be PUT there.
    let (status, headers, _) = raw_request(
        &pod.host,
        pod.port,
        "PUT",
        "/crud/-/sparql",
        &[("Content-Type", "text/plain")],
        b"x",
    )
    .unwrap();
    assert_eq!(status, 405);
    assert_eq!(
        support::header(&headers, "allow"),
        Some("OPTIONS, HEAD, GET, POST")
    );
    let long = format!("/crud/{}", "a".repeat(3000));
    let (status, _, _) = raw_request(&pod.host, pod.port, "GET", &long, &[], b"").unwrap();
    assert_eq!(status, 400);
    assert_eq!(pod.get("/x", &[]).await.status(), StatusCode::NOT_FOUND);
    let other_pod = pod
        .client
        .get(pod.url("/").replace("/crud/", "/nobody/"))
        .send()
        .await
        .unwrap();
    assert_eq!(other_pod.status(), StatusCode::NOT_FOUND);
    let patch = pod
        .client
        .request(Method::PATCH, pod.url("/notes/new.txt"))
        .header("content-type", "text/x-unknown")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    rdf(&pod).await;

    // CORS for browser apps, on success and on errors alike.
    let preflight = pod
        .client
        .request(Method::OPTIONS, pod.url("/notes/"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type, if-match")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        h(&preflight, "access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(h(&preflight, "access-control-allow-credentials"), "true");
    assert!(h(&preflight, "access-control-allow-methods").contains("PATCH"));
    assert_eq!(
        h(&preflight, "access-control-allow-headers"),
        "content-type, if-match"
    );
    let missing = pod
        .get("/missing", &[("origin", "https://app.example")])
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        h(&missing, "access-control-allow-origin"),
        "https://app.example"
    );
    assert!(h(&missing, "access-control-expose-headers").contains("ETag"));
    let options = pod
        .client
        .request(Method::OPTIONS, pod.url("/notes/"))
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert!(h(&options, "allow").contains("POST"));

    // Concurrent writers with one If-Match: exactly one wins, no lost update.
    let base = pod
        .put("/race.txt", "base", &[("content-type", "text/plain")])
        .await;
    let etag = h(&base, "etag").to_string();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = pod.client.clone();
        let url = pod.url("/race.txt");
        let etag = etag.clone();
        tasks.push(tokio::spawn(async move {
            client
                .put(url)
                .header("content-type", "text/plain")
                .header("if-match", etag)
                .body(format!("writer {i}"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::RESET_CONTENT)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::RESET_CONTENT || *s == StatusCode::PRECONDITION_FAILED),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldp_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    battery(start(dir.path(), None, &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldp_on_postgres() {
    let pg = Postgres::start();
    let url = pg.create_database("ldp");
    let dir = tempfile::tempdir().unwrap();
    battery(start(dir.path(), Some(&url), &[])).await;
}

/// The same battery with pod bytes in S3 (Garage) behind the local cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldp_on_s3_tiered_store() {
    let pg = Postgres::start();
    let url = pg.create_database("ldp");
    let garage = support::Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let mut extra = garage.env();
    extra.push((
        "CSS_CACHE_PATH",
        dir.path().join("cache").display().to_string(),
    ));
    battery(start(dir.path(), Some(&url), &extra)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subdomain_pods() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = support::free_port("127.0.0.1");
    let base = format!("http://pods.test:{port}/");
    let env = [
        ("CSS_ROOT_FILE_PATH", root.to_str().unwrap()),
        ("CSS_POD_SUBDOMAINS", "true"),
        ("CSS_BASE_URL", base.as_str()),
        ("CSS_PORT", &port.to_string()),
    ];
    let _server = Server::start("127.0.0.1", &env, dir.path());
    create_pod(&root, port, "alice", &env[1..]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = Client::builder()
        .resolve("alice.pods.test", addr)
        .resolve("bob.pods.test", addr)
        .resolve("pods.test", addr)
        .build()
        .unwrap();
    let url = format!("http://alice.pods.test:{port}/docs/x.txt");
    let put = client
        .put(&url)
        .header("content-type", "text/plain")
        .body("sub")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let got = client.get(&url).send().await.unwrap();
    assert!(links(&got).contains(&format!("<http://alice.pods.test:{port}/docs/x.txt.acl>")));
    assert_eq!(got.text().await.unwrap(), "sub");
    let root_listing = client
        .get(format!("http://alice.pods.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert!(links(&root_listing).contains("pim/space#Storage"));
    let other = client
        .get(format!("http://bob.pods.test:{port}/docs/x.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "pods are separate");
    let path_style = client
        .get(format!("http://pods.test:{port}/alice/docs/x.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        path_style.status(),
        StatusCode::NOT_FOUND,
        "no path-style alias"
    );
}

async fn patch(pod: &Pod, path: &str, content_type: &str, body: &'static str) -> reqwest::Response {
    pod.client
        .request(Method::PATCH, pod.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn rdf(pod: &Pod) {
    // Malformed RDF: 400 with the parser's line, nothing stored.
    let bad = pod
        .put(
            "/rdf/bad.ttl",
            "<a> <b> <c> .\n<a> <b> .\n",
            &[("content-type", "text/turtle")],
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let why = bad.text().await.unwrap();
    assert!(why.contains("line 2"), "{why}");
    let bad_json = pod
        .put(
            "/rdf/bad.jsonld",
            "{\"@id\": ",
            &[("content-type", "application/ld+json")],
        )
        .await;
    assert_eq!(bad_json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        pod.get("/rdf/bad.ttl", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        pod.get("/rdf/", &[]).await.status(),
        StatusCode::NOT_FOUND,
        "no container either"
    );

    let card = "@prefix foaf: <http://xmlns.com/foaf/0.1/>.\n<#me> foaf:name \"Claudia\"; foaf:nick \"cg\".\n";
    let put = pod
        .put("/rdf/card", card, &[("content-type", "text/turtle")])
        .await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let me = pod.url("/rdf/card#me");

    // Content negotiation to every output syntax.
    let as_is = pod.get("/rdf/card", &[("accept", "text/turtle")]).await;
    assert_eq!(h(&as_is, "content-type"), "text/turtle");
    assert_eq!(
        as_is.text().await.unwrap(),
        card,
        "stored bytes served as they came"
    );
    let jsonld = pod
        .get("/rdf/card", &[("accept", "application/ld+json")])
        .await;
    assert_eq!(jsonld.status(), StatusCode::OK);
    assert_eq!(h(&jsonld, "content-type"), "application/ld+json");
    let json: serde_json::Value = serde_json::from_str(&jsonld.text().await.unwrap()).unwrap();
    assert!(json.to_string().contains(&me), "{json}");
    for (accept, needle) in [
        (
            "application/n-triples",
            format!("<{me}> <http://xmlns.com/foaf/0.1/name> \"Claudia\" ."),
        ),
        ("application/rdf+xml", "rdf:RDF".to_string()),
        ("text/n3", "Claudia".to_string()),
    ] {
        let resp = pod.get("/rdf/card", &[("accept", accept)]).await;
        assert_eq!(h(&resp, "content-type"), accept);
        let text = resp.text().await.unwrap();
        assert!(text.contains(&needle), "{accept}: {text}");
    }
    let refused = pod.get("/rdf/card", &[("accept", "image/png")]).await;
    assert_eq!(refused.status(), StatusCode::NOT_ACCEPTABLE);
    let listing = pod.get("/rdf/", &[("accept", "application/ld+json")]).await;
    assert_eq!(h(&listing, "content-type"), "application/ld+json");
    assert!(
        listing
            .text()
            .await
            .unwrap()
            .contains(&pod.url("/rdf/card"))
    );
    let posted = pod
        .client
        .post(pod.url("/rdf/"))
        .header("content-type", "application/ld+json")
        .body(r##"{"@id": "#it", "http://xmlns.com/foaf/0.1/name": "Posted"}"##)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::CREATED);
    let loc = h(&posted, "location").to_string();
    let back = pod
        .client
        .get(&loc)
        .header("accept", "text/turtle")
        .send()
        .await
        .unwrap();
    assert!(back.text().await.unwrap().contains("Posted"));

    // RDFa in XHTML is served as RDF on request; the page itself as stored.
    let page = r#"<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml" xmlns:foaf="http://xmlns.com/foaf/0.1/"><body><span property="foaf:name">Jerry</span></body></html>"#;
    let put = pod
        .put(
            "/rdf/page.html",
            page,
            &[("content-type", "application/xhtml+xml; charset=utf-8")],
        )
        .await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let turtle = pod
        .get("/rdf/page.html", &[("accept", "text/turtle")])
        .await;
    assert_eq!(h(&turtle, "content-type"), "text/turtle");
    assert!(turtle.text().await.unwrap().contains("\"Jerry\""));
    assert_eq!(
        pod.get("/rdf/page.html", &[]).await.text().await.unwrap(),
        page
    );
    let broken = pod
        .put(
            "/rdf/broken.html",
            "<html><p>open",
            &[("content-type", "text/html")],
        )
        .await;
    assert_eq!(
        broken.status(),
        StatusCode::CREATED,
        "HTML is stored unchecked"
    );
    let none = pod
        .get("/rdf/broken.html", &[("accept", "text/turtle")])
        .await;
    assert_eq!(none.status(), StatusCode::NOT_ACCEPTABLE);

    // N3 Patch.
    let rename = r#"@prefix solid: <http://www.w3.org/ns/solid/terms#>. @prefix foaf: <http://xmlns.com/foaf/0.1/>.
        _:p a solid:InsertDeletePatch;
          solid:where { ?me foaf:nick "cg". };
          solid:inserts { ?me foaf:name "Alex". };
          solid:deletes { ?me foaf:name "Claudia". }."#;
    let resp = patch(pod, "/rdf/card", "text/n3", rename).await;
    assert_eq!(resp.status(), StatusCode::RESET_CONTENT);
    let text = pod
        .get("/rdf/card", &[("accept", "application/n-triples")])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("\"Alex\"") && !text.contains("\"Claudia\""),
        "{text}"
    );
    let again = patch(pod, "/rdf/card", "text/n3", rename).await;
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "the deleted triple is gone now"
    );
    let ambiguous = r#"@prefix solid: <http://www.w3.org/ns/solid/terms#>.
        _:p a solid:InsertDeletePatch; solid:where { ?s ?p ?o. }; solid:inserts { <#x> <#y> <#z>. }."#;
    assert_eq!(
        patch(pod, "/rdf/card", "text/n3", ambiguous).await.status(),
        StatusCode::CONFLICT
    );
    let unbound = r#"@prefix solid: <http://www.w3.org/ns/solid/terms#>.
        _:p a solid:InsertDeletePatch; solid:inserts { ?nobody <#y> <#z>. }."#;
    assert_eq!(
        patch(pod, "/rdf/card", "text/n3", unbound).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        patch(pod, "/rdf/card", "text/n3", "not { n3")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let create = r#"@prefix solid: <http://www.w3.org/ns/solid/terms#>.
        _:p a solid:InsertDeletePatch; solid:inserts { <#new> <#is> "here". }."#;
    let created = patch(pod, "/rdf/new.ttl", "text/n3", create).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(
        pod.get("/rdf/new.ttl", &[])
            .await
            .text()
            .await
            .unwrap()
            .contains("here")
    );

    // SPARQL Update.
    let update = "PREFIX foaf: <http://xmlns.com/foaf/0.1/> INSERT DATA { <#me> foaf:age 42 }";
    assert_eq!(
        patch(pod, "/rdf/card", "application/sparql-update", update)
            .await
            .status(),
        StatusCode::RESET_CONTENT
    );
    let swap = "PREFIX foaf: <http://xmlns.com/foaf/0.1/> DELETE { ?s foaf:nick ?n } INSERT { ?s foaf:nick \"al\" } WHERE { ?s foaf:nick ?n }";
    assert_eq!(
        patch(pod, "/rdf/card", "application/sparql-update", swap)
            .await
            .status(),
        StatusCode::RESET_CONTENT
    );
    let text = pod
        .get("/rdf/card", &[("accept", "application/n-triples")])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("42") && text.contains("\"al\"") && !text.contains("\"cg\""),
        "{text}"
    );
    assert_eq!(
        patch(
            pod,
            "/rdf/card",
            "application/sparql-update",
            "INSERT GARBAGE"
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    let text_doc = pod
        .put("/rdf/plain.txt", "plain", &[("content-type", "text/plain")])
        .await;
    assert_eq!(text_doc.status(), StatusCode::CREATED);
    assert_eq!(
        patch(pod, "/rdf/plain.txt", "application/sparql-update", update)
            .await
            .status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}
