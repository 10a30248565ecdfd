//! The container-walking migrator against a real Community Solid Server 7.2:
//! a pod goes out of xpod into CSS (`xpod pods export`) and comes back as
//! another pod (`xpod pods import`), and an export cut short by the target
//! dying resumes. CSS comes from `scripts/css` (`XPOD_CSS_DIR`).

mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::css::{LOOPBACK_ONLY, css_dir};
use support::{Server, create_pod, free_port, http_get, xpod};
use xpod::rdf::parse;
use xpod::walk::{Endpoint, Rebase, rebase};

/// A Community Solid Server on 127.0.0.1, with public read and write
/// (`file-root.json`: the root container's ACL lets everyone do everything),
/// its data in `data`; killed on drop.
struct Css {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Css {
    fn start(dir: &Path, port: u16) -> Css {
        let data = dir.join("css-data");
        std::fs::create_dir_all(&data).unwrap();
        let mut css = Css {
            child: None,
            port,
            data,
            log: dir.join(format!("css-{port}.log")),
        };
        css.spawn();
        css
    }

    fn spawn(&mut self) {
        let main = css_dir().join("node_modules/@solid/community-server/bin/server.js");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // A clean environment: CSS reads every CSS_* variable as an option.
        let child = Command::new("node")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .env("NODE_ENV", "production")
            .arg("--require")
            .arg(LOOPBACK_ONLY)
            .arg(main)
            .args(["-c", "@css:config/file-root.json", "-f"])
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-b", &self.base(), "-l", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot run `node` (Community Solid Server needs Node.js 18 or later; scripts/css installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some((200, _, _)) = http_get("127.0.0.1", self.port, "/") {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "Community Solid Server did not answer on port {} ({exited:?}); log:\n{}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn base(&self) -> String {
        format!("http://localhost:{}/", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Css {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An xpod node on 127.0.0.1 with its canonical URL on `localhost`.
struct Node {
    _server: Server,
    root: PathBuf,
    port: u16,
}

impl Node {
    fn start(dir: &Path) -> Node {
        let root = dir.join("xpod-root");
        let port = free_port("127.0.0.1");
        let env = Self::env_of(&root, port);
        let server = Server::start("127.0.0.1", &support::borrowed(&env), dir);
        Node {
            _server: server,
            root,
            port,
        }
    }

    fn env_of(root: &Path, port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("CSS_PORT", port.to_string()),
            ("CSS_BASE_URL", format!("http://localhost:{port}/")),
            ("CSS_ROOT_FILE_PATH", root.to_str().unwrap().to_string()),
            ("CSS_INTERNAL_IP", "127.0.0.1".to_string()),
            ("CSS_HOST", "127.0.0.1".to_string()),
        ]
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        Self::env_of(&self.root, self.port)
    }

    fn pod(&self, name: &str) -> String {
        format!("http://localhost:{}/{name}/", self.port)
    }

    /// Runs the `xpod` CLI against this node.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let env = self.env();
        xpod(&support::borrowed(&env), args)
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(support::XPOD);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(self.env())
            .args(args)
            .stdin(Stdio::null());
        c
    }
}

/// A client that reaches `localhost` at 127.0.0.1, whatever the resolver says.
fn client() -> reqwest::Client {
    xpod::walk::client_builder()
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .unwrap()
}

fn endpoint(base: &str) -> Endpoint {
    Endpoint {
        base: base.to_string(),
        client: client(),
    }
}

async fn put(url: &str, content_type: &str, body: Vec<u8>) {
    let resp = client()
        .put(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "PUT {url}: {} {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
}

async fn get(url: &str) -> (String, Vec<u8>) {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (ct, resp.bytes().await.unwrap().to_vec())
}

/// The graph at `url`, in whatever RDF syntax the server answers.
async fn graph(url: &str) -> Vec<oxigraph::model::Triple> {
    let (ct, body) = get(url).await;
    let syntax = xpod::rdf::input_syntax(&ct).unwrap_or_else(|| panic!("{url} is {ct}, not RDF"));
    parse(&body, syntax, url).unwrap()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

fn assert_ok(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The documents of the test pod (other than auxiliary resources), as
/// (path, content type, body) with `{base}` standing for the pod's URL.
fn turtle_card() -> String {
    "@prefix foaf: <http://xmlns.com/foaf/0.1/>.\n\
     <#me> a foaf:Person; foaf:name \"Alice\";\n\
       foaf:knows <{base}notes/deep/deeper/data.jsonld#it>, [ foaf:name \"Bob\"; foaf:homepage <https://bob.example/> ];\n\
       <http://www.w3.org/ns/pim/space#storage> <{base}>;\n\
       foaf:img <../media/random.bin>.\n"
        .to_string()
}

fn json_ld() -> String {
    r#"{"@context": {"name": "http://schema.org/name", "link": {"@id": "http://schema.org/url", "@type": "@id"}},
        "@id": "{base}notes/deep/deeper/data.jsonld#it",
        "name": "a thing that links {base}",
        "link": "{base}profile/card#me",
        "http://schema.org/about": {"name": "a blank node"}}"#
        .to_string()
}

fn acl(subject: &str, default: bool) -> String {
    let default = if default {
        "acl:default <{base}>;".to_string()
    } else {
        String::new()
    };
    format!(
        "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
         <#public> a acl:Authorization; acl:agentClass <http://xmlns.com/foaf/0.1/Agent>;\n\
           acl:accessTo <{subject}>; {default}\n\
           acl:mode acl:Read, acl:Write, acl:Control.\n\
         <#owner> a acl:Authorization; acl:agent <{{base}}profile/card#me>;\n\
           acl:accessTo <{subject}>; acl:mode acl:Read, acl:Write, acl:Control.\n"
    )
}

fn fill(template: &str, base: &str) -> Vec<u8> {
    template.replace("{base}", base).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_goes_to_css_and_comes_back_the_same() {
    let dir = tempfile::Builder::new()
        .prefix("xpod-css-roundtrip-")
        .tempdir()
        .unwrap();
    let css = Css::start(dir.path(), free_port("127.0.0.1"));
    let node = Node::start(dir.path());
    let env = node.env();
    create_pod(
        &node.root,
        node.port,
        "alice",
        &support::borrowed(&env)[1..],
    );
    let alice = node.pod("alice");

    // A tree with nested and empty containers, RDF in two syntaxes, bytes,
    // text, a container description and ACLs pointing at the pod.
    let binary = random_bytes(300 * 1024 + 7);
    put(
        &format!("{alice}profile/card"),
        "text/turtle",
        fill(&turtle_card(), &alice),
    )
    .await;
    put(
        &format!("{alice}notes/deep/deeper/data.jsonld"),
        "application/ld+json",
        fill(&json_ld(), &alice),
    )
    .await;
    put(
        &format!("{alice}media/random.bin"),
        "application/octet-stream",
        binary.clone(),
    )
    .await;
    put(
        &format!("{alice}notes/hello.txt"),
        "text/plain",
        b"hello, CSS\n".to_vec(),
    )
    .await;
    put(&format!("{alice}empty/"), "text/turtle", Vec::new()).await;
    put(
        &format!("{alice}notes/deep/empty-too/"),
        "text/turtle",
        Vec::new(),
    )
    .await;
    put(
        &format!("{alice}notes/.meta"),
        "text/turtle",
        b"<./> <http://purl.org/dc/terms/title> \"Notes\".".to_vec(),
    )
    .await;
    put(
        &format!("{alice}.acl"),
        "text/turtle",
        fill(&acl("{base}", true), &alice),
    )
    .await;
    put(
        &format!("{alice}notes/hello.txt.acl"),
        "text/turtle",
        fill(&acl("{base}notes/hello.txt", false), &alice),
    )
    .await;

    // Out to CSS.
    let copy = format!("{}alice-copy/", css.base());
    let state = dir.path().join("export.state");
    let out = node.cli(&[
        "pods",
        "export",
        "alice",
        "--to",
        &copy,
        "--state",
        state.to_str().unwrap(),
    ]);
    let stdout = assert_ok(&out, "xpod pods export");
    assert!(
        stdout.contains("4 document(s) (4 copied, 0 unchanged), 3 auxiliary resource(s)"),
        "{stdout}"
    );

    // On CSS, every IRI under the pod now points into the copy.
    let card = graph(&format!("{copy}profile/card")).await;
    let text: String = card.iter().map(|t| format!("{t}\n")).collect();
    assert!(
        !text.contains(&format!("<{alice}")),
        "IRIs of the old base left on CSS:\n{text}"
    );
    assert!(
        text.contains(&format!("<{copy}notes/deep/deeper/data.jsonld#it>")),
        "{text}"
    );
    let css_acl = graph(&format!("{copy}.acl")).await;
    let acl_text: String = css_acl.iter().map(|t| format!("{t}\n")).collect();
    assert!(
        acl_text.contains(&format!(
            "<http://www.w3.org/ns/auth/acl#accessTo> <{copy}>"
        )) && acl_text.contains(&format!("<http://www.w3.org/ns/auth/acl#default> <{copy}>")),
        "{acl_text}"
    );
    let (_, css_bytes) = get(&format!("{copy}media/random.bin")).await;
    assert!(css_bytes == binary, "the binary changed on CSS");

    // And back, as another pod.
    let out = node.cli(&[
        "pods",
        "import",
        &copy,
        "--as",
        "bob",
        "--public-write",
        "--state",
        dir.path().join("import.state").to_str().unwrap(),
    ]);
    assert_ok(&out, "xpod pods import");
    let bob = node.pod("bob");

    // The same container tree.
    let bar = indicatif::ProgressBar::hidden();
    let a = xpod::walk::walk(&endpoint(&alice), &bar).await.unwrap();
    let b = xpod::walk::walk(&endpoint(&bob), &bar).await.unwrap();
    assert_eq!(a.containers, b.containers);
    assert_eq!(a.documents, b.documents);
    assert_eq!(a.empty, b.empty);
    let expected: BTreeSet<String> = [
        "",
        "empty/",
        "media/",
        "notes/",
        "notes/deep/",
        "notes/deep/deeper/",
        "notes/deep/empty-too/",
        "profile/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(b.containers, expected);
    let docs: BTreeSet<String> = [
        "media/random.bin",
        "notes/deep/deeper/data.jsonld",
        "notes/hello.txt",
        "profile/card",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(b.documents, docs);

    // Non-RDF: the same bytes and media type.
    let (ct, bytes) = get(&format!("{bob}media/random.bin")).await;
    assert!(bytes == binary, "the binary came back different");
    assert_eq!(ct, "application/octet-stream");
    let (ct, bytes) = get(&format!("{bob}notes/hello.txt")).await;
    assert_eq!(bytes, b"hello, CSS\n");
    assert!(ct.starts_with("text/plain"), "{ct}");

    // RDF: isomorphic graphs once alice's IRIs are bob's; ACLs rewritten.
    let moved = Rebase::new(&alice, &bob);
    for path in [
        "profile/card",
        "notes/deep/deeper/data.jsonld",
        ".acl",
        "notes/hello.txt.acl",
        "notes/.meta",
    ] {
        let original = moved.triples(graph(&format!("{alice}{path}")).await);
        let back = graph(&format!("{bob}{path}")).await;
        assert!(
            rebase::difference(&original, &back).is_none(),
            "{path} changed on the round trip: {:?}",
            rebase::difference(&original, &back)
        );
        let text: String = back.iter().map(|t| format!("{t}\n")).collect();
        assert!(
            !text.contains(&format!("<{alice}")) && !text.contains(&format!("<{copy}")),
            "{path} still has an IRI under an old base (literals stay as they are):\n{text}"
        );
    }
    let (ct, _) = get(&format!("{bob}notes/deep/deeper/data.jsonld")).await;
    assert!(ct.starts_with("application/ld+json"), "{ct}");
    let back_acl: String = graph(&format!("{bob}.acl"))
        .await
        .iter()
        .map(|t| format!("{t}\n"))
        .collect();
    assert!(
        back_acl.contains(&format!("<http://www.w3.org/ns/auth/acl#accessTo> <{bob}>"))
            && back_acl.contains(&format!("<http://www.w3.org/ns/auth/acl#default> <{bob}>")),
        "{back_acl}"
    );

    // A rerun has nothing to copy, and the verification still passes.
    let out = node.cli(&[
        "pods",
        "export",
        "alice",
        "--to",
        &copy,
        "--state",
        state.to_str().unwrap(),
    ]);
    let stdout = assert_ok(&out, "the second export");
    assert!(stdout.contains("(0 copied, 4 unchanged)"), "{stdout}");

    // A resource changed on the target is copied again; one the source
    // does not have is a difference the verification names.
    put(
        &format!("{copy}notes/hello.txt"),
        "text/plain",
        b"changed".to_vec(),
    )
    .await;
    put(
        &format!("{copy}notes/extra.txt"),
        "text/plain",
        b"extra".to_vec(),
    )
    .await;
    let out = node.cli(&[
        "pods",
        "export",
        "alice",
        "--to",
        &copy,
        "--state",
        state.to_str().unwrap(),
    ]);
    support::assert_one_line_error(&out, 1, "the copy differs from its source in 1 place(s)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("notes/extra.txt exists only on the target"),
        "{stderr}"
    );
    let (_, bytes) = get(&format!("{copy}notes/hello.txt")).await;
    assert_eq!(
        bytes, b"hello, CSS\n",
        "the changed resource was not copied again"
    );

    // Errors that say what is wrong: a container only its owner may use,
    // a pod that does not exist, a URL that is not a container's.
    let locked = format!("{}locked/", css.base());
    put(&locked, "text/turtle", Vec::new()).await;
    put(
        &format!("{locked}.acl"),
        "text/turtle",
        b"@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
          <#owner> a acl:Authorization; acl:agent <https://someone.example/profile#me>;\n\
          acl:accessTo <./>; acl:default <./>; acl:mode acl:Read, acl:Write, acl:Control."
            .to_vec(),
    )
    .await;
    let locked_state = dir.path().join("locked.state");
    let out = node.cli(&[
        "pods",
        "export",
        "alice",
        "--to",
        &locked,
        "--state",
        locked_state.to_str().unwrap(),
    ]);
    support::assert_one_line_error(&out, 1, "the copier does not log in");
    let out = node.cli(&["pods", "export", "nobody", "--to", &copy]);
    support::assert_one_line_error(&out, 1, "there is no pod nobody");
    let out = node.cli(&[
        "pods",
        "export",
        "alice",
        "--to",
        "http://localhost:9/no-slash",
    ]);
    support::assert_one_line_error(&out, 1, "is not a container URL");
    drop(node);
    drop(css);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cut_short_by_the_target_dying_resumes() {
    let dir = tempfile::Builder::new()
        .prefix("xpod-css-resume-")
        .tempdir()
        .unwrap();
    let mut css = Css::start(dir.path(), free_port("127.0.0.1"));
    let node = Node::start(dir.path());
    let env = node.env();
    create_pod(&node.root, node.port, "many", &support::borrowed(&env)[1..]);
    let many = node.pod("many");
    const N: usize = 240;
    use futures::StreamExt;
    futures::stream::iter(0..N)
        .map(|i| {
            let url = format!("{many}c{}/r{i}.txt", i % 6);
            async move { put(&url, "text/plain", format!("resource {i}\n").into_bytes()).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;

    let target = format!("{}many/", css.base());
    let state = dir.path().join("resume.state");
    let args = [
        "pods",
        "export",
        "many",
        "--to",
        &target,
        "--state",
        state.to_str().unwrap(),
    ];
    let mut export = node
        .cli_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the target once some resources are recorded as copied.
    let deadline = Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        let lines = std::fs::read_to_string(&state)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines > 20 {
            break lines - 1;
        }
        assert!(
            Instant::now() < deadline,
            "the export recorded nothing in 60 s"
        );
        assert!(
            export.try_wait().unwrap().is_none(),
            "the export ended before the target died"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    css.kill();
    let out = export.wait_with_output().unwrap();
    support::assert_one_line_error(&out, 1, "cannot reach");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rerun to resume"), "{stderr}");
    let after = std::fs::read_to_string(&state).unwrap().lines().count() - 1;
    assert!(
        recorded <= after && after < N,
        "{after} of {N} recorded when the target died"
    );

    // The target comes back; the same command carries on where it stopped.
    css.spawn();
    let out = node.cli(&args);
    let stdout = assert_ok(&out, "the resumed export");
    let unchanged: usize = stdout
        .split(" copied, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no count of unchanged resources in {stdout}"));
    assert!(
        unchanged >= recorded,
        "only {unchanged} skipped of {recorded} recorded: {stdout}"
    );
    assert!(stdout.contains(&format!("{N} document(s)")), "{stdout}");
    for i in [0, N / 2, N - 1] {
        let (_, body) = get(&format!("{target}c{}/r{i}.txt", i % 6)).await;
        assert_eq!(body, format!("resource {i}\n").into_bytes());
    }
}
