//! The node's internal address: what other nodes of the cluster connect to.
//!
//! Order: `CSS_INTERNAL_IP`, then `POD_IP` (Kubernetes' downward API), then the
//! IPv4 address of the interface that carries the default route. Loopback,
//! link-local, down and container-bridge interfaces are never chosen, because
//! another node could not reach us there.

use std::net::{IpAddr, Ipv4Addr};

/// How the address was found, for `xpod node info` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    InternalIp,
    PodIp,
    DefaultRoute,
    FirstInterface,
    Loopback,
}

impl std::fmt::Display for AddressSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressSource::InternalIp => "CSS_INTERNAL_IP",
            AddressSource::PodIp => "POD_IP",
            AddressSource::DefaultRoute => "default-route interface",
            AddressSource::FirstInterface => "first usable interface (no default route)",
            AddressSource::Loopback => "loopback: no usable interface found",
        })
    }
}

/// One IPv4 address of one interface.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    pub addr: Ipv4Addr,
}

/// Name prefixes of the bridges and veth ends that container runtimes create.
/// Their addresses exist only inside this host.
const CONTAINER_BRIDGES: &[&str] = &[
    "docker",
    "br-",
    "virbr",
    "cni",
    "flannel",
    "cali",
    "podman",
    "lxcbr",
    "lxdbr",
    "vboxnet",
    "veth",
    "kube-",
    "cilium",
    "weave",
    "vmnet",
    "tailscale",
];

fn usable(iface: &Interface) -> bool {
    iface.up
        && !iface.loopback
        && !iface.addr.is_loopback()
        && !iface.addr.is_link_local()
        && !iface.addr.is_unspecified()
        && !CONTAINER_BRIDGES.iter().any(|p| iface.name.starts_with(p))
}

/// Picks the address from the interfaces, preferring the default-route one.
pub fn choose(
    default_route: Option<&str>,
    interfaces: &[Interface],
) -> Option<(Ipv4Addr, AddressSource)> {
    if let Some(name) = default_route
        && let Some(iface) = interfaces.iter().find(|i| i.name == name && usable(i))
    {
        return Some((iface.addr, AddressSource::DefaultRoute));
    }
    interfaces
        .iter()
        .find(|i| usable(i))
        .map(|i| (i.addr, AddressSource::FirstInterface))
}

/// The interface of the IPv4 default route, from `/proc/net/route`.
pub fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_route_table(&table)
}

fn parse_route_table(table: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, metric) =
                (cols.first()?, cols.get(1)?, cols.get(3)?, cols.get(6)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let metric: u32 = metric.parse().ok()?;
            (*dest == "00000000" && flags & RTF_UP != 0).then(|| (metric, iface.to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// Lists the IPv4 addresses of this host's interfaces.
pub fn interfaces() -> Vec<Interface> {
    use nix::net::if_::InterfaceFlags;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let sin = a.address.as_ref()?.as_sockaddr_in()?;
            Some(Interface {
                name: a.interface_name.clone(),
                up: a.flags.contains(InterfaceFlags::IFF_UP),
                loopback: a.flags.contains(InterfaceFlags::IFF_LOOPBACK),
                addr: sin.ip(),
            })
        })
        .collect()
}

/// Resolves the internal address from configuration, then the network cards.
pub fn detect(internal_ip: Option<IpAddr>, pod_ip: Option<IpAddr>) -> (IpAddr, AddressSource) {
    if let Some(ip) = internal_ip {
        return (ip, AddressSource::InternalIp);
    }
    if let Some(ip) = pod_ip {
        return (ip, AddressSource::PodIp);
    }
    match choose(default_route_interface().as_deref(), &interfaces()) {
        Some((ip, source)) => (IpAddr::V4(ip), source),
        None => (IpAddr::V4(Ipv4Addr::LOCALHOST), AddressSource::Loopback),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, up: bool, addr: &str) -> Interface {
        Interface {
            name: name.into(),
            up,
            loopback: name == "lo",
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn default_route_interface_wins() {
        let all = [
            iface("lo", true, "127.0.0.1"),
            iface("eth0", true, "192.0.2.7"),
            iface("eth1", true, "198.51.100.9"),
        ];
        assert_eq!(
            choose(Some("eth1"), &all),
            Some(("198.51.100.9".parse().unwrap(), AddressSource::DefaultRoute))
        );
    }

    #[test]
    fn unusable_interfaces_are_skipped() {
        let all = [
            iface("lo", true, "127.0.0.1"),
            iface("docker0", true, "172.17.0.1"),
            iface("eth0", false, "192.0.2.7"),
            iface("eth1", true, "169.254.3.3"),
            iface("eth2", true, "198.51.100.9"),
        ];
        // The default route names a bridge: fall back to a real interface.
        assert_eq!(
            choose(Some("docker0"), &all),
            Some((
                "198.51.100.9".parse().unwrap(),
                AddressSource::FirstInterface
            ))
        );
        assert_eq!(choose(None, &all[..4]), None);
    }

    #[test]
    fn route_table_parsing_takes_the_lowest_metric_default() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                     eth1\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
        assert_eq!(parse_route_table(table).as_deref(), Some("eth1"));
        assert_eq!(parse_route_table("Iface\tDestination\n"), None);
    }
}
