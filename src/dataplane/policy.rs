//! Data-plane policy (DESIGN §6): which inner packets may enter the tunnel
//! (send) or leave it (receive). By default only UDP to the VXLAN port, with
//! a VNI the peer is allowed, and optionally the ICMP/ICMPv6 messages path-MTU
//! discovery needs. It decides per packet from a [`Classified`] and counts
//! nothing itself: the caller counts [`PolicyDrop`]s (see
//! [`PolicyDrop::counter_name`]). It does not route (peer lookup by tunnel
//! address is the caller's) and does not build ICMP replies.
//!
//! Fragments are dropped: a non-first fragment carries no VNI, so the allow
//! list cannot be enforced on it, and passing only first fragments would be
//! useless. The MTU advice (VXLAN device MTU = tunnel MTU − 50 over IPv4
//! VTEPs, − 70 over IPv6 ones) keeps VXLAN from fragmenting in the first
//! place.

use core::net::IpAddr;

use crate::wire::{parse_vxlan_in_ip, Classified, Fragment, IpVersion, WireError};

const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;

/// Why a packet was not allowed through. Peer- or host-supplied traffic,
/// never an operator error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PolicyDrop {
    /// The packet could not be parsed down to what the policy needs.
    #[error("malformed inner packet: {0}")]
    Malformed(WireError),
    /// Not UDP to the VXLAN port (TCP, other UDP, IPv6 extension headers…).
    #[error("not VXLAN")]
    NotVxlan,
    /// VXLAN with a VNI outside the peer's allow list.
    #[error("VNI {0} not allowed for this peer")]
    VniNotAllowed(u32),
    /// An IPv4 fragment (its VNI cannot be checked).
    #[error("fragment")]
    Fragment,
    /// ICMP that is not a path-MTU message, or ICMP while it is disabled.
    #[error("ICMP type not allowed")]
    IcmpNotAllowed,
    /// Received from a peer with an inner source address that is not the peer's.
    #[error("inner source address is not the peer's")]
    SourceMismatch,
}

impl PolicyDrop {
    /// The drop counter this reason is reported under, with the names of the
    /// agent contract's global `drops{}` (fragments and stray ICMP count as
    /// `not_vxlan`; a spoofed source as the per-peer `policy`).
    #[inline]
    pub const fn counter_name(&self) -> &'static str {
        match self {
            PolicyDrop::Malformed(_) => "malformed",
            PolicyDrop::NotVxlan | PolicyDrop::IcmpNotAllowed => "not_vxlan",
            PolicyDrop::Fragment => "fragment",
            PolicyDrop::VniNotAllowed(_) => "vni_not_allowed",
            PolicyDrop::SourceMismatch => "policy",
        }
    }
}

/// A VNI above 24 bits in a configured allow list (operator error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} is out of range (0..=16777215)")]
pub struct VniOutOfRange(pub u32);

/// The VNIs a peer may use: any, or a sorted, de-duplicated list (an empty
/// list allows nothing). Lookups are a binary search over a few `u32`s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VniSet {
    /// `None` = any VNI.
    list: Option<Box<[u32]>>,
}

impl VniSet {
    /// Any VNI is allowed (`allowed_vnis` omitted in the config).
    #[inline]
    pub const fn any() -> Self {
        Self { list: None }
    }

    /// Exactly these VNIs (sorted and de-duplicated here).
    pub fn only(vnis: impl IntoIterator<Item = u32>) -> Result<Self, VniOutOfRange> {
        let mut v: Vec<u32> = vnis.into_iter().collect();
        if let Some(&bad) = v.iter().find(|&&x| x > crate::wire::vxlan::MAX_VNI) {
            return Err(VniOutOfRange(bad));
        }
        v.sort_unstable();
        v.dedup();
        Ok(Self {
            list: Some(v.into_boxed_slice()),
        })
    }

    /// From the config's optional `allowed_vnis`.
    pub fn from_config(vnis: Option<&[u32]>) -> Result<Self, VniOutOfRange> {
        match vnis {
            None => Ok(Self::any()),
            Some(v) => Self::only(v.iter().copied()),
        }
    }

    #[inline]
    pub fn contains(&self, vni: u32) -> bool {
        match &self.list {
            None => true,
            Some(l) => l.binary_search(&vni).is_ok(),
        }
    }

    #[inline]
    pub fn is_any(&self) -> bool {
        self.list.is_none()
    }

    /// The allowed VNIs in ascending order, or `None` for any (for status).
    #[inline]
    pub fn as_slice(&self) -> Option<&[u32]> {
        self.list.as_deref()
    }
}

/// The data-plane policy, shared by all peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The UDP port the overlay's VXLAN uses (`policy.vxlan_port`).
    pub vxlan_port: u16,
    /// Let ICMP "fragmentation needed" and ICMPv6 "packet too big" through.
    pub allow_icmp: bool,
}

impl Default for Policy {
    #[inline]
    fn default() -> Self {
        Self {
            vxlan_port: crate::wire::vxlan::DEFAULT_PORT,
            allow_icmp: true,
        }
    }
}

impl Policy {
    /// Classifies `pkt` with this policy's VXLAN port.
    #[inline]
    pub fn classify(&self, pkt: &[u8]) -> Result<Classified, PolicyDrop> {
        parse_vxlan_in_ip(pkt, self.vxlan_port).map_err(PolicyDrop::Malformed)
    }

    /// Decides on a classified packet: VXLAN on an allowed VNI, or a
    /// path-MTU ICMP message if enabled. Same rule on send and on receive.
    #[inline]
    pub fn check(&self, c: &Classified, allowed: &VniSet) -> Result<(), PolicyDrop> {
        if c.fragment != Fragment::No {
            return Err(PolicyDrop::Fragment);
        }
        if c.is_icmp() {
            let pmtu = matches!(
                (c.version, c.icmp),
                (
                    IpVersion::V4,
                    Some((ICMP_DEST_UNREACHABLE, ICMP_FRAG_NEEDED))
                ) | (IpVersion::V6, Some((ICMPV6_PACKET_TOO_BIG, _)))
            );
            return if self.allow_icmp && pmtu {
                Ok(())
            } else {
                Err(PolicyDrop::IcmpNotAllowed)
            };
        }
        match (c.udp_dst_port(), c.vni) {
            (Some(port), Some(vni)) if port == self.vxlan_port => {
                if allowed.contains(vni) {
                    Ok(())
                } else {
                    Err(PolicyDrop::VniNotAllowed(vni))
                }
            }
            _ => Err(PolicyDrop::NotVxlan),
        }
    }

    /// Send side: classify and check a packet read from TUN.
    #[inline]
    pub fn admit_send(&self, pkt: &[u8], allowed: &VniSet) -> Result<Classified, PolicyDrop> {
        let c = self.classify(pkt)?;
        self.check(&c, allowed).map(|()| c)
    }

    /// Receive side: as [`Policy::admit_send`], and the inner source must be
    /// the sending peer's tunnel address (a peer cannot speak for another).
    #[inline]
    pub fn admit_receive(
        &self,
        pkt: &[u8],
        allowed: &VniSet,
        peer_tunnel_addr: IpAddr,
    ) -> Result<Classified, PolicyDrop> {
        let c = self.classify(pkt)?;
        if c.src != peer_tunnel_addr {
            return Err(PolicyDrop::SourceMismatch);
        }
        self.check(&c, allowed).map(|()| c)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::wire::{emit_vxlan_in_ipv4, emit_vxlan_in_ipv6, VxlanFlow};
    use core::net::{Ipv4Addr, Ipv6Addr};

    const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

    fn vxlan_v4(vni: u32, port: u16) -> Vec<u8> {
        let mut buf = vec![0u8; 128];
        let flow = VxlanFlow {
            src_port: 40_000,
            dst_port: port,
            vni,
        };
        let n = emit_vxlan_in_ipv4(&mut buf, A, B, flow, &[0x22; 60]).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn vni_sets() {
        let s = VniSet::only([42, 7, 42, 100]).unwrap();
        assert_eq!(s.as_slice(), Some(&[7, 42, 100][..]));
        assert!(s.contains(42) && s.contains(7) && !s.contains(8) && !s.is_any());
        assert!(VniSet::any().contains(0xff_ffff) && VniSet::any().is_any());
        assert!(!VniSet::only([]).unwrap().contains(0));
        assert_eq!(VniSet::only([1, 1 << 24]), Err(VniOutOfRange(1 << 24)));
        assert_eq!(VniSet::from_config(None).unwrap(), VniSet::any());
        assert_eq!(
            VniSet::from_config(Some(&[3, 2])).unwrap().as_slice(),
            Some(&[2, 3][..])
        );
        assert_eq!(VniSet::default(), VniSet::any());
    }

    #[test]
    fn only_allowed_vxlan_passes() {
        let p = Policy::default();
        let allowed = VniSet::only([42]).unwrap();
        assert!(p.admit_send(&vxlan_v4(42, 4789), &allowed).is_ok());
        assert!(p.admit_send(&vxlan_v4(43, 4789), &VniSet::any()).is_ok());
        assert_eq!(
            p.admit_send(&vxlan_v4(43, 4789), &allowed),
            Err(PolicyDrop::VniNotAllowed(43))
        );
        assert_eq!(
            p.admit_send(&vxlan_v4(42, 8472), &allowed),
            Err(PolicyDrop::NotVxlan)
        );
        let other_port = Policy {
            vxlan_port: 8472,
            ..p
        };
        assert!(other_port.admit_send(&vxlan_v4(42, 8472), &allowed).is_ok());
        // A packet classified for another port is not VXLAN to this policy.
        let c = other_port.classify(&vxlan_v4(42, 8472)).unwrap();
        assert_eq!(p.check(&c, &VniSet::any()), Err(PolicyDrop::NotVxlan));
        // IPv6 VXLAN is checked the same way.
        let (s6, d6): (Ipv6Addr, Ipv6Addr) =
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut buf = [0u8; 160];
        let flow = VxlanFlow {
            src_port: 1,
            dst_port: 4789,
            vni: 9,
        };
        let n = emit_vxlan_in_ipv6(&mut buf, s6, d6, flow, &[0; 40]).unwrap();
        assert_eq!(
            p.admit_send(&buf[..n], &allowed),
            Err(PolicyDrop::VniNotAllowed(9))
        );
        assert!(p.admit_send(&buf[..n], &VniSet::only([9]).unwrap()).is_ok());
    }

    #[test]
    fn other_traffic_is_dropped_with_a_reason() {
        let p = Policy::default();
        let any = VniSet::any();
        let mut pkt = vxlan_v4(42, 4789);
        pkt[9] = 6; // TCP
        assert_eq!(p.admit_send(&pkt, &any), Err(PolicyDrop::NotVxlan));
        let mut frag = vxlan_v4(42, 4789);
        frag[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF, offset 0
        assert_eq!(p.admit_send(&frag, &any), Err(PolicyDrop::Fragment));
        frag[6..8].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(p.admit_send(&frag, &any), Err(PolicyDrop::Fragment));
        let mut bad = vxlan_v4(42, 4789);
        bad[28] = 0; // VXLAN I flag cleared
        let e = p.admit_send(&bad, &any).unwrap_err();
        assert_eq!(e, PolicyDrop::Malformed(WireError::VxlanNoVni));
        assert_eq!(e.counter_name(), "malformed");
        assert_eq!(
            p.admit_send(&[0x45, 0], &any),
            Err(PolicyDrop::Malformed(WireError::Truncated))
        );
    }

    #[test]
    fn icmp_only_for_path_mtu() {
        let mut pkt = vxlan_v4(42, 4789);
        pkt[9] = 1; // ICMP
        pkt[20..22].copy_from_slice(&[3, 4]);
        let on = Policy::default();
        let off = Policy {
            allow_icmp: false,
            ..on
        };
        let none = VniSet::only([]).unwrap();
        assert!(
            on.admit_send(&pkt, &none).is_ok(),
            "VNI lists do not apply to ICMP"
        );
        assert_eq!(off.admit_send(&pkt, &none), Err(PolicyDrop::IcmpNotAllowed));
        pkt[20] = 8; // echo request
        assert_eq!(on.admit_send(&pkt, &none), Err(PolicyDrop::IcmpNotAllowed));
        assert_eq!(PolicyDrop::IcmpNotAllowed.counter_name(), "not_vxlan");
    }

    #[test]
    fn receive_checks_the_inner_source() {
        let p = Policy::default();
        let pkt = vxlan_v4(42, 4789);
        let any = VniSet::any();
        assert!(p.admit_receive(&pkt, &any, IpAddr::V4(A)).is_ok());
        let e = p.admit_receive(&pkt, &any, IpAddr::V4(B)).unwrap_err();
        assert_eq!(
            (e, e.counter_name()),
            (PolicyDrop::SourceMismatch, "policy")
        );
        assert_eq!(
            p.admit_receive(
                &vxlan_v4(5, 4789),
                &VniSet::only([42]).unwrap(),
                IpAddr::V4(A)
            ),
            Err(PolicyDrop::VniNotAllowed(5))
        );
        assert_eq!(
            PolicyDrop::VniNotAllowed(5).to_string(),
            "VNI 5 not allowed for this peer"
        );
    }
}
