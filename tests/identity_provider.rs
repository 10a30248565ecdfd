//! xpod's own identity provider: the CSS-compatible `/.account/` sequence
//! (controls → account → password → pod → client credentials), rate-limited
//! password logins, DPoP-bound tokens from the client-credentials grant that
//! any node accepts, key rotation that keeps live tokens valid, and Inrupt's
//! Solid client library (`scripts/solid-client`) logging in against xpod.

mod support;

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use support::account::{
    Account, access_token, account_sequence, more_credentials, send, token_of, whoami,
};
use support::cluster::{Cluster, served_by, token as admin_token};
use support::dpop::DpopKey;
use support::webid::WebIdServer;
use support::{Server, free_port, xpod};

/// A single node on 127.0.0.1. No outbound network is allowed: its own
/// WebIDs and keys are read locally.
struct Node {
    _server: Server,
    _dir: tempfile::TempDir,
    base: String,
    root: PathBuf,
    port: u16,
}

fn node() -> Node {
    node_with(&[])
}

fn node_with(extra: &[(&'static str, &'static str)]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_port("127.0.0.1");
    let base = format!("http://127.0.0.1:{port}/");
    let port_text = port.to_string();
    let mut env = vec![
        ("CSS_ROOT_FILE_PATH", root.to_str().unwrap()),
        ("CSS_BASE_URL", base.as_str()),
        ("CSS_PORT", port_text.as_str()),
    ];
    env.extend_from_slice(extra);
    let server = Server::start("127.0.0.1", &env, dir.path());
    Node {
        _server: server,
        _dir: dir,
        base,
        root,
        port,
    }
}

fn kid(token: &str) -> String {
    let header: Value =
        serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_css_account_sequence_gives_a_webid_and_working_client_credentials() {
    let node = tokio::task::spawn_blocking(node).await.unwrap();
    let http = reqwest::Client::new();
    let acct = account_sequence(&http, &node.base, "alice", "Alice@Example.org").await;

    // The profile names this server as the WebID's issuer.
    let card = http
        .get(acct.webid.trim_end_matches("#me"))
        .header("accept", "text/turtle")
        .send()
        .await
        .unwrap();
    assert_eq!(card.status(), 200);
    let text = card.text().await.unwrap();
    assert!(
        text.contains(&format!("solid:oidcIssuer <{}>", node.base)),
        "{text}"
    );

    // Client credentials give a DPoP-bound token the resource server accepts.
    let key = DpopKey::new();
    let token = token_of(access_token(&http, &node.base, &acct, &key).await).await;
    let (status, me) = whoami(&http, &node.base, &token, &key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["webId"], acct.webid.as_str());
    assert_eq!(me["clientId"], acct.client_id.as_str());
    assert_eq!(me["issuer"], node.base.as_str());
    let note = format!("{}notes/hello.txt", acct.pod);
    let resp = http
        .put(&note)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("PUT", &note, Some(&token)))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // A page stored in a pod runs sandboxed: it cannot use the account
    // API with a visitor's session, and the account API answers no
    // credentialed cross-origin request.
    let page = format!("{}page.html", acct.pod);
    // The new pod is its owner's: nobody else may write to it.
    let resp = http
        .put(&page)
        .header("content-type", "text/html")
        .body("<script>fetch('/.account/')</script>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .put(&page)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("PUT", &page, Some(&token)))
        .header("content-type", "text/html")
        .body("<script>fetch('/.account/')</script>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = http
        .get(&page)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("GET", &page, Some(&token)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("sandbox"), "{csp}");
    // So is every other type a browser might run scripts in.
    let xml = format!("{}page.xml", acct.pod);
    let resp = http
        .put(&xml)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("PUT", &xml, Some(&token)))
        .header("content-type", "application/vnd.example+xml")
        .body("<html xmlns='http://www.w3.org/1999/xhtml'><script>1</script></html>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = http
        .get(&xml)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("GET", &xml, Some(&token)))
        .send()
        .await
        .unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("sandbox"), "{csp}");
    let resp = http
        .get(format!("{}.account/", node.base))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(
        !resp
            .headers()
            .contains_key("access-control-allow-credentials")
    );

    // Listings name what was made.
    let auth = format!("CSS-Account-Token {}", acct.token);
    let (_, pods) = send(
        http.get(acct.controls["account"]["pod"].as_str().unwrap())
            .header("authorization", &auth),
    )
    .await;
    assert!(pods["pods"][&acct.pod].is_string(), "{pods}");
    let (_, clients) = send(
        http.get(
            acct.controls["account"]["clientCredentials"]
                .as_str()
                .unwrap(),
        )
        .header("authorization", &auth),
    )
    .await;
    assert!(
        clients["clientCredentials"][&acct.client_id].is_string(),
        "{clients}"
    );
    let (_, webids) = send(
        http.get(acct.controls["account"]["webId"].as_str().unwrap())
            .header("authorization", &auth),
    )
    .await;
    assert!(webids["webIdLinks"][&acct.webid].is_string(), "{webids}");

    // Refusals: a wrong secret, no proof, a replayed proof, another
    // account's pages, a taken pod name, a duplicate email.
    let wrong = Account {
        secret: "0".repeat(128),
        ..Clone::clone(&acct)
    };
    let resp = access_token(&http, &node.base, &wrong, &key).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let endpoint = format!("{}.oidc/token", node.base);
    let resp = http
        .post(&endpoint)
        .basic_auth(&acct.client_id, Some(&acct.secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );
    let proof = key.proof("POST", &endpoint, None);
    for expected in [200, 400] {
        let resp = http
            .post(&endpoint)
            .basic_auth(&acct.client_id, Some(&acct.secret))
            .header("dpop", &proof)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            expected,
            "the same token-endpoint proof twice"
        );
    }
    let other = account_sequence(&http, &node.base, "bob", "bob@example.org").await;
    let (status, _) = send(
        http.get(acct.controls["account"]["pod"].as_str().unwrap())
            .header(
                "authorization",
                format!("CSS-Account-Token {}", other.token),
            ),
    )
    .await;
    assert_eq!(status, 403);
    let (status, taken) = send(
        http.post(other.controls["account"]["pod"].as_str().unwrap())
            .header(
                "authorization",
                format!("CSS-Account-Token {}", other.token),
            )
            .json(&json!({"name": "alice"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        taken["message"].as_str().unwrap().contains("already"),
        "{taken}"
    );
    let (status, dup) = send(
        http.post(other.controls["password"]["create"].as_str().unwrap())
            .header(
                "authorization",
                format!("CSS-Account-Token {}", other.token),
            )
            .json(&json!({"email": "alice@example.org", "password": "x"})),
    )
    .await;
    assert_eq!(status, 400, "{dup}");

    // Password login (the email is case-insensitive), then logout ends
    // that session.
    let login = acct.controls["password"]["login"].as_str().unwrap();
    let (status, session) = send(
        http.post(login)
            .json(&json!({"email": "alice@example.ORG", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let fresh = format!(
        "CSS-Account-Token {}",
        session["authorization"].as_str().unwrap()
    );
    let (status, index) = send(
        http.get(format!("{}.account/", node.base))
            .header("authorization", &fresh),
    )
    .await;
    assert_eq!(status, 200);
    let logout = index["controls"]["account"]["logout"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = send(http.post(&logout).header("authorization", &fresh)).await;
    assert_eq!(status, 200);
    let (status, _) = send(
        http.get(acct.controls["account"]["pod"].as_str().unwrap())
            .header("authorization", &fresh),
    )
    .await;
    assert_eq!(status, 401, "a logged-out session is refused");
}

#[tokio::test]
async fn wrong_passwords_are_rate_limited_per_account_and_per_address() {
    let node = tokio::task::spawn_blocking(node).await.unwrap();
    let http = reqwest::Client::new();
    let login = format!("{}.account/login/password/", node.base);
    let mut emails = Vec::new();
    for i in 0..5 {
        let email = format!("user{i}@example.org");
        account_sequence(&http, &node.base, &format!("user{i}"), &email).await;
        emails.push(email);
    }
    let attempt = |email: &str, password: &str| {
        http.post(&login)
            .json(&json!({"email": email, "password": password}))
    };
    // Five wrong passwords for one account, then even the right one waits.
    for _ in 0..5 {
        let (status, body) = send(attempt(&emails[0], "wrong")).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["message"], "Invalid email/password combination.");
    }
    let resp = attempt(&emails[0], "correct horse battery")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // Other accounts are not affected...
    let (status, _) = send(attempt(&emails[1], "correct horse battery")).await;
    assert_eq!(status, 200);
    // ...until this address has made 20 failed attempts (a refused one
    // counts too).
    let mut statuses = Vec::new();
    for email in &emails[1..4] {
        for _ in 0..5 {
            statuses.push(send(attempt(email, "wrong")).await.0);
        }
    }
    assert!(statuses[..13].iter().all(|s| *s == 403), "{statuses:?}");
    let (status, _) = send(attempt(&emails[4], "correct horse battery")).await;
    assert_eq!(status, 429, "the address is over its limit");
}

/// Where `scripts/solid-client` installed Inrupt's client (fails, never
/// skips, without it).
fn solid_client() -> PathBuf {
    let dir = match std::env::var("XPOD_SOLID_CLIENT_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/xpod-ci/solid-client-5.0.0"),
    };
    assert!(
        dir.join("fetch-as.mjs").exists(),
        "Inrupt's Solid client is not installed in {}: run scripts/solid-client and set XPOD_SOLID_CLIENT_DIR to what it prints, or run scripts/test",
        dir.display()
    );
    dir
}

#[tokio::test]
async fn tokens_from_one_node_work_at_another_and_survive_a_key_rotation() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start_layout(&[0, 0], &[]))
        .await
        .unwrap();
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let base = cluster.url("");
    let acct = account_sequence(&a.client, &base, "alice", "alice@example.org").await;

    // A token issued by node A works at node B, for the pod on node A.
    let key = DpopKey::new();
    let old = token_of(access_token(&a.client, &base, &acct, &key).await).await;
    let (status, me) = whoami(&b.client, &base, &old, &key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["webId"], acct.webid.as_str());
    let card = format!("{}profile/card", acct.pod);
    let resp = b
        .client
        .get(&card)
        .header("authorization", format!("DPoP {old}"))
        .header("dpop", key.proof("GET", &card, Some(&old)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        served_by(&resp),
        a.id,
        "node B forwarded to the pod's owner"
    );

    // Rotate on node B: new tokens (from A) carry the new key, and the old
    // token still verifies on both nodes.
    let (status, rotated) = send(
        b.client
            .post(cluster.url(".cluster/idp/rotate-keys"))
            .bearer_auth(admin_token(b)),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    // Node A holds its signing key for up to 10 s; it then signs with the
    // new one (and until then its tokens carry the old, still valid, key).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let new = loop {
        let token = token_of(access_token(&a.client, &base, &acct, &key).await).await;
        if kid(&token) == rotated["kid"].as_str().unwrap() {
            break token;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node A never signed with the new key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_ne!(kid(&new), kid(&old));
    for (node, token) in [(a, &old), (b, &old), (a, &new), (b, &new)] {
        let (status, me) = whoami(&node.client, &base, token, &key).await;
        assert_eq!(status, 200, "{me}");
    }
    let (_, jwks) = send(a.client.get(cluster.url(".oidc/jwks"))).await;
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "both keys are published: {jwks}"
    );
    assert!(
        jwks.to_string().find("\"d\"").is_none(),
        "no private key is published"
    );

    // Inrupt's client library logs in with the client credentials at node
    // A and reads the WebID's profile through node B.
    let client = solid_client();
    let issuer = base.clone();
    let (id, secret, card_url) = (acct.client_id.clone(), acct.secret.clone(), card.clone());
    let resolve = format!("pods.test:{}:{}", cluster.port, b.server.host);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(client.join("fetch-as.mjs"))
            .args([
                "--issuer",
                &issuer,
                "--client-id",
                &id,
                "--client-secret",
                &secret,
            ])
            .args(["--resolve", &resolve, &card_url])
            .env("XPOD_SOLID_CLIENT_DIR", &client)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["webId"], acct.webid.as_str());
    assert_eq!(result["status"], 200, "{result}");
    assert!(result["body"].as_str().unwrap().contains("oidcIssuer"));
    assert_eq!(result["headers"]["x-xpod-served-by"], a.id.as_str());
}

#[tokio::test]
async fn an_operator_creates_a_pod_for_an_account_by_its_email() {
    let node = tokio::task::spawn_blocking(node).await.unwrap();
    let http = reqwest::Client::new();
    let acct = account_sequence(&http, &node.base, "dave", "dave@example.org").await;
    let env = [
        (
            "CSS_ROOT_FILE_PATH",
            node.root.to_str().unwrap().to_string(),
        ),
        ("CSS_PORT", node.port.to_string()),
        ("CSS_HOST", "127.0.0.1".to_string()),
    ];
    let run = |args: &'static [&'static str]| {
        let env = env.clone();
        move || xpod(&support::borrowed(&env), args)
    };
    let out = tokio::task::spawn_blocking(run(&[
        "pods",
        "create",
        "dave-photos",
        "--owner",
        "Dave@Example.org",
    ]))
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let webid = format!("{}dave-photos/profile/card#me", node.base);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&webid));
    // The account lists the pod and the WebID, and the WebID logs in.
    let auth = format!("CSS-Account-Token {}", acct.token);
    let (_, pods) = send(
        http.get(acct.controls["account"]["pod"].as_str().unwrap())
            .header("authorization", &auth),
    )
    .await;
    assert!(
        pods["pods"][format!("{}dave-photos/", node.base)].is_string(),
        "{pods}"
    );
    let (photos, _) = more_credentials(&http, &acct, "photos", &webid).await;
    let key = DpopKey::new();
    let token = token_of(access_token(&http, &node.base, &photos, &key).await).await;
    let (status, me) = whoami(&http, &node.base, &token, &key).await;
    assert_eq!(status, 200);
    assert_eq!(me["webId"], webid.as_str());
    // An e-mail without an account is refused, and nothing is created.
    let out = tokio::task::spawn_blocking(run(&[
        "pods",
        "create",
        "nobody",
        "--owner",
        "nobody@example.org",
    ]))
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no account has the e-mail nobody@example.org")
    );
    let resp = http
        .get(format!("{}nobody/", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn an_outside_webid_is_linked_once_proven_and_credentials_can_be_revoked() {
    let node = tokio::task::spawn_blocking(|| {
        node_with(&[("CSS_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")])
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let acct = account_sequence(&http, &node.base, "erin", "erin@example.org").await;
    let auth = format!("CSS-Account-Token {}", acct.token);
    let link = acct.controls["account"]["webId"].as_str().unwrap();
    let doc = WebIdServer::start().await;
    doc.add("<#me> a <http://xmlns.com/foaf/0.1/Person> .");
    let body = json!({"webId": doc.webid});
    // First a challenge, the same one again while it is not published...
    let (status, first) = send(http.post(link).header("authorization", &auth).json(&body)).await;
    assert_eq!(status, 400, "{first}");
    let quad = first["details"]["quad"].as_str().unwrap().to_string();
    assert!(quad.contains("oidcIssuerRegistrationToken"), "{first}");
    let (status, again) = send(http.post(link).header("authorization", &auth).json(&body)).await;
    assert_eq!(status, 400);
    assert_eq!(again["details"]["quad"], quad.as_str());
    // ...then the link, once the document holds the triple.
    doc.add(&quad);
    let (status, linked) = send(http.post(link).header("authorization", &auth).json(&body)).await;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["oidcIssuer"], node.base.as_str());
    doc.add(&format!(
        "<#me> <http://www.w3.org/ns/solid/terms#oidcIssuer> <{}> .",
        node.base
    ));
    let (outside, cc) = more_credentials(&http, &acct, "outside", &doc.webid).await;
    let key = DpopKey::new();
    let token = token_of(access_token(&http, &node.base, &outside, &key).await).await;
    let (status, me) = whoami(&http, &node.base, &token, &key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["webId"], doc.webid.as_str());

    // Revoked credentials no longer get tokens.
    let resource = cc["resource"].as_str().unwrap();
    let resp = http
        .delete(resource)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = access_token(&http, &node.base, &outside, &key).await;
    assert_eq!(resp.status(), 401);
    let resp = http
        .delete(resource)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // The last password login cannot be removed.
    let (_, logins) = send(
        http.get(acct.controls["password"]["create"].as_str().unwrap())
            .header("authorization", &auth),
    )
    .await;
    let login = logins["passwordLogins"]["erin@example.org"]
        .as_str()
        .unwrap();
    let (status, refusal) = send(http.delete(login).header("authorization", &auth)).await;
    assert_eq!(status, 400);
    assert_eq!(
        refusal["message"],
        "An account needs at least 1 login method."
    );
    doc.stop().await;
}

/// A Solid-OIDC Client ID Document served by the test on 127.0.0.1, for an
/// app whose redirect URL is never fetched (the test hands the redirect to
/// the library). Returns the client id and the redirect URL.
async fn client_id_document() -> (String, String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client_id = format!("http://127.0.0.1:{port}/app/id.jsonld");
    let redirect = format!("http://127.0.0.1:{port}/app/callback");
    let doc = json!({
        "@context": ["https://www.w3.org/ns/solid/oidc-context.jsonld"],
        "client_id": client_id,
        "client_name": "xpod test app",
        "redirect_uris": [redirect],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "openid offline_access webid",
    })
    .to_string();
    let app = axum::Router::new().route(
        "/app/id.jsonld",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { ([("content-type", "application/ld+json")], doc) }
        }),
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (client_id, redirect, task)
}

/// Runs `login-as.mjs` (Inrupt's library as a browser app, the script
/// playing the user) and returns what it printed.
async fn login_as(args: Vec<String>) -> Value {
    let client = solid_client();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(client.join("login-as.mjs"))
            .args(&args)
            .env("XPOD_SOLID_CLIENT_DIR", &client)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn inrupts_client_logs_in_as_a_browser_app_and_refreshes() {
    let node = tokio::task::spawn_blocking(|| {
        node_with(&[("CSS_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")])
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let acct = account_sequence(&http, &node.base, "erin", "erin@example.org").await;
    let whoami = format!("{}.auth/whoami", node.base);
    let common = |redirect: &str| {
        vec![
            "--issuer".to_string(),
            node.base.clone(),
            "--email".into(),
            "erin@example.org".into(),
            "--password".into(),
            "correct horse battery".into(),
            "--webid".into(),
            acct.webid.clone(),
            "--redirect-url".into(),
            redirect.into(),
        ]
    };

    // A dynamically registered app: log in, pick the WebID, consent; the
    // library checks the ID token and its requests carry the user.
    let mut args = common("http://127.0.0.1:9/callback");
    args.push(whoami.clone());
    let out = login_as(args).await;
    assert_eq!(out["steps"], json!(["account", "login", "consent"]));
    assert_eq!(out["webId"], acct.webid.as_str());
    assert_eq!(out["status"], 200, "{out}");
    let me: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(me["webId"], acct.webid.as_str());

    // An app with a Client ID Document: a public client whose refresh
    // token works with the session's DPoP key.
    let (client_id, redirect, _server) = client_id_document().await;
    let mut args = common(&redirect);
    args.extend([
        "--client-id".into(),
        client_id.clone(),
        "--refresh".into(),
        whoami,
    ]);
    let out = login_as(args).await;
    assert_eq!(out["webId"], acct.webid.as_str());
    let me: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(me["clientId"], client_id.as_str(), "{me}");
    assert_eq!(out["refreshed"]["status"], 200, "{out}");
    let again: Value = serde_json::from_str(out["refreshed"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(again["webId"], acct.webid.as_str());
    assert_eq!(again["clientId"], client_id.as_str());
}
