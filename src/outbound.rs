//! Requests xpod makes on a client's behalf (webhooks, WebID documents,
//! Solid-OIDC issuers' discovery documents and keys) may not reach loopback, private or link-local addresses,
//! so the server cannot be used to probe the network it runs in, unless the
//! operator allows those networks (`CSS_OUTBOUND_ALLOWED_NETWORKS`).
//! Host names are checked after resolution, on every connection, so a name
//! that resolves to an internal address later is refused too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// An IP network, `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a network such as 127.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Why an address is internal, or `None` for a public one.
fn internal(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || o[0] == 0 {
                Some("not a unicast host address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast host address")
            } else {
                None
            }
        }
    }
}

/// Which addresses outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Internal networks the operator allows anyway.
    pub allowed: Vec<Network>,
}

impl Policy {
    /// Ok if `ip` is public or in an allowed network.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        match internal(ip) {
            None => Ok(()),
            Some(_) if self.allowed.iter().any(|n| n.contains(ip)) => Ok(()),
            Some(why) => Err(format!(
                "{ip} is {why}; outbound requests may not reach it unless CSS_OUTBOUND_ALLOWED_NETWORKS includes it"
            )),
        }
    }

    /// Whether `ip` is in a network the operator allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|n| n.contains(ip))
    }

    /// Checks a target URL: http(s), and if the host is an IP literal, an
    /// allowed address (names are checked when they are resolved).
    pub fn check_url(&self, url: &str) -> Result<url::Url, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{url:?} is not an http or https URL"));
        }
        match parsed.host() {
            Some(url::Host::Ipv4(v4)) => self.check(IpAddr::V4(v4))?,
            Some(url::Host::Ipv6(v6)) => self.check(IpAddr::V6(v6))?,
            Some(url::Host::Domain(_)) => {}
            None => return Err(format!("{url:?} has no host")),
        }
        Ok(parsed)
    }

    /// An HTTP client that connects only where this policy allows, never
    /// follows redirects, and gives up after `timeout`.
    pub fn client(&self, timeout: std::time::Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(Resolver(self.clone())))
            // A proxy from the environment would reach addresses the
            // resolver never sees.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .expect("an HTTP client")
    }
}

/// An error with its chain of causes, on one line (reqwest keeps the cause,
/// e.g. an address this policy refused, in its source chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

struct Resolver(Policy);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} has no address"));
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let strict = Policy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(strict.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(strict.check(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        let lenient = Policy {
            allowed: vec![Network::parse("127.0.0.0/8").unwrap()],
        };
        assert!(lenient.check("127.0.0.2".parse().unwrap()).is_ok());
        assert!(lenient.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(lenient.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(strict.check_url("http://127.0.0.1:9/x").is_err());
        assert!(strict.check_url("ftp://example.org/").is_err());
        assert!(strict.check_url("http://example.org/hook").is_ok());
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("nonsense").is_err());
    }
}
