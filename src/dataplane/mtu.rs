//! MTU arithmetic (DESIGN §6: tunnel MTU = underlay − outer IP − 8 − 32;
//! VXLAN device MTU = tunnel − 50 for an IPv4 VTEP, − 70 for an IPv6 one;
//! Docker's `com.docker.network.driver.mtu` = VXLAN device MTU + 50) and
//! ICMP "fragmentation needed" / "packet too big" replies for oversize DF packets, written into a caller buffer
//! (addressed from the tunnel address back to the sender). No I/O, no
//! allocation, no panic on any input.

use std::net::IpAddr;

use crate::wire::checksum as inet_csum;

/// Outer IPv4 header bytes.
pub const OUTER_IPV4_LEN: u32 = 20;
/// Outer IPv6 header bytes.
pub const OUTER_IPV6_LEN: u32 = 40;
/// Outer UDP header bytes.
pub const UDP_LEN: u32 = 8;
/// vxsec data header + AEAD tag (vxsec_crypto::sa::DATA_OVERHEAD).
pub const DATA_OVERHEAD: u32 = 32;
/// VXLAN encapsulation with an IPv4 VTEP: inner Ethernet 14 + VXLAN 8 +
/// UDP 8 + outer IPv4 20.
pub const VXLAN_OVERHEAD: u32 = 50;
/// VXLAN encapsulation with an IPv6 VTEP: inner Ethernet 14 + VXLAN 8 +
/// UDP 8 + outer IPv6 40.
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// What Docker's overlay driver subtracts from
/// `com.docker.network.driver.mtu` to get its VXLAN device's MTU (VXLAN
/// over IPv4, whatever the VTEP's family).
pub const DOCKER_VXLAN_OVERHEAD: u32 = 50;
/// Smallest MTU IPv6 allows on a link.
pub const IPV6_MIN_MTU: u32 = 1280;
/// Smallest tunnel MTU the agent accepts (IPv4 minimum datagram).
pub const MIN_TUNNEL_MTU: u32 = 576;
/// RFC 1812: an ICMPv4 error should not exceed 576 bytes.
const ICMPV4_MAX: usize = 576;

/// Tunnel MTU for an underlay MTU, or `None` if it would fall below 576.
pub fn tunnel_mtu(underlay_mtu: u32, outer_ipv6: bool) -> Option<u32> {
    let ip = if outer_ipv6 {
        OUTER_IPV6_LEN
    } else {
        OUTER_IPV4_LEN
    };
    underlay_mtu
        .checked_sub(ip + UDP_LEN + DATA_OVERHEAD)
        .filter(|&m| m >= MIN_TUNNEL_MTU)
}

/// VXLAN's own overhead for a VTEP (tunnel address) of this family.
pub const fn vxlan_overhead(vtep_ipv6: bool) -> u32 {
    if vtep_ipv6 {
        VXLAN_OVERHEAD_V6
    } else {
        VXLAN_OVERHEAD
    }
}

/// MTU to give a VXLAN device whose `local` is a tunnel address of this
/// family (the MTU of the frames it carries): the largest whose VXLAN
/// packet still fits the tunnel.
pub fn vxlan_mtu(tunnel_mtu: u32, vtep_ipv6: bool) -> Option<u32> {
    tunnel_mtu.checked_sub(vxlan_overhead(vtep_ipv6))
}

/// The value of Docker's `com.docker.network.driver.mtu` that gives its
/// VXLAN device (and containers) `vxlan_mtu`: Docker subtracts 50 itself.
/// With an IPv4 VTEP this is the tunnel MTU.
pub const fn docker_mtu(vxlan_mtu: u32) -> u32 {
    vxlan_mtu.saturating_add(DOCKER_VXLAN_OVERHEAD)
}

/// Why no ICMP reply was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IcmpError {
    /// The packet is too short or not IPv4/IPv6.
    #[error("not a well-formed IP packet")]
    Malformed,
    /// IPv4 without DF: the sender did not ask for path-MTU discovery.
    #[error("IPv4 packet without DF")]
    NoDf,
    /// Never answer an ICMP error, a non-first fragment, or a source that
    /// is unspecified, multicast or broadcast.
    #[error("packet must not trigger an ICMP error")]
    NotEligible,
    /// The tunnel address family does not match the packet.
    #[error("no tunnel address of the packet's IP version")]
    FamilyMismatch,
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Builds an ICMPv4 type 3 code 4 (with next-hop MTU) or ICMPv6 type 2
/// reply to `pkt`, from `tunnel_addr` to `pkt`'s source, into `out`;
/// returns its length. IPv4 quotes as much of `pkt` as fits in 576 bytes
/// (at least its header + 8 bytes), IPv6 as much as fits in 1280.
pub fn icmp_too_big(
    pkt: &[u8],
    tunnel_addr: IpAddr,
    mtu: u32,
    out: &mut [u8],
) -> Result<usize, IcmpError> {
    match (pkt.first().map(|b| b >> 4), tunnel_addr) {
        (Some(4), IpAddr::V4(a)) => too_big_v4(pkt, a.octets(), mtu, out),
        (Some(6), IpAddr::V6(a)) => too_big_v6(pkt, a.octets(), mtu, out),
        (Some(4) | Some(6), _) => Err(IcmpError::FamilyMismatch),
        _ => Err(IcmpError::Malformed),
    }
}

fn too_big_v4(pkt: &[u8], from: [u8; 4], mtu: u32, out: &mut [u8]) -> Result<usize, IcmpError> {
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl {
        return Err(IcmpError::Malformed);
    }
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    if frag & 0x4000 == 0 {
        return Err(IcmpError::NoDf);
    }
    let src = [pkt[12], pkt[13], pkt[14], pkt[15]];
    let bad_src = src == [0; 4] || src[0] >= 224 || src == [255; 4];
    let icmp_error = pkt[9] == 1
        && pkt
            .get(ihl)
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12));
    if frag & 0x1fff != 0 || bad_src || icmp_error {
        return Err(IcmpError::NotEligible);
    }
    // Quote up to 576 bytes total, never less than header + 8.
    let quote = pkt.len().min(ICMPV4_MAX - 28);
    if quote < pkt.len().min(ihl + 8) {
        return Err(IcmpError::Malformed);
    }
    let total = 28 + quote;
    let out = out.get_mut(..total).ok_or(IcmpError::BufferTooSmall)?;
    out[..20].copy_from_slice(&[
        0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, from[0], from[1], from[2], from[3], src[0],
        src[1], src[2], src[3],
    ]);
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    let c = inet_csum::checksum(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    let next_hop = u16::try_from(mtu).unwrap_or(u16::MAX);
    out[20..28].copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
    out[26..28].copy_from_slice(&next_hop.to_be_bytes());
    out[28..].copy_from_slice(&pkt[..quote]);
    let c = inet_csum::checksum(&out[20..]);
    out[22..24].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}

fn too_big_v6(pkt: &[u8], from: [u8; 16], mtu: u32, out: &mut [u8]) -> Result<usize, IcmpError> {
    if pkt.len() < 40 {
        return Err(IcmpError::Malformed);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&pkt[8..24]);
    let bad_src = src == [0; 16] || src[0] == 0xff;
    // ICMPv6 error messages have types below 128 (only the common case of
    // ICMPv6 directly after the fixed header is recognised).
    let icmp_error = pkt[6] == 58 && pkt.get(40).is_some_and(|&t| t < 128);
    if bad_src || icmp_error {
        return Err(IcmpError::NotEligible);
    }
    let quote = pkt.len().min(IPV6_MIN_MTU as usize - 48);
    let total = 48 + quote;
    let out = out.get_mut(..total).ok_or(IcmpError::BufferTooSmall)?;
    let plen = (total - 40) as u16;
    out[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, 58, 64]);
    out[4..6].copy_from_slice(&plen.to_be_bytes());
    out[8..24].copy_from_slice(&from);
    out[24..40].copy_from_slice(&src);
    out[40..48].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
    out[44..48].copy_from_slice(&mtu.to_be_bytes());
    out[48..].copy_from_slice(&pkt[..quote]);
    let sum = inet_csum::accumulate(
        inet_csum::pseudo_header_v6(&from, &src, 58, u32::from(plen)),
        &out[40..],
    );
    out[42..44].copy_from_slice(&inet_csum::finish(sum).to_be_bytes());
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::wire::checksum::reference_sum;

    fn v4_packet(len: usize, df: bool) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = if df { 0x40 } else { 0 };
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 5]);
        p[16..20].copy_from_slice(&[10, 200, 0, 2]);
        for (i, b) in p.iter_mut().enumerate().skip(20) {
            *b = i as u8;
        }
        p
    }

    fn v6_packet(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 5;
        p[24] = 0xfd;
        p[39] = 2;
        for (i, b) in p.iter_mut().enumerate().skip(40) {
            *b = i as u8;
        }
        p
    }

    #[test]
    fn mtu_arithmetic() {
        assert_eq!(tunnel_mtu(1500, false), Some(1440));
        assert_eq!(tunnel_mtu(1500, true), Some(1420));
        assert_eq!(vxlan_mtu(1440, false), Some(1390));
        // VXLAN over IPv6 costs 70 bytes: a DF ping at 1370 over an IPv6
        // VTEP with tunnel MTU 1420 would need 1440.
        assert_eq!(vxlan_mtu(1420, true), Some(1350));
        assert_eq!(vxlan_mtu(1440, true), Some(1370));
        assert_eq!(vxlan_mtu(40, false), None);
        // Docker subtracts VXLAN's 50 bytes from its option: give it the
        // tunnel MTU for IPv4 VTEPs, 20 less for IPv6 ones.
        assert_eq!(docker_mtu(1390), 1440);
        assert_eq!(docker_mtu(1350), 1400);
        assert_eq!(tunnel_mtu(9000, false), Some(8940));
        assert_eq!(tunnel_mtu(600, false), None);
        assert_eq!(tunnel_mtu(0, true), None);
    }

    #[test]
    fn icmpv4_frag_needed() {
        let pkt = v4_packet(1500, true);
        let from = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1));
        let mut out = [0u8; 2048];
        let n = match icmp_too_big(&pkt, from, 1440, &mut out) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let r = &out[..n];
        assert_eq!(n, 576);
        assert_eq!(reference_sum(&[&r[..20]]), 0xffff, "IP header checksum");
        assert_eq!(reference_sum(&[&r[20..]]), 0xffff, "ICMP checksum");
        assert_eq!(usize::from(u16::from_be_bytes([r[2], r[3]])), n);
        assert_eq!(r[9], 1);
        assert_eq!(r[12..16], [10, 200, 0, 1]);
        assert_eq!(r[16..20], [10, 0, 0, 5]);
        assert_eq!((r[20], r[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([r[26], r[27]]), 1440);
        assert_eq!(r[28..], pkt[..548]);
        // A short packet is quoted whole (>= header + 8 bytes).
        let small = v4_packet(40, true);
        assert_eq!(icmp_too_big(&small, from, 1440, &mut out), Ok(68));
        assert_eq!(out[28..68], small[..]);
        assert_eq!(reference_sum(&[&out[20..68]]), 0xffff);
    }

    #[test]
    fn icmpv4_refusals() {
        let from = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1));
        let mut out = [0u8; 2048];
        assert_eq!(
            icmp_too_big(&v4_packet(1500, false), from, 1440, &mut out),
            Err(IcmpError::NoDf)
        );
        let mut icmp_err = v4_packet(1500, true);
        icmp_err[9] = 1;
        icmp_err[20] = 3;
        assert_eq!(
            icmp_too_big(&icmp_err, from, 1440, &mut out),
            Err(IcmpError::NotEligible)
        );
        let mut frag = v4_packet(1500, true);
        frag[7] = 1;
        assert_eq!(
            icmp_too_big(&frag, from, 1440, &mut out),
            Err(IcmpError::NotEligible)
        );
        let mut mcast = v4_packet(1500, true);
        mcast[12] = 224;
        assert_eq!(
            icmp_too_big(&mcast, from, 1440, &mut out),
            Err(IcmpError::NotEligible)
        );
        let v6from = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(
            icmp_too_big(&v4_packet(1500, true), v6from, 1440, &mut out),
            Err(IcmpError::FamilyMismatch)
        );
        assert_eq!(
            icmp_too_big(&v4_packet(1500, true), from, 1440, &mut out[..100]),
            Err(IcmpError::BufferTooSmall)
        );
        for cut in 0..30 {
            let _ = icmp_too_big(&v4_packet(1500, true)[..cut], from, 1440, &mut out);
        }
        assert_eq!(
            icmp_too_big(&[], from, 1, &mut out),
            Err(IcmpError::Malformed)
        );
    }

    #[test]
    fn icmpv6_packet_too_big() {
        let pkt = v6_packet(1500);
        let from_a = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        let mut out = [0u8; 2048];
        let n = match icmp_too_big(&pkt, IpAddr::V6(from_a), 1420, &mut out) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let r = &out[..n];
        assert_eq!(n, 1280);
        assert_eq!(usize::from(u16::from_be_bytes([r[4], r[5]])), n - 40);
        assert_eq!((r[6], r[40], r[41]), (58, 2, 0));
        assert_eq!(u32::from_be_bytes([r[44], r[45], r[46], r[47]]), 1420);
        assert_eq!(r[8..24], from_a.octets());
        assert_eq!(r[24..40], pkt[8..24]);
        assert_eq!(r[48..], pkt[..1232]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&r[8..40]);
        pseudo.extend_from_slice(&((n - 40) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(&r[40..]);
        assert_eq!(reference_sum(&[&pseudo]), 0xffff, "ICMPv6 checksum");
        let mut err = v6_packet(1500);
        err[6] = 58;
        err[40] = 1;
        assert_eq!(
            icmp_too_big(&err, IpAddr::V6(from_a), 1420, &mut out),
            Err(IcmpError::NotEligible)
        );
    }
}
