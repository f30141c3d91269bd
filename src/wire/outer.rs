//! Outer messages (DESIGN §3): the UDP payloads vxsec exchanges with peers.
//! Parses a datagram into a typed, borrowed view and emits messages into
//! caller buffers. It does not verify MACs, decrypt, or look SPIs up.
//!
//! Layout (all integers big-endian, 3 reserved bytes that must be zero):
//!
//! | type | layout |
//! |---|---|
//! | 1 initiation | type, rsv, sender SPI, Noise msg 1, mac1 16, mac2 16 |
//! | 2 response | type, rsv, sender SPI, receiver SPI, Noise msg 2, mac1, mac2 |
//! | 3 cookie reply | type, rsv, receiver SPI, nonce 24, encrypted cookie 32 (exactly 64 bytes) |
//! | 4 data | type, rsv, receiver SPI, counter u64 \| ciphertext \| tag 16 |
//!
//! Noise messages carry no length field: everything between the fixed header
//! and the two trailing MACs is the Noise message, bounded by
//! [`INITIATION_NOISE_MIN`]/[`RESPONSE_NOISE_MIN`] and [`NOISE_MAX_LEN`].
//! A truncated handshake message may therefore parse (with shifted MACs); mac1
//! verification is what rejects it.

use super::WireError;

pub const MSG_INITIATION: u8 = 1;
pub const MSG_RESPONSE: u8 = 2;
pub const MSG_COOKIE_REPLY: u8 = 3;
pub const MSG_DATA: u8 = 4;

pub const MAC_LEN: usize = 16;
pub const COOKIE_NONCE_LEN: usize = 24;
pub const ENCRYPTED_COOKIE_LEN: usize = 32;
pub const COOKIE_REPLY_LEN: usize = 64;
pub const INITIATION_HEADER_LEN: usize = 8;
pub const RESPONSE_HEADER_LEN: usize = 12;
/// The data header (type, reserved, SPI, counter) and the AEAD tag: the
/// crypto crate seals them, so they are defined there once.
pub use vxsec_crypto::sa::{DATA_HEADER_LEN, TAG_LEN as DATA_TAG_LEN};
/// Smallest data message: header and tag around an empty plaintext.
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + DATA_TAG_LEN;
/// IKpsk2 message 1 with an empty payload: e (32) + enc(s) (48) + tag (16).
pub const INITIATION_NOISE_MIN: usize = 96;
/// IKpsk2 message 2 with an empty payload: e (32) + tag (16).
pub const RESPONSE_NOISE_MIN: usize = 48;
/// Upper bound on a Noise message; the handshake payloads are tiny.
pub const NOISE_MAX_LEN: usize = 1024;

const MACS_LEN: usize = 2 * MAC_LEN;

/// Offsets of mac1 and mac2 within a handshake message of `total_len` bytes
/// (`total_len - 32`, `total_len - 16`; saturating, so never panics).
#[inline]
pub const fn mac_offsets(total_len: usize) -> (usize, usize) {
    (
        total_len.saturating_sub(MACS_LEN),
        total_len.saturating_sub(MAC_LEN),
    )
}

/// A parsed outer message, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Initiation(Initiation<'a>),
    Response(Response<'a>),
    CookieReply(CookieReply<'a>),
    Data(DataMessage<'a>),
}

/// Handshake initiation (type 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initiation<'a> {
    sender_spi: u32,
    noise: &'a [u8],
    mac1: &'a [u8; MAC_LEN],
    mac2: &'a [u8; MAC_LEN],
    mac1_input: &'a [u8],
    mac2_input: &'a [u8],
}

/// Handshake response (type 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    sender_spi: u32,
    receiver_spi: u32,
    noise: &'a [u8],
    mac1: &'a [u8; MAC_LEN],
    mac2: &'a [u8; MAC_LEN],
    mac1_input: &'a [u8],
    mac2_input: &'a [u8],
}

/// Cookie reply (type 3), exactly [`COOKIE_REPLY_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReply<'a> {
    receiver_spi: u32,
    nonce: &'a [u8; COOKIE_NONCE_LEN],
    encrypted_cookie: &'a [u8; ENCRYPTED_COOKIE_LEN],
}

/// Data message (type 4): header, ciphertext, 16-byte tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataMessage<'a> {
    header: &'a [u8; DATA_HEADER_LEN],
    ciphertext_and_tag: &'a [u8],
}

/// Parses one outer message. Reserved bytes must be zero; the type byte is
/// checked before the reserved bytes.
#[inline]
pub fn parse_message(buf: &[u8]) -> Result<Message<'_>, WireError> {
    let Some((&[ty, r0, r1, r2], _)) = buf.split_first_chunk::<4>() else {
        return Err(WireError::Truncated);
    };
    if !matches!(ty, MSG_INITIATION..=MSG_DATA) {
        return Err(WireError::BadType(ty));
    }
    if r0 | r1 | r2 != 0 {
        return Err(WireError::ReservedNonZero);
    }
    match ty {
        MSG_INITIATION => Initiation::parse(buf).map(Message::Initiation),
        MSG_RESPONSE => Response::parse(buf).map(Message::Response),
        MSG_COOKIE_REPLY => CookieReply::parse(buf).map(Message::CookieReply),
        _ => DataMessage::parse(buf).map(Message::Data),
    }
}

#[inline]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// Splits `buf` into (everything before the MACs, mac1, mac2, mac2 input).
type MacSplit<'a> = (&'a [u8], &'a [u8; MAC_LEN], &'a [u8; MAC_LEN], &'a [u8]);
#[inline]
fn split_macs(buf: &[u8]) -> Result<MacSplit<'_>, WireError> {
    let (mac2_input, mac2) = buf
        .split_last_chunk::<MAC_LEN>()
        .ok_or(WireError::Truncated)?;
    let (mac1_input, mac1) = mac2_input
        .split_last_chunk::<MAC_LEN>()
        .ok_or(WireError::Truncated)?;
    Ok((mac1_input, mac1, mac2, mac2_input))
}

#[inline]
fn check_noise_len(len: usize, min: usize) -> Result<(), WireError> {
    if len < min {
        Err(WireError::Truncated)
    } else if len > NOISE_MAX_LEN {
        Err(WireError::TooLong)
    } else {
        Ok(())
    }
}

impl<'a> Initiation<'a> {
    #[inline]
    fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let (mac1_input, mac1, mac2, mac2_input) = split_macs(buf)?;
        let (hdr, noise) = mac1_input
            .split_first_chunk::<INITIATION_HEADER_LEN>()
            .ok_or(WireError::Truncated)?;
        check_noise_len(noise.len(), INITIATION_NOISE_MIN)?;
        Ok(Self {
            sender_spi: be32([hdr[4], hdr[5], hdr[6], hdr[7]]),
            noise,
            mac1,
            mac2,
            mac1_input,
            mac2_input,
        })
    }
    #[inline]
    pub fn sender_spi(&self) -> u32 {
        self.sender_spi
    }
    #[inline]
    pub fn noise(&self) -> &'a [u8] {
        self.noise
    }
    #[inline]
    pub fn mac1(&self) -> &'a [u8; MAC_LEN] {
        self.mac1
    }
    #[inline]
    pub fn mac2(&self) -> &'a [u8; MAC_LEN] {
        self.mac2
    }
    /// All bytes before mac1 (what mac1 covers).
    #[inline]
    pub fn mac1_input(&self) -> &'a [u8] {
        self.mac1_input
    }
    /// All bytes before mac2 (what mac2 covers).
    #[inline]
    pub fn mac2_input(&self) -> &'a [u8] {
        self.mac2_input
    }
}

impl<'a> Response<'a> {
    #[inline]
    fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let (mac1_input, mac1, mac2, mac2_input) = split_macs(buf)?;
        let (hdr, noise) = mac1_input
            .split_first_chunk::<RESPONSE_HEADER_LEN>()
            .ok_or(WireError::Truncated)?;
        check_noise_len(noise.len(), RESPONSE_NOISE_MIN)?;
        Ok(Self {
            sender_spi: be32([hdr[4], hdr[5], hdr[6], hdr[7]]),
            receiver_spi: be32([hdr[8], hdr[9], hdr[10], hdr[11]]),
            noise,
            mac1,
            mac2,
            mac1_input,
            mac2_input,
        })
    }
    #[inline]
    pub fn sender_spi(&self) -> u32 {
        self.sender_spi
    }
    #[inline]
    pub fn receiver_spi(&self) -> u32 {
        self.receiver_spi
    }
    #[inline]
    pub fn noise(&self) -> &'a [u8] {
        self.noise
    }
    #[inline]
    pub fn mac1(&self) -> &'a [u8; MAC_LEN] {
        self.mac1
    }
    #[inline]
    pub fn mac2(&self) -> &'a [u8; MAC_LEN] {
        self.mac2
    }
    /// All bytes before mac1 (what mac1 covers).
    #[inline]
    pub fn mac1_input(&self) -> &'a [u8] {
        self.mac1_input
    }
    /// All bytes before mac2 (what mac2 covers).
    #[inline]
    pub fn mac2_input(&self) -> &'a [u8] {
        self.mac2_input
    }
}

impl<'a> CookieReply<'a> {
    #[inline]
    fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let whole: &[u8; COOKIE_REPLY_LEN] = match buf.len() {
            n if n < COOKIE_REPLY_LEN => return Err(WireError::Truncated),
            n if n > COOKIE_REPLY_LEN => return Err(WireError::TooLong),
            _ => buf.try_into().map_err(|_| WireError::Truncated)?,
        };
        let (hdr, rest) = whole.split_first_chunk::<8>().ok_or(WireError::Truncated)?;
        let (nonce, cookie) = rest
            .split_first_chunk::<COOKIE_NONCE_LEN>()
            .ok_or(WireError::Truncated)?;
        let encrypted_cookie = cookie.try_into().map_err(|_| WireError::Truncated)?;
        Ok(Self {
            receiver_spi: be32([hdr[4], hdr[5], hdr[6], hdr[7]]),
            nonce,
            encrypted_cookie,
        })
    }
    #[inline]
    pub fn receiver_spi(&self) -> u32 {
        self.receiver_spi
    }
    #[inline]
    pub fn nonce(&self) -> &'a [u8; COOKIE_NONCE_LEN] {
        self.nonce
    }
    #[inline]
    pub fn encrypted_cookie(&self) -> &'a [u8; ENCRYPTED_COOKIE_LEN] {
        self.encrypted_cookie
    }
}

impl<'a> DataMessage<'a> {
    #[inline]
    fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let (header, ciphertext_and_tag) = buf
            .split_first_chunk::<DATA_HEADER_LEN>()
            .ok_or(WireError::Truncated)?;
        if ciphertext_and_tag.len() < DATA_TAG_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self {
            header,
            ciphertext_and_tag,
        })
    }
    #[inline]
    pub fn receiver_spi(&self) -> u32 {
        let h = self.header;
        be32([h[4], h[5], h[6], h[7]])
    }
    #[inline]
    pub fn counter(&self) -> u64 {
        let h = self.header;
        u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]])
    }
    /// The 16-byte header (the AEAD's associated data).
    #[inline]
    pub fn header(&self) -> &'a [u8; DATA_HEADER_LEN] {
        self.header
    }
    /// Ciphertext followed by the tag (at least [`DATA_TAG_LEN`] bytes).
    #[inline]
    pub fn ciphertext_and_tag(&self) -> &'a [u8] {
        self.ciphertext_and_tag
    }
}

impl Message<'_> {
    /// The message type byte.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        match self {
            Message::Initiation(_) => MSG_INITIATION,
            Message::Response(_) => MSG_RESPONSE,
            Message::CookieReply(_) => MSG_COOKIE_REPLY,
            Message::Data(_) => MSG_DATA,
        }
    }

    /// The SPI the receiver chose, for every type that carries one.
    #[inline]
    pub fn receiver_spi(&self) -> Option<u32> {
        match self {
            Message::Initiation(_) => None,
            Message::Response(m) => Some(m.receiver_spi()),
            Message::CookieReply(m) => Some(m.receiver_spi()),
            Message::Data(m) => Some(m.receiver_spi()),
        }
    }
}

mod emit;
pub use emit::{emit_cookie_reply, emit_data_header, emit_initiation, emit_response};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn set_macs(buf: &mut [u8], n: usize) {
        let (m1, m2) = mac_offsets(n);
        buf[m1..m2].fill(0xa1);
        buf[m2..n].fill(0xb2);
    }

    #[test]
    fn initiation_round_trip() {
        let nz = noise(INITIATION_NOISE_MIN + 20);
        let mut buf = [0u8; 256];
        let n = emit_initiation(&mut buf, 0xdead_beef, &nz).unwrap();
        assert_eq!(n, 8 + nz.len() + 32);
        set_macs(&mut buf, n);
        let Message::Initiation(m) = parse_message(&buf[..n]).unwrap() else {
            panic!("wrong type")
        };
        assert_eq!(m.sender_spi(), 0xdead_beef);
        assert_eq!(m.noise(), &nz[..]);
        assert_eq!(m.mac1(), &[0xa1; 16]);
        assert_eq!(m.mac2(), &[0xb2; 16]);
        assert_eq!(m.mac1_input(), &buf[..n - 32]);
        assert_eq!(m.mac2_input(), &buf[..n - 16]);
        let mut again = [0u8; 256];
        let k = Message::Initiation(m).emit(&mut again).unwrap();
        assert_eq!(&again[..k], &buf[..n]);
    }

    #[test]
    fn response_round_trip() {
        let nz = noise(RESPONSE_NOISE_MIN);
        let mut buf = [0u8; 128];
        let n = emit_response(&mut buf, 7, 0x0102_0304, &nz).unwrap();
        set_macs(&mut buf, n);
        let Message::Response(m) = parse_message(&buf[..n]).unwrap() else {
            panic!("wrong type")
        };
        assert_eq!((m.sender_spi(), m.receiver_spi()), (7, 0x0102_0304));
        assert_eq!(m.noise(), &nz[..]);
        assert_eq!(m.mac1(), &[0xa1; 16]);
        assert_eq!(m.mac2_input().len(), n - 16);
        assert_eq!(&buf[4..12], &[0, 0, 0, 7, 1, 2, 3, 4]);
    }

    #[test]
    fn cookie_reply_round_trip() {
        let mut buf = [0u8; 80];
        let n = emit_cookie_reply(&mut buf, 99, &[5; 24], &[6; 32]).unwrap();
        assert_eq!(n, COOKIE_REPLY_LEN);
        let msg = parse_message(&buf[..n]).unwrap();
        let Message::CookieReply(m) = msg else {
            panic!("wrong type")
        };
        assert_eq!(m.receiver_spi(), 99);
        assert_eq!(m.nonce(), &[5; 24]);
        assert_eq!(m.encrypted_cookie(), &[6; 32]);
        assert_eq!(msg.receiver_spi(), Some(99));
        assert_eq!(parse_message(&buf[..n + 1]), Err(WireError::TooLong));
    }

    #[test]
    fn data_round_trip() {
        let mut buf = [0x55u8; 64];
        emit_data_header(&mut buf, 0xaabb_ccdd, 0x0102_0304_0506_0708).unwrap();
        let Message::Data(m) = parse_message(&buf[..40]).unwrap() else {
            panic!("wrong type")
        };
        assert_eq!(m.receiver_spi(), 0xaabb_ccdd);
        assert_eq!(m.counter(), 0x0102_0304_0506_0708);
        assert_eq!(m.header(), &buf[..16]);
        assert_eq!(m.ciphertext_and_tag(), &[0x55; 24]);
        assert_eq!(Message::Data(m).msg_type(), MSG_DATA);
    }

    /// Every strict prefix of a minimal message of each type is refused.
    #[test]
    fn every_truncation_rejected() {
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        let mut b = vec![0u8; 512];
        let n = emit_initiation(&mut b, 1, &noise(INITIATION_NOISE_MIN)).unwrap();
        bufs.push(b[..n].to_vec());
        let n = emit_response(&mut b, 1, 2, &noise(RESPONSE_NOISE_MIN)).unwrap();
        bufs.push(b[..n].to_vec());
        let n = emit_cookie_reply(&mut b, 1, &[1; 24], &[2; 32]).unwrap();
        bufs.push(b[..n].to_vec());
        emit_data_header(&mut b, 1, 2).unwrap();
        bufs.push(b[..DATA_MIN_LEN].to_vec());
        for full in &bufs {
            assert!(parse_message(full).is_ok());
            for cut in 0..full.len() {
                assert_eq!(
                    parse_message(&full[..cut]),
                    Err(WireError::Truncated),
                    "{cut}"
                );
            }
        }
    }

    #[test]
    fn reserved_and_type_checked() {
        let mut b = [0u8; 64];
        emit_data_header(&mut b, 1, 2).unwrap();
        for i in 1..4 {
            let mut t = b;
            t[i] = 0x80;
            assert_eq!(parse_message(&t), Err(WireError::ReservedNonZero));
        }
        for ty in [0u8, 5, 0x84, 255] {
            let mut t = b;
            t[0] = ty;
            assert_eq!(parse_message(&t), Err(WireError::BadType(ty)));
        }
    }

    fn message_like() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..1200),
            (0u8..6, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(t, mut v)| {
                v.splice(0..v.len().min(4), [t, 0, 0, 0]);
                v
            }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_round_trip(buf in message_like()) {
            if let Ok(msg) = parse_message(&buf) {
                let mut out = vec![0u8; buf.len() + 8];
                let n = msg.emit(&mut out).unwrap();
                prop_assert_eq!(&out[..n], &buf[..]);
                prop_assert_eq!(parse_message(&out[..n]).unwrap(), msg);
            }
        }
    }
}
