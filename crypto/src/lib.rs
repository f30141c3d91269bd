//! vxsec's cryptography: AEAD suites, zeroizing key types, HKDF key
//! derivation, the anti-replay window, the Noise IKpsk2 handshake wrapper
//! (X25519 from aws-lc-rs) and the cookie MACs.
//!
//! This crate does no I/O, reads no clock and contains no `unsafe`; it
//! seals and opens caller buffers (the batch buffer is `vxsec::io::Arena`).
#![forbid(unsafe_code)]

pub mod cookie;
pub mod kdf;
pub mod key;
pub mod noise;
pub mod replay;
pub mod sa;
pub mod suite;
pub mod x25519;
