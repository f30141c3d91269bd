//! GSO segmentation: splits one TSO/USO super-packet (optionally inside
//! a UDP tunnel such as VXLAN) into wire-sized packets with fixed lengths,
//! IP ids, TCP sequence numbers/flags and checksums. No allocation.

use super::{
    GsoKind, OffloadError, VnetHdr, F_UDP_TUNNEL_CSUM, PROTO_TCP, PROTO_UDP, VXLAN_ETH_LEN,
};
use crate::wire::checksum as inet_csum;

/// The outer IP/UDP headers of a UDP-tunnel (VXLAN, Geneve) super-packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outer {
    v6: bool,
    udp_off: usize,
    csum: bool,
}

/// Splits one GSO super-packet into segments, one call per segment, so a
/// caller with too few free slots can continue later. UDP-tunnel packets
/// (outer IP/UDP/VXLAN/Ethernet around the segmented inner packet) get
/// both header sets fixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segmenter {
    v6: bool,
    tcp: bool,
    inner: usize,
    l4_off: usize,
    hdrs_len: usize,
    outer: Option<Outer>,
    mss: usize,
    total: usize,
    next: usize,
    index: u16,
}

/// The IP header at `base`: (is IPv6, absolute L4 offset, protocol).
fn ip_header(
    pkt: &[u8],
    base: usize,
    hdr: &VnetHdr,
    udp: bool,
) -> Result<(bool, usize, u8), OffloadError> {
    let first = *pkt.get(base).ok_or(OffloadError::Truncated)?;
    match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let proto = *pkt.get(base + 9).ok_or(OffloadError::Truncated)?;
            if ihl < 20 {
                return Err(OffloadError::Malformed);
            }
            Ok((false, base + ihl, proto))
        }
        6 => {
            let next = *pkt.get(base + 6).ok_or(OffloadError::Truncated)?;
            if next == PROTO_TCP || next == PROTO_UDP {
                return Ok((true, base + 40, next));
            }
            // Extension headers: trust csum_start as the L4 offset.
            let start = usize::from(hdr.csum_start);
            if !hdr.needs_csum() || start < base + 40 {
                return Err(OffloadError::Malformed);
            }
            Ok((true, start, if udp { PROTO_UDP } else { PROTO_TCP }))
        }
        _ => Err(OffloadError::Malformed),
    }
}

impl Segmenter {
    /// Validates the headers of super-packet `pkt` (IP header first)
    /// against its vnet header.
    pub fn new(hdr: &VnetHdr, pkt: &[u8]) -> Result<Segmenter, OffloadError> {
        let kind = hdr.gso()?;
        let (inner, outer) = match hdr.tunnel() {
            None => (0, None),
            Some(outer_v6) => {
                let (v6, udp_off, proto) = match ip_header(pkt, 0, &VnetHdr::ZERO, true) {
                    Ok(h) => h,
                    // IPv6 outer with extension headers: use the kernel's offset.
                    Err(_) if outer_v6 && usize::from(hdr.outer_th_offset) >= 40 => {
                        (true, usize::from(hdr.outer_th_offset), PROTO_UDP)
                    }
                    Err(e) => return Err(e),
                };
                if v6 != outer_v6 || proto != PROTO_UDP {
                    return Err(OffloadError::Malformed);
                }
                let given = usize::from(hdr.inner_nh_offset);
                let inner = if given >= udp_off + 8 {
                    given
                } else {
                    udp_off + 8 + VXLAN_ETH_LEN
                };
                let csum = hdr.flags & F_UDP_TUNNEL_CSUM != 0;
                (inner, Some(Outer { v6, udp_off, csum }))
            }
        };
        let (v6, l4_off, proto) = ip_header(pkt, inner, hdr, kind == GsoKind::Udp)?;
        let tcp = match kind {
            GsoKind::TcpV4 if !v6 => true,
            GsoKind::TcpV6 if v6 => true,
            GsoKind::Udp => false,
            _ => return Err(OffloadError::Malformed),
        };
        if proto != if tcp { PROTO_TCP } else { PROTO_UDP } {
            return Err(OffloadError::Malformed);
        }
        let l4_hdr = if tcp {
            let doff = pkt.get(l4_off + 12).ok_or(OffloadError::Truncated)? >> 4;
            usize::from(doff) * 4
        } else {
            8
        };
        if l4_hdr < 8 || (tcp && l4_hdr < 20) {
            return Err(OffloadError::Malformed);
        }
        let hdrs_len = l4_off + l4_hdr;
        if hdrs_len > pkt.len() {
            return Err(OffloadError::Truncated);
        }
        let mss = usize::from(hdr.gso_size);
        if mss == 0 {
            return Err(OffloadError::Malformed);
        }
        Ok(Segmenter {
            v6,
            tcp,
            inner,
            l4_off,
            hdrs_len,
            outer,
            mss,
            total: pkt.len(),
            next: hdrs_len,
            index: 0,
        })
    }

    /// Number of segments the packet yields.
    pub fn segment_count(&self) -> usize {
        (self.total - self.hdrs_len).div_ceil(self.mss).max(1)
    }

    /// Whether every segment has been produced.
    pub fn is_done(&self) -> bool {
        self.next >= self.total && (self.index > 0 || self.total > self.hdrs_len)
    }

    /// Bytes of IP + L4 headers repeated in every segment.
    pub fn headers_len(&self) -> usize {
        self.hdrs_len
    }

    /// Whether the packet is IPv6 (else IPv4) and TCP (else UDP).
    pub fn kind(&self) -> (bool, bool) {
        (self.v6, self.tcp)
    }

    /// Offset of the (inner) L4 header.
    pub fn l4_offset(&self) -> usize {
        self.l4_off
    }

    /// Offset of the segmented (inner) IP header: 0, or past the outer
    /// IP/UDP/VXLAN/Ethernet headers of a UDP-tunnel packet.
    pub fn inner_offset(&self) -> usize {
        self.inner
    }

    /// Size of the largest segment (headers + MSS).
    pub fn max_segment_len(&self) -> usize {
        self.hdrs_len + self.mss.min(self.total - self.hdrs_len)
    }

    /// Like [`Segmenter::new`] for a super-packet of `total` bytes of which
    /// only `head` (at least all its headers) is in one piece: the rest was
    /// read straight into the slots of its segments (see
    /// [`Segmenter::next_in_place`]).
    pub fn new_from_head(
        hdr: &VnetHdr,
        head: &[u8],
        total: usize,
    ) -> Result<Segmenter, OffloadError> {
        let mut s = Segmenter::new(hdr, head)?;
        if total < s.hdrs_len {
            return Err(OffloadError::Truncated);
        }
        s.total = total;
        Ok(s)
    }

    /// The segment payload size (the vnet header's `gso_size`).
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// Writes the next segment of `pkt` (the same buffer given to `new`)
    /// into `out`; returns its length, or `None` when done.
    pub fn next_into(&mut self, pkt: &[u8], out: &mut [u8]) -> Result<Option<usize>, OffloadError> {
        if self.is_done() {
            return Ok(None);
        }
        if pkt.len() != self.total {
            return Err(OffloadError::Truncated);
        }
        let (p0, p1) = self.next_range();
        let seg_len = self.hdrs_len + (p1 - p0);
        let out = out
            .get_mut(..seg_len)
            .ok_or(OffloadError::SegmentTooLarge)?;
        out[..self.hdrs_len].copy_from_slice(&pkt[..self.hdrs_len]);
        out[self.hdrs_len..].copy_from_slice(&pkt[p0..p1]);
        self.finish_segment(out)
    }

    /// Finishes the next segment where it already lies: `seg` holds the
    /// super-packet's headers (unmodified) followed by this segment's
    /// payload, which is `mss` bytes except for the last segment. Fixes
    /// every header field and checksum as [`Segmenter::next_into`] does
    /// and returns the segment's length, or `None` when done.
    pub fn next_in_place(&mut self, seg: &mut [u8]) -> Result<Option<usize>, OffloadError> {
        if self.is_done() {
            return Ok(None);
        }
        let (p0, p1) = self.next_range();
        let seg_len = self.hdrs_len + (p1 - p0);
        let out = seg.get_mut(..seg_len).ok_or(OffloadError::Truncated)?;
        self.finish_segment(out)
    }

    /// The super-packet's byte range carried by the next segment.
    fn next_range(&self) -> (usize, usize) {
        let p0 = self.next;
        (p0, (p0 + self.mss).min(self.total))
    }

    /// Fixes the headers of the next segment, `out` (headers + payload,
    /// exactly the segment's length), and advances.
    fn finish_segment(&mut self, out: &mut [u8]) -> Result<Option<usize>, OffloadError> {
        let (p0, p1) = self.next_range();
        let seg_len = out.len();
        let first = self.index == 0;
        let last = p1 >= self.total;
        fix_ip_at(out, self.inner, self.l4_off, self.v6, seg_len, self.index)?;
        let l4_len = seg_len - self.l4_off;
        let l4 = self.l4_off;
        if self.tcp {
            let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]]);
            let seq = seq.wrapping_add((p0 - self.hdrs_len) as u32);
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            if !last {
                out[l4 + 13] &= !0x09; // no FIN, no PSH before the last segment
            }
            if !first {
                out[l4 + 13] &= !0x80; // CWR only on the first
            }
            out[l4 + 16..l4 + 18].fill(0);
            let c = inet_csum::finish(inet_csum::accumulate(
                pseudo_at(out, self.inner, self.v6, PROTO_TCP, l4_len),
                &out[l4..],
            ));
            out[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        } else {
            out[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            out[l4 + 6..l4 + 8].fill(0);
            let mut c = inet_csum::finish(inet_csum::accumulate(
                pseudo_at(out, self.inner, self.v6, PROTO_UDP, l4_len),
                &out[l4..],
            ));
            if c == 0 {
                c = 0xffff;
            }
            out[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
        }
        self.fix_outer(out, seg_len)?;
        self.next = p1;
        self.index = self.index.wrapping_add(1);
        Ok(Some(seg_len))
    }

    /// Fixes the outer IP and UDP headers of a tunnel segment (after the
    /// inner packet, which the outer UDP checksum covers).
    fn fix_outer(&self, out: &mut [u8], seg_len: usize) -> Result<(), OffloadError> {
        let Some(o) = self.outer else {
            return Ok(());
        };
        fix_ip_at(out, 0, o.udp_off, o.v6, seg_len, self.index)?;
        let u = o.udp_off;
        let ulen = u16::try_from(seg_len - u).map_err(|_| OffloadError::Malformed)?;
        out[u + 4..u + 6].copy_from_slice(&ulen.to_be_bytes());
        if o.csum {
            out[u + 6..u + 8].fill(0);
            let sum =
                inet_csum::accumulate(pseudo_at(out, 0, o.v6, PROTO_UDP, seg_len - u), &out[u..]);
            let c = match inet_csum::finish(sum) {
                0 => 0xffff,
                c => c,
            };
            out[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
        }
        Ok(())
    }
}

/// Sets the length (and, for IPv4, id + index and the header checksum) of
/// the IP header at `base` whose L4 header starts at `l4_off`.
fn fix_ip_at(
    out: &mut [u8],
    base: usize,
    l4_off: usize,
    v6: bool,
    seg_len: usize,
    index: u16,
) -> Result<(), OffloadError> {
    let ip = &mut out[base..l4_off];
    if v6 {
        let plen = u16::try_from(seg_len - base - 40).map_err(|_| OffloadError::Malformed)?;
        ip[4..6].copy_from_slice(&plen.to_be_bytes());
    } else {
        let tot = u16::try_from(seg_len - base).map_err(|_| OffloadError::Malformed)?;
        ip[2..4].copy_from_slice(&tot.to_be_bytes());
        let id = u16::from_be_bytes([ip[4], ip[5]]).wrapping_add(index);
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[10..12].fill(0);
        let c = inet_csum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// Pseudo-header sum for the IP header at `base`.
fn pseudo_at(out: &[u8], base: usize, v6: bool, proto: u8, l4_len: usize) -> u64 {
    let ip = &out[base..];
    if v6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&ip[8..24]);
        d.copy_from_slice(&ip[24..40]);
        inet_csum::pseudo_header_v6(&s, &d, proto, l4_len as u32)
    } else {
        let s = [ip[12], ip[13], ip[14], ip[15]];
        let d = [ip[16], ip[17], ip[18], ip[19]];
        inet_csum::pseudo_header_v4(s, d, proto, l4_len as u16)
    }
}

#[cfg(test)]
mod tests {
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
}
