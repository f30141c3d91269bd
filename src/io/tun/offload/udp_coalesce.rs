//! Coalescing for TUN writes with `IFF_VNET_HDR`: consecutive UDP packets
//! of one flow with equal payload sizes (the last may be shorter) are
//! written as one USO super-packet (`VIRTIO_NET_HDR_GSO_UDP_L4`), which the
//! kernel splits again on receive — one write instead of dozens. Pure
//! functions over caller buffers: it decides and builds headers; the I/O
//! layer gathers the payloads with iovecs (no payload copy). Packets are
//! read through the `wire` packet views, the super-packet's header block
//! written through the header-only ones.

use super::{OffloadError, VnetHdr};
use crate::wire::checksum;
use crate::wire::ip::PROTO_UDP;
use crate::wire::{
    ipv6, udp, Ipv4Header, Ipv4Packet, Ipv6Header, Ipv6Packet, UdpHeader, UdpPacket,
};

/// Most datagrams in one super-packet.
pub const MAX_SEGMENTS: usize = 64;
/// Largest header block (IPv6 40 / IPv4 with options 60, + UDP 8).
pub const MAX_HDRS_LEN: usize = 68;

/// Header facts of a coalescable UDP packet (IP header first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHead {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Offset of the UDP header.
    pub l4_off: usize,
    /// Bytes of IP + UDP headers.
    pub hdrs_len: usize,
    /// UDP payload bytes.
    pub payload_len: usize,
}

/// Describes `pkt` if it is a UDP datagram that may be coalesced: IPv4
/// (not a fragment) or IPv6 without extension headers, with lengths that
/// agree with the buffer.
pub fn udp_head(pkt: &[u8]) -> Option<UdpHead> {
    let (v6, l4_off) = match pkt.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(pkt).ok()?;
            if ip.protocol() != PROTO_UDP || ip.is_fragment() || ip.total_len() != pkt.len() {
                return None;
            }
            (false, ip.header_len())
        }
        6 => {
            let ip = Ipv6Packet::new_checked(pkt).ok()?;
            if ip.next_header() != PROTO_UDP || ip.total_len() != pkt.len() {
                return None;
            }
            (true, ipv6::HEADER_LEN)
        }
        _ => return None,
    };
    let hdrs_len = l4_off + udp::HEADER_LEN;
    let udp = UdpPacket::new_checked(pkt.get(l4_off..)?).ok()?;
    if hdrs_len > MAX_HDRS_LEN || udp.len() != pkt.len() - l4_off {
        return None;
    }
    Some(UdpHead {
        v6,
        l4_off,
        hdrs_len,
        payload_len: pkt.len() - hdrs_len,
    })
}

/// Whether `b` belongs to the same flow as `a` (described by `head`): all
/// header bytes equal except lengths, IPv4 id and the checksums.
pub fn same_flow(head: &UdpHead, a: &[u8], b: &[u8]) -> bool {
    let (Some(ha), Some(hb)) = (a.get(..head.hdrs_len), b.get(..head.hdrs_len)) else {
        return false;
    };
    let l4 = head.l4_off;
    ha.iter().zip(hb).enumerate().all(|(i, (x, y))| {
        let skip = if head.v6 {
            matches!(i, 4 | 5)
        } else {
            matches!(i, 2..=5 | 10 | 11)
        } || (i >= l4 + 4 && i < l4 + 8);
        skip || x == y
    })
}

/// How many packets from the start of `pkts` form one run: same flow as
/// the first, equal payload sizes, the last possibly shorter, within the
/// segment and 64 KiB limits. Always at least 1 when `pkts` is non-empty.
pub fn run_len<'a>(head: &UdpHead, mut pkts: impl Iterator<Item = &'a [u8]>) -> usize {
    let Some(first) = pkts.next() else {
        return 0;
    };
    let seg = head.payload_len;
    let limit = if head.v6 {
        65_535
    } else {
        65_535 - head.hdrs_len
    };
    let mut n = 1;
    let mut total = if head.v6 { 8 + seg } else { seg };
    for p in pkts {
        let Some(h) = udp_head(p) else { break };
        if n >= MAX_SEGMENTS
            || seg == 0
            || h.payload_len > seg
            || h.payload_len == 0
            || h.hdrs_len != head.hdrs_len
            || total + h.payload_len > limit
            || !same_flow(head, first, p)
        {
            break;
        }
        n += 1;
        total += h.payload_len;
        if h.payload_len < seg {
            break;
        }
    }
    n
}

/// Builds the vnet header and the header block of a super-packet carrying
/// `total_payload` bytes of UDP payload in segments of `head.payload_len`,
/// from the first packet's headers. Returns the vnet header; the headers
/// go into `hdrs_out[..head.hdrs_len]`.
pub fn build_super_header(
    head: &UdpHead,
    first: &[u8],
    total_payload: usize,
    hdrs_out: &mut [u8],
) -> Result<VnetHdr, OffloadError> {
    let hl = head.hdrs_len;
    let l4 = head.l4_off;
    let src = first.get(..hl).ok_or(OffloadError::Truncated)?;
    let out = hdrs_out
        .get_mut(..hl)
        .ok_or(OffloadError::SegmentTooLarge)?;
    out.copy_from_slice(src);
    let l4_len = u16::try_from(8 + total_payload).map_err(|_| OffloadError::SegmentTooLarge)?;
    let bad = |_| OffloadError::Malformed;
    let pseudo = if head.v6 {
        let mut ip = Ipv6Header::new_checked(&mut *out).map_err(bad)?;
        ip.set_payload_len(l4_len);
        checksum::pseudo_header_v6(
            &ip.src_octets(),
            &ip.dst_octets(),
            PROTO_UDP,
            u32::from(l4_len),
        )
    } else {
        let total = u16::try_from(hl + total_payload).map_err(|_| OffloadError::SegmentTooLarge)?;
        let mut ip = Ipv4Header::new_checked(&mut *out).map_err(bad)?;
        if ip.header_len() != l4 {
            return Err(OffloadError::Malformed);
        }
        ip.set_total_len(total);
        ip.fill_checksum();
        checksum::pseudo_header_v4(ip.src_octets(), ip.dst_octets(), PROTO_UDP, l4_len)
    };
    let mut udp = UdpHeader::new_checked(&mut out[l4..]).map_err(bad)?;
    udp.set_len(l4_len);
    // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum.
    udp.set_checksum(checksum::fold(pseudo));
    Ok(VnetHdr {
        flags: 1,    // VIRTIO_NET_HDR_F_NEEDS_CSUM
        gso_type: 5, // VIRTIO_NET_HDR_GSO_UDP_L4
        hdr_len: hl as u16,
        gso_size: u16::try_from(head.payload_len).map_err(|_| OffloadError::SegmentTooLarge)?,
        csum_start: l4 as u16,
        csum_offset: 6,
        ..VnetHdr::ZERO
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::tun::offload::Segmenter;

    fn udp_packet(v6: bool, payload: usize, sport: u16, seed: usize) -> Vec<u8> {
        let ip = if v6 { 40 } else { 20 };
        let mut p = vec![0u8; ip + 8 + payload];
        let len = p.len();
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            p[6] = 17;
            p[7] = 64;
            p[8] = 0xfd;
            p[23] = 1;
            p[24] = 0xfd;
            p[39] = 2;
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&(seed as u16).to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&[10, 200, 0, 2]);
            p[16..20].copy_from_slice(&[10, 200, 0, 1]);
            let c = checksum::checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        p[ip..ip + 2].copy_from_slice(&sport.to_be_bytes());
        p[ip + 2..ip + 4].copy_from_slice(&4789u16.to_be_bytes());
        p[ip + 4..ip + 6].copy_from_slice(&((len - ip) as u16).to_be_bytes());
        for (j, b) in p[ip + 8..].iter_mut().enumerate() {
            *b = (seed * 13 + j) as u8;
        }
        p
    }

    #[test]
    fn run_boundaries() {
        let a = udp_packet(false, 1000, 1, 0);
        let same = udp_packet(false, 1000, 1, 1);
        let short = udp_packet(false, 500, 1, 2);
        let other_flow = udp_packet(false, 1000, 2, 3);
        let longer = udp_packet(false, 1200, 1, 4);
        let Some(h) = udp_head(&a) else {
            panic!("head")
        };
        let r = |v: &[&Vec<u8>]| run_len(&h, v.iter().map(|p| p.as_slice()));
        assert_eq!(
            r(&[&a, &same, &same, &short, &same]),
            4,
            "a shorter packet ends the run"
        );
        assert_eq!(r(&[&a, &same, &other_flow]), 2);
        assert_eq!(r(&[&a, &longer]), 1);
        assert_eq!(r(&[&a]), 1);
        let many: Vec<&Vec<u8>> = std::iter::repeat_n(&a, 100).collect();
        assert_eq!(r(&many), MAX_SEGMENTS);
        // 64 KiB limit: 1400-byte payloads, at most 46 fit.
        let big = udp_packet(false, 1400, 1, 0);
        let Some(hb) = udp_head(&big) else {
            panic!("head")
        };
        let many: Vec<&[u8]> = std::iter::repeat_n(big.as_slice(), 64).collect();
        assert_eq!(run_len(&hb, many.into_iter()), 46);
        assert!(udp_head(&a[..30]).is_none());
        let mut frag = a.clone();
        frag[6] = 0x20; // MF
        assert!(udp_head(&frag).is_none());
    }

    /// Coalescing then segmenting (the kernel's job, done here by our own
    /// segmenter) gives back packets with the original payloads, valid
    /// checksums and lengths.
    #[test]
    fn coalesced_super_packet_segments_back() {
        for v6 in [false, true] {
            let pkts: Vec<Vec<u8>> = (0..10)
                .map(|k| udp_packet(v6, if k == 9 { 321 } else { 1200 }, 7, k))
                .collect();
            let Some(h) = udp_head(&pkts[0]) else {
                panic!("head")
            };
            assert_eq!(run_len(&h, pkts.iter().map(|p| p.as_slice())), 10);
            let total: usize = pkts.iter().map(|p| p.len() - h.hdrs_len).sum();
            let mut hdrs = [0u8; MAX_HDRS_LEN];
            let vh = match build_super_header(&h, &pkts[0], total, &mut hdrs) {
                Ok(v) => v,
                Err(e) => panic!("{e}"),
            };
            let mut sup = hdrs[..h.hdrs_len].to_vec();
            for p in &pkts {
                sup.extend_from_slice(&p[h.hdrs_len..]);
            }
            let mut seg = match Segmenter::new(&vh, &sup) {
                Ok(s) => s,
                Err(e) => panic!("{e}"),
            };
            let mut buf = [0u8; 2048];
            for p in &pkts {
                let n = match seg.next_into(&sup, &mut buf) {
                    Ok(Some(n)) => n,
                    other => panic!("{other:?}"),
                };
                assert_eq!(n, p.len());
                assert_eq!(buf[h.hdrs_len..n], p[h.hdrs_len..], "payload");
                // The segmenter computed full checksums; the originals had
                // none (zero) for UDP, so compare the L4 sum instead.
                let l4 = h.l4_off;
                let pseudo = if v6 {
                    let mut s = [0u8; 16];
                    let mut d = [0u8; 16];
                    s.copy_from_slice(&buf[8..24]);
                    d.copy_from_slice(&buf[24..40]);
                    checksum::pseudo_header_v6(&s, &d, 17, (n - l4) as u32)
                } else {
                    assert_eq!(checksum::checksum(&buf[..20]), 0, "IPv4 header checksum");
                    checksum::pseudo_header_v4(
                        [10, 200, 0, 2],
                        [10, 200, 0, 1],
                        17,
                        (n - l4) as u16,
                    )
                };
                assert_eq!(
                    checksum::fold(checksum::accumulate(pseudo, &buf[l4..n])),
                    0xffff
                );
            }
            assert!(seg.is_done());
        }
    }
}
