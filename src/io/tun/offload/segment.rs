//! GSO segmentation: splits one TSO/USO super-packet (optionally inside
//! a UDP tunnel such as VXLAN) into wire-sized packets with fixed lengths,
//! IP ids, TCP sequence numbers/flags and checksums. No allocation.

use super::{
    GsoKind, OffloadError, VnetHdr, F_UDP_TUNNEL_CSUM, PROTO_TCP, PROTO_UDP, VXLAN_ETH_LEN,
};
use crate::wire::checksum as inet_csum;
use crate::wire::tcp::flags as tcp_flags;
use crate::wire::{
    ipv6, udp, Ipv4Header, Ipv4Packet, Ipv6Header, Ipv6Packet, TcpSegment, UdpPacket, WireError,
};

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
    let ip = pkt.get(base..).ok_or(OffloadError::Truncated)?;
    let wire_err = |e| match e {
        WireError::Truncated => OffloadError::Truncated,
        _ => OffloadError::Malformed,
    };
    match ip.first().ok_or(OffloadError::Truncated)? >> 4 {
        4 => {
            let h = Ipv4Header::new_checked(ip).map_err(wire_err)?;
            Ok((false, base + h.header_len(), h.protocol()))
        }
        6 => {
            let h = Ipv6Header::new_checked(ip).map_err(wire_err)?;
            let next = h.next_header();
            if next == PROTO_TCP || next == PROTO_UDP {
                return Ok((true, base + ipv6::HEADER_LEN, next));
            }
            // Extension headers: trust csum_start as the L4 offset.
            let start = usize::from(hdr.csum_start);
            if !hdr.needs_csum() || start < base + ipv6::HEADER_LEN {
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
        let l4 = pkt.get(l4_off..).ok_or(OffloadError::Truncated)?;
        let l4_hdr = if tcp {
            match TcpSegment::new_checked(l4) {
                Ok(t) => t.header_len(),
                Err(WireError::Truncated) => return Err(OffloadError::Truncated),
                Err(_) => return Err(OffloadError::Malformed),
            }
        } else if l4.len() < udp::HEADER_LEN {
            return Err(OffloadError::Truncated);
        } else {
            udp::HEADER_LEN
        };
        let hdrs_len = l4_off + l4_hdr;
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
        let proto = if self.tcp { PROTO_TCP } else { PROTO_UDP };
        let pseudo = pseudo_at(out, self.inner, self.v6, proto, l4_len)?;
        let l4_bytes = out.get_mut(l4..).ok_or(OffloadError::Truncated)?;
        if self.tcp {
            let mut tcp = TcpSegment::new_checked(l4_bytes).map_err(|_| OffloadError::Malformed)?;
            let seq = tcp.seq_number().wrapping_add((p0 - self.hdrs_len) as u32);
            tcp.set_seq_number(seq);
            let mut f = tcp.flags();
            if !last {
                f &= !(tcp_flags::FIN | tcp_flags::PSH); // only on the last segment
            }
            if !first {
                f &= !tcp_flags::CWR; // only on the first
            }
            tcp.set_flags(f);
            tcp.fill_checksum(pseudo);
        } else {
            let mut udp = UdpPacket::new_resized(l4_bytes).map_err(|_| OffloadError::Malformed)?;
            udp.fill_checksum_from(pseudo);
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
        let pseudo = pseudo_at(out, 0, o.v6, PROTO_UDP, seg_len - u)?;
        let udp_bytes = out.get_mut(u..seg_len).ok_or(OffloadError::Truncated)?;
        let mut udp = UdpPacket::new_resized(udp_bytes).map_err(|_| OffloadError::Malformed)?;
        if o.csum {
            udp.fill_checksum_from(pseudo);
        }
        Ok(())
    }
}

/// Sets the length (and, for IPv4, id + index and the header checksum) of
/// the IP header at `base` of the segment `out` (which ends the packet).
/// `l4_off` (where the L4 header starts) is checked against the view.
fn fix_ip_at(
    out: &mut [u8],
    base: usize,
    l4_off: usize,
    v6: bool,
    seg_len: usize,
    index: u16,
) -> Result<(), OffloadError> {
    let ip = out.get_mut(base..seg_len).ok_or(OffloadError::Truncated)?;
    if v6 {
        Ipv6Packet::new_resized(ip).map_err(|_| OffloadError::Malformed)?;
    } else {
        let mut p = Ipv4Packet::new_resized(ip).map_err(|_| OffloadError::Malformed)?;
        if base + p.header_len() != l4_off {
            return Err(OffloadError::Malformed);
        }
        p.set_ident(p.ident().wrapping_add(index));
        p.fill_checksum();
    }
    Ok(())
}

/// Pseudo-header sum for the IP header at `base` (its length already
/// fixed for this segment, so the view checks).
fn pseudo_at(
    out: &[u8],
    base: usize,
    v6: bool,
    proto: u8,
    l4_len: usize,
) -> Result<u64, OffloadError> {
    let ip = out.get(base..).ok_or(OffloadError::Truncated)?;
    if v6 {
        let p = Ipv6Packet::new_checked(ip).map_err(|_| OffloadError::Malformed)?;
        let (s, d) = (p.src_octets(), p.dst_octets());
        Ok(inet_csum::pseudo_header_v6(&s, &d, proto, l4_len as u32))
    } else {
        let p = Ipv4Packet::new_checked(ip).map_err(|_| OffloadError::Malformed)?;
        let (s, d) = (p.src_octets(), p.dst_octets());
        Ok(inet_csum::pseudo_header_v4(s, d, proto, l4_len as u16))
    }
}

#[cfg(test)]
mod tests;
