//! Solid-OIDC at xpod as the resource server, with a real issuer: Community
//! Solid Server 7.2 (from `scripts/css`), started once for this file with
//! access tokens that live 30 s. Each test makes its own CSS account
//! through CSS's `/.account/` API (account, pod or linked WebID, client
//! credentials), gets a DPoP-bound access token from CSS's token endpoint
//! with a key of its own, and sends requests to a real `xpod serve`.

mod support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use support::cluster::{Cluster, served_by};
use support::css::{LOOPBACK_ONLY, css_package};
use support::dpop::{DpopKey, now};
use support::webid::WebIdServer;
use support::{Server, create_pod, free_port, http_get};

/// How long CSS's client-credentials tokens live here.
const TOKEN_TTL: u64 = 30;
/// xpod's clock skew in these tests (`CSS_OIDC_CLOCK_SKEW`).
const SKEW: u64 = 2;

struct Issuer {
    /// `http://localhost:PORT/`: CSS's base URL, the tokens' `iss`.
    base: String,
}

static ISSUER: OnceLock<Issuer> = OnceLock::new();

/// The CSS of this test binary, started on first use. It runs from a
/// thread that never ends and dies with this process (`PR_SET_PDEATHSIG`),
/// because statics are never dropped.
fn issuer() -> &'static Issuer {
    ISSUER.get_or_init(start_css)
}

fn start_css() -> Issuer {
    let port = free_port("127.0.0.1");
    // `localhost`, as the readiness check below names it (CSS answers only
    // for its base URL's host).
    let base = format!("http://localhost:{port}/");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    // CSS's in-memory configuration, with the client-credentials token
    // lifetime shortened: a Components.js override replaces the whole
    // `config` parameter of the identity provider factory.
    let factory: Value = serde_json::from_slice(
        &std::fs::read(css_package().join("config/identity/handler/base/provider-factory.json"))
            .unwrap(),
    )
    .unwrap();
    let mut provider = factory["@graph"][0]["config"].clone();
    provider["ttl"]["ClientCredentials"] = json!(TOKEN_TTL);
    let config = json!({
        "@context": factory["@context"],
        "import": ["css:config/default.json"],
        "@graph": [{
            "@id": "urn:xpod-test:ShortTokenLifetime",
            "@type": "Override",
            "overrideInstance": {"@id": "urn:solid-server:default:IdentityProviderFactory"},
            "overrideParameters": {"@type": "IdentityProviderFactory", "config": provider}
        }]
    });
    let config_path = dir.join(format!("css-oidc-{port}.json"));
    std::fs::write(&config_path, config.to_string()).unwrap();
    let log = dir.join(format!("css-oidc-{port}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let args = (config_path.clone(), base.clone());
    std::thread::spawn(move || {
        let mut cmd = Command::new("node");
        // A clean environment: CSS reads every CSS_* variable as an option.
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .env("NODE_ENV", "production")
            .arg("--require")
            .arg(LOOPBACK_ONLY)
            .arg(css_package().join("bin/server.js"))
            .arg("-c")
            .arg(&args.0)
            .args(["-p", &port.to_string(), "-b", &args.1, "-l", "warn"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect(
            "cannot run `node` (Community Solid Server needs Node.js 18 or later; scripts/css installs it)",
        );
        tx.send(child.id()).unwrap();
        let _child = child;
        loop {
            std::thread::park();
        }
    });
    let pid = rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some((200, _, _)) = http_get("127.0.0.1", port, "/.well-known/openid-configuration")
        {
            break;
        }
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(
            alive && Instant::now() < deadline,
            "Community Solid Server did not start on port {port}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(&config_path);
    Issuer { base }
}

/// A CSS account with a WebID and client credentials for it.
struct Account {
    webid: String,
    client_id: String,
    secret: String,
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = http.post(url).json(&body);
    if let Some(a) = auth {
        req = req.header("authorization", format!("CSS-Account-Token {a}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Replays CSS's own account sequence: create the account, read the
/// controls, add a password login, then make a pod (its WebID is `<pod>/profile/card#me`) or
/// link an external WebID, then client credentials for that WebID.
async fn account(webid: WebIdSource<'_>) -> Account {
    let iss = issuer();
    let http = reqwest::Client::new();
    let (status, created) = post_json(
        &http,
        &format!("{}.account/account/", iss.base),
        None,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let auth = created["authorization"].as_str().unwrap().to_string();
    let controls: Value = http
        .get(format!("{}.account/", iss.base))
        .header("authorization", format!("CSS-Account-Token {auth}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // CSS wants a login method before anything else.
    let email = format!("{}@example.org", uuid::Uuid::new_v4().simple());
    let (status, login) = post_json(
        &http,
        controls["controls"]["password"]["create"].as_str().unwrap(),
        Some(&auth),
        json!({"email": email, "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let controls = &controls["controls"]["account"];
    let webid = match webid {
        WebIdSource::Pod => {
            let name = format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let (status, pod) = post_json(
                &http,
                controls["pod"].as_str().unwrap(),
                Some(&auth),
                json!({"name": name}),
            )
            .await;
            assert_eq!(status, 200, "{pod}");
            pod["webId"].as_str().unwrap().to_string()
        }
        WebIdSource::External(doc) => {
            let link = controls["webId"].as_str().unwrap();
            // CSS first asks for a registration token in the document.
            let (status, challenge) =
                post_json(&http, link, Some(&auth), json!({"webId": doc.webid})).await;
            assert_eq!(status, 400, "{challenge}");
            let text = challenge.to_string();
            let after = text
                .split("oidcIssuerRegistrationToken>")
                .nth(1)
                .expect("CSS names the registration token triple");
            let token: String = after
                .trim_start_matches([' ', '\\', '"'])
                .chars()
                .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
                .collect();
            assert_eq!(token.len(), 36, "{text}");
            doc.add(&format!(
                "<#me> <http://www.w3.org/ns/solid/terms#oidcIssuerRegistrationToken> \"{token}\" ."
            ));
            let (status, linked) =
                post_json(&http, link, Some(&auth), json!({"webId": doc.webid})).await;
            assert_eq!(status, 200, "{linked}");
            doc.webid.clone()
        }
    };
    let (status, cc) = post_json(
        &http,
        controls["clientCredentials"].as_str().unwrap(),
        Some(&auth),
        json!({"name": "xpod-test", "webId": webid}),
    )
    .await;
    assert_eq!(status, 200, "{cc}");
    Account {
        webid,
        client_id: cc["id"].as_str().unwrap().to_string(),
        secret: cc["secret"].as_str().unwrap().to_string(),
    }
}

enum WebIdSource<'a> {
    /// A pod on CSS, whose profile names CSS as its issuer.
    Pod,
    /// A WebID document served by the test.
    External(&'a WebIdServer),
}

/// A DPoP-bound access token from CSS for `acct`, bound to `key`.
async fn access_token(acct: &Account, key: &DpopKey) -> String {
    let endpoint = format!("{}.oidc/token", issuer().base);
    let resp = reqwest::Client::new()
        .post(&endpoint)
        .basic_auth(&acct.client_id, Some(&acct.secret))
        .header("dpop", key.proof("POST", &endpoint, None))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// A new account's key and access token.
async fn credentials(webid: WebIdSource<'_>) -> (DpopKey, String) {
    let acct = account(webid).await;
    let key = DpopKey::new();
    let token = access_token(&acct, &key).await;
    (key, token)
}

/// A single xpod node on 127.0.0.1 with a public pod `data`.
struct Xpod {
    _server: Server,
    _dir: tempfile::TempDir,
    base: String,
}

fn xpod_node(allow_loopback: bool) -> Xpod {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_port("127.0.0.1");
    let base = format!("http://127.0.0.1:{port}/");
    let (skew, port_text) = (format!("{SKEW}s"), port.to_string());
    let mut env = vec![
        ("CSS_ROOT_FILE_PATH", root.to_str().unwrap()),
        ("CSS_BASE_URL", base.as_str()),
        ("CSS_PORT", port_text.as_str()),
        ("CSS_OIDC_CLOCK_SKEW", skew.as_str()),
    ];
    if allow_loopback {
        env.push(("CSS_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"));
    }
    let server = Server::start("127.0.0.1", &env, dir.path());
    create_pod(&root, port, "data", &[]);
    Xpod {
        _server: server,
        _dir: dir,
        base,
    }
}

/// A GET with `Authorization: DPoP <token>` and the proofs given.
async fn get(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    proofs: &[&str],
) -> reqwest::Response {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("DPoP {t}"));
    }
    for p in proofs {
        req = req.header("dpop", *p);
    }
    req.send().await.unwrap()
}

/// A GET of `url` with `token` and a fresh proof for it.
async fn get_as(url: &str, token: &str, key: &DpopKey) -> reqwest::Response {
    let proof = key.proof("GET", url, Some(token));
    get(&reqwest::Client::new(), url, Some(token), &[&proof]).await
}

/// Asserts a 401 whose `DPoP` challenge names `error` and whose
/// description mentions `reason`, and that nothing echoes the token.
async fn assert_refused(resp: reqwest::Response, error: &str, reason: &str, token: &str) {
    assert_eq!(resp.status(), 401, "expected a refusal ({reason})");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .expect("a 401 names its challenge")
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.text().await.unwrap();
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    assert!(
        challenge.contains(&format!("error=\"{error}\"")),
        "{challenge}"
    );
    assert!(
        challenge.contains(reason) && body.contains(reason),
        "the refusal should say {reason:?}: {challenge} / {body}"
    );
    for part in token.split('.').filter(|p| p.len() > 8) {
        assert!(
            !challenge.contains(part) && !body.contains(part),
            "the refusal leaks the token"
        );
    }
}

/// A CSS pod account, its token and key, and an xpod node.
async fn setup() -> (Account, DpopKey, String, Xpod) {
    // The node first: the token lives only 30 s.
    let node = tokio::task::spawn_blocking(|| xpod_node(true))
        .await
        .unwrap();
    let acct = account(WebIdSource::Pod).await;
    let key = DpopKey::new();
    let token = access_token(&acct, &key).await;
    (acct, key, token, node)
}

#[tokio::test]
async fn a_css_token_authenticates_as_its_webid() {
    let (acct, key, token, node) = setup().await;
    let http = reqwest::Client::new();
    let whoami = format!("{}.auth/whoami", node.base);
    let resp = get(&http, &whoami, None, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"webId": null}));

    let resp = get_as(&whoami, &token, &key).await;
    assert_eq!(resp.status(), 200);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["webId"], acct.webid.as_str());
    assert_eq!(me["clientId"], acct.client_id.as_str());
    assert_eq!(me["issuer"], issuer().base.as_str());

    // The same credentials on a pod resource, with a query string, and on
    // a write.
    let container = format!("{}data/?x=1", node.base);
    let resp = get_as(&container, &token, &key).await;
    assert_eq!(resp.status(), 200);
    let doc = format!("{}data/note.txt", node.base);
    let resp = http
        .put(&doc)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("PUT", &doc, Some(&token)))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn a_token_with_a_wrong_signature_is_refused() {
    let (_acct, key, token, node) = setup().await;
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = B64.decode(sig).unwrap();
    sig[10] ^= 0x01;
    let forged = format!("{input}.{}", B64.encode(&sig));
    let url = format!("{}data/", node.base);
    let resp = get_as(&url, &forged, &key).await;
    assert_refused(resp, "invalid_token", "signature does not verify", &forged).await;
    // The genuine token still works.
    let resp = get_as(&url, &token, &key).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let (_acct, key, token, node) = setup().await;
    let url = format!("{}data/", node.base);
    let resp = get_as(&url, &token, &key).await;
    assert_eq!(resp.status(), 200, "the token works before it expires");
    let claims: Value =
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    let expired_at = exp + SKEW + 1;
    while now() <= expired_at {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let resp = get_as(&url, &token, &key).await;
    assert_refused(resp, "invalid_token", "expired", &token).await;
}

#[tokio::test]
async fn a_token_without_a_dpop_proof_is_refused() {
    let (_acct, key, token, node) = setup().await;
    let http = reqwest::Client::new();
    let url = format!("{}data/", node.base);
    let resp = get(&http, &url, Some(&token), &[]).await;
    assert_refused(resp, "invalid_dpop_proof", "no DPoP header", &token).await;
    // Two proofs are no better than none.
    let two = [
        key.proof("GET", &url, Some(&token)),
        key.proof("GET", &url, Some(&token)),
    ];
    let resp = get(&http, &url, Some(&token), &[&two[0], &two[1]]).await;
    assert_refused(
        resp,
        "invalid_dpop_proof",
        "more than one DPoP header",
        &token,
    )
    .await;
    // A DPoP-bound token sent as a bearer token, with or without a proof.
    for proof in [None, Some(key.proof("GET", &url, Some(&token)))] {
        let mut req = http.get(&url).bearer_auth(&token);
        if let Some(p) = proof {
            req = req.header("dpop", p);
        }
        let resp = req.send().await.unwrap();
        assert_refused(resp, "invalid_token", "must be DPoP-bound", &token).await;
    }
}

#[tokio::test]
async fn a_replayed_proof_is_refused_at_the_same_node() {
    let (_acct, key, token, node) = setup().await;
    let http = reqwest::Client::new();
    let url = format!("{}data/", node.base);
    let proof = key.proof("GET", &url, Some(&token));
    let resp = get(&http, &url, Some(&token), &[&proof]).await;
    assert_eq!(resp.status(), 200);
    let resp = get(&http, &url, Some(&token), &[&proof]).await;
    assert_refused(resp, "invalid_dpop_proof", "used before", &token).await;
    // A new proof with the same token is fine.
    let resp = get_as(&url, &token, &key).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_replayed_proof_is_refused_at_another_node() {
    let acct = account(WebIdSource::Pod).await;
    let key = DpopKey::new();
    let skew = format!("{SKEW}s");
    let cluster = tokio::task::spawn_blocking(move || {
        let extra = [
            ("CSS_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8"),
            ("CSS_OIDC_CLOCK_SKEW", skew.as_str()),
        ];
        let cluster = Cluster::start_layout(&[0, 0], &extra);
        cluster.create_pod(0, "data");
        cluster
    })
    .await
    .unwrap();
    let token = access_token(&acct, &key).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let url = cluster.url("data/");

    // Through node B, which forwards to the owner A.
    let proof = key.proof("GET", &url, Some(&token));
    let resp = get(&b.client, &url, Some(&token), &[&proof]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(served_by(&resp), a.id);
    let resp = get(&a.client, &url, Some(&token), &[&proof]).await;
    assert_refused(resp, "invalid_dpop_proof", "used before", &token).await;

    // And the other way round, on a node-local route.
    let whoami = cluster.url(".auth/whoami");
    let proof = key.proof("GET", &whoami, Some(&token));
    let resp = get(&a.client, &whoami, Some(&token), &[&proof]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["webId"],
        acct.webid.as_str()
    );
    let resp = get(&b.client, &whoami, Some(&token), &[&proof]).await;
    assert_refused(resp, "invalid_dpop_proof", "used before", &token).await;
}

#[tokio::test]
async fn a_proof_for_another_url_is_refused() {
    let (_acct, key, token, node) = setup().await;
    let http = reqwest::Client::new();
    let url = format!("{}data/", node.base);
    let other = [
        format!("{}data/other", node.base),
        format!("{}data", node.base),
        url.replace("127.0.0.1", "localhost"),
        url.replace("http:", "https:"),
    ];
    for htu in &other {
        let resp = get(
            &http,
            &url,
            Some(&token),
            &[&key.proof("GET", htu, Some(&token))],
        )
        .await;
        assert_refused(resp, "invalid_dpop_proof", "htu mismatch", &token).await;
    }
}

#[tokio::test]
async fn a_proof_for_another_method_is_refused() {
    let (_acct, key, token, node) = setup().await;
    let http = reqwest::Client::new();
    let url = format!("{}data/", node.base);
    for htm in ["POST", "get", "HEAD"] {
        let resp = get(
            &http,
            &url,
            Some(&token),
            &[&key.proof(htm, &url, Some(&token))],
        )
        .await;
        assert_refused(resp, "invalid_dpop_proof", "htm mismatch", &token).await;
    }
}

#[tokio::test]
async fn a_proof_signed_by_another_key_is_refused() {
    let (_acct, _key, token, node) = setup().await;
    let url = format!("{}data/", node.base);
    let other = DpopKey::new();
    let resp = get_as(&url, &token, &other).await;
    assert_refused(resp, "invalid_dpop_proof", "key other than", &token).await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (_acct, key, token, node) = setup().await;
    let http = reqwest::Client::new();
    let url = format!("{}data/", node.base);
    // The token re-headed as unsigned: with its signature dropped, and kept.
    let mut parts = token.split('.');
    let (_, claims, sig) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
    let none = B64.encode(json!({"alg": "none", "typ": "at+jwt"}).to_string());
    for forged in [
        format!("{none}.{claims}."),
        format!("{none}.{claims}.{sig}"),
    ] {
        let resp = get_as(&url, &forged, &key).await;
        let reason = if forged.ends_with('.') {
            "unsigned"
        } else {
            "is not accepted"
        };
        assert_refused(resp, "invalid_token", reason, &forged).await;
    }
    // A proof with alg none.
    let header = json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk()});
    let claims = DpopKey::claims("GET", &url, Some(&token));
    let unsigned = format!(
        "{}.{}.",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let resp = get(&http, &url, Some(&token), &[&unsigned]).await;
    assert_refused(resp, "invalid_dpop_proof", "unsigned", &token).await;
    let signed_as_none = key.sign(&header, &claims);
    let resp = get(&http, &url, Some(&token), &[&signed_as_none]).await;
    assert_refused(resp, "invalid_dpop_proof", "is not accepted", &token).await;
}

#[tokio::test]
async fn an_issuer_the_webid_does_not_list_is_refused() {
    let doc = WebIdServer::start().await;
    doc.add("<#me> a <http://xmlns.com/foaf/0.1/Person> .");
    let (key, token) = credentials(WebIdSource::External(&doc)).await;
    let node = tokio::task::spawn_blocking(|| xpod_node(true))
        .await
        .unwrap();
    let url = format!("{}data/", node.base);
    let resp = get_as(&url, &token, &key).await;
    assert_refused(
        resp,
        "invalid_token",
        "is not listed as solid:oidcIssuer",
        &token,
    )
    .await;

    doc.stop().await;
}

#[tokio::test]
async fn an_unreachable_webid_is_refused() {
    let doc = WebIdServer::start().await;
    let acct = account(WebIdSource::External(&doc)).await;
    doc.add(&format!(
        "<#me> <http://www.w3.org/ns/solid/terms#oidcIssuer> <{}> .",
        issuer().base
    ));
    let key = DpopKey::new();
    let token = access_token(&acct, &key).await;
    doc.stop().await;
    let node = tokio::task::spawn_blocking(|| xpod_node(true))
        .await
        .unwrap();
    let url = format!("{}data/", node.base);
    let resp = get_as(&url, &token, &key).await;
    assert_refused(resp, "invalid_token", "is unreachable", &token).await;
}

#[tokio::test]
async fn webids_on_internal_addresses_need_the_operators_permission() {
    let (key, token) = credentials(WebIdSource::Pod).await;
    let node = tokio::task::spawn_blocking(|| xpod_node(false))
        .await
        .unwrap();
    let url = format!("{}data/", node.base);
    let resp = get_as(&url, &token, &key).await;
    assert_refused(
        resp,
        "invalid_token",
        "CSS_OUTBOUND_ALLOWED_NETWORKS",
        &token,
    )
    .await;
}
