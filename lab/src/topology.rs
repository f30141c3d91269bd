//! Builds throw-away lab topologies out of network namespaces: an underlay
//! bridge in its own namespace (which also plays the nodes' default
//! router), node namespaces on it, a container-like namespace behind each
//! node's `br0`, and kernel VXLAN between nodes (over the plain underlay
//! or over vxsec tunnel addresses; IPv4 or IPv6 VTEPs; with a `local`
//! address as README's recipe does, or without one as Docker's overlay
//! driver does: see [`VxlanSpec`]). Every namespace keeps
//! IPv6 on and every node has an IPv4 and an IPv6 default route, as real
//! nodes do; the underlay and the containers are dual-stack. Everything is
//! deleted by `Drop`, including on panic. It does not start agents (see
//! `agents`).
//!
//! Names are `<tag><5 hex>-<role>` (unique per run), interface names inside
//! the namespaces are fixed and short, so nothing touches the host's root
//! namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cmd::{Cmd, LabError};

/// VXLAN network identifier the lab uses.
pub const LAB_VNI: u32 = 42;
/// IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN + inner Ethernet overhead with an IPv4 VTEP (70 with an IPv6 one).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The underlay's default router (on the underlay bridge), IPv4 and IPv6.
pub const UNDERLAY_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 254);
pub const UNDERLAY_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0xfe);

/// One node: a "host" namespace on the underlay and a "container" behind it.
#[derive(Clone, Debug)]
pub struct Node {
    /// 1-based node number (also the last octet of every address).
    pub index: u8,
    /// The node's namespace (agent, vxsec0, vxlan, br0 live here).
    pub ns: String,
    /// The container-like namespace behind the node's br0.
    pub container_ns: String,
    /// Address on the underlay (eth0), 192.168.77.<index>/24.
    pub underlay_ip: Ipv4Addr,
    /// vxsec tunnel address, 10.200.0.<index>/16 (used when vxsec runs).
    pub tunnel_ip: Ipv4Addr,
    /// Overlay (container) address, 10.42.0.<index>/24.
    pub container_ip: Ipv4Addr,
}

impl Node {
    pub fn name(&self) -> String {
        format!("node{}", self.index)
    }

    /// IPv6 address on the underlay (eth0), fd00:77::<index>/64.
    pub fn underlay_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, u16::from(self.index))
    }

    /// IPv6 vxsec tunnel address, fd00:200::<index>/64 (agents configured
    /// with an IPv6 tunnel).
    pub fn tunnel_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, u16::from(self.index))
    }

    /// IPv6 overlay (container) address, fd00:42::<index>/64.
    pub fn container_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x42, 0, 0, 0, 0, 0, u16::from(self.index))
    }
}

/// Where kernel VXLAN sends its UDP/4789 packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VxlanOver {
    /// Directly over the underlay: the "no encryption" baseline.
    Underlay,
    /// Over vxsec tunnel addresses (the agent's vxsec0 must already exist).
    Vxsec,
}

/// How a VXLAN device is made: where it sends, whether it has a `local`
/// address (README's recipe) or none (Docker's overlay driver), and the
/// VTEP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub over: VxlanOver,
    /// `local <VTEP>`; without it the kernel picks the source by route.
    pub local: bool,
    /// IPv6 VTEPs: fd00:77::<i> over the underlay, fd00:200::<i> over
    /// vxsec (agents with an IPv6 tunnel address).
    pub ipv6: bool,
}

impl VxlanSpec {
    /// The unencrypted baseline: IPv4 underlay VTEPs, `local` set.
    pub fn underlay() -> Self {
        VxlanSpec {
            over: VxlanOver::Underlay,
            local: true,
            ipv6: false,
        }
    }

    /// README's recipe: `local <tunnel address>`, IPv4.
    pub fn vxsec() -> Self {
        VxlanSpec {
            over: VxlanOver::Vxsec,
            local: true,
            ipv6: false,
        }
    }
}

/// A lab topology; dropping it kills every process in its namespaces and
/// deletes them (which deletes their links).
pub struct Topology {
    /// Unique id of this run (prefix of every namespace name).
    pub id: String,
    /// The namespace holding the underlay bridge `ubr`.
    pub underlay_ns: String,
    pub nodes: Vec<Node>,
    /// Underlay MTU in bytes.
    pub underlay_mtu: u32,
    namespaces: Vec<String>,
    extra_hosts: u8,
    keep: bool,
}

fn ip_in(ns: &str) -> Cmd {
    Cmd::new("ip").args(["-n", ns])
}

/// Creates a namespace with loopback up, IPv6 on (addresses usable at
/// once: no duplicate address detection on a lab link) and reno pinned.
fn create_netns(name: &str) -> Result<(), LabError> {
    Cmd::new("ip").args(["netns", "add", name]).run()?;
    Cmd::in_netns(name, "sysctl")
        .args([
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv4.tcp_congestion_control=reno",
        ])
        .run()?;
    ip_in(name).args(["link", "set", "lo", "up"]).run()?;
    Ok(())
}

/// A short unique id: `tag` (truncated to 3 chars) + 5 random hex digits.
pub fn unique_id(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(3)
        .collect();
    let r: u32 = rand::random();
    format!("{tag}{:05x}", r & 0xF_FFFF)
}

impl Topology {
    /// Builds `nodes` node namespaces (1..=9) with containers behind them on
    /// a fresh underlay. No VXLAN yet: call `attach_vxlan` per node.
    pub fn new(tag: &str, nodes: u8, underlay_mtu: u32) -> Result<Topology, LabError> {
        if !(1..=9).contains(&nodes) {
            return Err(LabError::Check(format!(
                "1..=9 nodes supported, not {nodes}"
            )));
        }
        let id = unique_id(tag);
        let mut topo = Topology {
            underlay_ns: format!("{id}-u"),
            id,
            nodes: Vec::new(),
            underlay_mtu,
            namespaces: Vec::new(),
            extra_hosts: 0,
            keep: false,
        };
        topo.build(nodes)?;
        Ok(topo)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), LabError> {
        // Record first, so a half-made namespace is deleted too.
        self.namespaces.push(name.to_owned());
        create_netns(name)
    }

    fn build(&mut self, nodes: u8) -> Result<(), LabError> {
        let u = self.underlay_ns.clone();
        let mtu = self.underlay_mtu.to_string();
        self.add_ns(&u)?;
        ip_in(&u)
            .args(["link", "add", "ubr", "mtu", &mtu, "type", "bridge"])
            .run()?;
        ip_in(&u).args(["link", "set", "ubr", "up"]).run()?;
        for a in [
            format!("{UNDERLAY_GATEWAY}/24"),
            format!("{UNDERLAY_GATEWAY6}/64"),
        ] {
            ip_in(&u)
                .args(["addr", "add", a.as_str(), "dev", "ubr", "nodad"])
                .run()?;
        }
        for i in 1..=nodes {
            let node = Node {
                index: i,
                ns: format!("{}-n{i}", self.id),
                container_ns: format!("{}-c{i}", self.id),
                underlay_ip: Ipv4Addr::new(192, 168, 77, i),
                tunnel_ip: Ipv4Addr::new(10, 200, 0, i),
                container_ip: Ipv4Addr::new(10, 42, 0, i),
            };
            self.add_ns(&node.ns)?;
            self.plug_underlay(&node.ns, &format!("u{i}"), node.underlay_ip)?;
            self.add_ns(&node.container_ns)?;
            ip_in(&node.ns)
                .args(["link", "add", "br0", "type", "bridge"])
                .run()?;
            ip_in(&node.ns)
                .args(["link", "add", "c0", "type", "veth", "peer", "name", "eth0"])
                .args(["netns", node.container_ns.as_str()])
                .run()?;
            ip_in(&node.ns)
                .args(["link", "set", "c0", "master", "br0", "up"])
                .run()?;
            ip_in(&node.ns).args(["link", "set", "br0", "up"]).run()?;
            for a in [
                format!("{}/24", node.container_ip),
                format!("{}/64", node.container_ip6()),
            ] {
                ip_in(&node.container_ns)
                    .args(["addr", "add", a.as_str(), "dev", "eth0", "nodad"])
                    .run()?;
            }
            ip_in(&node.container_ns)
                .args(["link", "set", "eth0", "up"])
                .run()?;
            self.nodes.push(node);
        }
        Ok(())
    }

    /// veth `port` in the underlay namespace ↔ `eth0` in `ns`, with `ip`/24,
    /// fd00:77::<last octet>/64 and default routes via the underlay's
    /// gateway.
    fn plug_underlay(&self, ns: &str, port: &str, ip: Ipv4Addr) -> Result<(), LabError> {
        let u = &self.underlay_ns;
        let mtu = self.underlay_mtu.to_string();
        ip_in(u)
            .args([
                "link", "add", port, "mtu", &mtu, "type", "veth", "peer", "name", "eth0",
            ])
            .args(["mtu", mtu.as_str(), "netns", ns])
            .run()?;
        ip_in(u)
            .args(["link", "set", port, "master", "ubr", "up"])
            .run()?;
        let ip6 = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, u16::from(ip.octets()[3]));
        for a in [format!("{ip}/24"), format!("{ip6}/64")] {
            ip_in(ns)
                .args(["addr", "add", a.as_str(), "dev", "eth0", "nodad"])
                .run()?;
        }
        ip_in(ns).args(["link", "set", "eth0", "up"]).run()?;
        ip_in(ns)
            .args(["route", "add", "default", "via"])
            .arg(UNDERLAY_GATEWAY.to_string())
            .run()?;
        ip_in(ns)
            .args(["-6", "route", "add", "default", "via"])
            .arg(UNDERLAY_GATEWAY6.to_string())
            .run()?;
        Ok(())
    }

    /// Adds a bare host on the underlay (e.g. a rogue sender) at
    /// 192.168.77.<last_octet> and fd00:77::<last_octet>; returns its
    /// namespace.
    pub fn add_underlay_host(&mut self, last_octet: u8) -> Result<String, LabError> {
        self.extra_hosts += 1;
        let ns = format!("{}-h{}", self.id, self.extra_hosts);
        self.add_ns(&ns)?;
        let port = format!("h{}", self.extra_hosts);
        self.plug_underlay(&ns, &port, Ipv4Addr::new(192, 168, 77, last_octet))?;
        Ok(ns)
    }

    pub fn node(&self, index: u8) -> Result<&Node, LabError> {
        self.nodes
            .iter()
            .find(|n| n.index == index)
            .ok_or_else(|| LabError::Check(format!("no node {index}")))
    }

    /// Creates `vxlan<vni>` in node `index` as `spec` says, enslaves it to
    /// br0, floods to every other node (static all-zero FDB entries) and
    /// sets the overlay MTU on the container path to `vxlan_mtu`.
    pub fn attach_vxlan(
        &self,
        index: u8,
        vni: u32,
        spec: VxlanSpec,
        vxlan_mtu: u32,
    ) -> Result<(), LabError> {
        let node = self.node(index)?;
        let dev = format!("vxlan{vni}");
        let mtu = vxlan_mtu.to_string();
        // Without a local address an IPv6 device still needs the family:
        // `local ::` is "unspecified", the kernel picks the source by route.
        let local = match (spec.local, spec.ipv6) {
            (true, _) => Some(self.vtep(node, spec).to_string()),
            (false, true) => Some("::".to_owned()),
            (false, false) => None,
        };
        // `mtu` before `type`: iproute2 takes what follows `type vxlan` as
        // VXLAN options.
        let mut add = ip_in(&node.ns)
            .args([
                "link",
                "add",
                dev.as_str(),
                "mtu",
                mtu.as_str(),
                "type",
                "vxlan",
            ])
            .args(["id", &vni.to_string()])
            .args(["dstport", &VXLAN_PORT.to_string(), "ttl", "64"]);
        if let Some(local) = local {
            add = add.args(["local", local.as_str()]);
        }
        if spec.over == VxlanOver::Underlay {
            add = add.args(["dev", "eth0"]);
        }
        add.run()?;
        ip_in(&node.ns)
            .args(["link", "set", dev.as_str(), "master", "br0", "up"])
            .run()?;
        for peer in self.nodes.iter().filter(|n| n.index != index) {
            self.fdb_flood(index, vni, self.vtep(peer, spec), true)?;
        }
        for (ns, link) in [(&node.ns, "c0"), (&node.container_ns, "eth0")] {
            ip_in(ns).args(["link", "set", link, "mtu", &mtu]).run()?;
        }
        Ok(())
    }

    /// The VXLAN tunnel endpoint address of `node` for a device made as
    /// `spec`.
    pub fn vtep(&self, node: &Node, spec: VxlanSpec) -> IpAddr {
        match (spec.over, spec.ipv6) {
            (VxlanOver::Underlay, false) => node.underlay_ip.into(),
            (VxlanOver::Underlay, true) => node.underlay_ip6().into(),
            (VxlanOver::Vxsec, false) => node.tunnel_ip.into(),
            (VxlanOver::Vxsec, true) => node.tunnel_ip6().into(),
        }
    }

    /// Adds (`add = true`) or deletes the flood entry towards `dst`.
    pub fn fdb_flood(
        &self,
        index: u8,
        vni: u32,
        dst: impl Into<IpAddr>,
        add: bool,
    ) -> Result<(), LabError> {
        let node = self.node(index)?;
        let dst: IpAddr = dst.into();
        let verb = if add { "append" } else { "del" };
        Cmd::in_netns(&node.ns, "bridge")
            .args(["fdb", verb, "00:00:00:00:00:00", "dev"])
            .arg(format!("vxlan{vni}"))
            .args(["dst", &dst.to_string()])
            .run()
            .map(|_| ())
    }

    /// A command run inside `ns`.
    pub fn exec(&self, ns: &str, program: &str) -> Cmd {
        Cmd::in_netns(ns, program)
    }

    /// One ping from container `from` to container `to`; returns ping's output.
    pub fn ping_containers(&self, from: u8, to: u8, count: u32) -> Result<String, LabError> {
        let dst = self.node(to)?.container_ip.to_string();
        let src_ns = self.node(from)?.container_ns.clone();
        Cmd::in_netns(&src_ns, "ping")
            .args(["-n", "-c", &count.to_string(), "-i", "0.2", "-W", "2", &dst])
            .run()
    }

    /// Leaves everything up on drop (for `vxsec-lab --keep`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// All namespaces of this topology, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Kills every process in the namespaces, then deletes them.
    pub fn teardown(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_netns_pids(ns);
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Cmd::new("ip").args(["netns", "del", ns.as_str()]).output();
        }
    }
}

/// SIGKILLs whatever still runs in `ns` (agents, helpers, tcpdump).
pub fn kill_netns_pids(ns: &str) {
    let Ok(out) = Cmd::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    let pids = String::from_utf8_lossy(&out.stdout).into_owned();
    for pid in pids.split_whitespace() {
        let _ = Cmd::new("kill").args(["-KILL", pid]).output();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if !self.keep {
            self.teardown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_are_short_and_distinct() {
        let a = unique_id("vxtest");
        let b = unique_id("vxtest");
        assert_eq!(a.len(), 8);
        assert!(a.starts_with("vxt"));
        assert_ne!(a, b, "two ids collided (1 in 2^20): rerun");
        // the longest namespace name we derive stays short
        assert!(format!("{a}-h9").len() <= 15);
    }

    #[test]
    fn vtep_follows_mode() {
        let n = Node {
            index: 2,
            ns: "x-n2".into(),
            container_ns: "x-c2".into(),
            underlay_ip: Ipv4Addr::new(192, 168, 77, 2),
            tunnel_ip: Ipv4Addr::new(10, 200, 0, 2),
            container_ip: Ipv4Addr::new(10, 42, 0, 2),
        };
        let t = Topology {
            id: "x".into(),
            underlay_ns: "x-u".into(),
            nodes: vec![],
            underlay_mtu: 1500,
            namespaces: vec![],
            extra_hosts: 0,
            keep: true,
        };
        let v6 = |over| VxlanSpec {
            over,
            local: false,
            ipv6: true,
        };
        assert_eq!(t.vtep(&n, VxlanSpec::underlay()), IpAddr::V4(n.underlay_ip));
        assert_eq!(t.vtep(&n, VxlanSpec::vxsec()), IpAddr::V4(n.tunnel_ip));
        assert_eq!(
            t.vtep(&n, v6(VxlanOver::Underlay)),
            "fd00:77::2".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            t.vtep(&n, v6(VxlanOver::Vxsec)),
            "fd00:200::2".parse::<IpAddr>().expect("ip")
        );
    }
}
