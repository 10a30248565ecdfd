//! xpod as the OpenID provider of Solid apps: the authorization-code flow
//! with PKCE (S256) as a browser drives it, both through the JSON account
//! API that CSS's pages use and as plain HTML forms without JavaScript;
//! the login, WebID and consent prompts; DPoP-bound access tokens and ID
//! tokens checked against the published keys; refresh tokens (bound to
//! the first key for public clients); dynamic client registration;
//! Solid-OIDC Client ID Documents served by the test itself; and the
//! errors an app sees: at its redirect URI when that URI can be trusted,
//! as a 400 on the server when it cannot.
//!
//! The HTTP client follows no redirects and keeps its own cookie jar, so
//! every hop, and which cookie goes where, is what a browser would see.

mod support;

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::RngCore;
use reqwest::Method;
use reqwest::header::HeaderMap;
use reqwest::redirect::Policy;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use support::dpop::DpopKey;
use support::{Server, free_port};

const PASSWORD: &str = "correct horse battery";
/// What a browser sends when it navigates.
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const JSON: &str = "application/json";
/// The scope Inrupt's client asks for.
const SCOPE: &str = "openid webid offline_access";
/// A registered app's redirect URI: never contacted, since nothing here
/// follows redirects off the server.
const REDIRECT: &str = "https://app.example/callback";

// ---------------------------------------------------------------------------
// The node and the account

/// One node on 127.0.0.1, on SQLite.
struct Node {
    _server: Server,
    _dir: tempfile::TempDir,
    base: String,
}

async fn node(extra: &'static [(&'static str, &'static str)]) -> Node {
    tokio::task::spawn_blocking(move || {
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
        }
    })
    .await
    .unwrap()
}

/// An HTTP client that, like an app's back end, follows no redirects.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// An account with a password login and a pod, made through the account
/// API's controls; returns the pod's WebID.
async fn account(http: &reqwest::Client, base: &str, pod: &str, email: &str) -> String {
    let (status, index) = send(http.get(format!("{base}.account/"))).await;
    assert_eq!(status, 200, "{index}");
    let create = index["controls"]["account"]["create"].as_str().unwrap();
    let (status, created) = send(http.post(create).json(&json!({}))).await;
    assert_eq!(status, 200, "{created}");
    let auth = format!(
        "CSS-Account-Token {}",
        created["authorization"].as_str().unwrap()
    );
    let (status, index) = send(
        http.get(format!("{base}.account/"))
            .header("authorization", &auth),
    )
    .await;
    assert_eq!(status, 200, "{index}");
    let controls = &index["controls"];
    let (status, login) = send(
        http.post(controls["password"]["create"].as_str().unwrap())
            .header("authorization", &auth)
            .json(&json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let (status, made) = send(
        http.post(controls["account"]["pod"].as_str().unwrap())
            .header("authorization", &auth)
            .json(&json!({"name": pod})),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    made["webId"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------
// A browser: no redirects followed on its own, and a cookie jar

/// A response, read whole.
struct Reply {
    url: Url,
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    async fn read(resp: reqwest::Response) -> Reply {
        Reply {
            url: resp.url().clone(),
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Where a redirect points, resolved as a browser would.
    fn location(&self) -> Option<Url> {
        self.header("location").map(|l| self.url.join(l).unwrap())
    }

    /// The Location of a `303 See Other`.
    fn see_other(&self) -> Url {
        assert_eq!(self.status, 303, "a redirect expected: {self}");
        self.location()
            .unwrap_or_else(|| panic!("a 303 without Location: {self}"))
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} from {}", self.status, self.url)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {}", value.to_str().unwrap_or("<binary>"))?;
        }
        write!(f, "\n{}", self.text)
    }
}

struct Cookie {
    name: String,
    value: String,
    path: String,
    http_only: bool,
}

/// The cookies a browser keeps for this one host (RFC 6265, reduced to
/// what matters here: names, paths, expiry and HttpOnly).
#[derive(Default)]
struct Jar(Vec<Cookie>);

impl Jar {
    fn store(&mut self, set_cookie: &str, from: &Url) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let mut path = None;
        let mut http_only = false;
        let mut expired = false;
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            let val = val.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "path" if val.starts_with('/') => path = Some(val.to_string()),
                "httponly" => http_only = true,
                "max-age" => expired = val.parse::<i64>().is_ok_and(|s| s <= 0),
                "expires" => {
                    expired = httpdate::parse_http_date(val).is_ok_and(|t| t <= SystemTime::now())
                }
                _ => {}
            }
        }
        // Without a Path, the request's directory.
        let path = path.unwrap_or_else(|| match from.path().rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => from.path()[..i].to_string(),
        });
        let name = name.trim().to_string();
        self.0.retain(|c| !(c.name == name && c.path == path));
        if !expired {
            self.0.push(Cookie {
                name,
                value: value.trim().to_string(),
                path,
                http_only,
            });
        }
    }

    /// The `Cookie` header for a request to `url`.
    fn header_for(&self, url: &Url) -> Option<String> {
        let sent: Vec<String> = self
            .0
            .iter()
            .filter(|c| path_matches(&c.path, url.path()))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!sent.is_empty()).then(|| sent.join("; "))
    }

    /// The cookie of that name set last (another path's may remain).
    fn get(&self, name: &str) -> Option<&Cookie> {
        self.0.iter().rev().find(|c| c.name == name)
    }
}

/// RFC 6265 §5.1.4.
fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/')))
}

enum Body {
    Empty,
    Json(Value),
    Form(Vec<(String, String)>),
}

/// A user agent: one cookie jar, redirects followed only when asked.
struct Browser {
    http: reqwest::Client,
    jar: Jar,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: client(),
            jar: Jar::default(),
        }
    }

    async fn send(&mut self, method: Method, url: &str, accept: &str, body: Body) -> Reply {
        let target = Url::parse(url).unwrap();
        let mut req = self
            .http
            .request(method, target.clone())
            .header("accept", accept);
        if let Some(cookies) = self.jar.header_for(&target) {
            req = req.header("cookie", cookies);
        }
        req = match body {
            Body::Empty => req,
            Body::Json(value) => req.json(&value),
            // A browser names the page's origin on a form POST.
            Body::Form(fields) => req
                .header("origin", target.origin().ascii_serialization())
                .form(&fields),
        };
        let resp = req.send().await.unwrap();
        for set_cookie in resp.headers().get_all("set-cookie") {
            self.jar.store(set_cookie.to_str().unwrap(), &target);
        }
        Reply::read(resp).await
    }

    async fn get(&mut self, url: &str, accept: &str) -> Reply {
        self.send(Method::GET, url, accept, Body::Empty).await
    }

    async fn post_json(&mut self, url: &str, body: Value) -> Reply {
        self.send(Method::POST, url, JSON, Body::Json(body)).await
    }

    /// Submits an HTML form, as a browser without JavaScript does.
    async fn submit(&mut self, form: &Form, filled: &[(&str, &str)]) -> Reply {
        let fields = form.fields_with(filled);
        self.send(Method::POST, form.action.as_str(), HTML, Body::Form(fields))
            .await
    }

    /// Follows redirects within the server as a browser navigating would,
    /// stopping at a page or at a redirect that leaves the server.
    async fn follow(&mut self, mut reply: Reply, base: &str, accept: &str) -> Reply {
        for _ in 0..10 {
            if !(300..400).contains(&reply.status) {
                return reply;
            }
            let to = reply
                .location()
                .unwrap_or_else(|| panic!("a redirect without Location: {reply}"));
            if !to.as_str().starts_with(base) {
                return reply;
            }
            reply = self.get(to.as_str(), accept).await;
        }
        panic!("more than 10 redirects, the last: {reply}");
    }
}

// ---------------------------------------------------------------------------
// HTML forms, read as a browser reads them

struct Field {
    /// `text`, `password`, `hidden`, `radio`, … or `button`.
    kind: String,
    name: String,
    value: String,
}

struct Form {
    action: Url,
    fields: Vec<Field>,
}

impl Form {
    fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }

    /// What a browser sends: the hidden fields, then what the user filled.
    fn fields_with(&self, filled: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .fields
            .iter()
            .filter(|f| f.kind == "hidden" && !filled.iter().any(|(n, _)| *n == f.name))
            .map(|f| (f.name.clone(), f.value.clone()))
            .collect();
        out.extend(filled.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        out
    }
}

/// The forms of an HTML page, with their actions resolved against it.
fn forms(page: &Reply) -> Vec<Form> {
    let html = page.text.as_str();
    // ASCII lowercasing keeps byte offsets.
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<form").map(|i| i + at) {
        let (attributes, open_end) = tag(html, start);
        let end = lower[open_end..]
            .find("</form")
            .map_or(html.len(), |i| i + open_end);
        let action = attribute(&attributes, "action").unwrap_or_default();
        let mut fields = Vec::new();
        let mut i = open_end;
        loop {
            let next = [lower[i..end].find("<input"), lower[i..end].find("<button")]
                .into_iter()
                .flatten()
                .min();
            let Some(p) = next.map(|p| p + i) else {
                break;
            };
            let (attributes, after) = tag(html, p);
            let kind = if lower[p..].starts_with("<button") {
                "button".to_string()
            } else {
                attribute(&attributes, "type")
                    .unwrap_or_else(|| "text".into())
                    .to_ascii_lowercase()
            };
            if let Some(name) = attribute(&attributes, "name") {
                fields.push(Field {
                    kind,
                    name,
                    value: attribute(&attributes, "value").unwrap_or_default(),
                });
            }
            i = after.min(end);
        }
        out.push(Form {
            action: page.url.join(&action).unwrap(),
            fields,
        });
        at = end;
    }
    out
}

/// The one form on `page` that posts to `action`.
fn form_to(page: &Reply, action: &str) -> Form {
    forms(page)
        .into_iter()
        .find(|f| f.action.as_str() == action)
        .unwrap_or_else(|| panic!("no form posting to {action} on the page: {page}"))
}

/// The attributes of the tag starting at `start` (`<name …>`), values
/// unescaped, and the offset just after it.
fn tag(html: &str, start: usize) -> (Vec<(String, String)>, usize) {
    let b = html.as_bytes();
    let mut i = start + 1;
    while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'>' | b'/') {
        i += 1;
    }
    let mut attributes = Vec::new();
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() {
            return (attributes, i);
        }
        if b[i] == b'>' {
            return (attributes, i + 1);
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let name = html[name_start..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && matches!(b[i], b'"' | b'\'') {
                let quote = b[i] as char;
                let from = i + 1;
                let to = html[from..].find(quote).map_or(b.len(), |j| from + j);
                value = unescape(&html[from..to]);
                i = (to + 1).min(b.len());
            } else {
                let from = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                value = unescape(&html[from..i]);
            }
        }
        attributes.push((name, value));
    }
}

fn attribute(attributes: &[(String, String)], name: &str) -> Option<String> {
    attributes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// HTML character references: the named ones a server escapes with, and
/// numeric ones.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').filter(|semi| *semi <= 10).and_then(|semi| {
            let entity = &rest[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => match entity.strip_prefix('#') {
                    Some(hex) if hex.starts_with(['x', 'X']) => u32::from_str_radix(&hex[1..], 16)
                        .ok()
                        .and_then(char::from_u32),
                    Some(dec) => dec.parse().ok().and_then(char::from_u32),
                    None => None,
                },
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An HTML page of the login flow: served as HTML, and never inside a
/// frame (so the consent button cannot be clickjacked).
fn assert_page(page: &Reply) {
    assert_eq!(page.status, 200, "{page}");
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{page}"
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|csp| csp.contains("frame-ancestors 'none'")),
        "{page}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "{page}");
}

// ---------------------------------------------------------------------------
// The app: registration, the authorization request, the token endpoint

/// A registered app.
struct App {
    client_id: String,
    /// None for a public client.
    secret: Option<String>,
    redirect_uri: String,
}

impl App {
    fn auth(&self) -> Auth<'_> {
        match &self.secret {
            Some(secret) => Auth::Basic(&self.client_id, secret),
            None => Auth::Public(&self.client_id),
        }
    }
}

/// How the app authenticates at the token endpoint.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// `client_secret_basic`.
    Basic(&'a str, &'a str),
    /// `client_secret_post`.
    Post(&'a str, &'a str),
    /// A public client: its `client_id` in the form, no secret.
    Public(&'a str),
}

/// Dynamic registration: the app and the whole answer.
async fn register(http: &reqwest::Client, base: &str, metadata: Value) -> (App, Value) {
    let reply = Reply::read(
        http.post(format!("{base}.oidc/reg"))
            .json(&metadata)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply}");
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{reply}");
    let body = reply.json();
    let app = App {
        client_id: body["client_id"].as_str().unwrap().to_string(),
        secret: body["client_secret"].as_str().map(String::from),
        redirect_uri: metadata["redirect_uris"][0].as_str().unwrap().to_string(),
    };
    (app, body)
}

/// A random 43-character base64url text (256 bits).
fn random_text() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// A PKCE pair (RFC 7636, S256).
struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    fn new() -> Pkce {
        let verifier = random_text();
        let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// An authorization request as an app builds it.
struct Authorization {
    pkce: Pkce,
    state: String,
    nonce: String,
    params: Vec<(String, String)>,
}

impl Authorization {
    /// Inrupt's request: code flow, PKCE, `prompt=consent`, a nonce.
    fn new(app: &App, scope: &str) -> Authorization {
        let pkce = Pkce::new();
        let state = random_text();
        let nonce = random_text();
        let params = [
            ("client_id", app.client_id.as_str()),
            ("redirect_uri", app.redirect_uri.as_str()),
            ("response_type", "code"),
            ("scope", scope),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("prompt", "consent"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Authorization {
            pkce,
            state,
            nonce,
            params,
        }
    }

    /// The same request with one parameter changed (or left out).
    fn with(mut self, name: &str, value: Option<&str>) -> Authorization {
        self.params.retain(|(k, _)| k != name);
        if let Some(value) = value {
            self.params.push((name.to_string(), value.to_string()));
        }
        self
    }

    fn url(&self, base: &str) -> String {
        let mut url = Url::parse(&format!("{base}.oidc/auth")).unwrap();
        url.query_pairs_mut().extend_pairs(&self.params);
        url.into()
    }
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The browser is sent to the app's authorization request: the server
/// answers with its account pages and sets the interaction's two cookies.
async fn authorize(browser: &mut Browser, base: &str, request: &Authorization) {
    let reply = browser.get(&request.url(base), HTML).await;
    assert_eq!(
        reply.see_other().as_str(),
        format!("{base}.account/"),
        "{reply}"
    );
    let interaction = browser
        .jar
        .get("_interaction")
        .unwrap_or_else(|| panic!("no _interaction cookie: {reply}"));
    assert_eq!(interaction.path, "/.account/", "{reply}");
    assert!(interaction.http_only, "{reply}");
    let resume = browser
        .jar
        .get("_interaction_resume")
        .unwrap_or_else(|| panic!("no _interaction_resume cookie: {reply}"));
    assert_eq!(
        resume.path,
        format!("/.oidc/auth/{}", interaction.value),
        "{reply}"
    );
    assert!(resume.http_only, "{reply}");
}

/// `GET oidc/prompt/`: the interaction's current prompt and where the
/// pages go for it.
async fn prompt(browser: &mut Browser, base: &str) -> (String, String) {
    let reply = browser
        .get(&format!("{base}.account/oidc/prompt/"), JSON)
        .await;
    assert_eq!(reply.status, 200, "{reply}");
    let body = reply.json();
    let text = |name: &str| {
        body[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name}: {reply}"))
            .to_string()
    };
    (text("prompt"), text("location"))
}

/// Follows a step's `location` back into the interaction: `303` to the
/// account pages while it is not finished.
async fn resume(browser: &mut Browser, base: &str, location: &str) {
    assert!(
        location.starts_with(&format!("{base}.oidc/auth/")),
        "{location}"
    );
    let reply = browser.get(location, "*/*").await;
    assert_eq!(
        reply.see_other().as_str(),
        format!("{base}.account/"),
        "{reply}"
    );
}

/// The JSON login, as CSS's pages do it: the account prompt, a password
/// login, and back to the interaction, which now asks for a WebID.
async fn login_json(browser: &mut Browser, base: &str, email: &str) {
    let index = browser.get(&format!("{base}.account/"), JSON).await;
    assert_eq!(index.status, 200, "{index}");
    let a = format!("{base}.account/");
    assert_eq!(
        index.json()["controls"]["oidc"],
        json!({
            "cancel": format!("{a}oidc/cancel/"),
            "consent": format!("{a}oidc/consent/"),
            "forgetWebId": format!("{a}oidc/forget-webid/"),
            "prompt": format!("{a}oidc/prompt/"),
            "webId": format!("{a}oidc/pick-webid/"),
        }),
        "{index}"
    );
    assert_eq!(
        prompt(browser, base).await,
        ("account".to_string(), format!("{a}login/"))
    );
    let login = browser
        .post_json(
            &format!("{a}login/password/"),
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, 200, "{login}");
    let location = login.json()["location"]
        .as_str()
        .unwrap_or_else(|| panic!("no location during an interaction: {login}"))
        .to_string();
    let session = browser
        .jar
        .get("css-account")
        .unwrap_or_else(|| panic!("the login sets no css-account cookie: {login}"));
    assert_eq!(session.path, "/.account/");
    assert!(session.http_only);
    resume(browser, base, &location).await;
    assert_eq!(
        prompt(browser, base).await,
        ("login".to_string(), format!("{a}oidc/consent/"))
    );
}

/// Picks `webid` (listed among the account's) and resumes: the prompt is
/// now consent.
async fn pick_webid(browser: &mut Browser, base: &str, webid: &str) {
    let url = format!("{base}.account/oidc/pick-webid/");
    let page = browser.get(&url, JSON).await;
    assert_eq!(page.status, 200, "{page}");
    assert!(
        page.json()["webIds"]
            .as_array()
            .is_some_and(|w| w.contains(&json!(webid))),
        "{page}"
    );
    let picked = browser.post_json(&url, json!({"webId": webid})).await;
    assert_eq!(picked.status, 200, "{picked}");
    let location = picked.json()["location"].as_str().unwrap().to_string();
    assert_eq!(picked.header("location"), Some(location.as_str()));
    resume(browser, base, &location).await;
    assert_eq!(
        prompt(browser, base).await.0,
        "consent",
        "after picking a WebID"
    );
}

/// Picks the WebID and consents: what the consent page showed, and where
/// the browser is finally sent (the app's redirect URI).
async fn finish_consent(
    browser: &mut Browser,
    base: &str,
    webid: &str,
    remember: bool,
) -> (Value, Url) {
    pick_webid(browser, base, webid).await;
    let url = format!("{base}.account/oidc/consent/");
    let page = browser.get(&url, JSON).await;
    assert_eq!(page.status, 200, "{page}");
    assert_eq!(page.json()["webId"], webid, "{page}");
    let given = browser.post_json(&url, json!({"remember": remember})).await;
    assert_eq!(given.status, 200, "{given}");
    let location = given.json()["location"].as_str().unwrap().to_string();
    let reply = browser.get(&location, "*/*").await;
    let to = reply.see_other();
    assert!(!to.as_str().starts_with(base), "{reply}");
    (page.json(), to)
}

/// The code from a successful redirect to the app, which carries the
/// request's state and the issuer (RFC 9207).
fn code_from(redirect: &Url, app: &App, request: &Authorization, base: &str) -> String {
    assert!(
        redirect
            .as_str()
            .starts_with(&format!("{}?", app.redirect_uri)),
        "{redirect}"
    );
    assert_eq!(query(redirect, "error"), None, "{redirect}");
    assert_eq!(
        query(redirect, "state").as_deref(),
        Some(request.state.as_str())
    );
    assert_eq!(query(redirect, "iss").as_deref(), Some(base), "{redirect}");
    query(redirect, "code").unwrap_or_else(|| panic!("no code: {redirect}"))
}

/// An error redirect to the app: its state and the issuer come back too.
fn error_from(redirect: &Url, app: &App, request: &Authorization, base: &str) -> String {
    assert!(
        redirect
            .as_str()
            .starts_with(&format!("{}?", app.redirect_uri)),
        "{redirect}"
    );
    assert_eq!(query(redirect, "code"), None, "{redirect}");
    assert_eq!(
        query(redirect, "state").as_deref(),
        Some(request.state.as_str()),
        "{redirect}"
    );
    assert_eq!(query(redirect, "iss").as_deref(), Some(base), "{redirect}");
    query(redirect, "error").unwrap_or_else(|| panic!("no error: {redirect}"))
}

/// A fresh browser through the whole JSON flow: the request the app sent,
/// what the consent page showed, and the code the app received.
async fn sign_in(
    base: &str,
    app: &App,
    email: &str,
    webid: &str,
    remember: bool,
) -> (Authorization, Value, String) {
    let mut browser = Browser::new();
    let request = Authorization::new(app, SCOPE);
    authorize(&mut browser, base, &request).await;
    login_json(&mut browser, base, email).await;
    let (consent, redirect) = finish_consent(&mut browser, base, webid, remember).await;
    let code = code_from(&redirect, app, &request, base);
    (request, consent, code)
}

async fn token_request(
    http: &reqwest::Client,
    base: &str,
    auth: Auth<'_>,
    proof: &str,
    form: &[(&str, &str)],
) -> Reply {
    let mut fields = form.to_vec();
    let mut req = http
        .post(format!("{base}.oidc/token"))
        .header("dpop", proof);
    match auth {
        Auth::Basic(id, secret) => req = req.basic_auth(id, Some(secret)),
        Auth::Post(id, secret) => fields.extend([("client_id", id), ("client_secret", secret)]),
        Auth::Public(id) => fields.push(("client_id", id)),
    }
    Reply::read(req.form(&fields).send().await.unwrap()).await
}

/// The code exchange, with a fresh proof from `key`.
async fn exchange(
    http: &reqwest::Client,
    base: &str,
    auth: Auth<'_>,
    key: &DpopKey,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Reply {
    let proof = key.proof("POST", &format!("{base}.oidc/token"), None);
    token_request(
        http,
        base,
        auth,
        &proof,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// The refresh grant, with a fresh proof from `key`.
async fn refresh(
    http: &reqwest::Client,
    base: &str,
    auth: Auth<'_>,
    key: &DpopKey,
    refresh_token: &str,
) -> Reply {
    let proof = key.proof("POST", &format!("{base}.oidc/token"), None);
    token_request(
        http,
        base,
        auth,
        &proof,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// A token endpoint refusal: its status and `error`.
fn assert_refused(reply: &Reply, status: u16, error: &str) {
    assert_eq!(reply.status, status, "{reply}");
    assert_eq!(reply.json()["error"], error, "{reply}");
}

fn scopes(tokens: &Value) -> Vec<&str> {
    let mut words: Vec<&str> = tokens["scope"]
        .as_str()
        .unwrap_or_else(|| panic!("no scope: {tokens}"))
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect();
    words.sort_unstable();
    words
}

// ---------------------------------------------------------------------------
// Tokens, checked as a relying party checks them

/// RFC 7638 thumbprint of a P-256 key: what `cnf.jkt` names.
fn thumbprint(key: &DpopKey) -> String {
    let jwk = key.jwk();
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

/// The JWT's header and claims, once its ES256 signature verifies with
/// a key from the issuer's JWKS.
fn verify(jwt: &str, jwks: &Value) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS: {jwt}");
    let decode = |part: &str| -> Value {
        serde_json::from_slice(&B64.decode(part).expect("base64url")).expect("JSON")
    };
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    assert_eq!(header["alg"], "ES256", "{header}");
    let signature = B64.decode(parts[2]).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    let verified = jwks["keys"].as_array().unwrap().iter().any(|jwk| {
        if header.get("kid").is_some() && jwk["kid"] != header["kid"] {
            return false;
        }
        let mut point = vec![4u8];
        point.extend(B64.decode(jwk["x"].as_str().unwrap_or_default()).unwrap());
        point.extend(B64.decode(jwk["y"].as_str().unwrap_or_default()).unwrap());
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &signature)
            .is_ok()
    });
    assert!(
        verified,
        "no key of the JWKS verifies {header} {claims}: {jwks}"
    );
    (header, claims)
}

/// OpenID Connect Core §3.1.3.6: the left half of SHA-256.
fn at_hash(access_token: &str) -> String {
    B64.encode(&Sha256::digest(access_token.as_bytes())[..16])
}

/// Checks a token response as an app and a resource server would, and
/// returns the access token.
fn check_tokens(
    tokens: &Value,
    jwks: &Value,
    base: &str,
    client_id: &str,
    webid: &str,
    key: &DpopKey,
    nonce: Option<&str>,
) -> String {
    assert_eq!(tokens["token_type"], "DPoP", "{tokens}");
    assert_eq!(tokens["expires_in"], 3600, "{tokens}");
    let at = tokens["access_token"].as_str().unwrap();
    let (header, claims) = verify(at, jwks);
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(claims["iss"], base, "{claims}");
    assert_eq!(claims["aud"], "solid", "{claims}");
    assert_eq!(claims["sub"], webid, "{claims}");
    assert_eq!(claims["webid"], webid, "{claims}");
    assert_eq!(claims["client_id"], client_id, "{claims}");
    assert_eq!(claims["cnf"]["jkt"], thumbprint(key), "{claims}");
    assert!(claims["jti"].is_string(), "{claims}");
    assert!(
        claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap(),
        "{claims}"
    );

    let id_token = tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token: {tokens}"));
    let (header, id) = verify(id_token, jwks);
    assert_eq!(header["typ"], "JWT", "{header}");
    assert_eq!(id["iss"], base, "{id}");
    assert_eq!(id["aud"], client_id, "{id}");
    assert_eq!(id["azp"], client_id, "{id}");
    assert_eq!(id["sub"], webid, "{id}");
    assert_eq!(id["webid"], webid, "{id}");
    assert_eq!(id["at_hash"], at_hash(at), "{id}");
    assert!(id["auth_time"].is_u64(), "{id}");
    assert!(
        id["exp"].as_u64().unwrap() > id["iat"].as_u64().unwrap(),
        "{id}"
    );
    if let Some(nonce) = nonce {
        assert_eq!(id["nonce"], nonce, "{id}");
    }
    at.to_string()
}

async fn jwks(http: &reqwest::Client, base: &str) -> Value {
    let (status, keys) = send(http.get(format!("{base}.oidc/jwks"))).await;
    assert_eq!(status, 200, "{keys}");
    keys
}

async fn whoami(http: &reqwest::Client, base: &str, token: &str, key: &DpopKey) -> (u16, Value) {
    let url = format!("{base}.auth/whoami");
    send(
        http.get(&url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", key.proof("GET", &url, Some(token))),
    )
    .await
}

// ---------------------------------------------------------------------------
// A Client ID Document, served by the test

/// An app identified by the URL of its Client ID Document (Solid-OIDC
/// §5), served on 127.0.0.1 while this lives.
struct ClientIdDocument {
    url: String,
    redirect_uri: String,
    task: tokio::task::JoinHandle<()>,
}

impl ClientIdDocument {
    async fn serve(name: &str) -> ClientIdDocument {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/app/id.jsonld");
        let redirect_uri = format!("http://127.0.0.1:{port}/cb");
        let document = json!({
            "@context": ["https://www.w3.org/ns/solid/oidc-context.jsonld"],
            "client_id": url,
            "client_name": name,
            "client_uri": format!("http://127.0.0.1:{port}/"),
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": SCOPE,
        })
        .to_string();
        let app = axum::Router::new().route(
            "/app/id.jsonld",
            axum::routing::get(move || {
                let document = document.clone();
                async move { ([("content-type", "application/ld+json")], document) }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ClientIdDocument {
            url,
            redirect_uri,
            task,
        }
    }
}

impl Drop for ClientIdDocument {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn a_browser_style_login_with_pkce_and_consent_gives_dpop_tokens_and_a_refresh() {
    let node = node(&[]).await;
    let base = node.base.as_str();
    let http = client();
    let webid = account(&http, base, "alice", "alice@example.org").await;

    // The app finds the endpoints through discovery.
    let (status, config) = send(http.get(format!("{base}.well-known/openid-configuration"))).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["issuer"], base);
    assert_eq!(
        config["authorization_endpoint"],
        format!("{base}.oidc/auth")
    );
    assert_eq!(config["token_endpoint"], format!("{base}.oidc/token"));
    assert_eq!(config["registration_endpoint"], format!("{base}.oidc/reg"));
    assert_eq!(config["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        config["authorization_response_iss_parameter_supported"],
        true
    );

    // It registers itself, and can read its registration back.
    let (app, registered) = register(
        &http,
        base,
        json!({
            "redirect_uris": [REDIRECT],
            "client_name": "Photo album",
            "grant_types": ["authorization_code", "refresh_token"],
            "id_token_signed_response_alg": "ES256",
        }),
    )
    .await;
    assert!(
        app.secret.as_deref().is_some_and(|s| !s.is_empty()),
        "a confidential client gets a secret: {registered}"
    );
    let registration = registered["registration_client_uri"].as_str().unwrap();
    assert_eq!(
        registration,
        format!("{base}.oidc/reg/{}", app.client_id),
        "{registered}"
    );
    let registration_token = registered["registration_access_token"].as_str().unwrap();
    let (status, read) = send(http.get(registration).bearer_auth(registration_token)).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["client_id"], app.client_id.as_str());
    assert_eq!(read["redirect_uris"], json!([REDIRECT]));
    assert_eq!(read["client_name"], "Photo album");
    assert!(read.get("client_secret").is_none(), "{read}");
    let (status, _) = send(http.get(registration).bearer_auth("not-the-token")).await;
    assert_eq!(status, 401);

    // The user signs in, picks the WebID and consents; the app gets a code
    // with its state and the issuer.
    let mut browser = Browser::new();
    let request = Authorization::new(&app, SCOPE);
    authorize(&mut browser, base, &request).await;
    login_json(&mut browser, base, "alice@example.org").await;
    let (consent, redirect) = finish_consent(&mut browser, base, &webid, true).await;
    assert_eq!(consent["client"]["client_id"], app.client_id.as_str());
    assert_eq!(consent["client"]["client_name"], "Photo album");
    let code = code_from(&redirect, &app, &request, base);
    // The interaction is over.
    let over = browser
        .get(&format!("{base}.account/oidc/prompt/"), JSON)
        .await;
    assert_eq!(over.status, 400, "{over}");
    assert_eq!(over.json()["errorCode"], "E0002", "{over}");

    // The code and the verifier give DPoP-bound tokens, an ID token for
    // the app and a refresh token.
    let key = DpopKey::new();
    let reply = exchange(
        &http,
        base,
        app.auth(),
        &key,
        &code,
        &request.pkce.verifier,
        &app.redirect_uri,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{reply}");
    let tokens = reply.json();
    assert_eq!(scopes(&tokens), ["offline_access", "openid", "webid"]);
    let refresh_token = tokens["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token: {tokens}"))
        .to_string();
    let keys = jwks(&http, base).await;
    let at = check_tokens(
        &tokens,
        &keys,
        base,
        &app.client_id,
        &webid,
        &key,
        Some(&request.nonce),
    );

    // The resource server takes the access token with a proof from its key.
    let (status, me) = whoami(&http, base, &at, &key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["webId"], webid.as_str());
    assert_eq!(me["clientId"], app.client_id.as_str());
    assert_eq!(me["issuer"], base);

    // A confidential client may refresh with a new key: the new access
    // token is bound to it, and the app gets a new ID token.
    let new_key = DpopKey::new();
    let reply = refresh(&http, base, app.auth(), &new_key, &refresh_token).await;
    assert_eq!(reply.status, 200, "{reply}");
    let renewed = reply.json();
    assert_eq!(
        renewed["refresh_token"],
        refresh_token.as_str(),
        "{renewed}"
    );
    let new_at = check_tokens(
        &renewed,
        &keys,
        base,
        &app.client_id,
        &webid,
        &new_key,
        None,
    );
    assert_ne!(new_at, at);
    let (status, me) = whoami(&http, base, &new_at, &new_key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["webId"], webid.as_str());
    let (status, _) = whoami(&http, base, &new_at, &key).await;
    assert_eq!(status, 401, "the new token is not bound to the old key");
}

#[tokio::test]
async fn the_login_and_consent_pages_work_as_plain_html_forms() {
    let node = node(&[]).await;
    let base = node.base.as_str();
    let http = client();
    let webid = account(&http, base, "bob", "bob@example.org").await;
    let name = r#"Bob <b>&"bold"</b> viewer"#;
    let (app, _) = register(
        &http,
        base,
        json!({"redirect_uris": [REDIRECT], "client_name": name}),
    )
    .await;
    let request = Authorization::new(&app, "openid webid");
    let mut browser = Browser::new();
    authorize(&mut browser, base, &request).await;

    // The login page: a form to the password login.
    let page = browser.get(&format!("{base}.account/"), HTML).await;
    assert_page(&page);
    let login = form_to(&page, &format!("{base}.account/login/password/"));
    assert!(login.has("email") && login.has("password"), "{page}");

    // A wrong password shows the form again with the reason.
    let refused = browser
        .submit(
            &login,
            &[("email", "bob@example.org"), ("password", "wrong")],
        )
        .await;
    assert!((400..500).contains(&refused.status), "{refused}");
    assert!(
        refused
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{refused}"
    );
    assert!(
        refused.text.contains("Invalid email/password combination"),
        "{refused}"
    );

    // The right one leads, through the interaction, to the WebID picker.
    let login = form_to(&refused, &format!("{base}.account/login/password/"));
    let reply = browser
        .submit(
            &login,
            &[("email", "bob@example.org"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(reply.status, 303, "{reply}");
    let page = browser.follow(reply, base, HTML).await;
    assert_page(&page);
    assert_eq!(page.url.as_str(), format!("{base}.account/"));
    let pick = form_to(&page, &format!("{base}.account/oidc/pick-webid/"));
    assert!(
        pick.fields
            .iter()
            .any(|f| f.kind == "radio" && f.name == "webId" && f.value == webid),
        "{page}"
    );

    // Then the consent page, which names the app without letting its name
    // inject markup.
    let reply = browser.submit(&pick, &[("webId", &webid)]).await;
    assert_eq!(reply.status, 303, "{reply}");
    let page = browser.follow(reply, base, HTML).await;
    assert_page(&page);
    let consent = form_to(&page, &format!("{base}.account/oidc/consent/"));
    assert!(!page.text.contains("<b>&"), "{page}");
    assert!(page.text.contains("Bob &lt;b&gt;&amp;"), "{page}");

    // Consenting sends the browser to the app with a code that works.
    let reply = browser.submit(&consent, &[("remember", "true")]).await;
    assert_eq!(reply.status, 303, "{reply}");
    let reply = browser.follow(reply, base, HTML).await;
    let code = code_from(&reply.see_other(), &app, &request, base);
    let key = DpopKey::new();
    let reply = exchange(
        &http,
        base,
        app.auth(),
        &key,
        &code,
        &request.pkce.verifier,
        &app.redirect_uri,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply}");
    let tokens = reply.json();
    let keys = jwks(&http, base).await;
    check_tokens(
        &tokens,
        &keys,
        base,
        &app.client_id,
        &webid,
        &key,
        Some(&request.nonce),
    );
    assert!(
        tokens.get("refresh_token").is_none(),
        "no offline_access was asked for: {tokens}"
    );
}

#[tokio::test]
async fn a_client_id_document_app_logs_in_as_a_public_client_with_a_key_bound_refresh() {
    let node = node(&[("CSS_OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8")]).await;
    let base = node.base.as_str();
    let http = client();
    let webid = account(&http, base, "carol", "carol@example.org").await;
    let document = ClientIdDocument::serve("Carol's notes").await;
    let app = App {
        client_id: document.url.clone(),
        secret: None,
        redirect_uri: document.redirect_uri.clone(),
    };

    // The consent page shows what the document says.
    let (request, consent, code) = sign_in(base, &app, "carol@example.org", &webid, true).await;
    assert_eq!(consent["client"]["client_id"], document.url.as_str());
    assert_eq!(consent["client"]["client_name"], "Carol's notes");

    // The code exchange names the client and sends no secret.
    let key = DpopKey::new();
    let reply = exchange(
        &http,
        base,
        app.auth(),
        &key,
        &code,
        &request.pkce.verifier,
        &app.redirect_uri,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply}");
    let tokens = reply.json();
    let keys = jwks(&http, base).await;
    let at = check_tokens(
        &tokens,
        &keys,
        base,
        &document.url,
        &webid,
        &key,
        Some(&request.nonce),
    );
    let (status, me) = whoami(&http, base, &at, &key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["clientId"], document.url.as_str());

    // Its refresh token works only with the key it was issued to.
    let refresh_token = tokens["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token: {tokens}"));
    let reply = refresh(&http, base, app.auth(), &DpopKey::new(), refresh_token).await;
    assert_refused(&reply, 400, "invalid_grant");
    let reply = refresh(&http, base, app.auth(), &key, refresh_token).await;
    assert_eq!(reply.status, 200, "{reply}");
    let at = check_tokens(
        &reply.json(),
        &keys,
        base,
        &document.url,
        &webid,
        &key,
        None,
    );
    let (status, me) = whoami(&http, base, &at, &key).await;
    assert_eq!(status, 200, "{me}");
}

#[tokio::test]
async fn authorization_errors_are_reported_where_the_app_can_see_them() {
    let node = node(&[]).await;
    let base = node.base.as_str();
    let http = client();
    let webid = account(&http, base, "dan", "dan@example.org").await;
    let (app, _) = register(
        &http,
        base,
        json!({"redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"]}),
    )
    .await;

    // Where the redirect URI cannot be trusted, the error stays here.
    for (request, error) in [
        (
            Authorization::new(&app, SCOPE).with("redirect_uri", Some("https://evil.example/cb")),
            "invalid_redirect_uri",
        ),
        (
            Authorization::new(&app, SCOPE).with("client_id", Some("no-such-app")),
            "invalid_client",
        ),
    ] {
        let reply = Reply::read(http.get(request.url(base)).send().await.unwrap()).await;
        assert_eq!(reply.status, 400, "{reply}");
        assert!(reply.header("location").is_none(), "{reply}");
        assert_eq!(reply.json()["error"], error, "{reply}");
    }

    // Otherwise the app hears of it at its redirect URI.
    let long = "s".repeat(1025);
    for (name, value, error) in [
        ("state", Some(long.as_str()), "invalid_request"),
        ("code_challenge", None, "invalid_request"),
        ("code_challenge_method", Some("plain"), "invalid_request"),
        ("response_type", Some("token"), "unsupported_response_type"),
        ("scope", Some("webid"), "invalid_scope"),
        ("prompt", Some("none"), "login_required"),
    ] {
        let request = Authorization::new(&app, SCOPE).with(name, value);
        let reply = Reply::read(http.get(request.url(base)).send().await.unwrap()).await;
        let to = reply.see_other();
        if name == "state" {
            // Not echoed: it is the refused value.
            assert_eq!(query(&to, "error").as_deref(), Some(error), "{to}");
            continue;
        }
        assert_eq!(
            error_from(&to, &app, &request, base),
            error,
            "{name}={value:?}"
        );
    }

    // During the interaction: consent before a WebID is picked, and
    // someone else's WebID, are refused; forgetting the WebID asks again;
    // cancelling tells the app.
    let mut browser = Browser::new();
    let request = Authorization::new(&app, SCOPE);
    authorize(&mut browser, base, &request).await;
    login_json(&mut browser, base, "dan@example.org").await;
    let a = format!("{base}.account/");
    let early = browser
        .post_json(&format!("{a}oidc/consent/"), json!({"remember": true}))
        .await;
    assert_eq!(early.status, 400, "{early}");
    let foreign = browser
        .post_json(
            &format!("{a}oidc/pick-webid/"),
            json!({"webId": "https://someone.example/card#me"}),
        )
        .await;
    assert_eq!(foreign.status, 400, "{foreign}");
    assert_eq!(
        foreign.json()["message"],
        "WebID does not belong to this account.",
        "{foreign}"
    );
    pick_webid(&mut browser, base, &webid).await;
    let forgot = browser
        .post_json(&format!("{a}oidc/forget-webid/"), json!({}))
        .await;
    assert_eq!(forgot.status, 200, "{forgot}");
    resume(
        &mut browser,
        base,
        forgot.json()["location"].as_str().unwrap(),
    )
    .await;
    assert_eq!(prompt(&mut browser, base).await.0, "login");
    pick_webid(&mut browser, base, &webid).await;
    let cancel = browser
        .post_json(&format!("{a}oidc/cancel/"), json!({}))
        .await;
    assert_eq!(cancel.status, 200, "{cancel}");
    let reply = browser
        .get(cancel.json()["location"].as_str().unwrap(), "*/*")
        .await;
    assert_eq!(
        error_from(&reply.see_other(), &app, &request, base),
        "access_denied"
    );

    // Outside an interaction the interaction's controls explain
    // themselves.
    let mut stranger = Browser::new();
    for (method, path, body) in [
        (Method::GET, "prompt/", None),
        (Method::GET, "pick-webid/", None),
        (Method::GET, "consent/", None),
        (Method::POST, "pick-webid/", Some(json!({"webId": webid}))),
        (Method::POST, "consent/", Some(json!({"remember": true}))),
        (Method::POST, "forget-webid/", Some(json!({}))),
        (Method::POST, "cancel/", Some(json!({}))),
    ] {
        let body = body.map_or(Body::Empty, Body::Json);
        let reply = stranger
            .send(method.clone(), &format!("{a}oidc/{path}"), JSON, body)
            .await;
        assert_eq!(reply.status, 400, "{method} {path}: {reply}");
        assert_eq!(reply.json()["errorCode"], "E0002", "{reply}");
        assert_eq!(
            reply.json()["message"],
            "This action can only be performed as part of an OIDC authentication flow.",
            "{reply}"
        );
    }

    // The resume URL needs the browser's resume cookie.
    let mut other = Browser::new();
    authorize(&mut other, base, &Authorization::new(&app, SCOPE)).await;
    let path = other.jar.get("_interaction_resume").unwrap().path.clone();
    let resume_url = Url::parse(base).unwrap().join(&path).unwrap();
    let reply = Reply::read(http.get(resume_url.clone()).send().await.unwrap()).await;
    assert_eq!(reply.status, 400, "{reply}");
    resume(&mut other, base, resume_url.as_str()).await;
}

#[tokio::test]
async fn codes_are_single_use_pkce_bound_and_offline_access_needs_remember() {
    let node = node(&[]).await;
    let base = node.base.as_str();
    let http = client();
    let email = "erin@example.org";
    let webid = account(&http, base, "erin", email).await;
    let (app, _) = register(
        &http,
        base,
        json!({"redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"]}),
    )
    .await;
    let key = DpopKey::new();

    // A wrong verifier is refused, and the code still works with the
    // right one.
    let (request, _, code) = sign_in(base, &app, email, &webid, true).await;
    let wrong = Pkce::new().verifier;
    let reply = exchange(&http, base, app.auth(), &key, &code, &wrong, REDIRECT).await;
    assert_refused(&reply, 400, "invalid_grant");
    let verifier = request.pkce.verifier.as_str();
    let reply = exchange(&http, base, app.auth(), &key, &code, verifier, REDIRECT).await;
    assert_eq!(reply.status, 200, "{reply}");
    let refresh_token = reply.json()["refresh_token"].as_str().unwrap().to_string();
    let reply = refresh(&http, base, app.auth(), &key, &refresh_token).await;
    assert_eq!(reply.status, 200, "{reply}");

    // Replaying the code fails, and revokes what its first use gave.
    let reply = exchange(&http, base, app.auth(), &key, &code, verifier, REDIRECT).await;
    assert_refused(&reply, 400, "invalid_grant");
    let reply = refresh(&http, base, app.auth(), &key, &refresh_token).await;
    assert_refused(&reply, 400, "invalid_grant");

    // A DPoP proof is good for one request.
    let (request, _, code) = sign_in(base, &app, email, &webid, true).await;
    let proof = key.proof("POST", &format!("{base}.oidc/token"), None);
    let reply = token_request(
        &http,
        base,
        app.auth(),
        &proof,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &request.pkce.verifier),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{reply}");
    let refresh_token = reply.json()["refresh_token"].as_str().unwrap().to_string();
    let reply = token_request(
        &http,
        base,
        app.auth(),
        &proof,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await;
    assert_refused(&reply, 400, "invalid_dpop_proof");
    let reply = refresh(&http, base, app.auth(), &key, &refresh_token).await;
    assert_eq!(reply.status, 200, "{reply}");

    // Without "remember" at the consent there is no refresh token. A wrong
    // secret is refused as bad client authentication.
    let (request, _, code) = sign_in(base, &app, email, &webid, false).await;
    let verifier = request.pkce.verifier.as_str();
    let wrong = Auth::Basic(&app.client_id, "not-the-secret");
    let reply = exchange(&http, base, wrong, &key, &code, verifier, REDIRECT).await;
    assert_refused(&reply, 401, "invalid_client");
    let secret = app.secret.as_deref().unwrap();
    let post = Auth::Post(&app.client_id, secret);
    let reply = exchange(&http, base, post, &key, &code, verifier, REDIRECT).await;
    assert_eq!(reply.status, 200, "{reply}");
    let tokens = reply.json();
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    assert_eq!(scopes(&tokens), ["openid", "webid"]);
}

#[tokio::test]
async fn forms_from_other_sites_cannot_log_in_or_answer_a_login_step() {
    let node = node(&[]).await;
    let base = node.base.as_str();
    let ours = Url::parse(base).unwrap().origin().ascii_serialization();
    let http = client();
    account(&http, base, "erin", "erin@example.org").await;
    let login = format!("{base}.account/login/password/");
    let form = [("email", "erin@example.org"), ("password", PASSWORD)];

    // A form posted from another site (the browser names its origin, a
    // sandboxed page's "null", or the fetch site) logs nobody in.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let reply = Reply::read(
            http.post(&login)
                .header(name, value)
                .header("accept", HTML)
                .form(&form)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, 403, "{name}: {value}: {reply}");
        assert!(reply.header("set-cookie").is_none(), "{reply}");
        assert!(reply.text.contains("other sites"), "{reply}");
    }
    // From this server's own page it works, and so does JSON from an app
    // on another origin (a form cannot send JSON).
    let reply = Reply::read(
        http.post(&login)
            .header("origin", &ours)
            .form(&form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply}");
    let reply = Reply::read(
        http.post(&login)
            .header("origin", "https://app.example")
            .json(&json!({"email": "erin@example.org", "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply}");

    // During a login for an app, another site cannot cancel it (or answer
    // any other step) for the user.
    let (app, _) = register(
        &http,
        base,
        json!({"redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"]}),
    )
    .await;
    let mut browser = Browser::new();
    authorize(&mut browser, base, &Authorization::new(&app, SCOPE)).await;
    login_json(&mut browser, base, "erin@example.org").await;
    let cancel = format!("{base}.account/oidc/cancel/");
    let cookies = browser
        .jar
        .header_for(&Url::parse(&cancel).unwrap())
        .unwrap();
    let reply = Reply::read(
        http.post(&cancel)
            .header("origin", "https://evil.example")
            .header("cookie", cookies)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 403, "{reply}");
    let (step, _) = prompt(&mut browser, base).await;
    assert_eq!(step, "login", "the login goes on");

    // An app that asks for a maximum age gets a fresh password login, even
    // from a browser that is logged in.
    let request = Authorization::new(&app, SCOPE).with("max_age", Some("3600"));
    authorize(&mut browser, base, &request).await;
    let (step, _) = prompt(&mut browser, base).await;
    assert_eq!(step, "account");
}
