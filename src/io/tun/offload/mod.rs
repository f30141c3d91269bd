//! TUN `IFF_VNET_HDR` offloads in user space: parses the `virtio_net_hdr`
//! that precedes each TUN read, completes partial checksums (NEEDS_CSUM) and
//! splits GSO super-packets (TCPv4/TCPv6 TSO, UDP USO) into wire-sized
//! packets with correct lengths, IP ids and checksums. Pure functions over
//! caller buffers: no I/O, no allocation, no panic on any input.

use crate::wire::checksum as inet_csum;
use crate::wire::ip::{PROTO_TCP, PROTO_UDP};

mod segment;
pub mod tunnel_coalesce;
pub mod udp_coalesce;

pub use segment::Segmenter;

/// Size of the legacy `struct virtio_net_hdr` (TUN's default vnet_hdr size).
pub const VNET_HDR_LEN: usize = 10;
/// Size of `struct virtio_net_hdr_v1_hash_tunnel` (needed for UDP-tunnel
/// GSO: adds the outer transport and inner network header offsets).
pub const VNET_HDR_TUNNEL_LEN: usize = 24;

/// `TUNSETOFFLOAD` flags (linux/if_tun.h).
pub mod tun_flags {
    /// The kernel may hand us packets with partial checksums.
    pub const CSUM: u32 = 0x01;
    /// TCP segmentation offload, IPv4.
    pub const TSO4: u32 = 0x02;
    /// TCP segmentation offload, IPv6.
    pub const TSO6: u32 = 0x04;
    /// TSO with ECN.
    pub const TSO_ECN: u32 = 0x08;
    /// UDP segmentation offload, IPv4.
    pub const USO4: u32 = 0x20;
    /// UDP segmentation offload, IPv6.
    pub const USO6: u32 = 0x40;
    /// GSO of UDP-tunnelled (VXLAN, Geneve) super-packets.
    pub const UDP_TUNNEL_GSO: u32 = 0x80;
    /// … with an outer UDP checksum.
    pub const UDP_TUNNEL_GSO_CSUM: u32 = 0x100;
}

pub(crate) const F_NEEDS_CSUM: u8 = 1;
pub(crate) const F_UDP_TUNNEL_CSUM: u8 = 8;
pub(crate) const GSO_TUNNEL_V4: u8 = 0x20;
pub(crate) const GSO_TUNNEL_V6: u8 = 0x40;
/// VXLAN header + inner Ethernet header, when the kernel gives no offset.
const VXLAN_ETH_LEN: usize = 8 + 14;
const GSO_NONE: u8 = 0;
pub(crate) const GSO_TCPV4: u8 = 1;
pub(crate) const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// Why an offloaded packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than its headers claim.
    #[error("packet truncated")]
    Truncated,
    /// The vnet header names a GSO type we do not handle.
    #[error("unsupported GSO type {0:#x}")]
    UnsupportedGso(u8),
    /// IP version, protocol or header fields inconsistent with the GSO type.
    #[error("malformed headers for GSO")]
    Malformed,
    /// csum_start/csum_offset outside the packet.
    #[error("checksum offsets out of range")]
    BadCsumOffsets,
    /// A segment does not fit the output buffer.
    #[error("segment larger than the output slot")]
    SegmentTooLarge,
}

/// GSO type of a vnet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    /// Not a super-packet.
    None,
    /// TCP over IPv4.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UDP (USO), either IP version.
    Udp,
}

/// A parsed `virtio_net_hdr` (little-endian fields, as TUN writes on x86).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VnetHdr {
    /// VIRTIO_NET_HDR_F_* flags.
    pub flags: u8,
    /// VIRTIO_NET_HDR_GSO_* type, including the ECN bit.
    pub gso_type: u8,
    /// Length of all headers (a hint; recomputed from the packet).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS).
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header offset).
    pub csum_start: u16,
    /// Offset of the checksum field from csum_start.
    pub csum_offset: u16,
    /// UDP tunnel: offset of the outer UDP header (0 if not given).
    pub outer_th_offset: u16,
    /// UDP tunnel: offset of the inner IP header (0 if not given).
    pub inner_nh_offset: u16,
}

impl VnetHdr {
    /// An all-zero header: no offload, checksums complete.
    pub const ZERO: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: 0,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
        outer_th_offset: 0,
        inner_nh_offset: 0,
    };

    /// Parses the first [`VNET_HDR_LEN`] bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b = buf.get(..VNET_HDR_LEN).ok_or(OffloadError::Truncated)?;
        let u16le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16le(2),
            gso_size: u16le(4),
            csum_start: u16le(6),
            csum_offset: u16le(8),
            outer_th_offset: 0,
            inner_nh_offset: 0,
        })
    }

    /// Parses a [`VNET_HDR_TUNNEL_LEN`]-byte header (the legacy fields,
    /// then the tunnel offsets at bytes 20..24).
    pub fn parse_tunnel(buf: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b = buf
            .get(..VNET_HDR_TUNNEL_LEN)
            .ok_or(OffloadError::Truncated)?;
        let mut h = VnetHdr::parse(b)?;
        h.outer_th_offset = u16::from_le_bytes([b[20], b[21]]);
        h.inner_nh_offset = u16::from_le_bytes([b[22], b[23]]);
        Ok(h)
    }

    /// Writes a [`VNET_HDR_TUNNEL_LEN`]-byte header (hash fields zero).
    pub fn emit_tunnel(&self, out: &mut [u8]) -> Result<(), OffloadError> {
        let b = out
            .get_mut(..VNET_HDR_TUNNEL_LEN)
            .ok_or(OffloadError::Truncated)?;
        self.emit(b)?;
        b[VNET_HDR_LEN..20].fill(0);
        b[20..22].copy_from_slice(&self.outer_th_offset.to_le_bytes());
        b[22..24].copy_from_slice(&self.inner_nh_offset.to_le_bytes());
        Ok(())
    }

    /// For a UDP-tunnel super-packet: whether the outer header is IPv6.
    pub fn tunnel(&self) -> Option<bool> {
        match self.gso_type & (GSO_TUNNEL_V4 | GSO_TUNNEL_V6) {
            GSO_TUNNEL_V4 => Some(false),
            GSO_TUNNEL_V6 => Some(true),
            _ => None,
        }
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), OffloadError> {
        let b = out.get_mut(..VNET_HDR_LEN).ok_or(OffloadError::Truncated)?;
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        Ok(())
    }

    /// The GSO kind.
    pub fn gso(&self) -> Result<GsoKind, OffloadError> {
        match self.gso_type & !(GSO_ECN | GSO_TUNNEL_V4 | GSO_TUNNEL_V6) {
            GSO_NONE => Ok(GsoKind::None),
            GSO_TCPV4 => Ok(GsoKind::TcpV4),
            GSO_TCPV6 => Ok(GsoKind::TcpV6),
            GSO_UDP_L4 => Ok(GsoKind::Udp),
            other => Err(OffloadError::UnsupportedGso(other)),
        }
        .and_then(|k| {
            match (
                k,
                self.gso_type & GSO_TUNNEL_V4 != 0 && self.gso_type & GSO_TUNNEL_V6 != 0,
            ) {
                (_, true) => Err(OffloadError::UnsupportedGso(self.gso_type)),
                (k, false) => Ok(k),
            }
        })
    }

    /// Whether the L4 checksum is partial and must be completed.
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

/// Completes a partial checksum: the field at `csum_start + csum_offset`
/// holds the folded pseudo-header sum; sum from `csum_start` to the end.
pub fn complete_checksum(
    pkt: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), OffloadError> {
    let field = csum_start
        .checked_add(csum_offset)
        .filter(|f| f.checked_add(2).is_some_and(|e| e <= pkt.len()))
        .ok_or(OffloadError::BadCsumOffsets)?;
    let region = pkt.get(csum_start..).ok_or(OffloadError::BadCsumOffsets)?;
    let mut c = inet_csum::finish(inet_csum::accumulate(0, region));
    if c == 0 {
        c = 0xffff;
    }
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Fixes a non-GSO packet read with a vnet header: completes its checksum
/// if the kernel left it partial.
pub fn finish_plain(hdr: &VnetHdr, pkt: &mut [u8]) -> Result<(), OffloadError> {
    if hdr.needs_csum() {
        complete_checksum(
            pkt,
            usize::from(hdr.csum_start),
            usize::from(hdr.csum_offset),
        )
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_header_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 5,
            hdr_len: 42,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 6,
            ..VnetHdr::ZERO
        };
        let mut b = [0u8; VNET_HDR_LEN];
        assert!(h.emit(&mut b).is_ok());
        assert_eq!(VnetHdr::parse(&b), Ok(h));
        assert_eq!(b[4..6], 1400u16.to_le_bytes());
        assert_eq!(VnetHdr::parse(&b[..9]), Err(OffloadError::Truncated));
    }
}
