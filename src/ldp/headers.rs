//! The headers every Solid response carries: Link, Allow, Accept-*, ETag,
//! Last-Modified.

use axum::http::{HeaderMap, HeaderValue, header};

use super::target::Target;
use crate::db::ResourceRecord;

pub const LDP_RESOURCE: &str = "http://www.w3.org/ns/ldp#Resource";
pub const LDP_CONTAINER: &str = "http://www.w3.org/ns/ldp#Container";
pub const LDP_BASIC_CONTAINER: &str = "http://www.w3.org/ns/ldp#BasicContainer";
pub const PIM_STORAGE: &str = "http://www.w3.org/ns/pim/space#Storage";
pub const STORAGE_DESCRIPTION_REL: &str = "http://www.w3.org/ns/solid/terms#storageDescription";
pub const ACCEPT_PATCH: &str = "text/n3, application/sparql-update";

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// `Allow` for a path: what can be done there.
pub fn allow(target: &Target, exists: bool) -> &'static str {
    match (target.is_container(), target.path == "/", exists) {
        (_, true, _) => "OPTIONS, HEAD, GET, PATCH, POST, PUT",
        (true, _, true) => "OPTIONS, HEAD, GET, PATCH, POST, PUT, DELETE",
        (false, _, true) => "OPTIONS, HEAD, GET, PATCH, PUT, DELETE",
        (_, _, false) => "OPTIONS, HEAD, GET, PATCH, PUT",
    }
}

/// Link, Allow and Accept-* headers for a target.
pub fn describe(target: &Target, exists: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    let url = target.url();
    let mut links = vec![format!("<{LDP_RESOURCE}>; rel=\"type\"")];
    if target.is_container() {
        links.push(format!("<{LDP_CONTAINER}>; rel=\"type\""));
        links.push(format!("<{LDP_BASIC_CONTAINER}>; rel=\"type\""));
    }
    if target.path == "/" {
        links.push(format!("<{PIM_STORAGE}>; rel=\"type\""));
    }
    links.push(format!("<{url}.acl>; rel=\"acl\""));
    links.push(format!("<{url}.meta>; rel=\"describedby\""));
    links.push(format!(
        "<{}.well-known/solid>; rel=\"{STORAGE_DESCRIPTION_REL}\"",
        target.pod_url
    ));
    set(&mut h, header::LINK, &links.join(", "));
    set(&mut h, header::ALLOW, allow(target, exists));
    set(
        &mut h,
        header::HeaderName::from_static("accept-patch"),
        ACCEPT_PATCH,
    );
    set(&mut h, header::HeaderName::from_static("accept-put"), "*/*");
    if target.is_container() {
        set(
            &mut h,
            header::HeaderName::from_static("accept-post"),
            "*/*",
        );
    }
    set(&mut h, header::VARY, "Accept, Authorization, Origin");
    h
}

/// ETag and Last-Modified of a stored version.
pub fn validators(h: &mut HeaderMap, record: &ResourceRecord) {
    set(h, header::ETAG, &record.etag);
    set(h, header::LAST_MODIFIED, &http_date(record.modified_at));
}

pub fn http_date(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(t)
}

/// An `xsd:dateTime` for RDF metadata.
pub fn xsd_date_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Parses a list header such as `If-Match: "a", "b"` or `*`.
pub fn etag_list(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<String>> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    (!values.is_empty()).then_some(values)
}
