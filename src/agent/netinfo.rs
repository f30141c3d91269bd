//! Facts about the host the agent reads from /proc and /sys: whether we are
//! root, the underlay MTU, and the MTU report `vxsec mtu` prints.

use std::fmt;
use std::path::Path;

use crate::dataplane::mtu;

/// Whether the effective user is root (read from /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The MTU of the interface that holds the IPv4 default route.
pub fn default_route_mtu() -> Option<u32> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let dev = routes.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let dev = f.next()?;
        let dest = f.next()?;
        (dest == "00000000").then(|| dev.to_string())
    })?;
    interface_mtu(&dev)
}

/// The MTU of interface `dev`.
pub fn interface_mtu(dev: &str) -> Option<u32> {
    let p = Path::new("/sys/class/net").join(dev).join("mtu");
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// What `vxsec mtu` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtuReport {
    pub underlay_mtu: u32,
    pub ipv6_underlay: bool,
    pub tunnel_mtu: u32,
    pub vxlan_mtu: u32,
}

/// The underlay MTU is too small to carry anything.
#[derive(Debug, thiserror::Error)]
#[error("underlay MTU {0} is too small for vxsec (the tunnel MTU would fall under 576)")]
pub struct MtuTooSmall(pub u32);

impl MtuReport {
    pub fn new(underlay_mtu: u32, ipv6_underlay: bool) -> Result<Self, MtuTooSmall> {
        let tunnel_mtu =
            mtu::tunnel_mtu(underlay_mtu, ipv6_underlay).ok_or(MtuTooSmall(underlay_mtu))?;
        let vxlan_mtu = mtu::vxlan_mtu(tunnel_mtu).ok_or(MtuTooSmall(underlay_mtu))?;
        Ok(Self {
            underlay_mtu,
            ipv6_underlay,
            tunnel_mtu,
            vxlan_mtu,
        })
    }
}

impl fmt::Display for MtuReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outer = if self.ipv6_underlay { 40 } else { 20 };
        writeln!(f, "underlay MTU:      {}", self.underlay_mtu)?;
        writeln!(
            f,
            "tunnel MTU:        {}   (= {} - {outer} outer IP - 8 UDP - 32 vxsec)",
            self.tunnel_mtu, self.underlay_mtu
        )?;
        writeln!(
            f,
            "VXLAN MTU:         {}   (= tunnel MTU - 50 VXLAN/Ethernet/IPv4/UDP)",
            self.vxlan_mtu
        )?;
        writeln!(f)?;
        writeln!(f, "Give this MTU to what runs over vxsec:")?;
        writeln!(
            f,
            "  ip link add vxlan42 type vxlan id 42 local <tunnel address> dstport 4789 mtu {}",
            self.vxlan_mtu
        )?;
        writeln!(
            f,
            "  docker network create -d overlay --opt com.docker.network.driver.mtu={} <name>",
            self.vxlan_mtu
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_report_for_common_underlays() {
        let r = MtuReport::new(1500, false).expect("ok");
        assert_eq!((r.tunnel_mtu, r.vxlan_mtu), (1440, 1390));
        let r = MtuReport::new(1500, true).expect("ok");
        assert_eq!((r.tunnel_mtu, r.vxlan_mtu), (1420, 1370));
        let r = MtuReport::new(9000, false).expect("ok");
        assert_eq!((r.tunnel_mtu, r.vxlan_mtu), (8940, 8890));
        assert!(MtuReport::new(500, false).is_err());
        assert!(r.to_string().contains("mtu 8890"));
    }

    #[test]
    fn loopback_mtu_is_readable() {
        assert!(interface_mtu("lo").is_some());
    }
}
