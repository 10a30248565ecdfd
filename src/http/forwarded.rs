//! Reverse proxies (`CSS_TRUSTED_PROXIES`). From a proxy on the list,
//! `X-Forwarded-For` names the client (its rightmost address that is not a
//! trusted proxy), `X-Forwarded-Host` replaces `Host` (the host the client
//! asked for), and `X-Forwarded-Proto` must be the base URL's scheme. From
//! anyone else these headers are dropped, so that no client passes for
//! another address or host. A request forwarded by another node carries
//! them under its signature, which routing checks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;

const FOR: &str = "x-forwarded-for";
const HOST: &str = "x-forwarded-host";
const PROTO: &str = "x-forwarded-proto";

pub async fn forwarded(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    if req.headers().contains_key(crate::cluster::signature::HOP) {
        return next.run(req).await;
    }
    // Through its tunnel the centre names the client it served.
    if req
        .extensions()
        .get::<crate::edge::tunnel::FromCentre>()
        .is_some()
    {
        let client = req
            .headers()
            .get(FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
        if let Some(client) = client {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(client, 0)));
        }
        return next.run(req).await;
    }
    let trusted = |ip: IpAddr| app.config.trusted_proxies.iter().any(|n| n.contains(ip));
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !peer.is_some_and(trusted) {
        for name in [FOR, HOST, PROTO] {
            req.headers_mut().remove(name);
        }
        return next.run(req).await;
    }
    let scheme = app.config.base_url.scheme();
    if let Some(proto) = first(req.headers(), PROTO)
        && !proto.eq_ignore_ascii_case(scheme)
    {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "the proxy says this request came over {proto}, but this server is {}: send it there (or have the proxy redirect to {scheme})",
                app.config.base_url
            ),
        )
            .into_response();
    }
    if let Some(client) = client_address(req.headers(), trusted) {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(client, 0)));
    }
    if let Some(host) = first(req.headers(), HOST).and_then(|h| HeaderValue::from_str(&h).ok()) {
        req.headers_mut().insert(header::HOST, host);
    }
    next.run(req).await
}

/// The first value of a header that may be a list (the client's end).
fn first(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// The client behind the trusted proxies: the rightmost `X-Forwarded-For`
/// address that is not one of them. `None` if the list cannot be read that
/// far (the proxy's own address then stands).
fn client_address(headers: &HeaderMap, trusted: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all(FOR) {
        hops.extend(value.to_str().ok()?.split(',').map(str::trim));
    }
    for hop in hops.iter().rev() {
        let ip = hop
            .parse::<IpAddr>()
            .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
            .ok()?;
        if !trusted(ip) {
            return Some(ip);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_added() {
        let proxies = [crate::outbound::Network::parse("10.0.0.0/8").unwrap()];
        let trusted = |ip: IpAddr| proxies.iter().any(|n| n.contains(ip));
        let mut h = HeaderMap::new();
        h.append(FOR, HeaderValue::from_static("6.6.6.6, 203.0.113.7"));
        h.append(FOR, HeaderValue::from_static("10.1.2.3"));
        // 6.6.6.6 is what the client claimed; 203.0.113.7 is who reached the proxy.
        assert_eq!(
            client_address(&h, trusted),
            Some("203.0.113.7".parse().unwrap())
        );
        let mut h = HeaderMap::new();
        h.insert(FOR, HeaderValue::from_static("[2001:db8::1]:4711"));
        assert_eq!(
            client_address(&h, trusted),
            Some("2001:db8::1".parse().unwrap())
        );
        let mut h = HeaderMap::new();
        h.insert(FOR, HeaderValue::from_static("garbage, 10.0.0.1"));
        assert_eq!(client_address(&h, trusted), None);
        assert_eq!(client_address(&HeaderMap::new(), trusted), None);
    }
}
