//! Facts about the host the agent reads from /proc and the kernel: the
//! underlay MTU (the default route's interface, its MTU read through
//! `io::sys::mtu`), and the MTU report and commands `vxsec mtu` and `vxsec status` print. It changes
//! nothing on the host.

use std::fmt;
use std::net::IpAddr;

use crate::dataplane::mtu;
use crate::io::sys;

/// The MTU of the interface that holds the default route (IPv4 first,
/// else IPv6).
pub fn default_route_mtu() -> Option<u32> {
    default_route().map(|r| r.mtu)
}

/// The interface of a default route and its MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub dev: String,
    pub mtu: u32,
    pub ipv6: bool,
}

/// The default route's interface: IPv4's (/proc/net/route), else IPv6's
/// (/proc/net/ipv6_route); `None` when the node has neither.
pub fn default_route() -> Option<DefaultRoute> {
    let v4 = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| default_dev_v4(&t));
    let (dev, ipv6) = match v4 {
        Some(d) => (d, false),
        None => (
            std::fs::read_to_string("/proc/net/ipv6_route")
                .ok()
                .and_then(|t| default_dev_v6(&t))?,
            true,
        ),
    };
    let mtu = sys::mtu(&dev).ok()?;
    Some(DefaultRoute { dev, mtu, ipv6 })
}

/// The device of the first IPv4 default route in /proc/net/route's text.
fn default_dev_v4(text: &str) -> Option<String> {
    text.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let dev = f.next()?;
        let dest = f.next()?;
        let mask = f.nth(5)?;
        (dest == "00000000" && mask == "00000000").then(|| dev.to_string())
    })
}

/// The device of the first IPv6 default route in /proc/net/ipv6_route's
/// text (destination ::/0; the kernel's own `lo` reject routes excluded).
fn default_dev_v6(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (dest, plen, dev) = (f.first()?, f.get(1)?, f.get(9)?);
        let zero = dest.len() == 32 && dest.bytes().all(|b| b == b'0');
        (zero && *plen == "00" && *dev != "lo").then(|| (*dev).to_string())
    })
}

/// The VNI and device name the printed example commands use.
pub const EXAMPLE_VNI: u32 = 42;

/// The plain-Linux command that creates a VXLAN device over vxsec, as
/// Debian's iproute2 accepts it (`mtu` before `type`: after `type vxlan`
/// every word belongs to the VXLAN options, and `mtu` is not one of them).
pub fn ip_link_add_vxlan(vni: u32, local: IpAddr, vxlan_mtu: u32) -> String {
    format!(
        "ip link add vxlan{vni} mtu {vxlan_mtu} type vxlan id {vni} local {local} \
         dstport 4789 nolearning"
    )
}

/// The option that gives a Docker overlay network's VXLAN device (and its
/// containers) `vxlan_mtu`: Docker subtracts VXLAN's 50 bytes itself.
pub fn docker_mtu_option(vxlan_mtu: u32) -> String {
    format!(
        "com.docker.network.driver.mtu={}",
        mtu::docker_mtu(vxlan_mtu)
    )
}

/// What `vxsec mtu` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtuReport {
    pub underlay_mtu: u32,
    pub ipv6_underlay: bool,
    pub tunnel_mtu: u32,
    /// This node's tunnel address (the VTEP), when given: the report is
    /// then for its family only and its commands run as printed.
    pub tunnel_address: Option<IpAddr>,
    /// Transparent mode (`interface.mode = "transparent"`): the overlay's
    /// VTEPs are underlay addresses, so the VXLAN MTU is for the
    /// underlay's family and the advice is to lower a running overlay.
    pub transparent: bool,
}

/// The underlay MTU is too small to carry anything.
#[derive(Debug, thiserror::Error)]
#[error("underlay MTU {0} is too small for vxsec (the tunnel MTU would fall under 576)")]
pub struct MtuTooSmall(pub u32);

impl MtuReport {
    pub fn new(
        underlay_mtu: u32,
        ipv6_underlay: bool,
        tunnel_address: Option<IpAddr>,
    ) -> Result<Self, MtuTooSmall> {
        let tunnel_mtu = mtu::tunnel_mtu(underlay_mtu, ipv6_underlay)
            .filter(|&t| mtu::vxlan_mtu(t, true).is_some())
            .ok_or(MtuTooSmall(underlay_mtu))?;
        Ok(Self {
            underlay_mtu,
            ipv6_underlay,
            tunnel_mtu,
            tunnel_address,
            transparent: false,
        })
    }

    /// The VXLAN device MTU for a VTEP of this family.
    pub fn vxlan_mtu(&self, vtep_ipv6: bool) -> u32 {
        mtu::vxlan_mtu(self.tunnel_mtu, vtep_ipv6).unwrap_or(0)
    }

    /// The VTEP families the report covers.
    fn families(&self) -> &'static [bool] {
        match self.tunnel_address {
            Some(IpAddr::V4(_)) => &[false],
            Some(IpAddr::V6(_)) => &[true],
            None => &[false, true],
        }
    }
}

fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

impl fmt::Display for MtuReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outer = if self.ipv6_underlay { 40 } else { 20 };
        writeln!(f, "underlay MTU:      {}", self.underlay_mtu)?;
        writeln!(
            f,
            "tunnel MTU:        {}   (= {} - {outer} outer {} - 8 UDP - 32 vxsec)",
            self.tunnel_mtu,
            self.underlay_mtu,
            family(self.ipv6_underlay)
        )?;
        if self.transparent {
            return self.fmt_transparent(f);
        }
        for &v6 in self.families() {
            let o = mtu::vxlan_overhead(v6);
            writeln!(
                f,
                "VXLAN device MTU:  {}   with an {} tunnel address (= tunnel MTU - {o}: \
                 outer {} {}, UDP 8, VXLAN 8, inner Ethernet 14)",
                self.vxlan_mtu(v6),
                family(v6),
                family(v6),
                o - 30
            )?;
        }
        for &v6 in self.families() {
            writeln!(
                f,
                "Docker overlay:    {}   with an {} tunnel address (Docker subtracts 50 itself)",
                docker_mtu_option(self.vxlan_mtu(v6)),
                family(v6)
            )?;
        }
        writeln!(f)?;
        let Some(local) = self.tunnel_address else {
            return writeln!(
                f,
                "Pass --tunnel-address <this node's tunnel address> for the commands to run."
            );
        };
        let v6 = local.is_ipv6();
        writeln!(f, "Plain Linux VXLAN (VNI {EXAMPLE_VNI}):")?;
        writeln!(
            f,
            "  {}",
            ip_link_add_vxlan(EXAMPLE_VNI, local, self.vxlan_mtu(v6))
        )?;
        writeln!(f, "Docker Swarm overlay network (any name):")?;
        writeln!(
            f,
            "  docker network create -d overlay --attachable --opt {} backend",
            docker_mtu_option(self.vxlan_mtu(v6))
        )
    }
}

impl MtuReport {
    /// The transparent-mode part of the report: one VXLAN MTU, for VTEPs
    /// of the underlay's family.
    fn fmt_transparent(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = self.ipv6_underlay;
        let m = self.vxlan_mtu(v6);
        writeln!(
            f,
            "VXLAN device MTU:  {m}   transparent mode: VTEPs on the {} underlay \
             (= tunnel MTU - {})",
            family(v6),
            mtu::vxlan_overhead(v6)
        )?;
        writeln!(
            f,
            "Docker overlay:    {}   (Docker subtracts 50 itself)",
            docker_mtu_option(m)
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "The overlay's packets now pass through the tunnel: lower a running overlay \
             on every node before starting vxsec,"
        )?;
        writeln!(f, "e.g. for VNI {EXAMPLE_VNI}:")?;
        writeln!(f, "  ip link set vxlan{EXAMPLE_VNI} mtu {m}")?;
        writeln!(
            f,
            "and everything bridged to it (bridge ports, container interfaces). Docker \
             overlay networks (ingress too) must be recreated with --opt {}.",
            docker_mtu_option(m)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_report_is_for_underlay_vteps() {
        for (v6, want) in [(false, 1390), (true, 1350)] {
            let mut r = MtuReport::new(1500, v6, None).expect("ok");
            r.transparent = true;
            let text = r.to_string();
            assert!(
                text.contains(&format!("VXLAN device MTU:  {want}   transparent mode")),
                "{text}"
            );
            assert!(
                text.contains(&format!("ip link set vxlan42 mtu {want}\n")),
                "{text}"
            );
            assert!(!text.contains("ip link add"), "{text}");
        }
    }

    #[test]
    fn mtu_report_for_common_underlays() {
        let r = MtuReport::new(1500, false, None).expect("ok");
        assert_eq!(
            (r.tunnel_mtu, r.vxlan_mtu(false), r.vxlan_mtu(true)),
            (1440, 1390, 1370)
        );
        let text = r.to_string();
        assert!(text.contains("1390   with an IPv4"), "{text}");
        assert!(text.contains("1370   with an IPv6"), "{text}");
        assert!(text.contains("driver.mtu=1440   with an IPv4"), "{text}");
        assert!(text.contains("driver.mtu=1420   with an IPv6"), "{text}");
        assert!(
            !text.contains("ip link"),
            "no command with a placeholder: {text}"
        );
        let r = MtuReport::new(1500, true, None).expect("ok");
        assert_eq!(
            (r.tunnel_mtu, r.vxlan_mtu(false), r.vxlan_mtu(true)),
            (1420, 1370, 1350)
        );
        let v6: IpAddr = "fd00:200::1".parse().expect("ip");
        let r = MtuReport::new(1500, true, Some(v6)).expect("ok");
        let text = r.to_string();
        assert!(
            text.contains(
                "ip link add vxlan42 mtu 1350 type vxlan id 42 local fd00:200::1 dstport 4789 nolearning"
            ),
            "{text}"
        );
        assert!(
            text.contains("--opt com.docker.network.driver.mtu=1400 backend"),
            "{text}"
        );
        assert!(!text.contains("IPv4 tunnel"), "{text}");
        let v4: IpAddr = "10.200.0.1".parse().expect("ip");
        let r = MtuReport::new(9000, false, Some(v4)).expect("ok");
        assert_eq!((r.tunnel_mtu, r.vxlan_mtu(false)), (8940, 8890));
        let text = r.to_string();
        assert!(text.contains("ip link add vxlan42 mtu 8890 type"), "{text}");
        assert!(text.contains("driver.mtu=8940 backend"), "{text}");
        assert!(MtuReport::new(500, false, None).is_err());
    }

    #[test]
    fn default_routes_are_found_in_proc_text() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  eth0\t00000000\t0158A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_dev_v4(v4).as_deref(), Some("eth0"));
        assert_eq!(
            default_dev_v4(v4.lines().take(2).collect::<Vec<_>>().join("\n").as_str()),
            None
        );
        let z = "00000000000000000000000000000000";
        let v6 = format!(
            "fd000077000000000000000000000000 40 {z} 00 {z} 00000100 00000001 00000000 00000001 eth0\n\
             {z} 00 {z} 00 {z} ffffffff 00000001 00000000 00200200 lo\n\
             {z} 00 {z} 00 fd000077000000000000000000000001 00000400 00000001 00000000 00000003 eth2\n"
        );
        assert_eq!(default_dev_v6(&v6).as_deref(), Some("eth2"));
        assert_eq!(default_dev_v6(""), None);
    }
}
