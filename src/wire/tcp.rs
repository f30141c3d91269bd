//! Zero-copy TCP segment view (RFC 9293 §3.1): the header fields that the
//! TUN offload code reads and rewrites when it splits or merges segments
//! (ports, sequence number, data offset, flags, checksum), over a buffer
//! that starts at the TCP header and ends with the segment's payload.
//! [`TcpSegment::new_checked`] checks the data offset once; accessors never
//! panic afterwards. It does not parse options, track connections or know
//! the pseudo-header's addresses (callers pass its running sum).

use super::{checksum, WireError};

/// Length of the header without options (data offset 5).
pub const HEADER_LEN: usize = 20;
/// Longest header: data offset 15.
pub const MAX_HEADER_LEN: usize = 60;

/// The flag bits of the flags byte (byte 13).
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push: hand the data up now.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is valid.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is valid.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

/// Byte ranges of the fixed header.
mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
}

/// A view of a TCP segment (header first) whose data offset was checked
/// against the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Checks: at least 20 bytes, 20 <= data offset * 4 <= buffer length.
    /// Everything after the header is the payload.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let Some(fixed) = b.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        let header_len = usize::from(fixed[field::DATA_OFF] >> 4) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if header_len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    /// The fixed header as an array: one length check (always true after
    /// `new_checked`) instead of one bounds check per field.
    #[inline]
    fn fixed(&self) -> &[u8; HEADER_LEN] {
        self.buffer
            .as_ref()
            .first_chunk()
            .unwrap_or(&[0; HEADER_LEN])
    }
    #[inline]
    fn word(&self, r: core::ops::Range<usize>) -> u16 {
        match self.fixed().get(r) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        }
    }
    #[inline]
    fn dword(&self, r: core::ops::Range<usize>) -> u32 {
        match self.fixed().get(r) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        }
    }
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.word(field::SRC_PORT)
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.word(field::DST_PORT)
    }
    #[inline]
    pub fn seq_number(&self) -> u32 {
        self.dword(field::SEQ)
    }
    #[inline]
    pub fn ack_number(&self) -> u32 {
        self.dword(field::ACK)
    }
    /// Header length in bytes (data offset * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.fixed()[field::DATA_OFF] >> 4) * 4
    }
    /// The flags byte (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.fixed()[field::FLAGS]
    }
    #[inline]
    pub fn window(&self) -> u16 {
        self.word(field::WINDOW)
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.word(field::CHECKSUM)
    }
    /// The bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
    /// Whether the checksum verifies, given the pseudo-header's running sum
    /// (`checksum::pseudo_header_v4/v6` over this segment's length).
    #[inline]
    pub fn verify_checksum(&self, pseudo: u64) -> bool {
        checksum::fold(checksum::accumulate(pseudo, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    #[inline]
    fn fixed_mut(&mut self) -> Option<&mut [u8; HEADER_LEN]> {
        self.buffer.as_mut().first_chunk_mut()
    }
    #[inline]
    fn set_bytes(&mut self, r: core::ops::Range<usize>, v: &[u8]) {
        if let Some(f) = self.fixed_mut().and_then(|f| f.get_mut(r)) {
            f.copy_from_slice(v);
        }
    }
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        self.set_bytes(field::SEQ, &v.to_be_bytes());
    }
    /// Writes the flags byte (see [`flags`]).
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        if let Some(f) = self.fixed_mut() {
            f[field::FLAGS] = v;
        }
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.set_bytes(field::CHECKSUM, &v.to_be_bytes());
    }
    /// Computes and writes the checksum over the whole buffer (header and
    /// payload) from `pseudo`, the pseudo-header's running sum.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::accumulate(pseudo, self.buffer.as_ref()));
        self.set_checksum(c);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        self.buffer.as_mut().get_mut(h..).unwrap_or(&mut [])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::wire::checksum::reference_sum;
    use crate::wire::ip::PROTO_TCP;

    /// Ports 40000 -> 5001, seq 0x7fff_fff0, ack 9, data offset 6 (one
    /// 4-byte option), ACK|PSH, window 0xffff, then "data".
    fn segment() -> Vec<u8> {
        let mut s = vec![
            0x9c,
            0x40,
            0x13,
            0x89,
            0x7f,
            0xff,
            0xff,
            0xf0,
            0,
            0,
            0,
            9,
            6 << 4,
            0x18,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
            1,
            1,
            1,
            0,
        ];
        s.extend_from_slice(b"data");
        s
    }

    #[test]
    fn reads_the_fields() {
        let s = segment();
        let t = TcpSegment::new_checked(&s[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (40_000, 5001));
        assert_eq!((t.seq_number(), t.ack_number()), (0x7fff_fff0, 9));
        assert_eq!(t.header_len(), 24);
        assert_eq!(t.flags(), flags::ACK | flags::PSH);
        assert_eq!((t.window(), t.checksum()), (0xffff, 0));
        assert_eq!(t.payload(), b"data");
    }

    #[test]
    fn writes_seq_flags_and_a_checksum_the_reference_accepts() {
        let mut s = segment();
        let (src, dst) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let pseudo = checksum::pseudo_header_v4(src, dst, PROTO_TCP, s.len() as u16);
        let mut t = TcpSegment::new_checked(&mut s[..]).unwrap();
        t.set_seq_number(0x8000_0010);
        t.set_flags(flags::ACK);
        t.fill_checksum(pseudo);
        assert!(t.verify_checksum(pseudo));
        t.payload_mut()[0] ^= 1;
        assert!(!t.verify_checksum(pseudo));
        t.payload_mut()[0] ^= 1;
        let c = t.checksum();
        assert_eq!((t.seq_number(), t.flags()), (0x8000_0010, flags::ACK));
        assert_eq!(&s[4..8], &0x8000_0010u32.to_be_bytes());
        assert_eq!(s[13], flags::ACK);
        assert_eq!(&s[16..18], &c.to_be_bytes());
        let len = (s.len() as u16).to_be_bytes();
        let ph = [&src[..], &dst[..], &[0, PROTO_TCP], &len[..], &s[..]];
        assert_eq!(reference_sum(&ph), 0xffff, "independent check");
    }

    #[test]
    fn rejects_short_buffers_and_bad_offsets() {
        let s = segment();
        for cut in 0..24 {
            assert_eq!(
                TcpSegment::new_checked(&s[..cut]).err(),
                Some(WireError::Truncated),
                "cut {cut}"
            );
        }
        assert!(TcpSegment::new_checked(&s[..24]).is_ok(), "no payload");
        for doff in 0..5u8 {
            let mut b = s.clone();
            b[12] = doff << 4;
            assert_eq!(
                TcpSegment::new_checked(&b[..]).err(),
                Some(WireError::BadLength)
            );
        }
        let mut b = s.clone();
        b[12] = 15 << 4;
        assert_eq!(
            TcpSegment::new_checked(&b[..]).err(),
            Some(WireError::Truncated),
            "a 60-byte header in 28 bytes"
        );
    }
}
