//! One-pass classification of an inner IP packet (what TUN hands the agent,
//! or what a peer's data message decrypts to) down to VXLAN: the facts the
//! data-plane policy needs, read in place. It decides nothing; see
//! `dataplane::policy`. Also emitters that build IP/UDP/VXLAN packets (for
//! tests, benches, fuzz seeds and tools).
//!
//! Classified, not refused: non-first IPv4 fragments (no L4 header), IPv4
//! first fragments (ports and VNI read from the first bytes, the UDP length is
//! not checked against the fragment), any protocol other than UDP/ICMP, and
//! IPv6 extension headers (not walked: `protocol` is the fixed header's next
//! header). Refused with a [`WireError`]: a malformed IP header, a truncated
//! UDP/ICMP header, and UDP to the VXLAN port without a valid VXLAN header.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ip::{PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP};
use super::ipv4::{Ipv4Packet, Ipv4Repr};
use super::ipv6::{Ipv6Packet, Ipv6Repr};
use super::udp::{UdpPacket, UdpRepr};
use super::{udp, vxlan, WireError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// A whole datagram (always the case for IPv6: see the module docs).
    No,
    /// IPv4 offset 0 with MF set: L4 header present, datagram incomplete.
    First,
    /// IPv4 offset > 0: no L4 header.
    NonFirst,
}

/// What the policy needs to know about an inner packet. Copy of a few
/// header fields; the packet itself is not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub version: IpVersion,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 protocol, or the IPv6 fixed header's next header.
    pub protocol: u8,
    /// IP header length (IPv4 options included; 40 for IPv6).
    pub header_len: usize,
    /// IPv4 total length, or 40 + IPv6 payload length.
    pub total_len: usize,
    /// IPv4 DF bit; always true for IPv6 (routers never fragment it).
    pub dont_frag: bool,
    pub fragment: Fragment,
    /// UDP ports (src, dst), if UDP and the header is present.
    pub udp_ports: Option<(u16, u16)>,
    /// The VNI, if UDP to the VXLAN port with a valid VXLAN header.
    pub vni: Option<u32>,
    /// ICMP or ICMPv6 (type, code), if the header is present.
    pub icmp: Option<(u8, u8)>,
}

impl Classified {
    #[inline]
    pub fn udp_dst_port(&self) -> Option<u16> {
        self.udp_ports.map(|(_, d)| d)
    }
    #[inline]
    pub fn is_icmp(&self) -> bool {
        matches!(
            (self.version, self.protocol),
            (IpVersion::V4, PROTO_ICMP) | (IpVersion::V6, PROTO_ICMPV6)
        )
    }
}

/// Facts about the L4 header: (udp ports, vni, icmp type/code).
type L4Facts = (Option<(u16, u16)>, Option<u32>, Option<(u8, u8)>);

/// Reads the L4 header from `l4` (the IP payload). `whole` is false for a
/// first fragment, whose UDP length field covers more than `l4` holds.
#[inline]
fn l4_facts(
    is_udp: bool,
    is_icmp: bool,
    l4: &[u8],
    whole: bool,
    vxlan_port: u16,
) -> Result<L4Facts, WireError> {
    if is_icmp {
        let Some(&[ty, code, ..]) = l4.first_chunk::<4>() else {
            return Err(WireError::Truncated);
        };
        return Ok((None, None, Some((ty, code))));
    }
    if !is_udp {
        return Ok((None, None, None));
    }
    // The same checks as `UdpPacket::new_checked`, read from one fixed-size
    // chunk (no per-field bounds checks on the hot path); the fuzz target
    // holds the two to agreement.
    let Some((&[s0, s1, d0, d1, l0, l1, _, _], rest)) =
        l4.split_first_chunk::<{ udp::HEADER_LEN }>()
    else {
        return Err(WireError::Truncated);
    };
    let udp_payload = if whole {
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let body = len
            .checked_sub(udp::HEADER_LEN)
            .ok_or(WireError::BadLength)?;
        rest.get(..body).ok_or(WireError::Truncated)?
    } else {
        rest
    };
    let (src, dst) = (u16::from_be_bytes([s0, s1]), u16::from_be_bytes([d0, d1]));
    let vni = if dst == vxlan_port {
        Some(vxlan::VxlanPacket::new_checked(udp_payload)?.vni())
    } else {
        None
    };
    Ok((Some((src, dst)), vni, None))
}

/// Classifies an inner IP packet (version from the first nibble) in one pass
/// without copying it. See the module docs for what is refused.
#[inline(always)]
pub fn parse_vxlan_in_ip(pkt: &[u8], vxlan_port: u16) -> Result<Classified, WireError> {
    let Some(&first) = pkt.first() else {
        return Err(WireError::Truncated);
    };
    match first >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(pkt)?;
            let fragment = match (ip.frag_offset_bytes(), ip.more_frags()) {
                (0, false) => Fragment::No,
                (0, true) => Fragment::First,
                _ => Fragment::NonFirst,
            };
            let (udp_ports, vni, icmp) = if fragment == Fragment::NonFirst {
                (None, None, None)
            } else {
                let p = ip.protocol();
                l4_facts(
                    p == PROTO_UDP,
                    p == PROTO_ICMP,
                    ip.payload(),
                    fragment == Fragment::No,
                    vxlan_port,
                )?
            };
            Ok(Classified {
                version: IpVersion::V4,
                src: IpAddr::V4(ip.src_addr()),
                dst: IpAddr::V4(ip.dst_addr()),
                protocol: ip.protocol(),
                header_len: ip.header_len(),
                total_len: ip.total_len(),
                dont_frag: ip.dont_frag(),
                fragment,
                udp_ports,
                vni,
                icmp,
            })
        }
        6 => {
            let ip = Ipv6Packet::new_checked(pkt)?;
            let nh = ip.next_header();
            let (udp_ports, vni, icmp) = l4_facts(
                nh == PROTO_UDP,
                nh == PROTO_ICMPV6,
                ip.payload(),
                true,
                vxlan_port,
            )?;
            Ok(Classified {
                version: IpVersion::V6,
                src: IpAddr::V6(ip.src_addr()),
                dst: IpAddr::V6(ip.dst_addr()),
                protocol: nh,
                header_len: super::ipv6::HEADER_LEN,
                total_len: ip.total_len(),
                dont_frag: true,
                fragment: Fragment::No,
                udp_ports,
                vni,
                icmp,
            })
        }
        v => Err(WireError::BadVersion(v)),
    }
}

/// Ports and VNI of a VXLAN packet to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanFlow {
    pub src_port: u16,
    pub dst_port: u16,
    pub vni: u32,
}

const VXLAN_HDRS: usize = udp::HEADER_LEN + vxlan::HEADER_LEN;

/// Writes `IPv4 (DF, TTL 64) ‖ UDP (checksum 0, as Linux VXLAN sends) ‖
/// VXLAN ‖ frame` into `out`; returns the total length.
pub fn emit_vxlan_in_ipv4(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    flow: VxlanFlow,
    frame: &[u8],
) -> Result<usize, WireError> {
    let total = super::ipv4::HEADER_LEN + VXLAN_HDRS + frame.len();
    let out = out.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
    let repr = Ipv4Repr {
        src,
        dst,
        protocol: PROTO_UDP,
        ttl: 64,
        dont_frag: true,
        ident: 0,
        payload_len: VXLAN_HDRS + frame.len(),
    };
    let hdr_len = repr.emit(out)?;
    let (_, rest) = out
        .split_at_mut_checked(hdr_len)
        .ok_or(WireError::BufferTooSmall)?;
    emit_udp_vxlan(rest, flow, frame)?;
    Ok(total)
}

/// Writes `IPv6 (hop limit 64) ‖ UDP (checksum filled) ‖ VXLAN ‖ frame`.
pub fn emit_vxlan_in_ipv6(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    flow: VxlanFlow,
    frame: &[u8],
) -> Result<usize, WireError> {
    let total = super::ipv6::HEADER_LEN + VXLAN_HDRS + frame.len();
    let out = out.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
    let repr = Ipv6Repr {
        src,
        dst,
        next_header: PROTO_UDP,
        hop_limit: 64,
        payload_len: VXLAN_HDRS + frame.len(),
    };
    let hdr_len = repr.emit(out)?;
    let (_, rest) = out
        .split_at_mut_checked(hdr_len)
        .ok_or(WireError::BufferTooSmall)?;
    emit_udp_vxlan(rest, flow, frame)?;
    UdpPacket::new_checked(rest)?.fill_checksum_v6(&src, &dst);
    Ok(total)
}

/// `rest` is exactly UDP header + VXLAN header + frame long.
fn emit_udp_vxlan(rest: &mut [u8], flow: VxlanFlow, frame: &[u8]) -> Result<(), WireError> {
    let udp = UdpRepr {
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        payload_len: vxlan::HEADER_LEN + frame.len(),
    };
    let hdr_len = udp.emit(rest)?;
    let (_, rest) = rest
        .split_at_mut_checked(hdr_len)
        .ok_or(WireError::BufferTooSmall)?;
    let hdr_len = vxlan::emit(rest, flow.vni)?;
    let (_, body) = rest
        .split_at_mut_checked(hdr_len)
        .ok_or(WireError::BufferTooSmall)?;
    if body.len() != frame.len() {
        return Err(WireError::BufferTooSmall);
    }
    body.copy_from_slice(frame);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::wire::ethernet::{EthernetFrame, EthernetRepr, ETHERTYPE_IPV4};

    const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
    const FLOW: VxlanFlow = VxlanFlow {
        src_port: 50_000,
        dst_port: 4789,
        vni: 42,
    };

    fn frame() -> [u8; 60] {
        let mut f = [0x11u8; 60];
        let e = EthernetRepr {
            dst: [2, 0, 0, 0, 0, 1],
            src: [2, 0, 0, 0, 0, 2],
            vlan: Some((0, 7)),
            ethertype: ETHERTYPE_IPV4,
        };
        e.emit(&mut f).unwrap();
        f
    }

    fn v4_packet(buf: &mut [u8], flow: VxlanFlow) -> usize {
        emit_vxlan_in_ipv4(buf, A, B, flow, &frame()).unwrap()
    }

    #[test]
    fn classifies_vxlan_over_ipv4() {
        let mut buf = [0u8; 200];
        let n = v4_packet(&mut buf, FLOW);
        assert_eq!(n, 20 + 8 + 8 + 60);
        let c = parse_vxlan_in_ip(&buf[..n], 4789).unwrap();
        assert_eq!(c.version, IpVersion::V4);
        assert_eq!((c.src, c.dst), (IpAddr::V4(A), IpAddr::V4(B)));
        assert_eq!((c.protocol, c.header_len, c.total_len), (17, 20, n));
        assert!(c.dont_frag && !c.is_icmp());
        assert_eq!(
            (c.fragment, c.udp_ports, c.vni, c.icmp),
            (Fragment::No, Some((50_000, 4789)), Some(42), None)
        );
        // The VXLAN payload is the Ethernet frame we put in.
        let ip = Ipv4Packet::new_checked(&buf[..n]).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum_v4(A, B));
        let vx = vxlan::VxlanPacket::new_checked(udp.payload()).unwrap();
        let eth = EthernetFrame::new_checked(vx.payload()).unwrap();
        assert_eq!((eth.vlan_id(), eth.ethertype()), (Some(7), ETHERTYPE_IPV4));
        // Another VXLAN port: plain UDP, no VNI.
        let c = parse_vxlan_in_ip(&buf[..n], 8472).unwrap();
        assert_eq!((c.udp_dst_port(), c.vni), (Some(4789), None));
    }

    #[test]
    fn classifies_vxlan_over_ipv6() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut buf = [0u8; 200];
        let n = emit_vxlan_in_ipv6(&mut buf, s, d, FLOW, &frame()).unwrap();
        let c = parse_vxlan_in_ip(&buf[..n], 4789).unwrap();
        assert_eq!(
            (c.version, c.src, c.dst),
            (IpVersion::V6, IpAddr::V6(s), IpAddr::V6(d))
        );
        assert_eq!(
            (c.total_len, c.vni, c.fragment),
            (n, Some(42), Fragment::No)
        );
        let ip = Ipv6Packet::new_checked(&buf[..n]).unwrap();
        assert!(UdpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum_v6(&s, &d));
        // An extension header before UDP: reported, not walked, not an error.
        buf[6] = 0; // hop-by-hop
        let c = parse_vxlan_in_ip(&buf[..n], 4789).unwrap();
        assert_eq!((c.protocol, c.udp_ports, c.vni), (0, None, None));
        buf[6] = PROTO_ICMPV6;
        buf[40] = 2; // packet too big
        assert_eq!(
            parse_vxlan_in_ip(&buf[..n], 4789).unwrap().icmp,
            Some((2, buf[41]))
        );
    }

    #[test]
    fn fragments_and_other_protocols_are_classified() {
        let mut buf = [0u8; 200];
        let n = v4_packet(&mut buf, FLOW);
        // First fragment: the UDP length covers more than this fragment holds.
        let mut first = buf;
        first[6] = 0x20; // MF
        let cut = 20 + 24;
        first[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
        let c = parse_vxlan_in_ip(&first[..cut], 4789).unwrap();
        assert_eq!(
            (c.fragment, c.vni, c.dont_frag),
            (Fragment::First, Some(42), false)
        );
        // Non-first fragment: no L4 facts, even with garbage after the header.
        let mut later = buf;
        later[6..8].copy_from_slice(&3u16.to_be_bytes());
        later[20..36].fill(0xff);
        let c = parse_vxlan_in_ip(&later[..n], 4789).unwrap();
        assert_eq!(
            (c.fragment, c.udp_ports, c.vni),
            (Fragment::NonFirst, None, None)
        );
        // TCP: classified as protocol 6 with nothing else.
        let mut tcp = buf;
        tcp[9] = 6;
        let c = parse_vxlan_in_ip(&tcp[..n], 4789).unwrap();
        assert_eq!((c.protocol, c.udp_ports, c.icmp), (6, None, None));
        // ICMP fragmentation needed.
        tcp[9] = PROTO_ICMP;
        tcp[20..22].copy_from_slice(&[3, 4]);
        let c = parse_vxlan_in_ip(&tcp[..n], 4789).unwrap();
        assert!(c.is_icmp());
        assert_eq!(c.icmp, Some((3, 4)));
    }

    #[test]
    fn malformed_packets_are_errors() {
        let mut buf = [0u8; 200];
        let n = v4_packet(&mut buf, FLOW);
        assert_eq!(parse_vxlan_in_ip(&[], 4789), Err(WireError::Truncated));
        assert_eq!(
            parse_vxlan_in_ip(&[0x50; 40], 4789),
            Err(WireError::BadVersion(5))
        );
        let mut no_i = buf;
        no_i[28] = 0;
        assert_eq!(
            parse_vxlan_in_ip(&no_i[..n], 4789),
            Err(WireError::VxlanNoVni)
        );
        // IP length says the packet ends inside the VXLAN header.
        let mut short = buf;
        short[2..4].copy_from_slice(&(20u16 + 8 + 4).to_be_bytes());
        short[24..26].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(
            parse_vxlan_in_ip(&short[..n], 4789),
            Err(WireError::Truncated)
        );
        // Every strict prefix is refused (the IP total length no longer fits).
        for cut in 0..n {
            assert!(parse_vxlan_in_ip(&buf[..cut], 4789).is_err(), "{cut}");
        }
        assert_eq!(
            emit_vxlan_in_ipv4(&mut buf[..50], A, B, FLOW, &frame()),
            Err(WireError::BufferTooSmall)
        );
    }
}
