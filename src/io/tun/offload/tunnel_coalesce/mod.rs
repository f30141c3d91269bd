//! Coalescing of VXLAN-encapsulated TCP for TUN writes with the 24-byte
//! vnet header: consecutive packets (outer IPv4/IPv6 / UDP / VXLAN /
//! Ethernet, optionally one 802.1Q tag / inner IPv4/IPv6 / TCP) of one
//! inner TCP flow that Linux TCP GRO would merge become ONE UDP-tunnel GSO
//! super-packet (`GSO_TCPV4/6 | GSO_UDP_TUNNEL_IPV4/6`). The node's VXLAN
//! socket accepts such a packet whole (`udp_unexpected_gso` lets tunnel
//! GSO through), decapsulates once and passes the inner TCP super-packet
//! on — instead of splitting a USO super-packet at the socket and merging
//! the inner TCP again in GRO.
//!
//! Pure functions over caller buffers: this module decides runs and builds
//! the header block; the I/O layer gathers the payloads in place with
//! iovecs. It does not know which UDP port the node's VXLAN listens on:
//! callers write only VXLAN there (the receive policy admits nothing
//! else), because a plain UDP socket would take a tunnel super-packet as
//! one datagram.
//!
//! The merge rules follow `tcp_gro_receive` / `inet_gro_receive` (and
//! wireguard-go's `tcpGRO`): every header byte equal except lengths, IP
//! ids, TCP sequence/flags and checksums; contiguous sequence numbers;
//! flags exactly ACK, PSH allowed on the last; equal payload sizes except
//! a shorter last one; inner IPv4 ids consecutive (outer ones too unless
//! the outer header has DF); every checksum verified before merging (the
//! super-packet goes up with `NEEDS_CSUM`, so the kernel checks nothing
//! that was merged); at most [`MAX_SEGMENTS`] packets and a 64 KiB IP
//! packet. Stricter than Linux in one place: inner IPv4 ids must increment
//! even with DF (Linux also merges a fixed id there and marks the result
//! `SKB_GSO_TCP_FIXEDID`, which a vnet header cannot express), so
//! segmenting a super-packet again gives back the original packets.
//!
//! For an L3 TUN the outer header is padded (see [`build_super_header`]):
//! the kernel checks the tunnel offsets as if an Ethernet header came
//! first.
//!
//! Packets are read through the `wire` packet views ([`tnl_head`],
//! [`checksums_ok`]). The super-packet's header block is written through
//! the header-only views (`Ipv4Header`, `Ipv6Header`, `UdpHeader`,
//! `TcpSegment`), since its length fields describe payloads gathered from
//! elsewhere; only the outer padding is laid down byte by byte.

use super::{
    OffloadError, VnetHdr, F_NEEDS_CSUM, F_UDP_TUNNEL_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_TUNNEL_V4,
    GSO_TUNNEL_V6,
};
use crate::wire::checksum;
use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ip::{PROTO_HOP_BY_HOP, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::flags::{ACK as TCP_ACK, PSH as TCP_PSH};
use crate::wire::{ipv4, ipv6, udp, vxlan};
use crate::wire::{
    EthernetFrame, Ipv4Header, Ipv4Packet, Ipv6Header, Ipv6Packet, TcpSegment, UdpHeader,
    UdpPacket, VxlanPacket,
};

#[cfg(test)]
mod tests;

/// VXLAN-GPE's next-protocol bit: the payload may not be Ethernet.
const VXLAN_GPE_P: u8 = 0x04;
/// RFC 4727 experimental option type: skipped when unknown (top bits 00),
/// unchanged en route.
const OPT_EXPERIMENT: u8 = 0x1e;
const MAX_IP_LEN: usize = 65_535;

/// Most packets in one super-packet (as for USO: the writer's iovec array).
pub const MAX_SEGMENTS: usize = super::udp_coalesce::MAX_SEGMENTS;
/// Bytes added after the outer IP header by [`build_super_header`] with
/// `pad_outer` (see there).
pub const OUTER_PAD_LEN: usize = 16;
/// Largest header block: outer IPv6 40 + pad 16 + UDP 8 + VXLAN 8 +
/// Ethernet with 802.1Q 18 + inner IPv6 40 + TCP with options 60.
pub const MAX_HDRS_LEN: usize = 40 + OUTER_PAD_LEN + 8 + 8 + 18 + 40 + 60;

/// Header facts of a VXLAN TCP packet that may join a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TnlHead {
    /// Outer IPv6 (else IPv4, without options).
    pub outer_v6: bool,
    /// Offset of the outer UDP header (20 or 40).
    pub udp_off: usize,
    /// Offset of the inner IP header.
    pub inner_nh: usize,
    /// Inner IPv6 (else IPv4, without options).
    pub inner_v6: bool,
    /// Offset of the inner TCP header.
    pub tcp_off: usize,
    /// Bytes of all headers, up to the TCP payload.
    pub hdrs_len: usize,
    /// TCP payload bytes (never 0).
    pub payload_len: usize,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP flags: ACK, or ACK|PSH.
    pub flags: u8,
    /// Outer IPv4 id (0 for IPv6).
    pub outer_id: u16,
    /// Outer IPv4 DF bit.
    pub outer_df: bool,
    /// Inner IPv4 id (0 for IPv6).
    pub inner_id: u16,
    /// The outer UDP checksum is in use (non-zero).
    pub outer_csum: bool,
}

/// A run found by [`run_len`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TnlRun {
    /// Packets in the run (1: nothing to merge).
    pub count: usize,
    /// Their TCP payload bytes, added up.
    pub total_payload: usize,
    /// TCP flags of the last one.
    pub last_flags: u8,
}

impl TnlHead {
    /// Whether the offsets are in order and fit `len` bytes (always so for
    /// a head from [`tnl_head`]; checked where a hand-made one could make
    /// a builder index out of range).
    fn fits(&self, len: usize) -> bool {
        let outer_ip = if self.outer_v6 { 40 } else { 20 };
        let inner_ip = if self.inner_v6 { 40 } else { 20 };
        self.udp_off == outer_ip
            && self.udp_off + 16 + 14 <= self.inner_nh
            && self.inner_nh + inner_ip == self.tcp_off
            && self.tcp_off + 20 <= self.hdrs_len
            && self.hdrs_len <= len
    }
}

/// Describes `pkt` if it is a VXLAN TCP data packet that may join a run:
/// outer IPv4 without options (not a fragment) or IPv6 without extension
/// headers, UDP, VXLAN with the I flag (not GPE), Ethernet with at most
/// one 802.1Q tag, inner IPv4 without options (not a fragment) or IPv6
/// without extension headers, TCP with payload and flags ACK or ACK|PSH;
/// every length field agreeing with the buffer. Checksums are not looked
/// at here (see [`checksums_ok`]).
pub fn tnl_head(pkt: &[u8]) -> Option<TnlHead> {
    let len = pkt.len();
    let (outer_v6, udp_off, outer_id, outer_df) = match pkt.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(pkt).ok()?;
            let plain = ip.header_len() == ipv4::HEADER_LEN && !ip.is_fragment();
            if !plain || ip.protocol() != PROTO_UDP || ip.total_len() != len {
                return None;
            }
            (false, ipv4::HEADER_LEN, ip.ident(), ip.dont_frag())
        }
        6 => {
            let ip = Ipv6Packet::new_checked(pkt).ok()?;
            if ip.next_header() != PROTO_UDP || ip.total_len() != len {
                return None;
            }
            (true, ipv6::HEADER_LEN, 0, false)
        }
        _ => return None,
    };
    let udp = UdpPacket::new_checked(pkt.get(udp_off..)?).ok()?;
    if udp.len() != len - udp_off {
        return None;
    }
    let vxlan = VxlanPacket::new_checked(udp.payload()).ok()?;
    if vxlan.flags() & VXLAN_GPE_P != 0 {
        return None;
    }
    let eth = EthernetFrame::new_checked(vxlan.payload()).ok()?;
    let nh = udp_off + udp::HEADER_LEN + vxlan::HEADER_LEN + eth.header_len();
    let (inner_v6, tcp_off, inner_id) = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            let plain = ip.header_len() == ipv4::HEADER_LEN && !ip.is_fragment();
            if !plain || ip.protocol() != PROTO_TCP || ip.total_len() != len - nh {
                return None;
            }
            (false, nh + ipv4::HEADER_LEN, ip.ident())
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != PROTO_TCP || ip.total_len() != len - nh {
                return None;
            }
            (true, nh + ipv6::HEADER_LEN, 0)
        }
        _ => return None,
    };
    let tcp = TcpSegment::new_checked(pkt.get(tcp_off..)?).ok()?;
    let flags = tcp.flags();
    if tcp.payload().is_empty() || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) {
        return None;
    }
    let hdrs_len = tcp_off + tcp.header_len();
    Some(TnlHead {
        outer_v6,
        udp_off,
        inner_nh: nh,
        inner_v6,
        tcp_off,
        hdrs_len,
        payload_len: len - hdrs_len,
        seq: tcp.seq_number(),
        flags,
        outer_id,
        outer_df,
        inner_id,
        outer_csum: udp.checksum() != 0,
    })
}

/// The byte ranges of a header block that may differ between packets of a
/// run: lengths, ids, checksums, TCP sequence number and flags.
fn variable_fields(h: &TnlHead) -> [(usize, usize); 8] {
    let (u, nh, t) = (h.udp_off, h.inner_nh, h.tcp_off);
    let outer = if h.outer_v6 {
        [(4, 6), (4, 6)]
    } else {
        [(2, 6), (10, 12)]
    };
    let inner = if h.inner_v6 {
        [(nh + 4, nh + 6), (nh + 4, nh + 6)]
    } else {
        [(nh + 2, nh + 6), (nh + 10, nh + 12)]
    };
    [
        outer[0],
        outer[1],
        (u + 4, u + 8),
        inner[0],
        inner[1],
        (t + 4, t + 8),
        (t + 13, t + 14),
        (t + 16, t + 18),
    ]
}

/// Whether the headers of `a` and `b` (both described by `h`) are equal
/// outside [`variable_fields`].
fn same_headers(h: &TnlHead, a: &[u8], b: &[u8]) -> bool {
    let (Some(a), Some(b)) = (a.get(..h.hdrs_len), b.get(..h.hdrs_len)) else {
        return false;
    };
    let mut from = 0;
    for (start, end) in variable_fields(h) {
        if start > from && a[from..start] != b[from..start] {
            return false;
        }
        from = from.max(end);
    }
    a[from..] == b[from..]
}

/// Whether packet `b` (described by `h`) may follow `prev` as packet
/// number `index` of the run that `first` (packet `a`) starts: headers,
/// sequence numbers, ids, sizes and flags. Checksums are not looked at.
pub fn follows(
    first: &TnlHead,
    a: &[u8],
    prev: &TnlHead,
    h: &TnlHead,
    b: &[u8],
    index: usize,
) -> bool {
    let index = index as u16; // ids wrap; runs are at most MAX_SEGMENTS long
    let layout = h.outer_v6 == first.outer_v6
        && h.inner_v6 == first.inner_v6
        && h.inner_nh == first.inner_nh
        && h.hdrs_len == first.hdrs_len
        && h.outer_csum == first.outer_csum;
    layout
        && prev.flags == TCP_ACK
        && prev.payload_len == first.payload_len
        && h.payload_len <= first.payload_len
        && h.seq == prev.seq.wrapping_add(prev.payload_len as u32)
        && (first.inner_v6 || h.inner_id == first.inner_id.wrapping_add(index))
        && (first.outer_v6 || first.outer_df || h.outer_id == first.outer_id.wrapping_add(index))
        && same_headers(first, a, b)
}

/// Whether `a` and `b` could start a run (structure only, no checksums):
/// used to end other kinds of runs before a packet that starts one.
pub fn starts_run(a: &[u8], b: &[u8]) -> bool {
    match (tnl_head(a), tnl_head(b)) {
        (Some(ha), Some(hb)) => follows(&ha, a, &ha, &hb, b, 1),
        _ => false,
    }
}

/// Running sum of the pseudo-header for the IP header at `base` (of a
/// packet or of a super-packet's header block: only the addresses count).
fn pseudo(p: &[u8], base: usize, v6: bool, proto: u8, l4_len: usize) -> Option<u64> {
    let ip = p.get(base..)?;
    Some(if v6 {
        let h = Ipv6Header::new_checked(ip).ok()?;
        checksum::pseudo_header_v6(&h.src_octets(), &h.dst_octets(), proto, l4_len as u32)
    } else {
        let h = Ipv4Header::new_checked(ip).ok()?;
        checksum::pseudo_header_v4(h.src_octets(), h.dst_octets(), proto, l4_len as u16)
    })
}

/// Whether every checksum of `pkt` (described by `h`) verifies: the IPv4
/// header checksums, the inner TCP checksum and, when in use, the outer
/// UDP one. One pass over the payload: the outer sum reuses the TCP sum.
pub fn checksums_ok(h: &TnlHead, pkt: &[u8]) -> bool {
    if !h.fits(pkt.len()) {
        return false;
    }
    let tcp = &pkt[h.tcp_off..];
    let ipv4_ok = |ip: &[u8]| Ipv4Packet::new_checked(ip).is_ok_and(|p| p.verify_checksum());
    if !h.outer_v6 && !ipv4_ok(pkt) {
        return false;
    }
    if !h.inner_v6 && !ipv4_ok(&pkt[h.inner_nh..]) {
        return false;
    }
    let tcp_sum = checksum::accumulate(0, tcp);
    let Some(inner) = pseudo(pkt, h.inner_nh, h.inner_v6, PROTO_TCP, tcp.len()) else {
        return false;
    };
    if checksum::fold(tcp_sum + inner) != 0xffff {
        return false;
    }
    if !h.outer_csum {
        return true;
    }
    // The TCP header starts an even number of bytes after the UDP header
    // (8 + 8 + 14/18 + 20/40), so the two sums add.
    let u = h.udp_off;
    let Some(outer) = pseudo(pkt, 0, h.outer_v6, PROTO_UDP, pkt.len() - u) else {
        return false;
    };
    checksum::fold(checksum::accumulate(outer + tcp_sum, &pkt[u..h.tcp_off])) == 0xffff
}

/// The run that `first` (the first item of `pkts`) starts: how many
/// packets, in order, may be merged with it, with every checksum of a
/// merged packet verified. `count` is 1 when nothing merges (the first
/// packet's checksums are then not necessarily checked) and 0 when `pkts`
/// is empty.
pub fn run_len<'a>(first: &TnlHead, mut pkts: impl Iterator<Item = &'a [u8]>) -> TnlRun {
    let mut run = TnlRun {
        count: 0,
        total_payload: 0,
        last_flags: first.flags,
    };
    let Some(a) = pkts.next() else {
        return run;
    };
    run.count = 1;
    run.total_payload = first.payload_len;
    if first.flags != TCP_ACK {
        return run;
    }
    let mut prev = *first;
    let mut first_verified = false;
    for b in pkts {
        let Some(h) = tnl_head(b) else { break };
        let ip_len = first.hdrs_len + OUTER_PAD_LEN + run.total_payload + h.payload_len;
        if run.count >= MAX_SEGMENTS
            || ip_len > MAX_IP_LEN
            || !follows(first, a, &prev, &h, b, run.count)
        {
            break;
        }
        if !first_verified {
            if !checksums_ok(first, a) {
                break;
            }
            first_verified = true;
        }
        if !checksums_ok(&h, b) {
            break;
        }
        run.count += 1;
        run.total_payload += h.payload_len;
        run.last_flags = h.flags;
        if h.payload_len < first.payload_len || h.flags != TCP_ACK {
            break;
        }
        prev = h;
    }
    run
}

/// Builds the vnet header and header block of the super-packet for `run`,
/// from the headers of its first packet `pkt` (described by `first`). The
/// block goes into `out`; returns the vnet header (24-byte form, with the
/// tunnel offsets) and the block's length.
///
/// `pad_outer` inserts [`OUTER_PAD_LEN`] bytes after the outer IP header:
/// 16 bytes of IPv4 NOP options, or for IPv6 a hop-by-hop header holding
/// one skippable experimental option (RFC 4727). Linux validates
/// `outer_th_offset >= ETH_HLEN + sizeof(iphdr/ipv6hdr)`, which an L3 TUN
/// (no Ethernet header) meets only with a longer outer header; the
/// padding is consumed with the outer headers by the VXLAN socket.
pub fn build_super_header(
    first: &TnlHead,
    pkt: &[u8],
    run: &TnlRun,
    pad_outer: bool,
    out: &mut [u8],
) -> Result<(VnetHdr, usize), OffloadError> {
    let pad = if pad_outer { OUTER_PAD_LEN } else { 0 };
    let block_len = first.hdrs_len + pad;
    let src = pkt.get(..first.hdrs_len).ok_or(OffloadError::Truncated)?;
    let out = out
        .get_mut(..block_len)
        .ok_or(OffloadError::SegmentTooLarge)?;
    if !first.fits(src.len()) {
        return Err(OffloadError::Malformed);
    }
    let total = block_len + run.total_payload;
    if total > MAX_IP_LEN {
        return Err(OffloadError::SegmentTooLarge);
    }
    let u = first.udp_off;
    out[..u].copy_from_slice(&src[..u]);
    out[u + pad..].copy_from_slice(&src[u..]);
    if pad > 0 {
        if first.outer_v6 {
            let mut ip =
                Ipv6Header::new_checked(&mut out[..]).map_err(|_| OffloadError::Malformed)?;
            ip.set_next_header(PROTO_HOP_BY_HOP);
            out[40..56].copy_from_slice(&[
                PROTO_UDP,
                1, // (1 + 1) * 8 bytes
                OPT_EXPERIMENT,
                12,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
        } else {
            out[0] = 0x49; // IHL 9: 16 bytes of options
            out[20..36].fill(1); // NOP
        }
    }
    let (ou, nh, t) = (u + pad, first.inner_nh + pad, first.tcp_off + pad);
    let bad = |_| OffloadError::Malformed;
    let to_u16 = |v: usize| u16::try_from(v).map_err(|_| OffloadError::SegmentTooLarge);
    set_ip_lengths(out, 0, first.outer_v6, to_u16(total)?)?;
    let udp_len = total - ou;
    let outer_field = if first.outer_csum {
        // CHECKSUM_PARTIAL convention: the folded pseudo-header sum.
        let sum =
            pseudo(out, 0, first.outer_v6, PROTO_UDP, udp_len).ok_or(OffloadError::Malformed)?;
        checksum::fold(sum)
    } else {
        0
    };
    let mut udp = UdpHeader::new_checked(&mut out[ou..]).map_err(bad)?;
    udp.set_len(to_u16(udp_len)?);
    udp.set_checksum(outer_field);
    set_ip_lengths(out, nh, first.inner_v6, to_u16(total - nh)?)?;
    // TCP (its header lies whole in the block): PSH from the last packet
    // (segmentation keeps it on the last), the partial checksum.
    let tcp_len = total - t;
    let sum = pseudo(out, nh, first.inner_v6, PROTO_TCP, tcp_len).ok_or(OffloadError::Malformed)?;
    let mut tcp = TcpSegment::new_checked(&mut out[t..]).map_err(bad)?;
    tcp.set_flags(first.flags | (run.last_flags & TCP_PSH));
    tcp.set_checksum(checksum::fold(sum));
    let gso_inner = if first.inner_v6 { GSO_TCPV6 } else { GSO_TCPV4 };
    let gso_outer = if first.outer_v6 {
        GSO_TUNNEL_V6
    } else {
        GSO_TUNNEL_V4
    };
    let vh = VnetHdr {
        flags: F_NEEDS_CSUM
            | if first.outer_csum {
                F_UDP_TUNNEL_CSUM
            } else {
                0
            },
        gso_type: gso_inner | gso_outer,
        hdr_len: to_u16(block_len)?,
        gso_size: to_u16(first.payload_len)?,
        csum_start: to_u16(t)?,
        csum_offset: 16,
        outer_th_offset: to_u16(ou)?,
        inner_nh_offset: to_u16(nh)?,
    };
    Ok((vh, block_len))
}

/// Writes the length of the IP header at `base` of a header block for a
/// packet of `ip_len` bytes from there (IPv4: total length and header
/// checksum; IPv6: payload length).
fn set_ip_lengths(out: &mut [u8], base: usize, v6: bool, ip_len: u16) -> Result<(), OffloadError> {
    let ip = out.get_mut(base..).ok_or(OffloadError::Truncated)?;
    if v6 {
        let payload = ip_len
            .checked_sub(ipv6::HEADER_LEN as u16)
            .ok_or(OffloadError::Malformed)?;
        let mut h = Ipv6Header::new_checked(ip).map_err(|_| OffloadError::Malformed)?;
        h.set_payload_len(payload);
    } else {
        let mut h = Ipv4Header::new_checked(ip).map_err(|_| OffloadError::Malformed)?;
        h.set_total_len(ip_len);
        h.fill_checksum();
    }
    Ok(())
}
