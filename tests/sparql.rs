//! The SPARQL sidecar `{container}/-/sparql` (issue 13), as a client of a
//! pod sees it: queries across documents and containers with their graph
//! names, only what the agent may read, updates of several documents that
//! apply whole or not at all (on SQLite and on PostgreSQL), the limits, and
//! the errors of malformed requests.
//!
//! Every agent is a real WebID with a DPoP-bound token from xpod's own
//! identity provider; documents and ACLs are PUT over HTTP.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::Value;

use support::account::{Agent, account_sequence, signed};
use support::{Postgres, Server, borrowed};

const EX: &str = "http://example.org/";

/// One `xpod serve` on 127.0.0.1, reached as `localhost`.
struct Node {
    _server: Server,
    _pg: Option<Postgres>,
    _dir: tempfile::TempDir,
    base: String,
    http: Client,
}

fn start_node(postgres: bool, extra: &[(&'static str, &str)]) -> Node {
    let pg = postgres.then(Postgres::start);
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port("127.0.0.1");
    let base = format!("http://localhost:{port}/");
    let mut env: Vec<(&'static str, String)> = vec![
        ("CSS_PORT", port.to_string()),
        ("CSS_BASE_URL", base.clone()),
        (
            "CSS_ROOT_FILE_PATH",
            dir.path().join("root").display().to_string(),
        ),
        ("CSS_HOST", "127.0.0.1".into()),
        ("CSS_INTERNAL_IP", "127.0.0.1".into()),
    ];
    if let Some(pg) = &pg {
        env.push(("CSS_DATABASE_URL", pg.create_database("sparql")));
    }
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let server = Server::start("127.0.0.1", &borrowed(&env), dir.path());
    let http = Client::builder()
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    Node {
        _server: server,
        _pg: pg,
        _dir: dir,
        base,
        http,
    }
}

/// A response, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    etag: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The values of `var` in SELECT results, as a sorted set.
    fn column(&self, var: &str) -> BTreeSet<String> {
        self.json()["results"]["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b[var]["value"].as_str().map(str::to_string))
            .collect()
    }
}

async fn send(
    http: &Client,
    who: Option<&Agent>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    query: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = signed(who, http.request(m, url), method, url).query(query);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (content_type, etag) = (header("content-type").unwrap_or_default(), header("etag"));
    Reply {
        status: resp.status().as_u16(),
        content_type,
        etag,
        body: resp.text().await.unwrap(),
    }
}

/// Two WebIDs with pods on one node: alice owns the pod under test.
struct World {
    node: Node,
    alice: Agent,
    bob: Agent,
    /// alice's pod, `http://localhost:<port>/alice/`.
    pod: String,
}

impl World {
    async fn start(postgres: bool, extra: &[(&'static str, &'static str)]) -> World {
        let extra = extra.to_vec();
        let node = tokio::task::spawn_blocking(move || start_node(postgres, &extra))
            .await
            .unwrap();
        let alice = account_sequence(&node.http, &node.base, "alice", "alice@example.org").await;
        let bob = account_sequence(&node.http, &node.base, "bob", "bob@example.org").await;
        World {
            alice: Agent::log_in(&node.http, &node.base, &alice).await,
            bob: Agent::log_in(&node.http, &node.base, &bob).await,
            pod: alice.pod,
            node,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.pod)
    }

    async fn call(
        &self,
        who: Option<&Agent>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        send(
            &self.node.http,
            who,
            method,
            &self.url(path),
            headers,
            &[],
            body,
        )
        .await
    }

    /// PUTs a document as alice, expecting it stored.
    async fn put(&self, path: &str, content_type: &str, body: &str) {
        let r = self
            .call(
                Some(&self.alice),
                "PUT",
                path,
                &[("content-type", content_type)],
                Some(body),
            )
            .await;
        assert!(
            r.status == 201 || r.status == 205,
            "PUT {path}: {} {}",
            r.status,
            r.body
        );
    }

    /// A query to the sidecar of `container` (a path in alice's pod), by GET.
    async fn select(&self, who: Option<&Agent>, container: &str, query: &str) -> Reply {
        self.query(who, container, query, "application/sparql-results+json")
            .await
    }

    async fn query(
        &self,
        who: Option<&Agent>,
        container: &str,
        query: &str,
        accept: &str,
    ) -> Reply {
        let url = self.url(&format!("{container}-/sparql"));
        send(
            &self.node.http,
            who,
            "GET",
            &url,
            &[("accept", accept)],
            &[("query", query)],
            None,
        )
        .await
    }

    async fn update(&self, who: Option<&Agent>, container: &str, update: &str) -> Reply {
        let url = self.url(&format!("{container}-/sparql"));
        send(
            &self.node.http,
            who,
            "POST",
            &url,
            &[("content-type", "application/sparql-update")],
            &[],
            Some(update),
        )
        .await
    }

    /// The document's ETag and body as alice reads it.
    async fn read(&self, path: &str) -> (String, String) {
        let r = self.call(Some(&self.alice), "GET", path, &[], None).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        (r.etag.unwrap(), r.body)
    }

    /// Sets up the documents every test queries: tasks in `data/` and its
    /// sub-containers, a private one, a picture and a document outside.
    async fn plant(&self) {
        let task = |id: &str, status: &str, title: &str| {
            format!(
                "<#{id}> <{EX}status> \"{status}\"; <{EX}title> \"{title}\"; <{EX}due> \"2026-12-0{}\".\n",
                title.len() % 9 + 1
            )
        };
        self.put("data/a.ttl", "text/turtle", &task("t1", "done", "paint"))
            .await;
        self.put("data/sub/b.ttl", "text/turtle", &task("t2", "done", "sand"))
            .await;
        self.put(
            "data/sub/deeper/c.ttl",
            "text/turtle",
            &task("t3", "open", "oil"),
        )
        .await;
        self.put(
            "data/d.jsonld",
            "application/ld+json",
            &format!(r##"{{"@id": "#t4", "{EX}status": "done", "{EX}title": "varnish"}}"##),
        )
        .await;
        self.put(
            "data/private.ttl",
            "text/turtle",
            &format!("<#s> <{EX}secret> \"hidden\".\n"),
        )
        .await;
        self.put("data/picture.png", "image/png", "\u{89}PNG not RDF")
            .await;
        self.put("other/x.ttl", "text/turtle", &task("t9", "done", "outside"))
            .await;
        // bob may read (and append to) everything in data/ but private.ttl.
        let acl = |extra: &str| {
            format!(
                "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
                 <#owner> a acl:Authorization; acl:agent <{}>; acl:accessTo <./>; acl:default <./>; acl:mode acl:Read, acl:Write, acl:Control.\n{extra}",
                self.alice.webid
            )
        };
        self.put(
            "data/.acl",
            "text/turtle",
            &acl(&format!(
                "<#bob> a acl:Authorization; acl:agent <{}>; acl:accessTo <./>; acl:default <./>; acl:mode acl:Read, acl:Append.\n",
                self.bob.webid
            )),
        )
        .await;
        self.put(
            "data/private.ttl.acl",
            "text/turtle",
            &format!(
                "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
                 <#owner> a acl:Authorization; acl:agent <{}>; acl:accessTo <private.ttl>; acl:mode acl:Read, acl:Write, acl:Control.\n",
                self.alice.webid
            ),
        )
        .await;
    }
}

const DONE_TITLES: &str = "SELECT ?g ?title WHERE { GRAPH ?g { ?t <http://example.org/status> \"done\"; <http://example.org/title> ?title } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_see_the_documents_under_the_container_that_the_agent_may_read() {
    let w = World::start(false, &[]).await;
    w.plant().await;
    let url = |p: &str| w.url(p);

    // Across documents, formats and sub-containers, each a graph named by its URL.
    let r = w.select(Some(&w.alice), "data/", DONE_TITLES).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.content_type
            .starts_with("application/sparql-results+json")
    );
    assert_eq!(
        r.column("g"),
        BTreeSet::from([
            url("data/a.ttl"),
            url("data/d.jsonld"),
            url("data/sub/b.ttl")
        ])
    );
    assert_eq!(
        r.column("title"),
        BTreeSet::from(["paint".into(), "sand".into(), "varnish".into()])
    );
    // The default graph is their union; a sub-container's sidecar sees its part.
    let count = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }";
    let n = |r: &Reply| {
        r.json()["results"]["bindings"][0]["n"]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(n(&w.select(Some(&w.alice), "data/", count).await), "12");
    assert_eq!(n(&w.select(Some(&w.alice), "data/sub/", count).await), "6");
    let r = w
        .select(
            Some(&w.alice),
            "data/sub/",
            "SELECT ?g WHERE { GRAPH ?g { } }",
        )
        .await;
    assert_eq!(
        r.column("g"),
        BTreeSet::from([url("data/sub/b.ttl"), url("data/sub/deeper/c.ttl")])
    );
    // Relative graph names are read against the container.
    let r = w
        .select(
            Some(&w.alice),
            "data/",
            "SELECT ?title FROM <sub/b.ttl> WHERE { ?t <http://example.org/title> ?title }",
        )
        .await;
    assert_eq!(r.column("title"), BTreeSet::from(["sand".into()]));

    // bob reads everything but private.ttl: it never contributes a triple.
    let r = w.select(Some(&w.bob), "data/", DONE_TITLES).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.column("title").len(), 3);
    assert_eq!(n(&w.select(Some(&w.bob), "data/", count).await), "11");
    let secret = "SELECT ?o WHERE { ?s <http://example.org/secret> ?o }";
    assert_eq!(
        w.select(Some(&w.alice), "data/", secret)
            .await
            .column("o")
            .len(),
        1
    );
    for q in [
        secret.to_string(),
        format!(
            "SELECT ?o WHERE {{ GRAPH <{}> {{ ?s ?p ?o }} }}",
            url("data/private.ttl")
        ),
        format!(
            "SELECT ?o FROM <{}> WHERE {{ ?s ?p ?o }}",
            url("data/private.ttl")
        ),
    ] {
        let r = w.select(Some(&w.bob), "data/", &q).await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        assert!(r.column("o").is_empty(), "{q}: {}", r.body);
    }
    let r = w
        .query(
            Some(&w.bob),
            "data/",
            "CONSTRUCT WHERE { ?s ?p ?o }",
            "application/n-triples",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("application/n-triples"));
    assert_eq!(r.body.lines().count(), 11, "{}", r.body);
    assert!(!r.body.contains("hidden"));
    // An anonymous client may not read data/, nor its sidecar.
    assert_eq!(w.select(None, "data/", DONE_TITLES).await.status, 401);
    // No sidecar for a container that does not exist.
    assert_eq!(
        w.select(Some(&w.alice), "nothing/", DONE_TITLES)
            .await
            .status,
        404
    );

    // Graphs outside the container may not be named.
    for q in [
        format!(
            "SELECT * WHERE {{ GRAPH <{}> {{ ?s ?p ?o }} }}",
            url("other/x.ttl")
        ),
        format!(
            "SELECT * FROM <{}> WHERE {{ ?s ?p ?o }}",
            url("other/x.ttl")
        ),
        "SELECT * FROM NAMED <http://elsewhere.example/g> WHERE { ?s ?p ?o }".to_string(),
    ] {
        let r = w.select(Some(&w.alice), "data/", &q).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(r.body.contains("outside"), "{}", r.body);
    }

    // Formats by content negotiation.
    let r = w
        .query(Some(&w.alice), "data/", DONE_TITLES, "text/csv")
        .await;
    assert!(r.content_type.starts_with("text/csv"), "{}", r.content_type);
    assert!(r.body.starts_with("g,title\r\n"), "{}", r.body);
    assert!(r.body.contains(",varnish"));
    let r = w
        .query(
            Some(&w.alice),
            "data/",
            DONE_TITLES,
            "text/tab-separated-values",
        )
        .await;
    assert!(r.body.starts_with("?g\t?title\n"), "{}", r.body);
    let r = w
        .query(
            Some(&w.alice),
            "data/",
            DONE_TITLES,
            "application/sparql-results+xml",
        )
        .await;
    assert!(r.body.contains("<sparql"), "{}", r.body);
    let r = w
        .query(
            Some(&w.alice),
            "data/",
            "ASK { ?s <http://example.org/title> \"oil\" }",
            "*/*",
        )
        .await;
    assert_eq!(r.json()["boolean"], true);
    let r = w
        .query(
            Some(&w.alice),
            "data/",
            "DESCRIBE <sub/b.ttl#t2>",
            "text/turtle",
        )
        .await;
    assert!(r.content_type.starts_with("text/turtle"));
    assert!(r.body.contains("\"sand\""), "{}", r.body);
    assert_eq!(
        w.query(Some(&w.alice), "data/", DONE_TITLES, "image/png")
            .await
            .status,
        406
    );

    // POST, as a query or as a form.
    let sidecar = url("data/-/sparql");
    let r = send(
        &w.node.http,
        Some(&w.alice),
        "POST",
        &sidecar,
        &[("content-type", "application/sparql-query")],
        &[],
        Some(DONE_TITLES),
    )
    .await;
    assert_eq!(r.column("title").len(), 3);
    let form = format!("query={}", support::form_encode(DONE_TITLES));
    let r = send(
        &w.node.http,
        Some(&w.alice),
        "POST",
        &sidecar,
        &[("content-type", "application/x-www-form-urlencoded")],
        &[],
        Some(&form),
    )
    .await;
    assert_eq!(r.column("title").len(), 3);

    // Malformed queries get 400 with the parser's message.
    let r = w
        .select(Some(&w.alice), "data/", "SELECT ?x WHERE { ?x ?p }")
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.starts_with("invalid SPARQL query: error at 1:"),
        "{}",
        r.body
    );
    let r = send(
        &w.node.http,
        Some(&w.alice),
        "GET",
        &sidecar,
        &[],
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("?query="), "{}", r.body);
    let r = send(
        &w.node.http,
        Some(&w.alice),
        "POST",
        &sidecar,
        &[("content-type", "text/plain")],
        &[],
        Some("SELECT * {}"),
    )
    .await;
    assert_eq!(r.status, 415);
    // '-' names nothing else.
    assert_eq!(
        w.call(Some(&w.alice), "GET", "data/-/other", &[], None)
            .await
            .status,
        400
    );

    let r = w
        .call(
            Some(&w.alice),
            "PUT",
            "data/%2D/sparql",
            &[("content-type", "text/turtle")],
            Some(""),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Text nested deep enough to overflow a parser's stack is refused, or
    // parsed where it can do no harm; the server stays up either way.
    for depth in [2_000, 20_000] {
        let nested = format!("FILTER({}1{})", "(".repeat(depth), ")".repeat(depth));
        let deep = format!("SELECT * WHERE {{ ?s ?p ?o {nested} }}");
        let r = send(
            &w.node.http,
            Some(&w.alice),
            "POST",
            &url("data/-/sparql"),
            &[("content-type", "application/sparql-query")],
            &[],
            Some(&deep),
        )
        .await;
        assert!(
            r.status == 200 || r.status == 400,
            "{depth}: {} {}",
            r.status,
            r.body
        );
        let update = format!("INSERT {{ GRAPH <a.ttl> {{ <#a> <#b> 1 }} }} WHERE {{ {nested} }}");
        let r = w.update(Some(&w.alice), "data/", &update).await;
        assert!(
            r.status == 204 || r.status == 400,
            "{depth}: {} {}",
            r.status,
            r.body
        );
        // PATCH reads SPARQL Update too, before access control.
        let r = w
            .call(
                None,
                "PATCH",
                "data/a.ttl",
                &[("content-type", "application/sparql-update")],
                Some(&update),
            )
            .await;
        assert!(
            r.status == 401 || r.status == 400,
            "{depth}: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(
        w.select(Some(&w.alice), "data/", DONE_TITLES).await.status,
        200
    );

    // Each document's blank nodes are its own, even under the same label.
    w.put(
        "data/blank1.ttl",
        "text/turtle",
        &format!("_:b0 <{EX}name> \"one\".\n"),
    )
    .await;
    w.put(
        "data/blank2.ttl",
        "text/turtle",
        &format!("_:b0 <{EX}secret> \"two\".\n"),
    )
    .await;
    let joined = format!("SELECT ?n ?s WHERE {{ ?x <{EX}name> ?n . ?x <{EX}secret> ?s }}");
    let r = w.select(Some(&w.alice), "data/", &joined).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.column("n").is_empty(), "{}", r.body);
    for path in ["data/blank1.ttl", "data/blank2.ttl"] {
        assert_eq!(
            w.call(Some(&w.alice), "DELETE", path, &[], None)
                .await
                .status,
            205
        );
    }

    // Every write is seen by the next query: a new document, a changed
    // one, a deleted one.
    w.put(
        "data/sub/e.ttl",
        "text/turtle",
        &format!("<#t5> <{EX}status> \"done\"; <{EX}title> \"wax\".\n"),
    )
    .await;
    w.put(
        "data/a.ttl",
        "text/turtle",
        &format!("<#t1> <{EX}status> \"open\"; <{EX}title> \"paint\".\n"),
    )
    .await;
    assert_eq!(
        w.call(Some(&w.alice), "DELETE", "data/d.jsonld", &[], None)
            .await
            .status,
        205
    );
    let r = w.select(Some(&w.alice), "data/", DONE_TITLES).await;
    assert_eq!(
        r.column("title"),
        BTreeSet::from(["sand".into(), "wax".into()])
    );
}

async fn updates_are_all_or_nothing(postgres: bool) {
    let w = World::start(postgres, &[]).await;
    w.plant().await;
    let (a0, _) = w.read("data/a.ttl").await;
    let (b0, _) = w.read("data/sub/b.ttl").await;

    // Two documents and a new one in one update: all three change.
    let r = w
        .update(
            Some(&w.alice),
            "data/",
            &format!(
                "PREFIX ex: <{EX}>\n\
                 DELETE {{ GRAPH ?g {{ ?t ex:status \"done\" }} }}\n\
                 INSERT {{ GRAPH ?g {{ ?t ex:status \"archived\" }} }}\n\
                 WHERE {{ GRAPH ?g {{ ?t ex:status \"done\"; ex:title ?title FILTER(?title IN (\"paint\", \"sand\")) }} }};\n\
                 INSERT DATA {{ GRAPH <log.ttl> {{ <log.ttl#1> ex:note \"archived two\" }} }}"
            ),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (a1, a_body) = w.read("data/a.ttl").await;
    let (b1, b_body) = w.read("data/sub/b.ttl").await;
    assert_ne!(a1, a0);
    assert_ne!(b1, b0);
    assert!(
        a_body.contains("archived") && !a_body.contains("\"done\""),
        "{a_body}"
    );
    assert!(
        b_body.contains("archived") && !b_body.contains("\"done\""),
        "{b_body}"
    );
    let (_, log) = w.read("data/log.ttl").await;
    assert!(log.contains("archived two"), "{log}");
    // A JSON-LD document stays JSON-LD.
    let r = w
        .update(
            Some(&w.alice),
            "data/",
            &format!("INSERT DATA {{ GRAPH <d.jsonld> {{ <d.jsonld#t4> <{EX}note> \"kept\" }} }}"),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = w
        .call(Some(&w.alice), "GET", "data/d.jsonld", &[], None)
        .await;
    assert!(
        r.content_type.starts_with("application/ld+json"),
        "{}",
        r.content_type
    );
    assert!(r.body.contains("kept"), "{}", r.body);

    // One write fails in the transaction (a document where a container
    // is): the other document is left as it was.
    let r = w
        .update(
            Some(&w.alice),
            "data/",
            &format!(
                "INSERT DATA {{ GRAPH <a.ttl> {{ <a.ttl#t1> <{EX}note> \"lost\" }} GRAPH <sub> {{ <sub#x> <{EX}note> \"clash\" }} }}"
            ),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(w.read("data/a.ttl").await, (a1.clone(), a_body.clone()));
    assert_eq!(
        w.call(Some(&w.alice), "GET", "data/sub", &[], None)
            .await
            .status,
        404
    );

    // bob may append to a.ttl but not to private.ttl: neither changes.
    let (p0, p_body) = w.read("data/private.ttl").await;
    let both = format!(
        "INSERT DATA {{ GRAPH <a.ttl> {{ <a.ttl#t1> <{EX}note> \"by bob\" }} GRAPH <private.ttl> {{ <private.ttl#s> <{EX}note> \"by bob\" }} }}"
    );
    let r = w.update(Some(&w.bob), "data/", &both).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(w.read("data/a.ttl").await, (a1.clone(), a_body.clone()));
    assert_eq!(w.read("data/private.ttl").await, (p0, p_body));
    // Appending to a.ttl alone is his right; deleting from it is not.
    let r = w
        .update(
            Some(&w.bob),
            "data/",
            &format!("INSERT DATA {{ GRAPH <a.ttl> {{ <a.ttl#t1> <{EX}note> \"by bob\" }} }}"),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (a2, a_body2) = w.read("data/a.ttl").await;
    assert!(a_body2.contains("by bob"), "{a_body2}");
    let r = w
        .update(
            Some(&w.bob),
            "data/",
            &format!("DELETE DATA {{ GRAPH <a.ttl> {{ <a.ttl#t1> <{EX}note> \"by bob\" }} }}"),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(w.read("data/a.ttl").await.0, a2);
    // Anonymous: 401, nothing written.
    let r = w.update(None, "data/", &both).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(w.read("data/a.ttl").await.0, a2);

    // Refused before anything is read: outside the container, the default
    // graph, LOAD, a container, a non-RDF document.
    for (update, status, needle) in [
        (
            format!(
                "INSERT DATA {{ GRAPH <{}> {{ <#a> <#b> <#c> }} }}",
                w.url("other/x.ttl")
            ),
            400,
            "outside",
        ),
        (
            "INSERT DATA { <#a> <#b> <#c> }".to_string(),
            400,
            "default graph",
        ),
        ("LOAD <http://127.0.0.1:1/x>".to_string(), 400, "LOAD"),
        (
            "INSERT DATA { GRAPH <sub/> { <#a> <#b> <#c> } }".to_string(),
            400,
            "container",
        ),
        (
            "INSERT DATA { GRAPH <picture.png> { <#a> <#b> <#c> } }".to_string(),
            409,
            "not RDF",
        ),
        (
            "INSERT DATA { GRAPH <x.ttl> { <#a> <#b> ".to_string(),
            400,
            "invalid SPARQL Update",
        ),
    ] {
        let r = w.update(Some(&w.alice), "data/", &update).await;
        assert_eq!(r.status, status, "{update}: {}", r.body);
        assert!(r.body.contains(needle), "{update}: {}", r.body);
    }
    assert_eq!(w.read("data/a.ttl").await.0, a2);
    assert_eq!(
        w.call(Some(&w.alice), "GET", "data/x.ttl", &[], None)
            .await
            .status,
        404
    );
    // Updates are POSTed.
    let url = w.url("data/-/sparql");
    let r = send(
        &w.node.http,
        Some(&w.alice),
        "GET",
        &url,
        &[],
        &[("update", "CLEAR ALL")],
        None,
    )
    .await;
    assert_eq!(r.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_several_documents_is_all_or_nothing_on_sqlite() {
    updates_are_all_or_nothing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_several_documents_is_all_or_nothing_on_postgres() {
    updates_are_all_or_nothing(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_a_limit_is_stopped_and_the_server_goes_on() {
    let w = World::start(
        false,
        &[
            ("CSS_SPARQL_TIMEOUT", "1s"),
            ("CSS_SPARQL_MAX_RESULTS", "20"),
        ],
    )
    .await;
    let rows: String = (0..300)
        .map(|i| format!("<#s{i}> <{EX}n> {i}.\n"))
        .collect();
    w.put("big/rows.ttl", "text/turtle", &rows).await;

    // More results than the limit: 422 naming it; with a LIMIT, fine.
    let r = w
        .select(Some(&w.alice), "big/", "SELECT * WHERE { ?s ?p ?o }")
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("CSS_SPARQL_MAX_RESULTS"), "{}", r.body);
    let r = w
        .select(
            Some(&w.alice),
            "big/",
            "SELECT * WHERE { ?s ?p ?o } LIMIT 20",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.column("s").len(), 20);
    let r = w
        .query(
            Some(&w.alice),
            "big/",
            "CONSTRUCT WHERE { ?s ?p ?o }",
            "text/turtle",
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);

    // A cross product sorted in full (300^4 rows) would compute and
    // allocate for hours: it is stopped at the limit, and the server's own
    // memory never held it (the evaluation runs in a child process).
    let peak = || support::vm_hwm(w.node._server.pid());
    let before = peak();
    let started = Instant::now();
    let heavy = "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l } ORDER BY ?c";
    let r = w.select(Some(&w.alice), "big/", heavy).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("CSS_SPARQL_TIMEOUT"), "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The server answers at once, and its memory did not grow by the query.
    let r = w.select(Some(&w.alice), "big/", "ASK { ?s ?p 299 }").await;
    assert_eq!(r.json()["boolean"], true);
    let r = w
        .call(Some(&w.alice), "GET", "big/rows.ttl", &[], None)
        .await;
    assert_eq!(r.status, 200);
    assert!(
        peak() < before + (64 << 20),
        "peak RSS {} -> {}",
        before,
        peak()
    );
    // An update past the limit changes nothing.
    let (etag, _) = w.read("big/rows.ttl").await;
    let r = w
        .update(
            Some(&w.alice),
            "big/",
            &format!("INSERT {{ GRAPH <rows.ttl> {{ ?a <{EX}m> ?d }} }} WHERE {{ ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }}"),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(w.read("big/rows.ttl").await.0, etag);
}

/// The processes the server has forked and not yet reaped.
fn children(pid: u32) -> Vec<String> {
    let mut all = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        // A thread may end between the listing and the read.
        if let Ok(list) = std::fs::read_to_string(path) {
            all.extend(list.split_whitespace().map(str::to_string));
        }
    }
    all
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not happen in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_on_a_query_stops_its_evaluation() {
    // A limit far beyond the test: only the client's leaving can stop it.
    let w = std::sync::Arc::new(World::start(false, &[("CSS_SPARQL_TIMEOUT", "10m")]).await);
    let rows: String = (0..300)
        .map(|i| format!("<#s{i}> <{EX}n> {i}.\n"))
        .collect();
    w.put("big/rows.ttl", "text/turtle", &rows).await;
    let pid = w.node._server.pid();
    assert_eq!(children(pid), Vec::<String>::new());

    let heavy = "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l } ORDER BY ?c";
    let world = w.clone();
    let client = tokio::spawn(async move { world.select(Some(&world.alice), "big/", heavy).await });
    wait_for("the evaluation's process", || !children(pid).is_empty()).await;
    // The client gives up: its connection closes.
    client.abort();
    assert!(client.await.unwrap_err().is_cancelled());
    wait_for("the end of the abandoned evaluation", || {
        children(pid).is_empty()
    })
    .await;
    // The server goes on answering.
    let r = w.select(Some(&w.alice), "big/", "ASK { ?s ?p 299 }").await;
    assert_eq!(r.json()["boolean"], true);
}
