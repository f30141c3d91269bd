//! Invariant checks (oracles) over arbitrary bytes for the TUN offload,
//! coalescing and ICMP builders, through vxsec's public API. Included with
//! `#[path]` by the `tun_offload` and `tun_vnet_tunnel` fuzz targets and by
//! the `tun_offload_oracle` integration test (which also runs the tests at
//! the bottom over the corpus seeds). Not part of the product. Each check
//! panics only when an invariant is broken (never on bad input).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vxsec::dataplane::mtu;
use vxsec::io::tun::offload::tunnel_coalesce::{
    self, TnlHead, TnlRun, MAX_HDRS_LEN, OUTER_PAD_LEN,
};
use vxsec::io::tun::offload::udp_coalesce;
use vxsec::io::tun::offload::{self, Segmenter, VnetHdr, VNET_HDR_LEN};
use vxsec::wire::checksum;

/// True when the L4 checksum of `seg` (IP header first, L4 at `l4`) verifies.
fn l4_verifies(seg: &[u8], l4: usize, v6: bool, proto: u8) -> bool {
    let len = seg.len() - l4;
    let pseudo = if v6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&seg[8..24]);
        d.copy_from_slice(&seg[24..40]);
        checksum::pseudo_header_v6(&s, &d, proto, len as u32)
    } else {
        let s = [seg[12], seg[13], seg[14], seg[15]];
        let d = [seg[16], seg[17], seg[18], seg[19]];
        checksum::pseudo_header_v4(s, d, proto, len as u16)
    };
    checksum::fold(checksum::accumulate(pseudo, &seg[l4..])) == 0xffff
}

/// Segments of the UDP-tunnel super-packet for `run` (first packet `first`
/// described by `h`, payload `payload`), optionally with another segment
/// size, padding stripped: outer IPv4 options or the IPv6 hop-by-hop
/// header, with the outer lengths and IPv4 checksum fixed.
fn tnl_resegment(
    h: &TnlHead,
    first: &[u8],
    run: &TnlRun,
    payload: &[u8],
    pad: bool,
    gso_size: Option<u16>,
) -> Vec<Vec<u8>> {
    let mut block = [0u8; MAX_HDRS_LEN];
    let Ok((mut vh, n)) = tunnel_coalesce::build_super_header(h, first, run, pad, &mut block)
    else {
        panic!("a head from tnl_head always builds");
    };
    if let Some(g) = gso_size {
        vh.gso_size = g;
    }
    let mut sup = block[..n].to_vec();
    sup.extend_from_slice(payload);
    let Ok(mut seg) = Segmenter::new(&vh, &sup) else {
        panic!("the segmenter takes every built super-packet");
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; seg.max_segment_len()];
    while let Ok(Some(len)) = seg.next_into(&sup, &mut buf) {
        let s = &buf[..len];
        if !pad {
            out.push(s.to_vec());
            continue;
        }
        let base = if h.outer_v6 { 40 } else { 20 };
        let mut p = s[..base].to_vec();
        p.extend_from_slice(&s[base + OUTER_PAD_LEN..]);
        let l = p.len();
        if h.outer_v6 {
            p[6] = 17;
            p[4..6].copy_from_slice(&((l - 40) as u16).to_be_bytes());
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(l as u16).to_be_bytes());
            p[10..12].fill(0);
            let c = checksum::checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        out.push(p);
    }
    assert!(seg.is_done());
    out
}

/// UDP-tunnel coalescing of a VXLAN TCP packet `pkt`: a duplicate never
/// follows it; alone, it rebuilds into a super-packet the segmenter turns
/// back into `pkt` (checksum fields aside unless they verified); split in
/// two valid segments, those form one run that coalesces and segments
/// back to themselves byte for byte. (Packets within 16 bytes of 64 KiB
/// are skipped: the padded super-packet would not fit.)
fn tnl_input(h: &TnlHead, pkt: &[u8]) {
    if pkt.len() + OUTER_PAD_LEN > 65_535 {
        return; // no room for the padded outer header
    }
    assert!(h.hdrs_len < pkt.len() && h.payload_len == pkt.len() - h.hdrs_len);
    assert_eq!(tunnel_coalesce::run_len(h, [pkt, pkt].into_iter()).count, 1);
    let alone = TnlRun {
        count: 1,
        total_payload: h.payload_len,
        last_flags: h.flags,
    };
    let payload = &pkt[h.hdrs_len..];
    let verified = tunnel_coalesce::checksums_ok(h, pkt);
    // Checksum fields: outer IPv4, outer UDP, inner IPv4, TCP.
    let fields = [10, h.udp_off + 6, h.inner_nh + 10, h.tcp_off + 16];
    for pad in [false, true] {
        let segs = tnl_resegment(h, pkt, &alone, payload, pad, None);
        assert_eq!(segs.len(), 1);
        let s = &segs[0];
        assert_eq!(s.len(), pkt.len());
        for (i, (a, b)) in s.iter().zip(pkt).enumerate() {
            let in_field = fields.iter().any(|&f| i == f || i == f + 1);
            // 0x0000 and 0xffff are the same one's-complement checksum.
            assert!(
                a == b || in_field && (!verified || a ^ b == 0xff),
                "byte {i}"
            );
        }
    }
    if h.payload_len < 2 {
        return;
    }
    // Two valid segments of `pkt` (the segmenter writes their checksums).
    let half = h.payload_len.div_ceil(2) as u16;
    let two = tnl_resegment(h, pkt, &alone, payload, false, Some(half));
    assert_eq!(two.len(), 2);
    let Some(h0) = tunnel_coalesce::tnl_head(&two[0]) else {
        panic!("a segment is a VXLAN TCP packet");
    };
    let run = tunnel_coalesce::run_len(&h0, two.iter().map(|p| p.as_slice()));
    assert_eq!(run.count, 2, "two segments of one packet form a run");
    let mut payload2 = two[0][h0.hdrs_len..].to_vec();
    payload2.extend_from_slice(&two[1][h0.hdrs_len..]);
    for pad in [false, true] {
        assert_eq!(tnl_resegment(&h0, &two[0], &run, &payload2, pad, None), two);
    }
}

/// `data` = vnet header (10 bytes) ‖ packet. Checks: the header round-trips;
/// segments are bounded, counted, reassemble to the payload and carry valid
/// checksums; coalescing (USO and UDP-tunnel) and ICMP builders stay in
/// bounds, checksum, and segment back to their input.
pub fn offload_input(data: &[u8]) {
    let Some((hdr_bytes, pkt)) = data.split_at_checked(VNET_HDR_LEN) else {
        return;
    };
    let Ok(hdr) = VnetHdr::parse(hdr_bytes) else {
        panic!("10 bytes always parse");
    };
    let mut again = [0u8; VNET_HDR_LEN];
    assert!(hdr.emit(&mut again).is_ok());
    assert_eq!(&again[..], hdr_bytes, "vnet header round trip");
    offload_checks(&hdr, pkt);
}

/// [`offload_input`] with the 24-byte header the kernel uses for
/// UDP-tunnel offloads (`virtio_net_hdr_v1_hash_tunnel`: the legacy
/// fields, hash fields, then the outer transport and inner network header
/// offsets): the tunnel offsets round-trip and reach the segmenter.
pub fn offload_input_tunnel(data: &[u8]) {
    let Some((hdr_bytes, pkt)) = data.split_at_checked(offload::VNET_HDR_TUNNEL_LEN) else {
        return;
    };
    let Ok(hdr) = VnetHdr::parse_tunnel(hdr_bytes) else {
        panic!("24 bytes always parse");
    };
    let mut again = [0u8; offload::VNET_HDR_TUNNEL_LEN];
    assert!(hdr.emit_tunnel(&mut again).is_ok());
    assert_eq!(again[..VNET_HDR_LEN], hdr_bytes[..VNET_HDR_LEN]);
    assert_eq!(again[20..], hdr_bytes[20..], "tunnel offsets round trip");
    assert_eq!(VnetHdr::parse_tunnel(&again).ok(), Some(hdr));
    offload_checks(&hdr, pkt);
}

/// The checks shared by both header layouts: segmentation, checksums,
/// coalescing, ICMP builders over `pkt` with `hdr`.
fn offload_checks(hdr: &VnetHdr, pkt: &[u8]) {
    let hdr = *hdr;
    if let Ok(mut seg) = Segmenter::new(&hdr, pkt) {
        let (v6, tcp) = seg.kind();
        let hl = seg.headers_len();
        let l4 = seg.l4_offset();
        let inner = seg.inner_offset();
        let count = seg.segment_count();
        let max = seg.max_segment_len();
        let mut buf = vec![0u8; max];
        let mut payload = Vec::new();
        let mut produced = 0;
        // The same segments finished in place (scattered TUN reads): each
        // built from the headers and its own payload slice.
        let mss = seg.mss();
        let head = &pkt[..(hl + mss).min(pkt.len())];
        let Ok(mut inplace) = Segmenter::new_from_head(&hdr, head, pkt.len()) else {
            panic!("new_from_head takes what new takes");
        };
        while let Ok(Some(n)) = seg.next_into(pkt, &mut buf) {
            assert!(n <= max && n >= hl);
            let s = &buf[..n];
            let p0 = hl + produced * mss;
            let mut b = pkt[..hl].to_vec();
            b.extend_from_slice(&pkt[p0..(p0 + mss).min(pkt.len())]);
            assert!(
                matches!(inplace.next_in_place(&mut b), Ok(Some(m)) if b[..m] == *s),
                "in-place segment {produced} equals the copied one"
            );
            if !v6 {
                assert_eq!(checksum::checksum(&s[inner..l4]), 0, "IPv4 header checksum");
            }
            let proto = if tcp { 6 } else { 17 };
            assert!(
                l4_verifies(&s[inner..], l4 - inner, v6, proto),
                "L4 checksum"
            );
            payload.extend_from_slice(&s[hl..]);
            produced += 1;
        }
        assert!(seg.is_done());
        assert_eq!(produced, count, "segment count");
        assert_eq!(payload, pkt[hl..], "segments reassemble to the payload");
    }

    let mut copy = pkt.to_vec();
    let _ = offload::complete_checksum(
        &mut copy,
        usize::from(hdr.csum_start),
        usize::from(hdr.csum_offset),
    );

    if let Some(h) = udp_coalesce::udp_head(pkt) {
        assert!(h.hdrs_len <= pkt.len());
        let n = udp_coalesce::run_len(&h, [pkt, pkt, pkt].into_iter());
        assert!((1..=3).contains(&n));
        let mut hdrs = [0u8; udp_coalesce::MAX_HDRS_LEN];
        if let Ok(vh) = udp_coalesce::build_super_header(&h, pkt, h.payload_len * n, &mut hdrs) {
            assert_eq!(usize::from(vh.hdr_len), h.hdrs_len);
        }
    }

    if let Some(h) = tunnel_coalesce::tnl_head(pkt) {
        tnl_input(&h, pkt);
    }

    let from = match pkt.first().map(|b| b >> 4) {
        Some(6) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        _ => IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1)),
    };
    let mut out = [0u8; 2048];
    if let Ok(n) = mtu::icmp_too_big(pkt, from, 1400, &mut out) {
        let r = &out[..n];
        if from.is_ipv4() {
            assert!(n <= 576);
            assert_eq!(checksum::checksum(&r[..20]), 0);
            assert_eq!(checksum::checksum(&r[20..]), 0);
        } else {
            assert!(n <= 1280);
            assert!(l4_verifies(r, 40, true, 58), "ICMPv6 checksum");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid TCPv4 or UDPv6 super-packet with its vnet header in front.
    fn seed(v6: bool) -> Vec<u8> {
        let mut d = Vec::new();
        let (gso, l4, proto) = if v6 { (5u8, 40usize, 17u8) } else { (1, 20, 6) };
        let vh = VnetHdr {
            flags: 1,
            gso_type: gso,
            hdr_len: 0,
            gso_size: 500,
            csum_start: l4 as u16,
            csum_offset: if v6 { 6 } else { 16 },
            ..VnetHdr::ZERO
        };
        d.resize(VNET_HDR_LEN, 0);
        assert!(vh.emit(&mut d).is_ok());
        let l4h = if v6 { 8 } else { 20 };
        let total = l4 + l4h + 1800;
        let mut p = vec![0u8; total];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = proto;
            p[8] = 0xfd;
            p[24] = 0xfd;
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[6] = 0x40;
            p[9] = proto;
            p[12] = 10;
            p[16] = 10;
            p[l4 + 12] = 5 << 4;
        }
        for (i, b) in p.iter_mut().enumerate().skip(l4 + l4h) {
            *b = i as u8;
        }
        d.extend_from_slice(&p);
        d
    }

    #[test]
    fn fuzz_corpus_seeds_segment() {
        let seeds: [&[u8]; 7] = [
            include_bytes!("../corpus/tun_offload/seed-tcp4-tso"),
            include_bytes!("../corpus/tun_offload/seed-tcp6-tso"),
            include_bytes!("../corpus/tun_offload/seed-udp4-uso"),
            include_bytes!("../corpus/tun_offload/seed-udp6-uso"),
            include_bytes!("../corpus/tun_offload/seed-vxlan-tcp4"),
            include_bytes!("../corpus/tun_offload/seed-plain-csum"),
            include_bytes!("../corpus/tun_offload/seed-plain"),
        ];
        for (k, s) in seeds.iter().enumerate() {
            offload_input(s);
            let Ok(h) = VnetHdr::parse(s) else {
                panic!("seed {k}")
            };
            let seg = Segmenter::new(&h, &s[VNET_HDR_LEN..]);
            // The five GSO seeds must reach the segmenter's success path.
            assert_eq!(seg.is_ok(), k < 5, "seed {k}: {seg:?}");
        }
    }

    #[test]
    fn tnl_seeds_are_vxlan_tcp_with_valid_checksums() {
        for s in [
            &include_bytes!("../corpus/tun_offload/seed-vxlan-tcp4-data")[..],
            &include_bytes!("../corpus/tun_offload/seed-vxlan6-vlan-tcp6-data")[..],
        ] {
            let pkt = &s[VNET_HDR_LEN..];
            let Some(h) = tunnel_coalesce::tnl_head(pkt) else {
                panic!("seed is a VXLAN TCP data packet");
            };
            assert!(tunnel_coalesce::checksums_ok(&h, pkt));
            offload_input(s);
        }
    }

    #[test]
    fn invariants_hold_on_seeds_and_mutations() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let vxlan = include_bytes!("../corpus/tun_offload/seed-vxlan-tcp4").to_vec();
        let tnl4 = include_bytes!("../corpus/tun_offload/seed-vxlan-tcp4-data").to_vec();
        let tnl6 = include_bytes!("../corpus/tun_offload/seed-vxlan6-vlan-tcp6-data").to_vec();
        for s in [seed(false), seed(true), vxlan, tnl4, tnl6] {
            offload_input(&s);
            // The same packet behind a 24-byte header with tunnel offsets
            // (outer UDP after a 20-byte IPv4 header, inner IP after VXLAN).
            let mut t = s[..VNET_HDR_LEN].to_vec();
            t.extend_from_slice(&[0; 10]);
            t.extend_from_slice(&20u16.to_le_bytes());
            t.extend_from_slice(&(20u16 + 8 + 8 + 14).to_le_bytes());
            t.extend_from_slice(&s[VNET_HDR_LEN..]);
            offload_input_tunnel(&t);
            for _ in 0..1500 {
                let mut m = s.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() as usize) % m.len().min(80);
                    m[i] = next() as u8;
                }
                let cut = m.len() - (next() as usize % m.len());
                offload_input(&m[..cut.max(1)]);
                let mut m = t.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() as usize) % m.len().min(90);
                    m[i] = next() as u8;
                }
                let cut = m.len() - (next() as usize % m.len());
                offload_input_tunnel(&m[..cut.max(1)]);
            }
        }
    }
}
