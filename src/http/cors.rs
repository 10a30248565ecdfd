//! CORS as browser Solid apps need it: any origin may call with credentials,
//! every Solid header is exposed, and preflights are answered here. The
//! account API and the OpenID endpoints allow any origin without
//! credentials (a header token still works; the cookie does not).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

const EXPOSE: &str = "Accept-Patch, Accept-Post, Accept-Put, Allow, Content-Range, ETag, Last-Modified, Link, Location, Updates-Via, WAC-Allow, WWW-Authenticate, X-Xpod-Served-By";
const METHODS: &str = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE";

pub async fn cors(req: Request, next: Next) -> Response {
    // The account API and the token endpoint never answer credentialed
    // cross-origin requests: their cookie must not work from other pages.
    let path = req.uri().path();
    let origin = if path.starts_with("/.account/") || path.starts_with("/.oidc/") {
        None
    } else {
        req.headers().get(header::ORIGIN).cloned()
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        if let Some(requested) = requested {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("1728000"),
        );
        allow_origin(h, origin);
        return resp;
    }
    let mut resp = next.run(req).await;
    allow_origin(resp.headers_mut(), origin);
    resp
}

fn allow_origin(h: &mut HeaderMap, origin: Option<HeaderValue>) {
    match origin {
        Some(origin) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}
