//! HTTPS served directly (`CSS_HTTPS_CERT`, `CSS_HTTPS_KEY`): a client that
//! trusts the certificate (made by rcgen for this test) reads and writes a
//! pod over TLS; the port speaks nothing else; the command line reaches the
//! node on its internal port; and the settings refuse to start half-right.

mod support;

use std::time::{Duration, Instant};

use support::{Server, assert_one_line_error, borrowed, free_port, http_get, xpod};

struct Tls {
    dir: tempfile::TempDir,
    cert_pem: String,
}

impl Tls {
    /// A self-signed certificate for `localhost` and 127.0.0.1.
    fn new() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Tls {
            cert_pem: cert.pem(),
            dir,
        }
    }

    fn cert(&self) -> String {
        self.dir.path().join("cert.pem").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.path().join("key.pem").display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_served_over_https_and_the_command_line_uses_the_internal_port() {
    let tls = Tls::new();
    let dir = tempfile::tempdir().unwrap();
    let (port, internal) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let base = format!("https://localhost:{port}/");
    let env: Vec<(&'static str, String)> = vec![
        (
            "CSS_ROOT_FILE_PATH",
            dir.path().join("root").display().to_string(),
        ),
        ("CSS_HOST", "127.0.0.1".into()),
        ("CSS_PORT", port.to_string()),
        ("CSS_INTERNAL_PORT", internal.to_string()),
        ("CSS_BASE_URL", base.clone()),
        ("CSS_HTTPS_CERT", tls.cert()),
        ("CSS_HTTPS_KEY", tls.key()),
    ];
    let server = Server::spawn("127.0.0.1", &borrowed(&env), dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        http_get("127.0.0.1", internal, "/.cluster/health"),
        Some((200, _, _))
    ) {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = xpod(
        &borrowed(&env),
        &["pods", "create", "alice", "--public-write"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{base}alice/")),
        "{out:?}"
    );

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.cert_pem.as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let url = format!("{base}alice/hello.txt");
    let put = trusting
        .put(&url)
        .header("content-type", "text/plain")
        .body("over TLS")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let got = trusting.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(
        got.headers()["link"]
            .to_str()
            .unwrap()
            .contains(&format!("<{base}alice/hello.txt.acl>")),
        "links use the https base URL"
    );
    assert_eq!(got.text().await.unwrap(), "over TLS");

    // A client that does not trust the certificate gets no answer.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let err = untrusting.get(&url).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // The public port speaks only TLS.
    assert!(
        !matches!(
            http_get("127.0.0.1", port, "/alice/hello.txt"),
            Some((200, _, _))
        ),
        "plain HTTP on the TLS port"
    );
    // Running alone, the plain internal port listens on loopback only: the
    // node was told to listen on 127.0.0.1 anyway, so check the log says so.
    assert!(
        server.log_text().contains(&format!("127.0.0.1:{internal}")),
        "{}",
        server.log_text()
    );
    drop(server);
}

#[test]
fn https_settings_that_cannot_work_stop_the_start_with_what_to_do() {
    let tls = Tls::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root").display().to_string();
    let port = free_port("127.0.0.1").to_string();
    let internal = free_port("127.0.0.1").to_string();
    let base = format!("https://localhost:{port}/");
    let missing = dir.path().join("nope.pem").display().to_string();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let garbage = garbage.display().to_string();
    let (cert, key) = (tls.cert(), tls.key());
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("CSS_HTTPS_CERT", &cert)],
            "CSS_HTTPS_CERT and CSS_HTTPS_KEY go together",
        ),
        (
            vec![
                ("CSS_HTTPS_CERT", &cert),
                ("CSS_HTTPS_KEY", &key),
                ("CSS_INTERNAL_PORT", &internal),
                ("CSS_BASE_URL", "http://localhost/"),
            ],
            "set CSS_BASE_URL to its https:// form",
        ),
        (
            vec![
                ("CSS_HTTPS_CERT", &cert),
                ("CSS_HTTPS_KEY", &key),
                ("CSS_BASE_URL", &base),
            ],
            "also set CSS_INTERNAL_PORT",
        ),
        (
            vec![
                ("CSS_HTTPS_CERT", &missing),
                ("CSS_HTTPS_KEY", &key),
                ("CSS_INTERNAL_PORT", &internal),
                ("CSS_BASE_URL", &base),
            ],
            "CSS_HTTPS_CERT: cannot read a PEM certificate chain",
        ),
        (
            vec![
                ("CSS_HTTPS_CERT", &garbage),
                ("CSS_HTTPS_KEY", &key),
                ("CSS_INTERNAL_PORT", &internal),
                ("CSS_BASE_URL", &base),
            ],
            "holds no certificate",
        ),
        (
            vec![
                ("CSS_HTTPS_CERT", &cert),
                ("CSS_HTTPS_KEY", &cert),
                ("CSS_INTERNAL_PORT", &internal),
                ("CSS_BASE_URL", &base),
            ],
            "CSS_HTTPS_KEY: cannot read a PEM private key",
        ),
    ];
    for (extra, needle) in cases {
        let mut env = vec![
            ("CSS_ROOT_FILE_PATH", root.as_str()),
            ("CSS_HOST", "127.0.0.1"),
            ("CSS_PORT", port.as_str()),
        ];
        env.extend(extra);
        let out = xpod(&env, &["serve"]);
        let code = if needle.starts_with("CSS_HTTPS_CERT:")
            || needle.starts_with("CSS_HTTPS_KEY:")
            || needle == "holds no certificate"
        {
            1
        } else {
            2
        };
        assert_one_line_error(&out, code, needle);
    }
}

/// Failed logins from `X-Forwarded-For: <client>` through a node, until
/// the 21st: what the per-address limit says about who the client is.
async fn twenty_first_login(base: &str, trusted: bool) -> (u16, u16, u16) {
    let http = reqwest::Client::new();
    let login = format!("{base}.account/login/password/");
    let attempt = |email: String, client: &'static str| {
        http.post(&login)
            .header("x-forwarded-for", client)
            .json(&serde_json::json!({"email": email, "password": "wrong"}))
            .send()
    };
    for i in 0..20 {
        let status = attempt(format!("nobody{}@example.org", i / 4), "203.0.113.1")
            .await
            .unwrap()
            .status();
        assert_eq!(status, 403, "attempt {i} (trusted proxy: {trusted})");
    }
    let same = attempt("late@example.org".into(), "203.0.113.1")
        .await
        .unwrap();
    let other = attempt("late2@example.org".into(), "203.0.113.2")
        .await
        .unwrap();
    // A proxy's scheme that is not the server's is refused when believed.
    let proto = http
        .get(format!("{base}.account/"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    (
        same.status().as_u16(),
        other.status().as_u16(),
        proto.status().as_u16(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    for trusted in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port("127.0.0.1");
        let mut env: Vec<(&'static str, String)> = vec![
            (
                "CSS_ROOT_FILE_PATH",
                dir.path().join("root").display().to_string(),
            ),
            ("CSS_PORT", port.to_string()),
        ];
        if trusted {
            // The test's client stands for the proxy.
            env.push(("CSS_TRUSTED_PROXIES", "127.0.0.0/8, ::1".into()));
        }
        let _server = Server::start("127.0.0.1", &borrowed(&env), dir.path());
        let base = format!("http://127.0.0.1:{port}/");
        let got = twenty_first_login(&base, trusted).await;
        if trusted {
            // Each forwarded client has its own limit.
            assert_eq!(got, (429, 403, 421));
        } else {
            // A client cannot pick its address (or scheme) by saying so.
            assert_eq!(got, (429, 429, 200));
        }
    }
}
