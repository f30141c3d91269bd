//! Zero-copy IPv4 packet view (RFC 791) and header emitter. Validates the
//! version, header length (IHL, options included) and total length once in
//! [`Ipv4Packet::new_checked`]; accessors never panic afterwards. It does not
//! reassemble fragments or interpret options.

use core::net::Ipv4Addr;

use super::{checksum, WireError};

/// Byte ranges of the fixed header.
mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of the fixed header (IHL = 5).
pub const HEADER_LEN: usize = 20;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet whose header and total length were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn be16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    match b.get(r) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks that `buffer` holds a whole IPv4 packet: at least 20 bytes,
    /// version 4, 20 <= IHL*4 <= total length <= buffer length. Bytes past
    /// the total length (link padding) are allowed and ignored.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let Some(&[ver_ihl, ..]) = b.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if ver_ihl >> 4 != 4 {
            return Err(WireError::BadVersion(ver_ihl >> 4));
        }
        let header_len = usize::from(ver_ihl & 0x0f) * 4;
        let total_len = usize::from(be16(b, field::LENGTH));
        if header_len < HEADER_LEN || total_len < header_len {
            return Err(WireError::BadLength);
        }
        if total_len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    #[inline]
    fn data(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// The fixed header as an array: one length check (always true after
    /// `new_checked`) instead of one bounds check per field.
    #[inline]
    fn fixed(&self) -> &[u8; HEADER_LEN] {
        self.data().first_chunk().unwrap_or(&[0; HEADER_LEN])
    }
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// Header length in bytes (IHL * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.fixed()[field::VER_IHL] & 0x0f) * 4
    }
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.fixed()[field::DSCP_ECN]
    }
    /// The total length field: header plus payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.fixed(), field::LENGTH))
    }
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.fixed(), field::IDENT)
    }
    #[inline]
    fn flags_offset(&self) -> u16 {
        be16(self.fixed(), field::FLG_OFF)
    }
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }
    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset_bytes(&self) -> usize {
        usize::from(self.flags_offset() & OFFSET_MASK) * 8
    }
    /// True for any fragment (first or not): MF set or a non-zero offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.fixed()[field::TTL]
    }
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.fixed()[field::PROTOCOL]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.fixed(), field::CHECKSUM)
    }
    #[inline]
    pub fn src_octets(&self) -> [u8; 4] {
        let d = self.fixed();
        [d[12], d[13], d[14], d[15]]
    }
    #[inline]
    pub fn dst_octets(&self) -> [u8; 4] {
        let d = self.fixed();
        [d[16], d[17], d[18], d[19]]
    }
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_octets())
    }
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_octets())
    }
    /// The whole header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.data()[..self.header_len()]
    }
    /// Options (may be empty).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.data()[HEADER_LEN..self.header_len()]
    }
    /// The payload up to the total length (link padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.data()[self.header_len()..self.total_len()]
    }
    /// True if the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Takes `buffer` as one whole packet whose size changed (a segment cut
    /// from a larger packet, a super-packet built from several): checks the
    /// version and header length as [`Ipv4Packet::new_checked`] does, but
    /// writes the total length field (`buffer.len()`, at most 65 535)
    /// instead of reading it. The header checksum is left to the caller.
    #[inline]
    pub fn new_resized(mut buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_mut();
        let total = u16::try_from(b.len()).map_err(|_| WireError::TooLong)?;
        let Some(fixed) = b.first_chunk_mut::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if fixed[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion(fixed[field::VER_IHL] >> 4));
        }
        fixed[field::LENGTH].copy_from_slice(&total.to_be_bytes());
        Self::new_checked(buffer)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.data_mut()[field::DSCP_ECN] = v;
    }
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        self.data_mut()[field::IDENT].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets DF and MF, keeping the fragment offset.
    #[inline]
    pub fn set_flags(&mut self, dont_frag: bool, more_frags: bool) {
        let mut v = self.flags_offset() & OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        self.data_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.data_mut()[field::TTL] = v;
    }
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.data_mut()[field::PROTOCOL] = v;
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.data_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.data_mut()[field::SRC].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.data_mut()[field::DST].copy_from_slice(&a.octets());
    }
    /// Recomputes and writes the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }
    /// The payload, mutable (up to the total length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.data_mut()[h..t]
    }
}

/// A view of an IPv4 header alone: the header block of a super-packet
/// whose payloads are gathered from elsewhere when it is written, so its
/// total length describes more than the buffer holds. Checks the version
/// and that the header (options included) fits the buffer; reads and
/// writes header fields only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Header<T> {
    /// Checks: at least 20 bytes, version 4, 20 <= IHL*4 <= buffer length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let Some(&[ver_ihl, ..]) = b.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if ver_ihl >> 4 != 4 {
            return Err(WireError::BadVersion(ver_ihl >> 4));
        }
        let header_len = usize::from(ver_ihl & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if header_len > b.len() {
            return Err(WireError::Truncated);
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
    /// Header length in bytes (IHL * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.fixed()[field::VER_IHL] & 0x0f) * 4
    }
    /// The total length field (of the whole packet, not of this buffer).
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.fixed(), field::LENGTH))
    }
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.fixed()[field::PROTOCOL]
    }
    #[inline]
    pub fn src_octets(&self) -> [u8; 4] {
        let d = self.fixed();
        [d[12], d[13], d[14], d[15]]
    }
    #[inline]
    pub fn dst_octets(&self) -> [u8; 4] {
        let d = self.fixed();
        [d[16], d[17], d[18], d[19]]
    }
    /// The whole header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        self.buffer.as_ref().get(..self.header_len()).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Header<T> {
    #[inline]
    fn fixed_mut(&mut self) -> Option<&mut [u8; HEADER_LEN]> {
        self.buffer.as_mut().first_chunk_mut()
    }
    /// Writes the total length field (of the whole packet).
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        if let Some(f) = self.fixed_mut() {
            f[field::LENGTH].copy_from_slice(&v.to_be_bytes());
        }
    }
    /// Recomputes and writes the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        if let Some(f) = self.fixed_mut() {
            f[field::CHECKSUM].fill(0);
        }
        let c = checksum::checksum(self.header());
        if let Some(f) = self.fixed_mut() {
            f[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        }
    }
}

/// The fields of an option-less IPv4 header, for emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub dont_frag: bool,
    pub ident: u16,
    /// Payload length in bytes; total length = 20 + this.
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Writes the 20-byte header (with its checksum) into `out[..20]` and
    /// returns 20. The payload is the caller's.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let total = u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| WireError::TooLong)?;
        let h = out
            .first_chunk_mut::<HEADER_LEN>()
            .ok_or(WireError::BufferTooSmall)?;
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        let [l0, l1] = total.to_be_bytes();
        let [i0, i1] = self.ident.to_be_bytes();
        let [f0, f1] = flags.to_be_bytes();
        let [s0, s1, s2, s3] = self.src.octets();
        let [d0, d1, d2, d3] = self.dst.octets();
        *h = [
            0x45,
            0,
            l0,
            l1,
            i0,
            i1,
            f0,
            f1,
            self.ttl,
            self.protocol,
            0,
            0,
            s0,
            s1,
            s2,
            s3,
            d0,
            d1,
            d2,
            d3,
        ];
        let [c0, c1] = checksum::checksum(h).to_be_bytes();
        h[10] = c0;
        h[11] = c1;
        Ok(HEADER_LEN)
    }

    /// Reads the representable fields back from a checked packet.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Self {
        Self {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            dont_frag: p.dont_frag(),
            ident: p.ident(),
            payload_len: p.total_len() - p.header_len(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::wire::ip::{PROTO_ICMP, PROTO_UDP};

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(10, 200, 0, 1),
            dst: Ipv4Addr::new(10, 200, 0, 2),
            protocol: PROTO_UDP,
            ttl: 64,
            dont_frag: true,
            ident: 0x1234,
            payload_len: 12,
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = [0xeeu8; 40];
        assert_eq!(repr().emit(&mut buf), Ok(20));
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), repr());
        assert_eq!(
            (p.header_len(), p.total_len(), p.payload().len()),
            (20, 32, 12)
        );
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert!(p.options().is_empty());
    }

    #[test]
    fn options_fragments_and_setters() {
        let mut buf = [0u8; 64];
        repr().emit(&mut buf).unwrap();
        buf[0] = 0x46; // IHL 6: 4 bytes of options
        buf[20..24].copy_from_slice(&[1, 1, 1, 0]);
        buf[6..8].copy_from_slice(&(0x2000u16 | 5).to_be_bytes()); // MF, offset 40
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.header_len(), p.options(), p.payload().len()),
            (24, &[1u8, 1, 1, 0][..], 8)
        );
        assert!(p.more_frags() && p.is_fragment() && !p.dont_frag());
        assert_eq!(p.frag_offset_bytes(), 40);
        p.set_flags(true, false);
        assert_eq!(p.frag_offset_bytes(), 40);
        p.set_ttl(3);
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        p.set_ident(9);
        p.set_dscp_ecn(0xb8);
        p.set_protocol(PROTO_ICMP);
        p.payload_mut().fill(7);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.ttl(), p.ident(), p.dscp_ecn(), p.protocol()),
            (3, 9, 0xb8, 1)
        );
        assert_eq!(p.src_addr(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(5, 6, 7, 8));
        assert!(p.dont_frag() && !p.more_frags());
    }

    #[test]
    fn rejects_bad_headers() {
        let mut buf = [0u8; 32];
        repr().emit(&mut buf).unwrap();
        for cut in 0..32 {
            assert_eq!(
                Ipv4Packet::new_checked(&buf[..cut]).err(),
                Some(WireError::Truncated)
            );
        }
        let mut b = buf;
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(WireError::BadVersion(6))
        );
        let mut b = buf;
        b[0] = 0x44; // IHL 4 < 5
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(WireError::BadLength)
        );
        let mut b = buf;
        b[0] = 0x4f; // 60-byte header, longer than the total length 32
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(WireError::BadLength)
        );
        let mut b = buf;
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(WireError::BadLength)
        );
        let r = Ipv4Repr {
            payload_len: 65_516,
            ..repr()
        };
        assert_eq!(r.emit(&mut [0u8; 20]), Err(WireError::TooLong));
        assert_eq!(repr().emit(&mut [0u8; 19]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn resized_writes_the_total_length_and_keeps_the_rest() {
        let mut buf = [0u8; 32];
        repr().emit(&mut buf).unwrap();
        let mut p = Ipv4Packet::new_resized(&mut buf[..26]).unwrap();
        assert_eq!((p.total_len(), p.payload().len()), (26, 6));
        assert_eq!(
            (p.ident(), p.protocol(), p.dont_frag()),
            (0x1234, PROTO_UDP, true)
        );
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(buf[2..4], 26u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_resized(&mut buf[..19]).err(),
            Some(WireError::Truncated)
        );
        let mut big = vec![0u8; 65_536];
        big[..32].copy_from_slice(&buf);
        assert_eq!(
            Ipv4Packet::new_resized(&mut big[..]).err(),
            Some(WireError::TooLong)
        );
        buf[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_resized(&mut buf[..]).err(),
            Some(WireError::BadVersion(6))
        );
        buf[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_resized(&mut buf[..]).err(),
            Some(WireError::BadLength)
        );
        buf[0] = 0x4f; // a 60-byte header in 32 bytes
        assert_eq!(
            Ipv4Packet::new_resized(&mut buf[..]).err(),
            Some(WireError::BadLength)
        );
    }

    #[test]
    fn header_view_writes_a_total_length_beyond_the_buffer() {
        let mut buf = [0u8; 32];
        repr().emit(&mut buf).unwrap();
        let mut h = Ipv4Header::new_checked(&mut buf[..20]).unwrap();
        assert_eq!(
            (h.header_len(), h.total_len(), h.protocol()),
            (20, 32, PROTO_UDP)
        );
        h.set_total_len(60_000);
        h.fill_checksum();
        assert_eq!(h.total_len(), 60_000);
        assert_eq!(h.src_octets(), [10, 200, 0, 1]);
        assert_eq!(h.dst_octets(), [10, 200, 0, 2]);
        assert_eq!(
            checksum::checksum(&buf[..20]),
            0,
            "checksum over the header"
        );
        assert!(
            Ipv4Packet::new_checked(&buf[..]).is_err(),
            "no packet view for it"
        );
        assert_eq!(
            Ipv4Header::new_checked(&buf[..19]).err(),
            Some(WireError::Truncated)
        );
        buf[0] = 0x46; // 24-byte header in 20 bytes
        assert_eq!(
            Ipv4Header::new_checked(&buf[..20]).err(),
            Some(WireError::Truncated)
        );
        buf[0] = 0x44;
        assert_eq!(
            Ipv4Header::new_checked(&buf[..20]).err(),
            Some(WireError::BadLength)
        );
        buf[0] = 0x65;
        assert_eq!(
            Ipv4Header::new_checked(&buf[..20]).err(),
            Some(WireError::BadVersion(6))
        );
    }
}
