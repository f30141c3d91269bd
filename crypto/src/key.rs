//! Key types: the 32-byte symmetric secret, the X25519 static key pair and
//! the pre-shared key. Secrets wipe themselves on drop, cannot be cloned and
//! print `<redacted>`; public keys print as base64.
//!
//! This module does no key agreement (see `noise`) and no file I/O.

use core::fmt;
use core::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of every key in this module, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key in standard, padded base64.
pub const KEY_BASE64_LEN: usize = 44;

const REDACTED: &str = "<redacted>";

/// A key could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not standard padded base64 of exactly 32 bytes (44 characters).
    #[error("key is not base64 of 32 bytes (expected 44 characters of standard base64)")]
    InvalidBase64,
}

/// Decodes standard base64 of exactly 32 bytes, ignoring surrounding ASCII
/// whitespace (key files end with a newline). The intermediate buffer is wiped.
fn decode_key(s: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let s = s.trim_ascii();
    if s.len() != KEY_BASE64_LEN {
        return Err(KeyError::InvalidBase64);
    }
    // 44 base64 characters decode to at most 33 bytes before padding is applied.
    let mut buf = Zeroizing::new([0u8; KEY_LEN + 1]);
    let n = B64
        .decode_slice(s, &mut buf[..])
        .map_err(|_| KeyError::InvalidBase64)?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    match buf.get(..n) {
        Some(bytes) if n == KEY_LEN => out.copy_from_slice(bytes),
        _ => return Err(KeyError::InvalidBase64),
    }
    Ok(out)
}

/// A 32-byte symmetric secret (e.g. one half of the Noise split).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey([u8; KEY_LEN]);

impl SymmetricKey {
    /// Wraps `bytes`; the caller should wipe its own copy.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SymmetricKey(bytes)
    }

    /// The raw secret. Dangerous: the caller must not copy it anywhere that
    /// outlives this key or is not wiped.
    pub fn dangerous_as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// A node's static X25519 private key.
pub struct PrivateKey(x25519_dalek::StaticSecret);

// `StaticSecret` zeroizes itself on drop (x25519-dalek's `zeroize` feature).
impl ZeroizeOnDrop for PrivateKey {}

impl PrivateKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        PrivateKey(x25519_dalek::StaticSecret::random_from_rng(
            rand::rngs::OsRng,
        ))
    }

    /// Wraps `bytes` (clamping happens at use, as X25519 specifies).
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = PrivateKey(x25519_dalek::StaticSecret::from(bytes));
        bytes.zeroize();
        key
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// Standard padded base64 (44 characters), for key files. The string is
    /// wiped when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0.as_bytes()))
    }

    /// Parses [`PrivateKey::to_base64`]'s format; surrounding whitespace is ignored.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let bytes = decode_key(s)?;
        Ok(PrivateKey(x25519_dalek::StaticSecret::from(*bytes)))
    }

    /// The raw secret, for the Noise library. Dangerous: do not copy it.
    pub fn dangerous_as_bytes(&self) -> &[u8; KEY_LEN] {
        self.0.as_bytes()
    }
}

/// A node's static X25519 public key; peers are named by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps `bytes`.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// The raw key.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The first 8 base64 characters, to name a peer in logs.
    pub fn fingerprint(&self) -> String {
        let mut s = B64.encode(self.0);
        s.truncate(8);
        s
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s).map(|b| PublicKey(*b))
    }
}

/// A 32-byte pre-shared key mixed into the handshake (Noise `psk2`).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Psk([u8; KEY_LEN]);

impl Psk {
    /// Wraps `bytes`; the caller should wipe its own copy.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Psk(bytes)
    }

    /// Parses standard padded base64 of 32 bytes; surrounding whitespace is ignored.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_key(s).map(|b| Psk(*b))
    }

    /// The raw secret, for the Noise library. Dangerous: do not copy it.
    pub fn dangerous_as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

macro_rules! redacted_fmt {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }
    )*};
}
redacted_fmt!(SymmetricKey, PrivateKey, Psk);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_redacted() {
        let bytes = [0xabu8; 32];
        let hex_like = "ab";
        let b64 = B64.encode(bytes);
        let sym = SymmetricKey::from_bytes(bytes);
        let private = PrivateKey::from_bytes(bytes);
        let psk = Psk::from_bytes(bytes);
        for s in [
            format!("{sym:?}"),
            format!("{sym}"),
            format!("{sym:#?}"),
            format!("{private:?}"),
            format!("{private}"),
            format!("{psk:?}"),
            format!("{psk}"),
        ] {
            assert_eq!(s, "<redacted>");
            assert!(!s.contains(hex_like) && !s.contains(&b64));
        }
    }

    #[test]
    fn public_key_base64_round_trip() {
        let private = PrivateKey::generate();
        let public = private.public_key();
        let text = public.to_string();
        assert_eq!(text.len(), KEY_BASE64_LEN);
        assert_eq!(text.parse::<PublicKey>(), Ok(public));
        assert_eq!(format!("{public:?}"), format!("PublicKey({text})"));
        assert_eq!(public.fingerprint(), text[..8]);
        assert_eq!(PublicKey::from_bytes(*public.as_bytes()), public);
    }

    #[test]
    fn private_key_base64_round_trip_with_whitespace() {
        let private = PrivateKey::generate();
        let text = private.to_base64();
        assert_eq!(text.len(), KEY_BASE64_LEN);
        let again = PrivateKey::from_base64(&format!("  {}\n", *text)).unwrap();
        assert_eq!(again.dangerous_as_bytes(), private.dangerous_as_bytes());
        assert_eq!(again.public_key(), private.public_key());
    }

    #[test]
    fn x25519_public_key_matches_rfc7748_vector() {
        // RFC 7748 §6.1, Alice.
        let sk = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let pk = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(PrivateKey::from_bytes(sk).public_key().as_bytes(), &pk);
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key()
        );
    }

    #[test]
    fn bad_base64_is_refused() {
        let good = B64.encode([7u8; 32]);
        assert!(good.parse::<PublicKey>().is_ok());
        assert!(Psk::from_base64(&good).is_ok());
        let too_short = B64.encode([7u8; 31]);
        let too_long = B64.encode([7u8; 33]);
        let bad_char = format!("!{}", &good[1..]);
        // 44 characters without padding decode to 33 bytes.
        let no_pad = format!("{}A", &good[..43]);
        for bad in [
            "",
            "   ",
            too_short.as_str(),
            too_long.as_str(),
            bad_char.as_str(),
            no_pad.as_str(),
        ] {
            assert_eq!(
                bad.parse::<PublicKey>(),
                Err(KeyError::InvalidBase64),
                "{bad:?}"
            );
            assert!(PrivateKey::from_base64(bad).is_err(), "{bad:?}");
            assert!(Psk::from_base64(bad).is_err(), "{bad:?}");
        }
        assert!(KeyError::InvalidBase64.to_string().contains("base64"));
    }

    #[test]
    fn psk_and_symmetric_key_keep_their_bytes() {
        assert_eq!(Psk::from_bytes([3; 32]).dangerous_as_bytes(), &[3; 32]);
        assert_eq!(
            SymmetricKey::from_bytes([4; 32]).dangerous_as_bytes(),
            &[4; 32]
        );
        let b64 = B64.encode([5u8; 32]);
        assert_eq!(
            Psk::from_base64(&b64).unwrap().dangerous_as_bytes(),
            &[5; 32]
        );
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
