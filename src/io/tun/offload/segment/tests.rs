//! Tests of GSO segmenting: TSO/USO/UDP-tunnel super-packets against
//! independent checksums and reassembly.

use super::*;
use crate::io::tun::offload::{
    complete_checksum, finish_plain, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_TUNNEL_V4,
    GSO_TUNNEL_V6, GSO_UDP_L4, VNET_HDR_TUNNEL_LEN,
};
use crate::wire::checksum::reference_sum;

/// True when the L4 checksum of `seg` (IP header first) verifies.
fn l4_ok(seg: &[u8], proto: u8) -> bool {
    let (l4, pseudo) = if seg[0] >> 4 == 4 {
        let ihl = usize::from(seg[0] & 15) * 4;
        let len = (seg.len() - ihl) as u16;
        let mut p = seg[12..20].to_vec();
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&len.to_be_bytes());
        (ihl, p)
    } else {
        let len = (seg.len() - 40) as u32;
        let mut p = seg[8..40].to_vec();
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
        (40, p)
    };
    reference_sum(&[&pseudo, &seg[l4..]]) == 0xffff
}

/// A super-packet with headers, `payload` bytes of data and a partial
/// L4 checksum as the kernel leaves it (pseudo-header sum only).
fn super_packet(v6: bool, tcp: bool, payload: usize) -> Vec<u8> {
    let l4_hdr = if tcp { 32 } else { 8 };
    let ip = if v6 { 40 } else { 20 };
    let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
    let mut p = vec![0u8; ip + l4_hdr];
    if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((l4_hdr + payload) as u16).to_be_bytes());
        p[6] = proto;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((ip + l4_hdr + payload) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes()); // id wraps
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 200, 0, 1]);
        p[16..20].copy_from_slice(&[10, 200, 0, 2]);
    }
    p[ip..ip + 2].copy_from_slice(&4789u16.to_be_bytes());
    p[ip + 2..ip + 4].copy_from_slice(&4789u16.to_be_bytes());
    if tcp {
        p[ip + 4..ip + 8].copy_from_slice(&0xffff_ff00u32.to_be_bytes()); // seq wraps
        p[ip + 12] = 8 << 4;
        p[ip + 13] = 0x18 | 0x01 | 0x80; // ACK PSH FIN CWR
    }
    p.extend((0..payload).map(|i| (i * 7 + i / 251) as u8));
    p
}

fn segment_all(pkt: &[u8], hdr: &VnetHdr) -> Vec<Vec<u8>> {
    let mut seg = match Segmenter::new(hdr, pkt) {
        Ok(s) => s,
        Err(e) => panic!("segmenter: {e}"),
    };
    let count = seg.segment_count();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Ok(Some(n)) = seg.next_into(pkt, &mut buf) {
        out.push(buf[..n].to_vec());
    }
    assert!(seg.is_done());
    assert_eq!(out.len(), count);
    // The same segments, finished in place from the head alone and
    // each segment's payload already in its own buffer.
    let hl = seg.headers_len();
    let mss = seg.mss();
    let head = &pkt[..(hl + mss).min(pkt.len())];
    let mut inplace = match Segmenter::new_from_head(hdr, head, pkt.len()) {
        Ok(s) => s,
        Err(e) => panic!("segmenter from head: {e}"),
    };
    for (k, want) in out.iter().enumerate() {
        let p0 = hl + k * mss;
        let p1 = (p0 + mss).min(pkt.len());
        let mut b = pkt[..hl].to_vec();
        b.extend_from_slice(&pkt[p0..p1]);
        b.resize(2048, 0xee);
        match inplace.next_in_place(&mut b) {
            Ok(Some(n)) => assert!(b[..n] == want[..], "segment {k} differs in place"),
            r => panic!("segment {k} in place: {r:?}"),
        }
    }
    assert!(matches!(inplace.next_in_place(&mut [0u8; 64]), Ok(None)));
    out
}

fn check(v6: bool, tcp: bool, payload: usize, mss: u16) {
    let pkt = super_packet(v6, tcp, payload);
    let l4 = if v6 { 40 } else { 20 };
    let kind = match (v6, tcp) {
        (false, true) => GSO_TCPV4,
        (true, true) => GSO_TCPV6,
        _ => GSO_UDP_L4,
    };
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: kind,
        hdr_len: 0,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: if tcp { 16 } else { 6 },
        ..VnetHdr::ZERO
    };
    let segs = segment_all(&pkt, &hdr);
    let hl = l4 + if tcp { 32 } else { 8 };
    let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
    let mut data = Vec::new();
    for (k, s) in segs.iter().enumerate() {
        let last = k + 1 == segs.len();
        assert!(s.len() <= hl + usize::from(mss));
        if !last {
            assert_eq!(s.len(), hl + usize::from(mss));
        }
        assert!(l4_ok(s, proto), "segment {k} L4 checksum");
        if v6 {
            assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
        } else {
            assert_eq!(reference_sum(&[&s[..20]]), 0xffff, "IPv4 header checksum");
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
            let id = u16::from_be_bytes([s[4], s[5]]);
            assert_eq!(id, 0xfff0u16.wrapping_add(k as u16));
        }
        if tcp {
            let seq = u32::from_be_bytes([s[l4 + 4], s[l4 + 5], s[l4 + 6], s[l4 + 7]]);
            assert_eq!(seq, 0xffff_ff00u32.wrapping_add(data.len() as u32));
            let fl = s[l4 + 13];
            assert_eq!(fl & 0x09 != 0, last, "PSH/FIN only on the last");
            assert_eq!(fl & 0x80 != 0, k == 0, "CWR only on the first");
            assert_eq!(fl & 0x10, 0x10);
        } else {
            let ulen = usize::from(u16::from_be_bytes([s[l4 + 4], s[l4 + 5]]));
            assert_eq!(ulen, s.len() - l4);
        }
        data.extend_from_slice(&s[hl..]);
    }
    assert_eq!(data, pkt[hl..], "segments reassemble to the payload");
}

#[test]
fn segments_tcp_and_udp_both_ip_versions() {
    for &(v6, tcp) in &[(false, true), (true, true), (false, false), (true, false)] {
        check(v6, tcp, 10_000, 1400); // short last segment
        check(v6, tcp, 2800, 1400); // exact multiple
        check(v6, tcp, 100, 1400); // one segment
        check(v6, tcp, 64_000, 1380);
    }
}

#[test]
fn completes_partial_checksum() {
    let mut pkt = super_packet(false, false, 333);
    // Partial: pseudo-header sum (folded, not complemented) in the field.
    let ps = inet_csum::fold(inet_csum::pseudo_header_v4(
        [10, 200, 0, 1],
        [10, 200, 0, 2],
        17,
        341,
    ));
    pkt[24..26].copy_from_slice(&341u16.to_be_bytes());
    pkt[26..28].copy_from_slice(&ps.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VnetHdr::ZERO
    };
    assert!(finish_plain(&hdr, &mut pkt).is_ok());
    assert!(l4_ok(&pkt, PROTO_UDP));
    assert_eq!(
        complete_checksum(&mut pkt, 20, 400),
        Err(OffloadError::BadCsumOffsets)
    );
    assert_eq!(
        complete_checksum(&mut pkt, usize::MAX, 1),
        Err(OffloadError::BadCsumOffsets)
    );
}

#[test]
fn rejects_bad_super_packets_without_panic() {
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        gso_size: 1000,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHdr::ZERO
    };
    let pkt = super_packet(false, true, 5000);
    for cut in 0..60 {
        let _ = Segmenter::new(&hdr, &pkt[..cut]);
    }
    // UDP packet announced as TCP GSO.
    assert_eq!(
        Segmenter::new(&hdr, &super_packet(false, false, 5000)),
        Err(OffloadError::Malformed)
    );
    // IPv6 packet announced as TCPv4.
    assert!(Segmenter::new(&hdr, &super_packet(true, true, 5000)).is_err());
    let zero_mss = VnetHdr { gso_size: 0, ..hdr };
    assert_eq!(
        Segmenter::new(&zero_mss, &pkt),
        Err(OffloadError::Malformed)
    );
    let odd = VnetHdr { gso_type: 2, ..hdr };
    assert_eq!(
        Segmenter::new(&odd, &pkt),
        Err(OffloadError::UnsupportedGso(2))
    );
    // Output slot too small.
    let mut seg = match Segmenter::new(&hdr, &pkt) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let mut small = [0u8; 100];
    assert_eq!(
        seg.next_into(&pkt, &mut small),
        Err(OffloadError::SegmentTooLarge)
    );
}

/// Wraps `inner` in outer IP/UDP(4789)/VXLAN/Ethernet headers.
fn tunnel_packet(outer_v6: bool, inner: &[u8]) -> Vec<u8> {
    let oip = if outer_v6 { 40 } else { 20 };
    let total = oip + 8 + 8 + 14 + inner.len();
    let mut p = vec![0u8; oip + 8 + 8 + 14];
    if outer_v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = PROTO_UDP;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 0x11;
        p[24] = 0xfd;
        p[39] = 0x12;
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[8] = 64;
        p[9] = PROTO_UDP;
        p[12..16].copy_from_slice(&[192, 168, 77, 1]);
        p[16..20].copy_from_slice(&[192, 168, 77, 2]);
    }
    p[oip..oip + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[oip + 2..oip + 4].copy_from_slice(&4789u16.to_be_bytes());
    p[oip + 8] = 0x08; // VXLAN flags: VNI valid
    p[oip + 14] = 42; // VNI 42
    let eth = oip + 16;
    p[eth + 12..eth + 14].copy_from_slice(&[0x08, 0x00]);
    if inner[0] >> 4 == 6 {
        p[eth + 12..eth + 14].copy_from_slice(&[0x86, 0xdd]);
    }
    p.extend_from_slice(inner);
    p
}

#[test]
fn segments_udp_tunnel_super_packets() {
    for &(outer_v6, inner_v6, tcp, csum) in &[
        (false, false, true, false),
        (false, true, true, false),
        (true, false, true, true),
        (false, false, false, true),
        (true, true, false, true),
    ] {
        let inner = super_packet(inner_v6, tcp, 9000);
        let pkt = tunnel_packet(outer_v6, &inner);
        let oip = if outer_v6 { 40 } else { 20 };
        let inner_off = oip + 8 + 8 + 14;
        let il4 = inner_off + if inner_v6 { 40 } else { 20 };
        let kind = match (inner_v6, tcp) {
            (false, true) => GSO_TCPV4,
            (true, true) => GSO_TCPV6,
            _ => GSO_UDP_L4,
        };
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM | if csum { F_UDP_TUNNEL_CSUM } else { 0 },
            gso_type: kind
                | if outer_v6 {
                    GSO_TUNNEL_V6
                } else {
                    GSO_TUNNEL_V4
                },
            gso_size: 1300,
            csum_start: il4 as u16,
            csum_offset: if tcp { 16 } else { 6 },
            outer_th_offset: oip as u16,
            inner_nh_offset: inner_off as u16,
            ..VnetHdr::ZERO
        };
        // Round trip of the 24-byte header.
        let mut b = [0u8; VNET_HDR_TUNNEL_LEN];
        assert!(hdr.emit_tunnel(&mut b).is_ok());
        assert_eq!(VnetHdr::parse_tunnel(&b), Ok(hdr));
        let segs = segment_all(&pkt, &hdr);
        assert_eq!(segs.len(), 9000usize.div_ceil(1300));
        let hl = il4 + if tcp { 32 } else { 8 };
        let mut data = Vec::new();
        for (k, seg) in segs.iter().enumerate() {
            // Outer headers.
            if outer_v6 {
                assert_eq!(
                    usize::from(u16::from_be_bytes([seg[4], seg[5]])),
                    seg.len() - 40
                );
            } else {
                assert_eq!(reference_sum(&[&seg[..20]]), 0xffff, "outer IPv4 checksum");
                assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), seg.len());
                assert_eq!(u16::from_be_bytes([seg[4], seg[5]]), 0x1234 + k as u16);
            }
            assert_eq!(
                usize::from(u16::from_be_bytes([seg[oip + 4], seg[oip + 5]])),
                seg.len() - oip
            );
            let ucs = u16::from_be_bytes([seg[oip + 6], seg[oip + 7]]);
            if csum {
                assert!(l4_ok(seg, PROTO_UDP), "outer UDP checksum");
            } else {
                assert_eq!(ucs, 0, "no outer checksum unless asked");
            }
            // VXLAN + Ethernet untouched; inner packet valid.
            assert_eq!(seg[oip + 8..inner_off], pkt[oip + 8..inner_off]);
            let inner_seg = &seg[inner_off..];
            assert!(
                l4_ok(inner_seg, if tcp { PROTO_TCP } else { PROTO_UDP }),
                "inner L4 checksum"
            );
            if !inner_v6 {
                assert_eq!(
                    reference_sum(&[&inner_seg[..20]]),
                    0xffff,
                    "inner IPv4 checksum"
                );
            }
            data.extend_from_slice(&seg[hl..]);
        }
        assert_eq!(data, pkt[hl..], "segments reassemble");
    }
}
