//! The identity provider's HTML pages: password login and registration,
//! picking a WebID and consenting during an OpenID login, the account
//! overview, and a message page for everything else. No JavaScript: plain
//! forms posting to the `/.account/` API, so they work with a keyboard, a
//! screen reader or a text browser. Every value put into a page goes
//! through [`escape`]; the handlers decide when a page is shown
//! ([`prefers_html`]) and send it with [`response`].

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An OpenID client asking for consent, as the consent page shows it.
pub struct Client<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    /// The client's homepage, shown as a link only if it is http(s).
    pub uri: Option<&'a str>,
    pub redirect_uri: &'a str,
    /// Asks for offline_access (a refresh token).
    pub offline: bool,
}

/// Escapes text for HTML text and quoted attribute values alike.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font: 1.05rem/1.5 system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #fff; }
header { padding: .5rem 1rem; border-bottom: 1px solid #ccc; color: #444; } header p { margin: 0; }
main { max-width: 36rem; margin: 1.5rem auto; padding: 0 1rem; }
label { display: block; font-weight: 600; margin-top: 1rem; } .check label { display: inline; font-weight: normal; }
.check { margin: .75rem 0; } .help { color: #444; font-size: .95rem; margin: .25rem 0 0; }
input[type=email], input[type=password], input[type=text] { display: block; width: 100%; box-sizing: border-box;
  padding: .5rem; font: inherit; border: 1px solid #555; border-radius: 4px; }
input[type=checkbox], input[type=radio] { width: 1.1rem; height: 1.1rem; vertical-align: middle; }
button { font: inherit; padding: .5rem 1.25rem; margin: 1rem .5rem 0 0; cursor: pointer; color: #fff;
  background: #0b4f9c; border: 2px solid #0b4f9c; border-radius: 4px; } button.secondary { color: #0b4f9c; background: #fff; }
a { color: #0b4f9c; } form.inline { display: inline; } fieldset { border: 1px solid #999; border-radius: 4px; }
:focus-visible { outline: 3px solid #b34700; outline-offset: 2px; }
[role=alert] { border-left: 4px solid #b00020; background: #fdecee; color: #5f0010; padding: .5rem 1rem; }
code, dd { overflow-wrap: anywhere; } dt { font-weight: 600; } dd { margin: 0 0 .5rem; }
";

/// `host[:port]` of a URL, or None for one without a host.
fn host(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// The frame every page shares; `title` is text, `body` is markup. The
/// header names the server, so a visitor sees where they log in.
fn page(base: &str, title: &str, body: &str) -> String {
    let t = escape(title);
    let h = escape(&host(base).unwrap_or_else(|| base.to_owned()));
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t} - {h}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header><p>Solid pods at {h}</p></header>\n<main>\n<h1>{t}</h1>\n{body}</main>\n</body>\n</html>\n"
    )
}

/// The error, announced before the form, and the attribute that ties the
/// page's forms to it.
fn alert(error: Option<&str>) -> (String, &'static str) {
    match error {
        Some(e) => (
            format!("<p id=\"error\" role=\"alert\">{}</p>\n", escape(e)),
            " aria-describedby=\"error\"",
        ),
        None => (String::new(), ""),
    }
}

/// The "remember" checkbox every OpenID form offers; `true` when ticked.
fn remember(label: &str, checked: bool) -> String {
    let checked = if checked { " checked" } else { "" };
    format!(
        "<p class=\"check\"><input type=\"checkbox\" id=\"remember\" name=\"remember\" \
         value=\"true\"{checked}> <label for=\"remember\">{label}</label></p>\n"
    )
}

pub fn login(base: &str, email: &str, error: Option<&str>) -> String {
    let (alert, described) = alert(error);
    let (b, e) = (escape(base), escape(email));
    // The email is the login name, so password managers file it as one.
    let body = format!(
        r#"{alert}<form method="post" action="{b}.account/login/password/"{described}>
<label for="email">Email</label>
<input type="email" id="email" name="email" value="{e}" autocomplete="username" required>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
{check}<button type="submit">Log in</button>
</form>
<p>No account yet? <a href="{b}.account/login/password/register/">Create an account</a>.</p>
"#,
        check = remember("Remember me on this device", false),
    );
    page(base, "Log in", &body)
}

pub fn register(base: &str, email: &str, error: Option<&str>) -> String {
    let (alert, described) = alert(error);
    let (b, e) = (escape(base), escape(email));
    // The pod name is no login name: autocomplete stays off so a password
    // manager does not file it as the username.
    let body = format!(
        r#"{alert}<form method="post" action="{b}.account/login/password/register/"{described}>
<label for="email">Email</label>
<input type="email" id="email" name="email" value="{e}" autocomplete="email" required>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="new-password" required>
<label for="podName">Pod name</label>
<input type="text" id="podName" name="podName" autocomplete="off" autocapitalize="none" spellcheck="false" aria-describedby="podName-help">
<p class="help" id="podName-help">Optional: a pod named like this is created, with your WebID at …/profile/card#me</p>
<button type="submit">Create account</button>
</form>
<p>Already have an account? <a href="{b}.account/login/password/">Log in</a>.</p>
"#
    );
    page(base, "Create an account", &body)
}

pub fn pick_webid(base: &str, account_url: &str, webids: &[String], error: Option<&str>) -> String {
    let (alert, described) = alert(error);
    let title = "Choose a WebID";
    if webids.is_empty() {
        let body = format!(
            "{alert}<p>Your account has no WebID yet. Create a pod on \
             <a href=\"{}\">your account page</a> to get one, then log in to the app again.</p>\n",
            escape(account_url)
        );
        return page(base, title, &body);
    }
    let mut radios = String::new();
    for (i, webid) in webids.iter().enumerate() {
        let checked = if i == 0 { " checked" } else { "" };
        radios += &format!(
            "<p class=\"check\"><input type=\"radio\" id=\"webid-{i}\" name=\"webId\" \
             value=\"{w}\"{checked}> <label for=\"webid-{i}\">{w}</label></p>\n",
            w = escape(webid)
        );
    }
    let body = format!(
        r#"{alert}<form method="post" action="{b}.account/oidc/pick-webid/"{described}>
<fieldset>
<legend>The app will act as this WebID</legend>
{radios}</fieldset>
<button type="submit">Continue</button>
</form>
"#,
        b = escape(base),
    );
    page(base, title, &body)
}

const OFFLINE: &str = "Yes: it may keep acting as you after you leave it.";
const ONLINE: &str = "No: its access ends when its current login expires.";
const STAY: &str = "Let this app stay logged in (it may refresh its access)";

pub fn consent(base: &str, client: &Client<'_>, webid: &str, error: Option<&str>) -> String {
    let (alert, described) = alert(error);
    let b = escape(base);
    let name = client.name.map(str::trim).filter(|n| !n.is_empty());
    let name = escape(name.unwrap_or(client.id));
    let back = escape(&host(client.redirect_uri).unwrap_or_else(|| client.redirect_uri.into()));
    let homepage = client.uri.and_then(|u| url::Url::parse(u).ok());
    let homepage = match homepage.filter(|u| matches!(u.scheme(), "http" | "https")) {
        Some(u) => format!(
            "<dt>Homepage</dt><dd><a href=\"{0}\">{0}</a></dd>\n",
            escape(u.as_str())
        ),
        None => String::new(),
    };
    let stay = if client.offline { OFFLINE } else { ONLINE };
    let check = if client.offline {
        remember(STAY, true)
    } else {
        String::new()
    };
    // The name is the app's own claim, so the facts a visitor can check
    // (client id, where they go back to) stand next to it.
    let body = format!(
        r#"{alert}<p><strong>{name}</strong> wants to use your pods as you. The app chose this name itself.</p>
<dl>
<dt>App</dt><dd>{name}</dd>
<dt>Client ID</dt><dd><code>{id}</code></dd>
{homepage}<dt>Acts as WebID</dt><dd><code>{webid}</code></dd>
<dt>Stays logged in</dt><dd>{stay}</dd>
</dl>
<p>Whatever you choose, you will be sent back to <strong>{back}</strong>.</p>
<form method="post" action="{b}.account/oidc/consent/"{described}>
{check}<button type="submit">Allow</button>
</form>
<form class="inline" method="post" action="{b}.account/oidc/cancel/"{described}><button type="submit" class="secondary">Deny</button></form>
<form class="inline" method="post" action="{b}.account/oidc/forget-webid/"{described}><button type="submit" class="secondary">Use another WebID</button></form>
"#,
        id = escape(client.id),
        webid = escape(webid),
    );
    page(base, "Allow this app?", &body)
}

pub fn account(
    base: &str,
    account_url: &str,
    pods: &[(String, String)],
    error: Option<&str>,
) -> String {
    let (alert, described) = alert(error);
    let a = escape(account_url);
    let mut list = String::new();
    for (pod, webid) in pods {
        let (p, w) = (escape(pod), escape(webid));
        list += &format!("<li><a href=\"{p}\">{p}</a><br>WebID: <code>{w}</code></li>\n");
    }
    list = if list.is_empty() {
        "<p>You have no pod yet.</p>\n".to_owned()
    } else {
        format!("<ul>\n{list}</ul>\n")
    };
    let body = format!(
        r#"{alert}<h2>Your pods</h2>
{list}<h2>Create a pod</h2>
<form method="post" action="{a}pod/"{described}>
<label for="name">Pod name</label>
<input type="text" id="name" name="name" autocomplete="off" autocapitalize="none" spellcheck="false" required>
<button type="submit">Create pod</button>
</form>
<form method="post" action="{a}logout/"{described}><button type="submit" class="secondary">Log out</button></form>
"#
    );
    page(base, "Your account", &body)
}

pub fn message(base: &str, title: &str, text: &str, link: Option<(&str, &str)>) -> String {
    let link = link
        .map(|(href, text)| format!("<p><a href=\"{}\">{}</a></p>\n", escape(href), escape(text)));
    let body = format!("<p>{}</p>\n{}", escape(text), link.unwrap_or_default());
    page(base, title, &body)
}

/// Whether a GET prefers HTML: `text/html` (or application/xhtml+xml) has a
/// strictly higher q than `application/json` and than `*/*`-only matches;
/// no Accept or `*/*` → false. Parse q-values properly.
///
/// Only an explicit HTML range counts; JSON's q falls back to
/// `application/*`, then `*/*`. A range with a malformed q is ignored.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    let (mut html, mut json, mut app_any, mut any) = (None, None, None, None);
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    for range in accept.flat_map(|v| v.split(',')) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = Some(1.0_f32);
        for param in parts {
            if let Some((k, v)) = param.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = qvalue(v.trim());
            }
        }
        let Some(q) = q else { continue };
        let slot = match media.as_str() {
            "text/html" | "application/xhtml+xml" => &mut html,
            "application/json" => &mut json,
            "application/*" => &mut app_any,
            "*/*" => &mut any,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old: f32| old.max(q)));
    }
    let Some(html) = html else { return false };
    let json = json.or(app_any).or(any).unwrap_or(0.0);
    html > 0.0 && html > json && html > any.unwrap_or(0.0)
}

/// A qvalue per RFC 9110: 0 to 1, at most three decimals.
fn qvalue(v: &str) -> Option<f32> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !matches!(int, "0" | "1") || frac.len() > 3 || !digits(frac) {
        return None;
    }
    v.parse().ok().filter(|q| *q <= 1.0)
}

/// The page as a response, with headers that keep it from being framed,
/// cached, sniffed or leaking its URL to the next site.
pub fn response(status: StatusCode, html: String) -> Response {
    // No form-action: browsers apply it to the redirect after the consent
    // form, which goes to the app.
    const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://pods.example/";
    const ACC: &str = "https://pods.example/.account/account/a1/";
    const ME: &str = "https://pods.example/a/profile/card#me";

    fn client(name: Option<&str>, offline: bool) -> Client<'_> {
        let (id, uri) = ("https://app.example/id", Some("https://app.example/"));
        let redirect_uri = "http://localhost:3000/cb";
        Client {
            id,
            name,
            uri,
            redirect_uri,
            offline,
        }
    }

    /// Every page, each with an error where it takes one.
    fn all_pages() -> Vec<String> {
        let pods = [("https://pods.example/a/".to_owned(), ME.to_owned())];
        vec![
            login(BASE, "", Some("Wrong password")),
            register(BASE, "a@example.org", Some("Taken")),
            pick_webid(BASE, ACC, &[ME.to_owned()], Some("Pick one")),
            consent(BASE, &client(Some("App"), true), ME, Some("Try again")),
            account(BASE, ACC, &pods, Some("No such pod")),
            message(BASE, "Done", "All good.", Some((BASE, "Home"))),
        ]
    }

    #[test]
    fn pages_are_labelled_documents_with_errors_before_forms() {
        let head = [
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "<title>",
            "<main>",
        ];
        for html in all_pages() {
            assert!(head.iter().all(|part| html.contains(part)), "{html}");
            assert_eq!(html.matches("<h1>").count(), 1);
            for input in html.split("<input").skip(1) {
                let tag = &input[..input.find('>').unwrap()];
                let id = tag.split(" id=\"").nth(1).unwrap().split('"').next();
                let label = format!("<label for=\"{}\">", id.unwrap());
                assert!(html.contains(&label), "no {label}");
            }
            if let Some(form) = html.find("<form") {
                assert!(html.find("<p id=\"error\" role=\"alert\">").unwrap() < form);
                let tag = &html[form..form + html[form..].find('>').unwrap()];
                assert!(tag.contains(" aria-describedby=\"error\""), "{tag}");
            }
        }
        let html = login(BASE, "", None);
        assert!(!html.contains("role=\"alert\"") && !html.contains("aria-describedby"));
    }

    #[test]
    fn forms_post_fixed_fields_to_absolute_urls() {
        let html = login(BASE, "a@example.org", None);
        assert!(html.contains(
            r#"<form method="post" action="https://pods.example/.account/login/password/">"#
        ));
        assert!(html.contains(r#"value="a@example.org" autocomplete="username" required>"#));
        assert!(html.contains(r#"name="remember" value="true">"#));
        assert!(
            html.contains(r#"<a href="https://pods.example/.account/login/password/register/">"#)
        );
        let html = register(BASE, "", None);
        assert!(html.contains(r#"name="podName""#) && html.contains(r#""new-password""#));
        let html = account(BASE, ACC, &[], None);
        assert!(html.contains(&format!(r#"action="{ACC}pod/""#)) && html.contains("no pod yet"));
        assert!(html.contains(&format!(r#"action="{ACC}logout/""#)));
    }

    #[test]
    fn hostile_values_are_escaped() {
        let text = r#"<a href='x'>"&"</a>"#;
        let want = "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;";
        assert_eq!(escape(text), want);
        let mut evil = client(Some("<script>alert('pwned')</script>"), false);
        evil.id = "https://evil.example/\"><script>";
        evil.uri = Some("javascript:alert(1)");
        let webid = "https://x.example/#'\"><img src=x>";
        let html = consent(BASE, &evil, webid, Some("<b id=x>"));
        for hostile in ["<script", "<img", "<b ", "javascript:"] {
            assert!(!html.contains(hostile), "{hostile}");
        }
        assert!(html.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"));
        assert!(html.contains("https://evil.example/&quot;&gt;&lt;script&gt;"));
        assert!(html.contains("#&#39;&quot;&gt;&lt;img src=x&gt;"));
        assert!(html.contains("&lt;b id=x&gt;"));
    }

    #[test]
    fn consent_offers_staying_logged_in_only_when_asked() {
        let html = consent(BASE, &client(None, false), ME, None);
        assert!(!html.contains("name=\"remember\""));
        assert!(
            html.contains("<strong>https://app.example/id</strong> wants"),
            "id for name"
        );
        assert!(html.contains("sent back to <strong>localhost:3000</strong>"));
        assert!(html.contains(r#"<a href="https://app.example/">"#));
        for action in ["consent", "cancel", "forget-webid"] {
            assert!(html.contains(&format!("action=\"{BASE}.account/oidc/{action}/\"")));
        }
        let html = consent(BASE, &client(Some("App"), true), ME, None);
        assert!(html.contains(r#"name="remember" value="true" checked>"#));
    }

    #[test]
    fn pick_webid_checks_the_first_or_sends_to_the_account_page() {
        let html = pick_webid(BASE, ACC, &[], None);
        assert!(!html.contains("<form") && html.contains("no WebID yet"));
        assert!(html.contains(&format!("<a href=\"{ACC}\">")));
        let webids = [
            "https://a.example/#me".to_owned(),
            "https://b.example/#me".to_owned(),
        ];
        let html = pick_webid(BASE, ACC, &webids, None);
        assert!(html.contains(&format!("action=\"{BASE}.account/oidc/pick-webid/\"")));
        assert!(html.contains(r#"name="webId" value="https://a.example/#me" checked>"#));
        assert!(html.contains(r#"name="webId" value="https://b.example/#me">"#));
        assert!(html.contains("<fieldset>\n<legend>"));
    }

    #[test]
    fn prefers_html_compares_q_values() {
        assert!(!prefers_html(&HeaderMap::new()));
        for (accept, html) in [
            ("text/html", true),
            ("text/html,application/json;q=0.9", true),
            (
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                true,
            ),
            ("application/xhtml+xml;q=0.9, application/*;q=0.5", true),
            ("*/*", false),
            ("application/json", false),
            ("text/html;q=0.5,application/json", false),
            ("text/html, */*", false),
            ("text/html;q=0", false),
            ("text/html;q=2, application/json;q=0.1", false), // bad q: ignored
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, accept.parse().unwrap());
            assert_eq!(prefers_html(&headers), html, "{accept}");
        }
    }

    #[test]
    fn responses_carry_the_page_headers() {
        let resp = response(StatusCode::FORBIDDEN, message(BASE, "No", "Denied.", None));
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let csp = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
        for (name, value) in [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ] {
            assert_eq!(resp.headers()[&name], value);
        }
    }
}
