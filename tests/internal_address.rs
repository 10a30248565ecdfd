//! Internal address detection, in network namespaces with veth pairs and a
//! container bridge that the test creates (root required: CI runs as root).

mod support;

use std::process::Command;

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        assert!(
            support::is_root(),
            "this test creates network namespaces and must run as root (CI does)"
        );
        let name = format!("xpod-{tag}-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.ip("link set lo up");
        ns
    }

    fn ip(&self, args: &str) {
        let mut full = vec!["ip", "netns", "exec", &self.0, "ip"];
        full.extend(args.split_whitespace());
        run(&full);
    }

    /// `xpod node info` inside the namespace; returns its internal address line.
    fn address(&self, env: &[(&str, &str)]) -> String {
        let root = tempfile::tempdir().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, support::XPOD, "node", "info"])
            .env_clear()
            .env("CSS_ROOT_FILE_PATH", root.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("internal address:"))
            .expect("an internal address line")
            .trim()
            .to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_default_route_interface_is_chosen() {
    let ns = Netns::new("route");
    // A container bridge comes first and is up; it must be skipped.
    ns.ip("link add docker0 type bridge");
    ns.ip("addr add 198.51.100.1/24 dev docker0");
    ns.ip("link set docker0 up");
    ns.ip("link add eth0 type veth peer name eth0p");
    ns.ip("addr add 192.0.2.10/24 dev eth0");
    ns.ip("link set eth0 up");
    ns.ip("link set eth0p up");
    ns.ip("link add eth1 type veth peer name eth1p");
    ns.ip("addr add 203.0.113.20/24 dev eth1");
    ns.ip("link set eth1 up");
    ns.ip("link set eth1p up");
    ns.ip("route add default via 203.0.113.1 dev eth1");
    assert_eq!(
        ns.address(&[]),
        "203.0.113.20:3000 (default-route interface)"
    );
    assert_eq!(
        ns.address(&[("CSS_PORT", "4100"), ("CSS_INTERNAL_PORT", "4200")]),
        "203.0.113.20:4200 (default-route interface)"
    );
}

#[test]
fn without_a_default_route_unusable_interfaces_are_skipped() {
    let ns = Netns::new("noroute");
    ns.ip("link add docker0 type bridge");
    ns.ip("addr add 198.51.100.1/24 dev docker0");
    ns.ip("link set docker0 up");
    ns.ip("link add down0 type veth peer name down0p");
    ns.ip("addr add 203.0.113.5/24 dev down0");
    ns.ip("link add ll0 type veth peer name ll0p");
    ns.ip("addr add 169.254.7.7/16 dev ll0");
    ns.ip("link set ll0 up");
    ns.ip("link set ll0p up");
    assert_eq!(
        ns.address(&[]),
        "127.0.0.1:3000 (loopback: no usable interface found)"
    );
    ns.ip("link add eth0 type veth peer name eth0p");
    ns.ip("addr add 192.0.2.20/24 dev eth0");
    ns.ip("link set eth0 up");
    ns.ip("link set eth0p up");
    assert_eq!(
        ns.address(&[]),
        "192.0.2.20:3000 (first usable interface (no default route))"
    );
}

#[test]
fn configured_addresses_override_detection() {
    let ns = Netns::new("conf");
    ns.ip("link add eth0 type veth peer name eth0p");
    ns.ip("addr add 192.0.2.30/24 dev eth0");
    ns.ip("link set eth0 up");
    ns.ip("link set eth0p up");
    ns.ip("route add default via 192.0.2.1");
    assert_eq!(
        ns.address(&[("POD_IP", "198.51.100.77")]),
        "198.51.100.77:3000 (POD_IP)"
    );
    assert_eq!(
        ns.address(&[
            ("POD_IP", "198.51.100.77"),
            ("CSS_INTERNAL_IP", "198.51.100.88")
        ]),
        "198.51.100.88:3000 (CSS_INTERNAL_IP)"
    );
}
