//! Derives per-direction data keys (AEAD key + 4-byte nonce salt) from a
//! handshake secret with HKDF-SHA256, labelled by suite and direction.
//!
//! This module does not run the handshake (see `noise`) or use the keys
//! (see `sa`).

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::key::SymmetricKey;
use crate::suite::Suite;

/// HKDF salt for data keys.
pub const HKDF_SALT: &[u8] = b"vxsec v1 data";
/// Length of the AEAD key, in bytes.
pub const AEAD_KEY_LEN: usize = 32;
/// Length of the nonce salt, in bytes (nonce = salt ‖ 64-bit counter).
pub const NONCE_SALT_LEN: usize = 4;
const OKM_LEN: usize = AEAD_KEY_LEN + NONCE_SALT_LEN;

/// Which way data flows under a key. The Noise split gives `(k1, k2)`:
/// `k1` is the initiator→responder secret, `k2` the responder→initiator one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sealed by the handshake initiator, opened by the responder.
    InitiatorToResponder,
    /// Sealed by the handshake responder, opened by the initiator.
    ResponderToInitiator,
}

impl Direction {
    /// The other direction.
    pub const fn reverse(self) -> Direction {
        match self {
            Direction::InitiatorToResponder => Direction::ResponderToInitiator,
            Direction::ResponderToInitiator => Direction::InitiatorToResponder,
        }
    }

    const fn label(self) -> &'static [u8] {
        match self {
            Direction::InitiatorToResponder => b" i2r",
            Direction::ResponderToInitiator => b" r2i",
        }
    }
}

/// The secret material of one direction of one SA: a 32-byte AEAD key and a
/// 4-byte nonce salt. Consumed by `SealingKey::new` / `OpeningKey::new`;
/// wiped on drop, not `Clone`, prints `<redacted>`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DirectionKeys {
    key: [u8; AEAD_KEY_LEN],
    salt: [u8; NONCE_SALT_LEN],
}

impl DirectionKeys {
    pub(crate) fn key(&self) -> &[u8; AEAD_KEY_LEN] {
        &self.key
    }

    pub(crate) fn salt(&self) -> [u8; NONCE_SALT_LEN] {
        self.salt
    }
}

impl core::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl core::fmt::Display for DirectionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

struct OkmLen;

impl ring::hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        OKM_LEN
    }
}

/// HKDF-SHA256 with salt [`HKDF_SALT`], IKM = `secret`, info =
/// `"vxsec v1 " ‖ suite.name() ‖ (" i2r" | " r2i")`; the 36 output bytes are
/// key ‖ salt.
pub fn derive_data_keys(secret: &SymmetricKey, suite: Suite, dir: Direction) -> DirectionKeys {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, HKDF_SALT)
        .extract(secret.dangerous_as_bytes());
    let info: [&[u8]; 3] = [b"vxsec v1 ", suite.name().as_bytes(), dir.label()];
    let mut okm = zeroize::Zeroizing::new([0u8; OKM_LEN]);
    // HKDF-SHA256 can expand up to 255 * 32 bytes; 36 is a constant far below,
    // so neither call can fail.
    #[allow(clippy::expect_used)]
    prk.expand(&info, OkmLen)
        .and_then(|o| o.fill(&mut okm[..]))
        .expect("36 bytes is within HKDF-SHA256's output limit");
    let mut keys = DirectionKeys {
        key: [0; AEAD_KEY_LEN],
        salt: [0; NONCE_SALT_LEN],
    };
    let (key, salt) = okm.split_at(AEAD_KEY_LEN);
    keys.key.copy_from_slice(key);
    keys.salt.copy_from_slice(salt);
    keys
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ring::hmac;

    /// RFC 5869 HKDF written out with HMAC-SHA256, independent of `ring::hkdf`.
    fn manual_hkdf(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
        let prk_key = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
        let mut out = Vec::new();
        let mut prev: Vec<u8> = Vec::new();
        let mut i = 1u8;
        while out.len() < len {
            let mut msg = prev.clone();
            msg.extend_from_slice(info);
            msg.push(i);
            prev = hmac::sign(&prk_key, &msg).as_ref().to_vec();
            out.extend_from_slice(&prev);
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn okm(keys: &DirectionKeys) -> Vec<u8> {
        let mut v = keys.key().to_vec();
        v.extend_from_slice(&keys.salt());
        v
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn info(suite: Suite, dir: Direction) -> Vec<u8> {
        let mut v = b"vxsec v1 ".to_vec();
        v.extend_from_slice(suite.name().as_bytes());
        v.extend_from_slice(dir.label());
        v
    }

    const DIRS: [Direction; 2] = [
        Direction::InitiatorToResponder,
        Direction::ResponderToInitiator,
    ];

    #[test]
    fn manual_hkdf_matches_rfc5869_case_1() {
        // RFC 5869 A.1: checks the independent reference itself.
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        assert_eq!(
            hex(&manual_hkdf(&salt, &ikm, &info, 42)),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn derive_matches_independent_hkdf() {
        for seed in [0u8, 1, 0x5a, 0xff] {
            let ikm = [seed; 32];
            let secret = SymmetricKey::from_bytes(ikm);
            for suite in Suite::ALL {
                for dir in DIRS {
                    let got = okm(&derive_data_keys(&secret, suite, dir));
                    let want = manual_hkdf(HKDF_SALT, &ikm, &info(suite, dir), OKM_LEN);
                    assert_eq!(got, want, "{suite} {dir:?} seed {seed}");
                }
            }
        }
    }

    /// Known answers, computed once with Python's `hmac`/`hashlib` (RFC 5869
    /// by hand) for IKM = 00 01 02 … 1f.
    #[test]
    fn known_answer_vectors() {
        let ikm: [u8; 32] = core::array::from_fn(|i| i as u8);
        let secret = SymmetricKey::from_bytes(ikm);
        let cases = [
            (
                Suite::Aes256Gcm,
                Direction::InitiatorToResponder,
                KAT_AES_I2R,
            ),
            (
                Suite::Aes256Gcm,
                Direction::ResponderToInitiator,
                KAT_AES_R2I,
            ),
            (
                Suite::ChaCha20Poly1305,
                Direction::InitiatorToResponder,
                KAT_CHACHA_I2R,
            ),
            (
                Suite::ChaCha20Poly1305,
                Direction::ResponderToInitiator,
                KAT_CHACHA_R2I,
            ),
        ];
        for (suite, dir, want) in cases {
            assert_eq!(
                hex(&okm(&derive_data_keys(&secret, suite, dir))),
                want,
                "{suite} {dir:?}"
            );
        }
    }

    const KAT_AES_I2R: &str =
        "7666147e2c2314723e0440a5e6e5a3d9c65247994f69ca31f5a2329ef2c503fc7321de62";
    const KAT_AES_R2I: &str =
        "9f5e48ae0a573b46143d9a3262472ff5d3356a454bcb83eb0cbe0c09cffc5d011b1098f4";
    const KAT_CHACHA_I2R: &str =
        "d77a136fe4414f5c21b86adf5c005dd1997fb2dec0cfedc24737ebfce561b62596643c7e";
    const KAT_CHACHA_R2I: &str =
        "d0e61b6b1226208ff876ca95ee1ceb23ffad14d82b2139c84ceb1be91a82973fd03e7ae6";

    #[test]
    fn labels_separate_suites_and_directions() {
        let secret = SymmetricKey::from_bytes([9; 32]);
        let mut all = Vec::new();
        for suite in Suite::ALL {
            for dir in DIRS {
                all.push(okm(&derive_data_keys(&secret, suite, dir)));
            }
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            Direction::InitiatorToResponder.reverse(),
            Direction::ResponderToInitiator
        );
        assert_eq!(
            Direction::ResponderToInitiator.reverse(),
            Direction::InitiatorToResponder
        );
    }

    #[test]
    fn direction_keys_print_redacted() {
        let k = derive_data_keys(
            &SymmetricKey::from_bytes([1; 32]),
            Suite::Aes256Gcm,
            DIRS[0],
        );
        assert_eq!(format!("{k:?}"), "<redacted>");
        assert_eq!(format!("{k}"), "<redacted>");
    }
}
