//! One side of a copy: a container on some Solid server, reached over HTTP.
//! Requests, the errors they end in, `Link` headers and container listings.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode, header};

use super::WalkError;
use crate::rdf;

const LDP_CONTAINS: &str = "http://www.w3.org/ns/ldp#contains";

/// A client suited to copying: bounded connection set-up and reads, no
/// bound on a whole transfer (resources may be large).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
}

/// A container on a server, and the client that reaches it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The container URL, ending in `/`.
    pub base: String,
    pub client: reqwest::Client,
}

/// What a response says about a resource besides its body.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub status: u16,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    /// `rel` → absolute URL, from every `Link` header.
    pub links: HashMap<String, String>,
}

impl Head {
    fn of(url: &str, resp: &reqwest::Response) -> Head {
        let h = resp.headers();
        let text = |name: header::HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.to_string())
        };
        let mut links = HashMap::new();
        for value in h.get_all(header::LINK) {
            if let Ok(v) = value.to_str() {
                for (rel, target) in parse_links(v) {
                    if let Ok(abs) = url::Url::parse(url).and_then(|u| u.join(&target)) {
                        links.entry(rel).or_insert_with(|| abs.to_string());
                    }
                }
            }
        }
        Head {
            status: resp.status().as_u16(),
            content_type: text(header::CONTENT_TYPE),
            etag: text(header::ETAG),
            links,
        }
    }

    pub fn exists(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `(rel, target)` pairs of one `Link` header value; a `rel` naming several
/// relations gives one pair each.
pub fn parse_links(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let target = rest[open + 1..open + close].trim().to_string();
        rest = &rest[open + close + 1..];
        let params_end = rest.find('<').unwrap_or(rest.len());
        let params = &rest[..params_end];
        for param in params.split(';') {
            let Some((name, val)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("rel") {
                let val = val.trim().trim_end_matches(',').trim().trim_matches('"');
                for rel in val.split_whitespace() {
                    out.push((rel.to_ascii_lowercase(), target.clone()));
                }
            }
        }
        rest = &rest[params_end..];
    }
    out
}

impl Endpoint {
    /// The absolute URL of a path relative to the base.
    pub fn url(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    /// The path of `url` relative to the base, if it is under it.
    pub fn rel<'a>(&self, url: &'a str) -> Option<&'a str> {
        url.strip_prefix(self.base.as_str())
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, WalkError> {
        let req = build(self.client.request(method.clone(), url));
        let resp = req.send().await.map_err(|e| WalkError::Unreachable {
            url: url.to_string(),
            reason: error_chain(&e),
        })?;
        match resp.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(WalkError::Auth {
                method: method.to_string(),
                url: url.to_string(),
                status: resp.status().as_u16(),
            }),
            _ => Ok(resp),
        }
    }

    /// HEAD: status, type, ETag and links; a missing resource is a 404 `Head`.
    pub async fn head(&self, url: &str) -> Result<Head, WalkError> {
        let resp = self.send(Method::HEAD, url, |r| r).await?;
        Ok(Head::of(url, &resp))
    }

    /// GET with its head; the body is left in the response.
    pub async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<(Head, reqwest::Response), WalkError> {
        let resp = self
            .send(Method::GET, url, |r| match accept {
                Some(a) => r.header(header::ACCEPT, a),
                None => r,
            })
            .await?;
        Ok((Head::of(url, &resp), resp))
    }

    /// The children of a container (absolute URLs directly under it) and its head.
    pub async fn list(&self, url: &str) -> Result<(Head, Vec<String>), WalkError> {
        let (head, resp) = self
            .get(url, Some("text/turtle, application/ld+json;q=0.9"))
            .await?;
        if !head.exists() {
            return Err(status_error("GET", url, resp).await);
        }
        let ct = head.content_type.clone().unwrap_or_default();
        let body = read_body(url, resp).await?;
        let syntax = rdf::input_syntax(&ct).ok_or_else(|| {
            WalkError::Other(format!(
                "{url} is not a container this copier can read: it answered {ct:?} instead of Turtle"
            ))
        })?;
        let triples = rdf::parse(&body, syntax, url)
            .map_err(|e| WalkError::Other(format!("the listing of {url} is unreadable: {e}")))?;
        let mut children: Vec<String> = triples
            .into_iter()
            .filter(|t| t.predicate.as_str() == LDP_CONTAINS)
            .filter(|t| matches!(&t.subject, oxigraph::model::NamedOrBlankNode::NamedNode(s) if s.as_str() == url))
            .filter_map(|t| match t.object {
                oxigraph::model::Term::NamedNode(n) => Some(n.into_string()),
                _ => None,
            })
            .filter(|child| match child.strip_prefix(url) {
                Some(name) => {
                    let name = name.strip_suffix('/').unwrap_or(name);
                    let ok = !name.is_empty() && !name.contains('/');
                    if !ok {
                        tracing::warn!(container = url, child, "ignoring a contained resource that is not directly inside its container");
                    }
                    ok
                }
                None => {
                    tracing::warn!(container = url, child, "ignoring a contained resource outside its container");
                    false
                }
            })
            .collect();
        children.sort();
        children.dedup();
        Ok((head, children))
    }
}

pub async fn read_body(url: &str, resp: reqwest::Response) -> Result<bytes::Bytes, WalkError> {
    resp.bytes().await.map_err(|e| WalkError::Unreachable {
        url: url.to_string(),
        reason: format!("the body broke off: {}", error_chain(&e)),
    })
}

/// The error for an unexpected status, with the start of the server's explanation.
pub async fn status_error(method: &str, url: &str, resp: reqwest::Response) -> WalkError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let detail: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let detail: String = detail.chars().take(300).collect();
    WalkError::Status {
        method: method.to_string(),
        url: url.to_string(),
        status,
        detail,
    }
}

pub use crate::outbound::error_chain;

#[cfg(test)]
mod tests {
    use super::parse_links;

    #[test]
    fn links_with_several_values_and_relations() {
        let links = parse_links(
            "<http://x/a.acl>; rel=\"acl\", <http://x/a.meta>; rel=describedby, <http://t/1,2>; rel=\"type other\"",
        );
        assert_eq!(
            links,
            vec![
                ("acl".to_string(), "http://x/a.acl".to_string()),
                ("describedby".to_string(), "http://x/a.meta".to_string()),
                ("type".to_string(), "http://t/1,2".to_string()),
                ("other".to_string(), "http://t/1,2".to_string()),
            ]
        );
    }
}
