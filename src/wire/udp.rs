//! Zero-copy UDP datagram view (RFC 768) and header emitter, with checksum
//! verify/fill over the IPv4 and IPv6 pseudo-headers. A zero checksum means
//! "not computed" and is accepted over IPv4 only (RFC 8200 §8.1 forbids it
//! over IPv6). It does not look at the payload.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::{checksum, WireError};

pub const HEADER_LEN: usize = 8;
use super::ip::PROTO_UDP;

/// A view of a UDP datagram whose length field was checked against the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks: at least 8 bytes, 8 <= length field <= buffer length
    /// (trailing bytes past the length field are ignored).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let Some(&[_, _, _, _, l0, l1, _, _]) = b.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        if len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    #[inline]
    fn word(&self, at: usize) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[at], d[at + 1]])
    }
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.word(0)
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.word(2)
    }
    /// The length field: header plus payload, in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.word(4))
    }
    /// Never true after `new_checked` (length >= 8); for clippy's sake.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.word(6)
    }
    /// The datagram (header and payload) up to the length field.
    #[inline]
    pub fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.len()]
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len()]
    }
    /// The length field as the pseudo-headers want it.
    #[inline]
    fn len_u16(&self) -> u16 {
        self.word(4)
    }
    /// True if the checksum is correct over IPv4, or zero (not computed).
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let acc = checksum::pseudo_header_v4(src.octets(), dst.octets(), PROTO_UDP, self.len_u16());
        checksum::fold(checksum::accumulate(acc, self.datagram())) == 0xffff
    }
    /// True if the checksum is correct over IPv6 (zero is invalid there).
    #[inline]
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let l = u32::from(self.len_u16());
        let acc = checksum::pseudo_header_v6(&src.octets(), &dst.octets(), PROTO_UDP, l);
        checksum::fold(checksum::accumulate(acc, self.datagram())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Takes `buffer` as one whole datagram whose size changed (a segment
    /// cut from a larger one): writes the length field (`buffer.len()`,
    /// 8..=65 535) instead of reading it. The checksum is left to the
    /// caller ([`UdpPacket::fill_checksum_from`]).
    #[inline]
    pub fn new_resized(mut buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_mut();
        let len = u16::try_from(b.len()).map_err(|_| WireError::TooLong)?;
        let Some(h) = b.first_chunk_mut::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        h[4..6].copy_from_slice(&len.to_be_bytes());
        Self::new_checked(buffer)
    }
    #[inline]
    fn set_word(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        self.set_word(0, v);
    }
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        self.set_word(2, v);
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.set_word(6, v);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let n = self.len();
        &mut self.buffer.as_mut()[HEADER_LEN..n]
    }
    /// Computes and writes the checksum from `acc`, the pseudo-header's
    /// running sum (for callers that have the IP header, not the
    /// addresses). A computed 0 is sent as 0xffff (RFC 768).
    #[inline]
    pub fn fill_checksum_from(&mut self, acc: u64) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::accumulate(acc, self.datagram()));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let acc = checksum::pseudo_header_v4(src.octets(), dst.octets(), PROTO_UDP, self.len_u16());
        self.fill_checksum_from(acc);
    }
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        let l = u32::from(self.len_u16());
        self.fill_checksum_from(checksum::pseudo_header_v6(
            &src.octets(),
            &dst.octets(),
            PROTO_UDP,
            l,
        ));
    }
}

/// A view of a UDP header alone: the header block of a super-packet whose
/// payloads are gathered from elsewhere when it is written, so its length
/// field describes more than the buffer holds. Checks only that the 8
/// bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpHeader<T> {
    /// Checks: at least 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }
    #[inline]
    fn word(&self, at: usize) -> u16 {
        match self.buffer.as_ref().get(at..at + 2) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        }
    }
    /// The length field (of the whole datagram).
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.word(4))
    }
    /// Whether the length field is 0 (never so in a valid datagram).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.word(6)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpHeader<T> {
    #[inline]
    fn set_word(&mut self, at: usize, v: u16) {
        if let Some(f) = self.buffer.as_mut().get_mut(at..at + 2) {
            f.copy_from_slice(&v.to_be_bytes());
        }
    }
    /// Writes the length field (of the whole datagram).
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        self.set_word(4, v);
    }
    /// Writes the checksum field as given (for offloads: the folded
    /// pseudo-header sum the device completes).
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.set_word(6, v);
    }
}

/// The fields of a UDP header, for emitting (checksum written as 0; fill it
/// with `fill_checksum_v4/v6` once the payload is in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| WireError::TooLong)?;
        let h = out
            .first_chunk_mut::<HEADER_LEN>()
            .ok_or(WireError::BufferTooSmall)?;
        let [s0, s1] = self.src_port.to_be_bytes();
        let [d0, d1] = self.dst_port.to_be_bytes();
        let [l0, l1] = len.to_be_bytes();
        *h = [s0, s1, d0, d1, l0, l1, 0, 0];
        Ok(HEADER_LEN)
    }

    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> Self {
        Self {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() - HEADER_LEN,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const REPR: UdpRepr = UdpRepr {
        src_port: 40_000,
        dst_port: 4789,
        payload_len: 5,
    };

    #[test]
    fn round_trip_and_checksums() {
        let mut buf = [0u8; 16];
        assert_eq!(REPR.emit(&mut buf), Ok(8));
        buf[8..13].copy_from_slice(b"hello");
        let (s4, d4) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let (s6, d6): (Ipv6Addr, Ipv6Addr) =
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(UdpRepr::parse(&p), REPR);
        assert_eq!(p.payload(), b"hello");
        assert!(
            p.verify_checksum_v4(s4, d4),
            "zero checksum is fine over IPv4"
        );
        assert!(
            !p.verify_checksum_v6(&s6, &d6),
            "zero checksum is invalid over IPv6"
        );
        p.fill_checksum_v4(s4, d4);
        assert!(p.verify_checksum_v4(s4, d4));
        assert!(!p.verify_checksum_v4(s4, Ipv4Addr::new(10, 0, 0, 3)));
        p.fill_checksum_v6(&s6, &d6);
        assert!(p.verify_checksum_v6(&s6, &d6));
        p.payload_mut()[0] ^= 1;
        assert!(!p.verify_checksum_v6(&s6, &d6));
        p.set_src_port(1);
        p.set_dst_port(2);
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.is_empty()),
            (1, 2, 13, false)
        );
    }

    #[test]
    fn known_checksum() {
        // Hand-computed: 10.0.0.1 -> 10.0.0.2, ports 1 -> 2, payload "ab".
        // Pseudo: 0a00+0001+0a00+0002+0011+000a = 0x141e; UDP: 0001+0002+000a+6162 = 0x616f.
        // Sum 0x758d, checksum !0x758d = 0x8a72.
        let mut buf = [0u8; 10];
        UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload_len: 2,
        }
        .emit(&mut buf)
        .unwrap();
        buf[8..].copy_from_slice(b"ab");
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.checksum(), 0x8a72);
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut buf = [0u8; 13];
        REPR.emit(&mut buf).unwrap();
        for cut in 0..13 {
            assert_eq!(
                UdpPacket::new_checked(&buf[..cut]).err(),
                Some(WireError::Truncated)
            );
        }
        buf[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&buf[..]).err(),
            Some(WireError::BadLength)
        );
        let big = UdpRepr {
            payload_len: 65_528,
            ..REPR
        };
        assert_eq!(big.emit(&mut [0u8; 8]), Err(WireError::TooLong));
        assert_eq!(REPR.emit(&mut [0u8; 7]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn resized_writes_the_length_and_fills_from_a_pseudo_sum() {
        let mut buf = [0u8; 16];
        REPR.emit(&mut buf).unwrap();
        buf[8..16].copy_from_slice(b"segments");
        let (s4, d4) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut p = UdpPacket::new_resized(&mut buf[..11]).unwrap();
        assert_eq!((p.len(), p.payload()), (11, &b"seg"[..]));
        p.fill_checksum_from(checksum::pseudo_header_v4(
            s4.octets(),
            d4.octets(),
            PROTO_UDP,
            11,
        ));
        assert!(p.verify_checksum_v4(s4, d4));
        assert_eq!(
            UdpPacket::new_resized(&mut buf[..7]).err(),
            Some(WireError::Truncated)
        );
        let mut big = vec![0u8; 65_536];
        assert_eq!(
            UdpPacket::new_resized(&mut big[..]).err(),
            Some(WireError::TooLong)
        );
    }

    #[test]
    fn header_view_writes_a_length_beyond_the_buffer() {
        let mut buf = [0u8; 8];
        REPR.emit(&mut buf).unwrap();
        let mut h = UdpHeader::new_checked(&mut buf[..]).unwrap();
        assert_eq!((h.len(), h.is_empty(), h.checksum()), (13, false, 0));
        h.set_len(60_000);
        h.set_checksum(0x1234);
        assert_eq!((h.len(), h.checksum()), (60_000, 0x1234));
        assert_eq!(buf[4..], [0xea, 0x60, 0x12, 0x34]);
        assert_eq!(
            UdpHeader::new_checked(&buf[..7]).err(),
            Some(WireError::Truncated)
        );
    }
}
