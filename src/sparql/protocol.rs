//! The SPARQL 1.1 Protocol: how a query or an update arrives, and the
//! dataset a query asks for.

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oxigraph::model::NamedNode;

use crate::ldp::error::LdpError;

/// The largest query or update accepted.
const MAX_REQUEST: u64 = 1 << 20;
const ALLOW: &str = "OPTIONS, HEAD, GET, POST";

pub enum Operation {
    Query(String),
    Update(String),
}

/// A query or update, with the graphs the protocol's parameters name.
pub struct Request {
    pub operation: Operation,
    /// `default-graph-uri` parameters, if any.
    pub default_graphs: Vec<String>,
    /// `named-graph-uri` parameters, if any.
    pub named_graphs: Vec<String>,
    /// Whether `using-graph-uri` or `using-named-graph-uri` was given.
    pub using: bool,
}

/// The answer to OPTIONS.
pub fn options() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(ALLOW));
    resp
}

/// Reads the request: `None` for OPTIONS.
pub async fn read(
    method: &Method,
    headers: &HeaderMap,
    query_string: Option<&str>,
    body: Body,
) -> Result<Option<Request>, LdpError> {
    let mut params = parameters(query_string.unwrap_or_default().as_bytes());
    let operation = match *method {
        Method::OPTIONS => return Ok(None),
        Method::GET | Method::HEAD => {
            if params.update.is_some() {
                return Err(LdpError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "a SPARQL update is POSTed, as application/sparql-update or a form",
                )
                .with(header::ALLOW, ALLOW));
            }
            Operation::Query(params.query.take().ok_or_else(|| {
                LdpError::bad_request(
                    "no query: give one as ?query=… or POST it as application/sparql-query",
                )
            })?)
        }
        Method::POST => {
            let content_type = content_type(headers);
            let stream = crate::ldp::put::body_stream(body);
            let bytes = crate::ldp::write::read_limited(stream, MAX_REQUEST).await?;
            let text = || {
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| LdpError::bad_request("the request body is not UTF-8"))
            };
            match content_type.as_str() {
                "application/sparql-query" => Operation::Query(text()?),
                "application/sparql-update" => Operation::Update(text()?),
                "application/x-www-form-urlencoded" => {
                    let form = parameters(&bytes);
                    params.default_graphs.extend(form.default_graphs);
                    params.named_graphs.extend(form.named_graphs);
                    params.using |= form.using;
                    match (form.query, form.update) {
                        (Some(q), None) => Operation::Query(q),
                        (None, Some(u)) => Operation::Update(u),
                        _ => {
                            return Err(LdpError::bad_request(
                                "the form needs exactly one of query= and update=",
                            ));
                        }
                    }
                }
                other => {
                    return Err(LdpError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!(
                            "cannot POST {} to a SPARQL endpoint; use application/sparql-query, application/sparql-update or application/x-www-form-urlencoded",
                            if other.is_empty() {
                                "a body without a Content-Type"
                            } else {
                                other
                            }
                        ),
                    ));
                }
            }
        }
        _ => {
            return Err(LdpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not supported by a SPARQL endpoint"),
            )
            .with(header::ALLOW, ALLOW));
        }
    };
    Ok(Some(Request {
        operation,
        default_graphs: params.default_graphs,
        named_graphs: params.named_graphs,
        using: params.using,
    }))
}

/// The request's media type, without parameters ("" when it has none).
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(crate::rdf::essence)
        .unwrap_or_default()
}

/// Whether a request may write, as far as its head tells: a SPARQL query
/// POSTed to a sidecar (`sidecar`) does not. `None` for a form POSTed to a
/// sidecar, whose body tells ([`form_writes`]).
pub fn writes_by_head(sidecar: bool, method: &Method, headers: &HeaderMap) -> Option<bool> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Some(false);
    }
    if !sidecar || *method != Method::POST {
        return Some(true);
    }
    match content_type(headers).as_str() {
        "application/sparql-query" => Some(false),
        "application/x-www-form-urlencoded" => None,
        _ => Some(true),
    }
}

/// Whether a form POSTed to a sidecar may write: an update may, a query
/// does not. The body is read (within the limit [`read`] has) and handed
/// back.
pub async fn form_writes(body: Body) -> Result<(bool, Body), LdpError> {
    let stream = crate::ldp::put::body_stream(body);
    let bytes = crate::ldp::write::read_limited(stream, MAX_REQUEST).await?;
    let form = parameters(&bytes);
    let query = form.query.is_some() && form.update.is_none();
    Ok((!query, Body::from(bytes)))
}

#[derive(Default)]
struct Parameters {
    query: Option<String>,
    update: Option<String>,
    default_graphs: Vec<String>,
    named_graphs: Vec<String>,
    using: bool,
}

fn parameters(encoded: &[u8]) -> Parameters {
    let mut p = Parameters::default();
    for (name, value) in url::form_urlencoded::parse(encoded) {
        match name.as_ref() {
            "query" => p.query = Some(value.into_owned()),
            "update" => p.update = Some(value.into_owned()),
            "default-graph-uri" => p.default_graphs.push(value.into_owned()),
            "named-graph-uri" => p.named_graphs.push(value.into_owned()),
            "using-graph-uri" | "using-named-graph-uri" => p.using = true,
            _ => {}
        }
    }
    p
}

/// The dataset a query asks for: its default graphs and named graphs
/// (`None`: not given), from the protocol's parameters if there are any,
/// else from its FROM and FROM NAMED clauses.
pub type Asked = (Option<Vec<NamedNode>>, Option<Vec<NamedNode>>);

pub fn dataset_of(query: &spargebra::Query, request: &Request) -> Result<Asked, LdpError> {
    if !request.default_graphs.is_empty() || !request.named_graphs.is_empty() {
        let iris = |list: &[String]| -> Result<Vec<NamedNode>, LdpError> {
            list.iter()
                .map(|g| {
                    NamedNode::new(g.as_str()).map_err(|e| {
                        LdpError::bad_request(format!("the graph {g:?} is not an IRI: {e}"))
                    })
                })
                .collect()
        };
        return Ok((
            Some(iris(&request.default_graphs)?),
            Some(iris(&request.named_graphs)?),
        ));
    }
    let dataset = match query {
        spargebra::Query::Select { dataset, .. }
        | spargebra::Query::Construct { dataset, .. }
        | spargebra::Query::Describe { dataset, .. }
        | spargebra::Query::Ask { dataset, .. } => dataset,
    };
    Ok(match dataset {
        None => (None, None),
        Some(d) => (
            Some(d.default.clone()),
            Some(d.named.clone().unwrap_or_default()),
        ),
    })
}

/// The IRIs a query's `GRAPH <…>` patterns name, read from its SSE form
/// (`(graph <iri> …)`), skipping string literals.
pub fn graph_constants(sse: &str) -> Vec<String> {
    const OPEN: &str = "(graph <";
    let mut found = Vec::new();
    let bytes = sse.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if sse[i..].starts_with(OPEN) {
            let start = i + OPEN.len();
            if let Some(len) = sse[start..].find('>') {
                found.push(sse[start..start + len].to_string());
                i = start + len;
            }
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_names_are_found_outside_strings() {
        let q = spargebra::SparqlParser::new()
            .parse_query(
                r#"SELECT * WHERE { GRAPH <http://a/x> { ?s ?p "(graph <http://b/>" } FILTER EXISTS { GRAPH <http://c/y> { ?s ?p ?o } } GRAPH ?g { ?s ?p ?o } }"#,
            )
            .unwrap();
        let mut found = graph_constants(&q.to_sse());
        found.sort();
        assert_eq!(
            found,
            vec!["http://a/x".to_string(), "http://c/y".to_string()]
        );
    }
}
