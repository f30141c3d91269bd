//! The data-plane AEAD suites (AES-256-GCM, ChaCha20-Poly1305 from `ring`),
//! their wire ids, names and per-SA usage limits.
//!
//! This module holds no keys and performs no encryption; see `sa` for that.

use core::fmt;
use core::str::FromStr;

/// An AEAD suite for data messages. Both use 256-bit keys, 96-bit nonces
/// (4-byte salt ‖ 64-bit counter) and 16-byte tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-256-GCM (`ring`), preferred on CPUs with AES and carry-less multiply.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (`ring`), preferred elsewhere.
    ChaCha20Poly1305,
}

/// Usage limits of one SA (one key in one direction).
///
/// `rekey_*` is the soft limit: sealing still works but reports
/// [`crate::sa::LimitStatus::RekeySoon`]. `reject_*` is the hard limit:
/// sealing is refused. Packets count seals (== the next counter); bytes count
/// plaintext bytes sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaLimits {
    /// Start a new handshake once this many packets were sealed.
    pub rekey_after_packets: u64,
    /// Refuse to seal once this many packets were sealed.
    pub reject_after_packets: u64,
    /// Start a new handshake once this many plaintext bytes were sealed.
    pub rekey_after_bytes: u64,
    /// Refuse any seal that would take the plaintext byte total past this.
    pub reject_after_bytes: u64,
}

/// AES-256-GCM byte limit (hard): 2^39 plaintext bytes per key.
///
/// DESIGN §5's packet limit (2^29) assumes ~1500-byte packets. The AEAD
/// limits analysis (draft-irtf-cfrg-aead-limits, §5.1) bounds the
/// confidentiality advantage of AES-GCM by `(σ + q + 1)² / 2^129`, where σ is
/// the total number of 16-byte plaintext blocks and q the number of messages.
/// Keeping that below 2^-57 needs `σ + q + 1 ≤ 2^36`. With 9000-byte jumbo
/// frames, 2^29 packets are ~2^38 blocks, far past the bound. Rejecting after
/// 2^39 bytes gives σ ≤ 2^35 + q (one partial block per message), and with
/// q ≤ 2^29 packets `σ + q + 1 < 2^35 + 2^31 < 2^36`: the 2^-57 target holds
/// whatever the packet size. Rekeying at half leaves ample room for the
/// handshake to finish under load.
pub const AES_GCM_REJECT_AFTER_BYTES: u64 = 1 << 39;
/// AES-256-GCM byte limit (soft): half of [`AES_GCM_REJECT_AFTER_BYTES`].
pub const AES_GCM_REKEY_AFTER_BYTES: u64 = 1 << 38;

/// ChaCha20-Poly1305 byte limit (soft): 2^62 bytes.
///
/// ChaCha20-Poly1305's confidentiality bound does not depend on the amount of
/// data under one key in any reachable range (draft-irtf-cfrg-aead-limits
/// §5.2); the packet limit (nonce space) is what ends an SA. The byte limits
/// exist so that every suite has one and the counter arithmetic is uniform.
pub const CHACHA_REKEY_AFTER_BYTES: u64 = 1 << 62;
/// ChaCha20-Poly1305 byte limit (hard): `u64::MAX` (the byte counter saturates).
pub const CHACHA_REJECT_AFTER_BYTES: u64 = u64::MAX;

impl Suite {
    /// Every suite, in order of wire id.
    pub const ALL: [Suite; 2] = [Suite::Aes256Gcm, Suite::ChaCha20Poly1305];

    /// The suite's id in handshake payloads: 1 = AES-256-GCM, 2 = ChaCha20-Poly1305.
    pub const fn wire_id(self) -> u8 {
        match self {
            Suite::Aes256Gcm => 1,
            Suite::ChaCha20Poly1305 => 2,
        }
    }

    /// The suite with this wire id, if any.
    pub fn from_wire_id(id: u8) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.wire_id() == id)
    }

    /// The suite's name in configuration files and HKDF labels.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::Aes256Gcm => "aes-256-gcm",
            Suite::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// DESIGN §5 packet limits plus the byte limits documented on the
    /// `*_AFTER_BYTES` constants of this module.
    pub fn default_limits(self) -> SaLimits {
        match self {
            Suite::Aes256Gcm => SaLimits {
                rekey_after_packets: 1 << 28,
                reject_after_packets: 1 << 29,
                rekey_after_bytes: AES_GCM_REKEY_AFTER_BYTES,
                reject_after_bytes: AES_GCM_REJECT_AFTER_BYTES,
            },
            Suite::ChaCha20Poly1305 => SaLimits {
                rekey_after_packets: 1 << 60,
                reject_after_packets: u64::MAX - (1 << 16) + 1,
                rekey_after_bytes: CHACHA_REKEY_AFTER_BYTES,
                reject_after_bytes: CHACHA_REJECT_AFTER_BYTES,
            },
        }
    }

    /// AES-256-GCM if this CPU has AES and carry-less multiply instructions
    /// (constant-time and fast), else ChaCha20-Poly1305.
    pub fn preferred() -> Suite {
        if cpu_has_aes_clmul() {
            Suite::Aes256Gcm
        } else {
            Suite::ChaCha20Poly1305
        }
    }

    /// The `ring` algorithm implementing this suite.
    pub(crate) fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Suite::Aes256Gcm => &ring::aead::AES_256_GCM,
            Suite::ChaCha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
        }
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn cpu_has_aes_clmul() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn cpu_has_aes_clmul() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has_aes_clmul() -> bool {
    false
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A suite name that is not one of [`Suite::ALL`]'s names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown suite {0:?} (expected \"aes-256-gcm\" or \"chacha20-poly1305\")")]
pub struct UnknownSuite(pub String);

impl FromStr for Suite {
    type Err = UnknownSuite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::ALL
            .into_iter()
            .find(|suite| suite.name() == s)
            .ok_or_else(|| UnknownSuite(s.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wire_ids_round_trip_and_are_distinct() {
        assert_eq!(Suite::Aes256Gcm.wire_id(), 1);
        assert_eq!(Suite::ChaCha20Poly1305.wire_id(), 2);
        for s in Suite::ALL {
            assert_eq!(Suite::from_wire_id(s.wire_id()), Some(s));
        }
        for id in [0u8, 3, 4, 255] {
            assert_eq!(Suite::from_wire_id(id), None);
        }
    }

    #[test]
    fn names_parse_and_display() {
        assert_eq!(Suite::Aes256Gcm.to_string(), "aes-256-gcm");
        assert_eq!(Suite::ChaCha20Poly1305.to_string(), "chacha20-poly1305");
        for s in Suite::ALL {
            assert_eq!(s.name().parse::<Suite>(), Ok(s));
        }
        let err = "AES-256-GCM".parse::<Suite>().unwrap_err();
        assert_eq!(err, UnknownSuite("AES-256-GCM".to_owned()));
        assert!(err.to_string().contains("unknown suite"));
        assert!("".parse::<Suite>().is_err());
    }

    #[test]
    fn default_limits_follow_design() {
        let aes = Suite::Aes256Gcm.default_limits();
        assert_eq!(aes.rekey_after_packets, 268_435_456);
        assert_eq!(aes.reject_after_packets, 536_870_912);
        let chacha = Suite::ChaCha20Poly1305.default_limits();
        assert_eq!(chacha.rekey_after_packets, 1u64 << 60);
        assert_eq!(chacha.reject_after_packets, u64::MAX - 65_535);
        for s in Suite::ALL {
            let l = s.default_limits();
            assert!(l.rekey_after_packets < l.reject_after_packets, "{s}");
            assert!(l.rekey_after_bytes < l.reject_after_bytes, "{s}");
        }
    }

    #[test]
    fn aes_gcm_byte_limit_keeps_blocks_within_aead_limits_bound() {
        // σ + q + 1 ≤ 2^36 in the worst case: every packet adds one partial block.
        let l = Suite::Aes256Gcm.default_limits();
        let sigma = l.reject_after_bytes / 16 + l.reject_after_packets;
        assert!(sigma + l.reject_after_packets < 1 << 36);
    }

    #[test]
    fn preferred_is_a_known_suite() {
        assert!(Suite::ALL.contains(&Suite::preferred()));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            assert_eq!(Suite::preferred(), Suite::Aes256Gcm);
        }
    }
}
