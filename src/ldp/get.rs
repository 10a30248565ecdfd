//! GET and HEAD: conditional requests, byte ranges, container listings and
//! the storage description.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

use super::container;
use super::error::LdpError;
use super::headers::{self, describe, etag_list, validators};
use super::target::Target;
use super::write;
use crate::app::App;
use crate::db::ResourceRecord;
use crate::rdf::{self, Choice, Syntax};

pub async fn get(
    app: &App,
    target: &Target,
    method: &Method,
    req: &HeaderMap,
) -> Result<Response, LdpError> {
    if target.path == "/.well-known/solid" {
        return Ok(storage_description(app, target, method));
    }
    let record = app
        .db
        .resource_get(&target.pod, &target.path)
        .await?
        .ok_or_else(LdpError::not_found)?;
    let mut h = describe(target, true);
    validators(&mut h, &record);
    if let Some(status) = precondition(req, &record) {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = status;
        resp.headers_mut().extend(h);
        return Ok(resp);
    }
    let head = method == Method::HEAD;
    // Pods share the server's origin (path-style pods) or site
    // (subdomains): nothing stored in one may run as this origin, where it
    // could use the account API with a visitor's session. Every
    // representation is sandboxed, whatever its type: browsers run scripts in
    // more types than anyone can list (any `+xml`, for one).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX),
    );
    let accept = req.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (stored_syntax, stored_type) = if record.is_container() {
        (Some(Syntax::Turtle), "text/turtle")
    } else {
        (
            rdf::readable_syntax(&record.content_type),
            record.content_type.as_str(),
        )
    };
    match rdf::negotiate(accept, stored_syntax, stored_type) {
        Choice::AsStored => {}
        Choice::NotAcceptable => {
            return Err(LdpError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!("this resource is available as {stored_type} only"),
            ));
        }
        Choice::Convert(syntax) => {
            let stored = if record.is_container() {
                let listing =
                    container::listing(app.db.clone(), record.clone(), target.path == "/");
                write::read_limited(listing, u64::MAX).await?
            } else {
                write::read_stored(app, &record).await?
            };
            let from = stored_syntax.expect("RDF");
            let triples = rdf::parse(&stored, from, &target.url()).map_err(|e| {
                if from == Syntax::Rdfa {
                    // HTML is stored unchecked: failing to read RDFa is the client's answer.
                    return LdpError::new(
                        StatusCode::NOT_ACCEPTABLE,
                        format!("no RDF can be read from this document ({e})"),
                    );
                }
                tracing::error!(error = %e, "a stored RDF document does not parse");
                LdpError::new(StatusCode::INTERNAL_SERVER_ERROR, "stored RDF is damaged")
            })?;
            let out = rdf::serialize(&triples, syntax, &target.url());
            set(&mut h, header::CONTENT_TYPE, syntax.media_type());
            set(&mut h, header::CONTENT_LENGTH, &out.len().to_string());
            let body = if head { Body::empty() } else { Body::from(out) };
            return Ok(respond(StatusCode::OK, h, body));
        }
    }
    if record.is_container() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/turtle"),
        );
        let body = if head {
            Body::empty()
        } else {
            Body::from_stream(container::listing(
                app.db.clone(),
                record,
                target.path == "/",
            ))
        };
        return Ok(respond(StatusCode::OK, h, body));
    }

    set(&mut h, header::CONTENT_TYPE, &record.content_type);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let size = record.size as u64;
    let range = match req.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) if if_range_allows(req, &record) => parse_range(spec, size).map_err(|_| {
            LdpError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the requested range is not satisfiable",
            )
            .with(header::CONTENT_RANGE, format!("bytes */{size}"))
        })?,
        _ => None,
    };
    let hash = record.content_hash.clone().unwrap_or_default();
    let (status, length) = match range {
        Some((start, end)) => {
            set(
                &mut h,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{size}"),
            );
            (StatusCode::PARTIAL_CONTENT, end - start + 1)
        }
        None => (StatusCode::OK, size),
    };
    set(&mut h, header::CONTENT_LENGTH, &length.to_string());
    if head {
        return Ok(respond(status, h, Body::empty()));
    }
    let stream = if length == 0 {
        None
    } else {
        Some(app.blobs.get(&hash, range).await?)
    };
    let body = stream.map(Body::from_stream).unwrap_or_else(Body::empty);
    Ok(respond(status, h, body))
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().extend(headers);
    resp
}

/// 304 or 412 when the request's conditions say so (RFC 9110 §13.2.2).
fn precondition(req: &HeaderMap, record: &ResourceRecord) -> Option<StatusCode> {
    let matches = |list: &[String]| {
        list.iter()
            .any(|t| t == "*" || t.trim_start_matches("W/") == record.etag)
    };
    if let Some(list) = etag_list(req, header::IF_MATCH)
        && !matches(&list)
    {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    if let Some(list) = etag_list(req, header::IF_NONE_MATCH) {
        return matches(&list).then_some(StatusCode::NOT_MODIFIED);
    }
    let since = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())?;
    let modified =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs((record.modified_at / 1000) as u64);
    (modified <= since).then_some(StatusCode::NOT_MODIFIED)
}

/// `If-Range` with an ETag: the range applies only to that version.
fn if_range_allows(req: &HeaderMap, record: &ResourceRecord) -> bool {
    match req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => v.trim() == record.etag,
    }
}

/// Parses a single `bytes=` range into an inclusive `(start, end)`. Several
/// ranges, or another unit, are ignored (`Ok(None)`: the whole body is sent).
fn parse_range(spec: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(ranges) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if ranges.contains(',') {
        return Ok(None);
    }
    let (first, last) = ranges.trim().split_once('-').ok_or(())?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", "") => return Err(()),
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size - 1)
        }
        (start, "") => (start.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (start, end) => {
            let s: u64 = start.parse().map_err(|_| ())?;
            let e: u64 = end.parse().map_err(|_| ())?;
            if e < s {
                return Err(());
            }
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `/.well-known/solid` of a pod: says where the storage is, and where to
/// subscribe to notifications (on the storage, as CSS does).
fn storage_description(app: &App, target: &Target, method: &Method) -> Response {
    let mut body = format!(
        "@prefix pim: <http://www.w3.org/ns/pim/space#>.\n\
         @prefix solid: <http://www.w3.org/ns/solid/terms#>.\n\
         @prefix notify: <{}>.\n\n\
         <> a solid:StorageDescription.\n\
         <{}> a pim:Storage.\n",
        crate::notify::NOTIFY,
        target.pod_url
    );
    for channel in crate::notify::ChannelType::all() {
        let service = crate::notify::http::service_url(app, channel);
        body.push_str(&format!(
            "<{}> notify:subscription <{service}>.\n\
             <{service}> notify:channelType notify:{};\n    \
             notify:feature notify:accept, notify:endAt, notify:rate, notify:startAt, notify:state.\n",
            target.pod_url,
            channel.name()
        ));
    }
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/turtle"),
    );
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, HEAD, GET"),
    );
    set(
        &mut h,
        header::LINK,
        &format!("<{}>; rel=\"type\"", headers::LDP_RESOURCE),
    );
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    };
    respond(StatusCode::OK, h, body)
}

/// The sandbox for stored pages: scripts run, in an opaque origin.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Err(()));
        assert_eq!(parse_range("bytes=x-2", 100), Err(()));
    }
}
