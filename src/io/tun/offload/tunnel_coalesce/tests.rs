//! A TCP stream is built packet by packet (independent header code and
//! checksum), coalesced into super-packets, and segmented again by the
//! TUN read side's `Segmenter` (what the kernel does if it has to): the
//! original packets must come back byte for byte.

use proptest::prelude::*;

use super::*;
use crate::io::tun::offload::{Segmenter, VNET_HDR_TUNNEL_LEN};
use crate::wire::checksum::reference_sum;

/// The big-endian 16-bit field at `i`.
fn be16(p: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([p[i], p[i + 1]])
}

fn put16(p: &mut [u8], i: usize, v: usize) {
    p[i..i + 2].copy_from_slice(&(v as u16).to_be_bytes());
}

/// How the stream's packets look.
#[derive(Clone, Debug)]
struct Shape {
    outer_v6: bool,
    inner_v6: bool,
    vlan: bool,
    outer_csum: bool,
    outer_df: bool,
    /// 32-bit words of TCP options (a timestamp-like pattern).
    opt_words: usize,
    mss: usize,
    seq: u32,
    outer_id: u16,
    inner_id: u16,
    psh_last: bool,
}

impl Shape {
    fn v4() -> Shape {
        Shape {
            outer_v6: false,
            inner_v6: false,
            vlan: false,
            outer_csum: false,
            outer_df: false,
            opt_words: 3,
            mss: 1386,
            seq: 0xffff_f000,
            outer_id: 0xfffe,
            inner_id: 0x7fff,
            psh_last: true,
        }
    }
}

/// Packet `k` of a stream: `payload` at sequence number `seq`, with
/// complete, valid checksums.
fn packet(s: &Shape, k: usize, seq: u32, payload: &[u8], last: bool) -> Vec<u8> {
    let oip = if s.outer_v6 { 40 } else { 20 };
    let eth_len = if s.vlan { 18 } else { 14 };
    let nh = oip + 16 + eth_len;
    let iip = if s.inner_v6 { 40 } else { 20 };
    let t = nh + iip;
    let thl = 20 + 4 * s.opt_words;
    let len = t + thl + payload.len();
    let mut p = vec![0u8; len];
    // Outer IP.
    if s.outer_v6 {
        p[0] = 0x60;
        put16(&mut p, 4, len - 40);
        p[6] = 17;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x22]);
        p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11]);
    } else {
        p[0] = 0x45;
        put16(&mut p, 2, len);
        put16(&mut p, 4, usize::from(s.outer_id.wrapping_add(k as u16)));
        p[6] = if s.outer_df { 0x40 } else { 0 };
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 200, 0, 2]);
        p[16..20].copy_from_slice(&[10, 200, 0, 1]);
        let c = !reference_sum(&[&p[..20]]);
        put16(&mut p, 10, usize::from(c));
    }
    // UDP, VXLAN, Ethernet.
    put16(&mut p, oip, 51_234);
    put16(&mut p, oip + 2, 4789);
    put16(&mut p, oip + 4, len - oip);
    p[oip + 8] = 0x08;
    p[oip + 14] = 42;
    let e = oip + 16;
    p[e..e + 6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    p[e + 6..e + 12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    let etype = if s.inner_v6 { 0x86dd } else { 0x0800 };
    if s.vlan {
        put16(&mut p, e + 12, 0x8100);
        put16(&mut p, e + 14, 7);
        put16(&mut p, e + 16, etype);
    } else {
        put16(&mut p, e + 12, etype);
    }
    // Inner IP.
    if s.inner_v6 {
        p[nh] = 0x60;
        put16(&mut p, nh + 4, len - nh - 40);
        p[nh + 6] = 6;
        p[nh + 7] = 64;
        p[nh + 8] = 0xfd;
        p[nh + 23] = 2;
        p[nh + 24] = 0xfd;
        p[nh + 39] = 1;
    } else {
        p[nh] = 0x45;
        put16(&mut p, nh + 2, len - nh);
        put16(
            &mut p,
            nh + 4,
            usize::from(s.inner_id.wrapping_add(k as u16)),
        );
        p[nh + 6] = 0x40;
        p[nh + 8] = 64;
        p[nh + 9] = 6;
        p[nh + 12..nh + 16].copy_from_slice(&[10, 42, 0, 2]);
        p[nh + 16..nh + 20].copy_from_slice(&[10, 42, 0, 1]);
        let c = !reference_sum(&[&p[nh..nh + 20]]);
        put16(&mut p, nh + 10, usize::from(c));
    }
    // TCP.
    put16(&mut p, t, 40_001);
    put16(&mut p, t + 2, 5201);
    p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    p[t + 12] = ((thl / 4) as u8) << 4;
    p[t + 13] = if last && s.psh_last { 0x18 } else { 0x10 };
    put16(&mut p, t + 14, 502);
    for (j, b) in p[t + 20..t + thl].iter_mut().enumerate() {
        *b = if j < 2 { 1 } else { j as u8 };
    }
    p[t + thl..].copy_from_slice(payload);
    let tcp_len = (len - t) as u16;
    let pseudo: Vec<u8> = if s.inner_v6 {
        let mut v = p[nh + 8..nh + 40].to_vec();
        v.extend_from_slice(&u32::from(tcp_len).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 6]);
        v
    } else {
        let mut v = p[nh + 12..nh + 20].to_vec();
        v.extend_from_slice(&[0, 6]);
        v.extend_from_slice(&tcp_len.to_be_bytes());
        v
    };
    let c = !reference_sum(&[&pseudo, &p[t..]]);
    put16(&mut p, t + 16, usize::from(c));
    if s.outer_csum {
        let ulen = (len - oip) as u16;
        let pseudo: Vec<u8> = if s.outer_v6 {
            let mut v = p[8..40].to_vec();
            v.extend_from_slice(&u32::from(ulen).to_be_bytes());
            v.extend_from_slice(&[0, 0, 0, 17]);
            v
        } else {
            let mut v = p[12..20].to_vec();
            v.extend_from_slice(&[0, 17]);
            v.extend_from_slice(&ulen.to_be_bytes());
            v
        };
        let c = match !reference_sum(&[&pseudo, &p[oip..]]) {
            0 => 0xffff,
            c => c,
        };
        put16(&mut p, oip + 6, usize::from(c));
    }
    p
}

/// The stream carrying `data` in segments of `s.mss`.
fn stream(s: &Shape, data: &[u8]) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = data.chunks(s.mss).collect();
    let mut seq = s.seq;
    let mut out = Vec::new();
    for (k, c) in chunks.iter().enumerate() {
        out.push(packet(s, k, seq, c, k + 1 == chunks.len()));
        seq = seq.wrapping_add(c.len() as u32);
    }
    out
}

fn head(p: &[u8]) -> TnlHead {
    match tnl_head(p) {
        Some(h) => h,
        None => panic!("not a VXLAN TCP data packet"),
    }
}

fn run_of(pkts: &[Vec<u8>]) -> TnlRun {
    run_len(&head(&pkts[0]), pkts.iter().map(|p| p.as_slice()))
}

/// Removes the outer padding from a segment and fixes the outer IP header
/// (length, IHL or next header, checksum).
fn strip_pad(seg: &[u8], outer_v6: bool) -> Vec<u8> {
    let base = if outer_v6 { 40 } else { 20 };
    let mut p = seg[..base].to_vec();
    p.extend_from_slice(&seg[base + OUTER_PAD_LEN..]);
    let len = p.len();
    if outer_v6 {
        assert_eq!(seg[6], PROTO_HOP_BY_HOP);
        assert_eq!(seg[40], PROTO_UDP, "hop-by-hop header chains to UDP");
        p[6] = PROTO_UDP;
        put16(&mut p, 4, len - 40);
    } else {
        assert_eq!(seg[0], 0x49);
        assert!(seg[20..36].iter().all(|&b| b == 1), "NOP options");
        p[0] = 0x45;
        put16(&mut p, 2, len);
        put16(&mut p, 10, 0);
        let c = !reference_sum(&[&p[..20]]);
        put16(&mut p, 10, usize::from(c));
    }
    p
}

/// Coalesces `pkts` (one run), checks the vnet header, segments the
/// super-packet and returns the segments (padding stripped).
fn coalesce_and_segment(pkts: &[Vec<u8>], pad: bool) -> Vec<Vec<u8>> {
    let h = head(&pkts[0]);
    let run = run_of(pkts);
    assert_eq!(run.count, pkts.len(), "one run");
    let mut block = [0u8; MAX_HDRS_LEN];
    let (vh, block_len) = match build_super_header(&h, &pkts[0], &run, pad, &mut block) {
        Ok(v) => v,
        Err(e) => panic!("build: {e}"),
    };
    assert_eq!(block_len, h.hdrs_len + if pad { OUTER_PAD_LEN } else { 0 });
    assert_eq!(usize::from(vh.hdr_len), block_len);
    assert_eq!(usize::from(vh.gso_size), h.payload_len);
    assert_eq!(vh.csum_offset, 16);
    assert!(vh.needs_csum());
    assert_eq!(vh.tunnel(), Some(h.outer_v6));
    if pad {
        // The kernel's rule for tunnel offsets: outer_th >= 14 + IP header.
        let l3min = if h.outer_v6 { 40 } else { 20 };
        assert!(usize::from(vh.outer_th_offset) >= 14 + l3min);
    }
    let mut raw = [0u8; VNET_HDR_TUNNEL_LEN];
    assert!(vh.emit_tunnel(&mut raw).is_ok());
    assert_eq!(
        VnetHdr::parse_tunnel(&raw),
        Ok(vh),
        "24-byte header round trip"
    );
    let mut sup = block[..block_len].to_vec();
    for p in pkts {
        sup.extend_from_slice(&p[h.hdrs_len..]);
    }
    let mut seg = match Segmenter::new(&vh, &sup) {
        Ok(s) => s,
        Err(e) => panic!("segmenter: {e}"),
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Ok(Some(n)) = seg.next_into(&sup, &mut buf) {
        let s = &buf[..n];
        out.push(if pad {
            strip_pad(s, h.outer_v6)
        } else {
            s.to_vec()
        });
    }
    assert!(seg.is_done());
    out
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[test]
fn every_shape_resegments_to_the_original_packets() {
    for outer_v6 in [false, true] {
        for inner_v6 in [false, true] {
            for (vlan, outer_csum, opt_words) in
                [(false, false, 0), (true, true, 3), (false, true, 10)]
            {
                let s = Shape {
                    outer_v6,
                    inner_v6,
                    vlan,
                    outer_csum,
                    opt_words,
                    ..Shape::v4()
                };
                let pkts = stream(&s, &data(20 * s.mss - 99, 7));
                for pad in [false, true] {
                    let segs = coalesce_and_segment(&pkts, pad);
                    assert_eq!(segs.len(), pkts.len());
                    for (k, (a, b)) in segs.iter().zip(&pkts).enumerate() {
                        assert!(a == b, "{s:?} pad={pad}: packet {k} differs");
                    }
                }
            }
        }
    }
}

#[test]
fn super_header_fields() {
    let s = Shape::v4();
    let pkts = stream(&s, &data(3 * s.mss, 1));
    let h = head(&pkts[0]);
    let run = run_of(&pkts);
    assert_eq!(run.total_payload, 3 * s.mss);
    assert_eq!(run.last_flags, 0x18);
    let mut b = [0u8; MAX_HDRS_LEN];
    let Ok((vh, n)) = build_super_header(&h, &pkts[0], &run, true, &mut b) else {
        panic!("build")
    };
    let total = n + run.total_payload;
    assert_eq!(vh.gso_type, GSO_TCPV4 | GSO_TUNNEL_V4);
    assert_eq!(vh.flags, F_NEEDS_CSUM, "no outer checksum in use");
    assert_eq!(vh.outer_th_offset, 36);
    assert_eq!(usize::from(vh.inner_nh_offset), 36 + 8 + 8 + 14);
    assert_eq!(usize::from(vh.csum_start), h.tcp_off + OUTER_PAD_LEN);
    assert_eq!(usize::from(be16(&b, 2)), total, "outer total length");
    assert_eq!(reference_sum(&[&b[..36]]), 0xffff, "outer header checksum");
    assert_eq!(usize::from(be16(&b, 36 + 4)), total - 36, "UDP length");
    assert_eq!(be16(&b, 36 + 6), 0, "outer checksum stays off");
    let nh = usize::from(vh.inner_nh_offset);
    assert_eq!(usize::from(be16(&b, nh + 2)), total - nh);
    assert_eq!(
        reference_sum(&[&b[nh..nh + 20]]),
        0xffff,
        "inner header checksum"
    );
    let t = usize::from(vh.csum_start);
    assert_eq!(b[t + 13], 0x18, "PSH of the last packet");
    // NEEDS_CSUM: the field holds the pseudo-header sum over the whole
    // TCP length, so summing header + payloads completes it.
    let mut tcp = b[t..n].to_vec();
    for p in &pkts {
        tcp.extend_from_slice(&p[h.hdrs_len..]);
    }
    let mut pseudo = b[nh + 12..nh + 20].to_vec();
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    assert_eq!(be16(&b, t + 16), reference_sum(&[&pseudo]));
    // Too small an output buffer, a header that does not fit.
    let mut small = [0u8; 40];
    assert_eq!(
        build_super_header(&h, &pkts[0], &run, true, &mut small),
        Err(OffloadError::SegmentTooLarge)
    );
    let bad = TnlHead { inner_nh: 5, ..h };
    assert!(build_super_header(&bad, &pkts[0], &run, true, &mut b).is_err());
    assert!(!checksums_ok(&bad, &pkts[0]));
}

/// `edit` applied to packet 5 of a 10-packet stream ends the run at 5.
fn breaks_at_5(s: &Shape, what: &str, edit: impl Fn(&mut Vec<u8>, &TnlHead)) {
    let mut pkts = stream(s, &data(10 * s.mss, 3));
    let h = head(&pkts[5]);
    edit(&mut pkts[5], &h);
    assert_eq!(run_of(&pkts).count, 5, "{what}");
}

/// Rewrites the inner TCP checksum (and the outer UDP one if in use) of a
/// packet after an edit, so only the edited rule can refuse it.
fn fix_checksums(p: &mut [u8], h: &TnlHead) {
    let t = h.tcp_off;
    put16(p, t + 16, 0);
    let tcp_len = p.len() - t;
    let mut pseudo = p[h.inner_nh + 12..h.inner_nh + 20].to_vec();
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
    let c = !reference_sum(&[&pseudo, &p[t..]]);
    put16(p, t + 16, usize::from(c));
    if !h.inner_v6 {
        let nh = h.inner_nh;
        put16(p, nh + 10, 0);
        let c = !reference_sum(&[&p[nh..nh + 20]]);
        put16(p, nh + 10, usize::from(c));
    }
}

#[test]
fn each_merge_rule_ends_a_run() {
    let s = Shape {
        psh_last: false,
        ..Shape::v4()
    };
    let whole = stream(&s, &data(10 * s.mss, 3));
    assert_eq!(run_of(&whole).count, 10);
    type Edit = fn(&mut Vec<u8>, &TnlHead);
    let edits: [(&str, Edit); 10] = [
        ("ACK number", |p, h| p[h.tcp_off + 11] ^= 1),
        ("window", |p, h| p[h.tcp_off + 15] ^= 1),
        ("TCP option", |p, h| p[h.tcp_off + 25] ^= 1),
        ("sequence gap", |p, h| p[h.tcp_off + 7] ^= 1),
        ("inner id gap", |p, h| p[h.inner_nh + 5] ^= 1),
        ("inner TOS (ECN CE)", |p, h| p[h.inner_nh + 1] = 3),
        ("inner TTL", |p, h| p[h.inner_nh + 8] = 63),
        ("VNI", |p, h| p[h.udp_off + 14] = 43),
        ("inner MAC", |p, h| p[h.udp_off + 16] = 0x04),
        ("ECE flag", |p, h| p[h.tcp_off + 13] |= 0x40),
    ];
    for (what, edit) in edits {
        breaks_at_5(&s, what, |p, h| {
            edit(p, h);
            fix_checksums(p, h);
        });
    }
    // Checksums are verified, not trusted.
    breaks_at_5(&s, "bad TCP checksum", |p, h| p[h.tcp_off + 17] ^= 1);
    breaks_at_5(&s, "bad payload byte", |p, h| p[h.hdrs_len + 3] ^= 0x40);
    breaks_at_5(&s, "bad inner IPv4 checksum", |p, h| {
        p[h.inner_nh + 11] ^= 1
    });
    breaks_at_5(&s, "bad outer IPv4 checksum", |p, _| p[11] ^= 1);
    // Outer: the UDP source port (another flow's hash), outer checksum
    // when in use, outer ids unless DF.
    breaks_at_5(&s, "outer source port", |p, h| p[h.udp_off + 1] ^= 1);
    breaks_at_5(&s, "outer id gap", |p, _| {
        p[5] ^= 1;
        put16(p, 10, 0);
        let c = !reference_sum(&[&p[..20]]);
        put16(p, 10, usize::from(c));
    });
    let csum = Shape {
        outer_csum: true,
        ..s.clone()
    };
    breaks_at_5(&csum, "bad outer UDP checksum", |p, h| {
        p[h.udp_off + 7] ^= 1
    });
    let df = Shape {
        outer_df: true,
        ..s.clone()
    };
    let mut pkts = stream(&df, &data(10 * s.mss, 3));
    pkts[5][5] ^= 0x10; // outer id: free with DF, as in inet_gro_flush
    put16(&mut pkts[5], 10, 0);
    let c = !reference_sum(&[&pkts[5][..20]]);
    put16(&mut pkts[5], 10, usize::from(c));
    assert_eq!(run_of(&pkts).count, 10, "outer ids are free with DF");
}

#[test]
fn sizes_flags_and_limits() {
    let s = Shape {
        psh_last: false,
        ..Shape::v4()
    };
    // A shorter packet ends the run (and is in it); a longer one is not.
    let mut pkts = stream(&s, &data(8 * s.mss, 5));
    let short = stream(
        &Shape {
            seq: s.seq.wrapping_add(8 * s.mss as u32),
            outer_id: s.outer_id.wrapping_add(8),
            inner_id: s.inner_id.wrapping_add(8),
            ..s.clone()
        },
        &data(100, 9),
    );
    pkts.extend(short.iter().cloned());
    assert_eq!(run_of(&pkts).count, 9);
    let small = Shape {
        mss: 500,
        ..s.clone()
    };
    let mut pkts = stream(&small, &data(4 * 500, 5));
    let big = packet(
        &Shape {
            outer_id: s.outer_id.wrapping_add(4),
            inner_id: s.inner_id.wrapping_add(4),
            ..small.clone()
        },
        0,
        small.seq.wrapping_add(2000),
        &data(600, 1),
        false,
    );
    pkts.push(big);
    assert_eq!(run_of(&pkts).count, 4, "a longer packet does not join");
    // PSH: included as the last; a first packet with PSH merges nothing.
    let psh = Shape {
        psh_last: true,
        ..s.clone()
    };
    let mut pkts = stream(&psh, &data(3 * s.mss, 2));
    pkts.extend(stream(&psh, &data(3 * s.mss, 2)));
    assert_eq!(run_of(&pkts).count, 3);
    assert_eq!(run_of(&pkts[2..]).count, 1);
    // At most 64 packets, and a 64 KiB IP packet.
    let tiny = Shape {
        mss: 100,
        ..s.clone()
    };
    let pkts = stream(&tiny, &data(100 * 100, 4));
    assert_eq!(run_of(&pkts).count, MAX_SEGMENTS);
    let pkts = stream(&s, &data(60 * s.mss, 4));
    let run = run_of(&pkts);
    let h = head(&pkts[0]);
    assert!(h.hdrs_len + OUTER_PAD_LEN + run.total_payload <= 65_535);
    assert!(h.hdrs_len + OUTER_PAD_LEN + run.total_payload + s.mss > 65_535);
    assert_eq!(run.count, 47);
    // Not candidates: pure ACK, SYN/FIN/RST/URG/ECE/CWR, fragments,
    // options, GPE, a length disagreeing with the buffer.
    let p = &stream(&s, &data(500, 1))[0];
    assert!(tnl_head(p).is_some());
    let h = head(p);
    let mut pure_ack = p[..h.hdrs_len].to_vec();
    put16(&mut pure_ack, 2, h.hdrs_len);
    put16(&mut pure_ack, h.udp_off + 4, h.hdrs_len - h.udp_off);
    put16(&mut pure_ack, h.inner_nh + 2, h.hdrs_len - h.inner_nh);
    assert!(tnl_head(&pure_ack).is_none(), "no payload");
    for (i, v) in [
        (h.tcp_off + 13, 0x12u8),
        (h.tcp_off + 13, 0x11),
        (h.tcp_off + 13, 0x14),
        (h.tcp_off + 13, 0x30),
        (h.tcp_off + 13, 0x50),
        (h.tcp_off + 13, 0x90),
        (h.inner_nh + 6, 0x20),
        (h.inner_nh, 0x46),
        (6, 0x20),
        (0, 0x46),
        (h.udp_off + 8, 0x0c),
        (h.udp_off + 8, 0x00),
        (h.udp_off + 5, 0x00),
        (h.inner_nh - 1, 0x08),
    ] {
        let mut q = p.clone();
        q[i] = v;
        assert!(tnl_head(&q).is_none(), "byte {i} = {v:#x}");
    }
    for cut in 0..p.len() {
        assert!(tnl_head(&p[..cut]).is_none());
    }
    assert_eq!(run_len(&h, std::iter::empty()).count, 0);
}

#[test]
fn starts_run_is_structural() {
    let s = Shape::v4();
    let pkts = stream(&s, &data(3 * s.mss, 2));
    assert!(starts_run(&pkts[0], &pkts[1]));
    assert!(!starts_run(&pkts[1], &pkts[0]));
    assert!(!starts_run(&pkts[1], &pkts[2][..40]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A stream of any shape, coalesced run by run as the TUN writer does
    /// (with the outer padding it uses), segments back to itself.
    #[test]
    fn streams_round_trip(
        outer_v6 in any::<bool>(),
        inner_v6 in any::<bool>(),
        vlan in any::<bool>(),
        outer_csum in any::<bool>(),
        outer_df in any::<bool>(),
        opt_words in 0usize..=10,
        mss in 1usize..1400,
        segments in 1usize..80,
        short_last in 0usize..1400,
        seq in any::<u32>(),
        outer_id in any::<u16>(),
        inner_id in any::<u16>(),
        psh_last in any::<bool>(),
        pad in any::<bool>(),
    ) {
        let s = Shape { outer_v6, inner_v6, vlan, outer_csum, outer_df, opt_words, mss, seq,
            outer_id, inner_id, psh_last };
        let len = (segments - 1) * mss + short_last % mss + 1;
        let pkts = stream(&s, &data(len, seq as u8));
        let mut k = 0;
        let mut back = Vec::new();
        while k < pkts.len() {
            let n = run_of(&pkts[k..]).count;
            prop_assert!(n >= 1);
            if n == 1 {
                back.push(pkts[k].clone());
            } else {
                back.extend(coalesce_and_segment(&pkts[k..k + n], pad));
            }
            k += n;
        }
        prop_assert_eq!(back.len(), pkts.len());
        for (a, b) in back.iter().zip(&pkts) {
            prop_assert!(a == b);
        }
        if (2..=MAX_SEGMENTS).contains(&segments) && len + 200 < 65_000 {
            prop_assert_eq!(run_of(&pkts).count, pkts.len(), "one run");
        }
    }
}
