//! Zero-copy IPv6 fixed-header view (RFC 8200) and emitter. Validates the
//! version and payload length once in [`Ipv6Packet::new_checked`]. It reports
//! the fixed header's next header but does not walk extension headers: a
//! packet whose next header is not UDP/ICMPv6 is simply "not UDP" to vxsec.
//! Jumbograms (payload length 0 with a hop-by-hop option) are not supported:
//! a zero payload length means an empty payload.

use core::net::Ipv6Addr;

use super::WireError;

mod field {
    use core::ops::Range;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// A view of an IPv6 packet whose fixed header and payload length were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn addr(b: &[u8], r: core::ops::Range<usize>) -> [u8; 16] {
    b.get(r)
        .and_then(|s| <[u8; 16]>::try_from(s).ok())
        .unwrap_or([0; 16])
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks: at least 40 bytes, version 6, 40 + payload length <= buffer
    /// length (trailing bytes are ignored).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let Some(&[v, _, _, _, l0, l1, ..]) = b.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if v >> 4 != 6 {
            return Err(WireError::BadVersion(v >> 4));
        }
        if HEADER_LEN + usize::from(u16::from_be_bytes([l0, l1])) > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    #[inline]
    fn data(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        let d = self.data();
        (d[0] << 4) | (d[1] >> 4)
    }
    #[inline]
    pub fn flow_label(&self) -> u32 {
        let d = self.data();
        u32::from_be_bytes([0, d[1] & 0x0f, d[2], d[3]])
    }
    /// Payload length in bytes (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> usize {
        match self.data().get(field::PAYLOAD_LEN) {
            Some(&[a, b]) => usize::from(u16::from_be_bytes([a, b])),
            _ => 0,
        }
    }
    /// Header plus payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }
    /// The fixed header's next header (not walked past extension headers).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.data()[field::NEXT_HEADER]
    }
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.data()[field::HOP_LIMIT]
    }
    #[inline]
    pub fn src_octets(&self) -> [u8; 16] {
        addr(self.data(), field::SRC)
    }
    #[inline]
    pub fn dst_octets(&self) -> [u8; 16] {
        addr(self.data(), field::DST)
    }
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_octets())
    }
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_octets())
    }
    /// The payload (up to the payload length).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.data()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Takes `buffer` as one whole packet whose size changed (a segment cut
    /// from a larger packet): checks the version as
    /// [`Ipv6Packet::new_checked`] does, but writes the payload length
    /// field (`buffer.len()` - 40, at most 65 535) instead of reading it.
    #[inline]
    pub fn new_resized(mut buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_mut();
        let payload = b.len().saturating_sub(HEADER_LEN);
        let payload = u16::try_from(payload).map_err(|_| WireError::TooLong)?;
        let Some(fixed) = b.first_chunk_mut::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if fixed[0] >> 4 != 6 {
            return Err(WireError::BadVersion(fixed[0] >> 4));
        }
        fixed[field::PAYLOAD_LEN].copy_from_slice(&payload.to_be_bytes());
        Self::new_checked(buffer)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.data_mut()[field::HOP_LIMIT] = v;
    }
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.data_mut()[field::NEXT_HEADER] = v;
    }
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.data_mut()[field::SRC].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.data_mut()[field::DST].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let t = self.total_len();
        &mut self.data_mut()[HEADER_LEN..t]
    }
}

/// A view of an IPv6 fixed header alone: the header block of a
/// super-packet whose payloads are gathered from elsewhere when it is
/// written, so its payload length describes more than the buffer holds.
/// Checks the version and that the fixed header fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Header<T> {
    /// Checks: at least 40 bytes, version 6.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let Some(&[v, ..]) = buffer.as_ref().first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if v >> 4 != 6 {
            return Err(WireError::BadVersion(v >> 4));
        }
        Ok(Self { buffer })
    }
    #[inline]
    fn fixed(&self) -> &[u8; HEADER_LEN] {
        self.buffer
            .as_ref()
            .first_chunk()
            .unwrap_or(&[0; HEADER_LEN])
    }
    /// The payload length field (of the whole packet).
    #[inline]
    pub fn payload_len(&self) -> usize {
        match self.fixed().get(field::PAYLOAD_LEN) {
            Some(&[a, b]) => usize::from(u16::from_be_bytes([a, b])),
            _ => 0,
        }
    }
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.fixed()[field::NEXT_HEADER]
    }
    #[inline]
    pub fn src_octets(&self) -> [u8; 16] {
        addr(self.fixed(), field::SRC)
    }
    #[inline]
    pub fn dst_octets(&self) -> [u8; 16] {
        addr(self.fixed(), field::DST)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Header<T> {
    #[inline]
    fn fixed_mut(&mut self) -> Option<&mut [u8; HEADER_LEN]> {
        self.buffer.as_mut().first_chunk_mut()
    }
    /// Writes the payload length field (of the whole packet).
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        if let Some(f) = self.fixed_mut() {
            f[field::PAYLOAD_LEN].copy_from_slice(&v.to_be_bytes());
        }
    }
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        if let Some(f) = self.fixed_mut() {
            f[field::NEXT_HEADER] = v;
        }
    }
}

/// The fields of an IPv6 fixed header, for emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub payload_len: usize,
}

impl Ipv6Repr {
    /// Writes the 40-byte fixed header (traffic class and flow label 0) and
    /// returns 40.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = u16::try_from(self.payload_len).map_err(|_| WireError::TooLong)?;
        let h = out
            .first_chunk_mut::<HEADER_LEN>()
            .ok_or(WireError::BufferTooSmall)?;
        let [l0, l1] = len.to_be_bytes();
        h[..8].copy_from_slice(&[0x60, 0, 0, 0, l0, l1, self.next_header, self.hop_limit]);
        h[field::SRC].copy_from_slice(&self.src.octets());
        h[field::DST].copy_from_slice(&self.dst.octets());
        Ok(HEADER_LEN)
    }

    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Self {
        Self {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            payload_len: p.payload_len(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::wire::ip::{PROTO_IPV6_FRAGMENT, PROTO_UDP};

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            next_header: PROTO_UDP,
            hop_limit: 64,
            payload_len: 10,
        }
    }

    #[test]
    fn round_trip_and_setters() {
        let mut buf = [0xaau8; 56];
        assert_eq!(repr().emit(&mut buf), Ok(40));
        let mut p = Ipv6Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), repr());
        assert_eq!((p.total_len(), p.payload().len()), (50, 10));
        assert_eq!((p.traffic_class(), p.flow_label()), (0, 0));
        p.set_hop_limit(1);
        p.set_next_header(PROTO_IPV6_FRAGMENT);
        p.set_src_addr("::1".parse().unwrap());
        p.set_dst_addr("::2".parse().unwrap());
        p.payload_mut().fill(0);
        assert_eq!((p.hop_limit(), p.next_header()), (1, 44));
        assert_eq!(p.src_addr(), "::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "::2".parse::<Ipv6Addr>().unwrap());
        buf[0..4].copy_from_slice(&[0x6b, 0xa1, 0x23, 0x45]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.traffic_class(), p.flow_label()), (0xba, 0x12345));
    }

    #[test]
    fn rejects_bad_headers() {
        let mut buf = [0u8; 50];
        repr().emit(&mut buf).unwrap();
        for cut in 0..50 {
            assert_eq!(
                Ipv6Packet::new_checked(&buf[..cut]).err(),
                Some(WireError::Truncated)
            );
        }
        buf[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..]).err(),
            Some(WireError::BadVersion(4))
        );
        let r = Ipv6Repr {
            payload_len: 65_536,
            ..repr()
        };
        assert_eq!(r.emit(&mut [0u8; 40]), Err(WireError::TooLong));
        assert_eq!(repr().emit(&mut [0u8; 39]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn resized_writes_the_payload_length() {
        let mut buf = [0u8; 50];
        repr().emit(&mut buf).unwrap();
        let p = Ipv6Packet::new_resized(&mut buf[..44]).unwrap();
        assert_eq!((p.payload_len(), p.next_header()), (4, PROTO_UDP));
        assert_eq!(buf[4..6], 4u16.to_be_bytes());
        assert!(
            Ipv6Packet::new_resized(&mut buf[..40]).is_ok(),
            "no payload"
        );
        assert_eq!(
            Ipv6Packet::new_resized(&mut buf[..39]).err(),
            Some(WireError::Truncated)
        );
        let mut big = vec![0u8; 40 + 65_536];
        big[..50].copy_from_slice(&buf);
        assert_eq!(
            Ipv6Packet::new_resized(&mut big[..]).err(),
            Some(WireError::TooLong)
        );
        buf[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_resized(&mut buf[..]).err(),
            Some(WireError::BadVersion(4))
        );
    }

    #[test]
    fn header_view_writes_a_payload_length_beyond_the_buffer() {
        let mut buf = [0u8; 40];
        repr().emit(&mut buf).unwrap();
        let mut h = Ipv6Header::new_checked(&mut buf[..]).unwrap();
        assert_eq!((h.payload_len(), h.next_header()), (10, PROTO_UDP));
        h.set_payload_len(60_000);
        h.set_next_header(PROTO_IPV6_FRAGMENT);
        assert_eq!(
            (h.payload_len(), h.next_header()),
            (60_000, PROTO_IPV6_FRAGMENT)
        );
        assert_eq!(h.src_octets(), repr().src.octets());
        assert_eq!(h.dst_octets(), repr().dst.octets());
        assert_eq!(buf[4..7], [0xea, 0x60, PROTO_IPV6_FRAGMENT]);
        assert_eq!(
            Ipv6Header::new_checked(&buf[..39]).err(),
            Some(WireError::Truncated)
        );
        buf[0] = 0x45;
        assert_eq!(
            Ipv6Header::new_checked(&buf[..]).err(),
            Some(WireError::BadVersion(4))
        );
    }
}
