//! WireGuard-style handshake DoS defences: mac1 (keyed by the responder's
//! public key, proves the sender knows it), cookies (keyed BLAKE2s over the
//! source IP and port under a rotating secret), cookie replies sealed with
//! XChaCha20-Poly1305, and mac2 (keyed by the cookie).
//!
//! It does not decide when the responder is under load, when to rotate the
//! secret (the caller supplies fresh random bytes), or frame messages.

use core::fmt;
use core::net::SocketAddr;

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::key::PublicKey;

/// MAC length (mac1, mac2, cookie).
pub const MAC_LEN: usize = 16;
/// XChaCha20-Poly1305 nonce length.
pub const COOKIE_NONCE_LEN: usize = 24;
/// Encrypted cookie length: cookie ‖ tag.
pub const ENCRYPTED_COOKIE_LEN: usize = MAC_LEN + 16;

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// Cookie-related failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// The cookie reply did not authenticate.
    #[error("cookie reply failed authentication")]
    Auth,
}

fn hash_label(label: &[u8], key: &PublicKey) -> [u8; 32] {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, label);
    Digest::update(&mut h, key.as_bytes());
    h.finalize().into()
}

/// Keyed BLAKE2s-128 of `parts` (concatenated) under `key` (16 or 32 bytes).
fn keyed_mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    // Blake2sMac accepts keys of 1..=32 bytes; both callers pass 16 or 32.
    let mut mac = match <Blake2sMac<U16> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0u8; MAC_LEN],
    };
    for p in parts {
        Update::update(&mut mac, p);
    }
    mac.finalize_fixed().into()
}

/// Constant-time MAC comparison.
pub fn mac_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.ct_eq(b).into()
}

/// The mac1 key for messages sent *to* the owner of `receiver`:
/// BLAKE2s-256("mac1----" ‖ receiver public key). Public knowledge, not a secret.
#[derive(Clone, Copy)]
pub struct Mac1Key([u8; 32]);

impl fmt::Debug for Mac1Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mac1Key")
    }
}

impl Mac1Key {
    /// Derives the key from the receiver's static public key.
    pub fn new(receiver: &PublicKey) -> Self {
        Mac1Key(hash_label(LABEL_MAC1, receiver))
    }
    /// mac1 over `mac1_input` (all bytes of the message before mac1).
    pub fn compute(&self, mac1_input: &[u8]) -> [u8; MAC_LEN] {
        keyed_mac(&self.0, &[mac1_input])
    }
    /// Constant-time check of a received mac1.
    pub fn verify(&self, mac1_input: &[u8], mac1: &[u8; MAC_LEN]) -> bool {
        mac_eq(&self.compute(mac1_input), mac1)
    }
}

/// A cookie received in a cookie reply; keys mac2. Secret-ish: zeroized.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Cookie([u8; MAC_LEN]);

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<redacted>)")
    }
}

impl Cookie {
    /// mac2 over `mac2_input` (all bytes before mac2, including mac1).
    pub fn mac2(&self, mac2_input: &[u8]) -> [u8; MAC_LEN] {
        keyed_mac(&self.0, &[mac2_input])
    }
}

fn xchacha(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

/// Encode a socket address as the cookie's input (IP bytes ‖ port BE).
fn addr_bytes(addr: &SocketAddr, out: &mut [u8; 18]) -> usize {
    match addr {
        SocketAddr::V4(a) => {
            out[..4].copy_from_slice(&a.ip().octets());
            out[4..6].copy_from_slice(&a.port().to_be_bytes());
            6
        }
        SocketAddr::V6(a) => {
            out[..16].copy_from_slice(&a.ip().octets());
            out[16..18].copy_from_slice(&a.port().to_be_bytes());
            18
        }
    }
}

/// The responder's side: checks mac1/mac2 and makes cookie replies.
#[derive(ZeroizeOnDrop)]
pub struct CookieChecker {
    #[zeroize(skip)]
    mac1: Mac1Key,
    encryption_key: [u8; 32],
    secret: [u8; 32],
    /// The secret before the last rotation: a cookie handed out just before
    /// a rotation stays valid for its whole usable life.
    previous_secret: Option<[u8; 32]>,
}

impl fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieChecker(<redacted>)")
    }
}

impl CookieChecker {
    /// For the responder owning `local`; `secret` is fresh random bytes.
    pub fn new(local: &PublicKey, secret: [u8; 32]) -> Self {
        CookieChecker {
            mac1: Mac1Key::new(local),
            encryption_key: hash_label(LABEL_COOKIE, local),
            secret,
            previous_secret: None,
        }
    }

    /// Replaces the cookie secret (call every two minutes with fresh random
    /// bytes); the old one keeps validating mac2 until the next rotation.
    pub fn rotate_secret(&mut self, mut secret: [u8; 32]) {
        if let Some(mut old) = self.previous_secret.replace(self.secret) {
            old.zeroize();
        }
        self.secret = secret;
        secret.zeroize();
    }

    /// mac1 check (constant time); do this before any DH.
    pub fn verify_mac1(&self, mac1_input: &[u8], mac1: &[u8; MAC_LEN]) -> bool {
        self.mac1.verify(mac1_input, mac1)
    }

    fn cookie_under(secret: &[u8; 32], src: &SocketAddr) -> Cookie {
        let mut a = [0u8; 18];
        let n = addr_bytes(src, &mut a);
        Cookie(keyed_mac(secret, &[&a[..n]]))
    }

    fn cookie_for(&self, src: &SocketAddr) -> Cookie {
        Self::cookie_under(&self.secret, src)
    }

    /// mac2 check for a message from `src` (constant time per secret),
    /// under the current or the previous secret.
    pub fn verify_mac2(&self, src: &SocketAddr, mac2_input: &[u8], mac2: &[u8; MAC_LEN]) -> bool {
        let current = mac_eq(&self.cookie_for(src).mac2(mac2_input), mac2);
        let previous = self
            .previous_secret
            .as_ref()
            .is_some_and(|s| mac_eq(&Self::cookie_under(s, src).mac2(mac2_input), mac2));
        current | previous
    }

    /// Seals the cookie for `src` under `nonce` (24 fresh random bytes),
    /// binding it to the `mac1` of the message being answered.
    pub fn seal_cookie(
        &self,
        src: &SocketAddr,
        mac1: &[u8; MAC_LEN],
        nonce: &[u8; COOKIE_NONCE_LEN],
    ) -> [u8; ENCRYPTED_COOKIE_LEN] {
        let cookie = self.cookie_for(src);
        let mut out = [0u8; ENCRYPTED_COOKIE_LEN];
        let sealed = xchacha(&self.encryption_key).encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: &cookie.0,
                aad: mac1,
            },
        );
        if let Ok(mut ct) = sealed {
            if ct.len() == ENCRYPTED_COOKIE_LEN {
                out.copy_from_slice(&ct);
            }
            ct.zeroize();
        }
        out
    }
}

/// Opens a cookie reply from the owner of `responder`, sent in answer to a
/// message of ours whose mac1 was `our_mac1`.
pub fn open_cookie_reply(
    responder: &PublicKey,
    our_mac1: &[u8; MAC_LEN],
    nonce: &[u8; COOKIE_NONCE_LEN],
    encrypted: &[u8; ENCRYPTED_COOKIE_LEN],
) -> Result<Cookie, CookieError> {
    let mut key = hash_label(LABEL_COOKIE, responder);
    let opened = xchacha(&key).decrypt(
        XNonce::from_slice(nonce),
        Payload {
            msg: encrypted,
            aad: our_mac1,
        },
    );
    key.zeroize();
    let mut pt = opened.map_err(|_| CookieError::Auth)?;
    let mut c = [0u8; MAC_LEN];
    let ok = pt.len() == MAC_LEN;
    if ok {
        c.copy_from_slice(&pt);
    }
    pt.zeroize();
    if ok {
        Ok(Cookie(c))
    } else {
        Err(CookieError::Auth)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::key::PrivateKey;

    fn key() -> PublicKey {
        PrivateKey::generate().public_key()
    }

    #[test]
    fn mac1_roundtrip_and_bitflips() {
        let k = key();
        let m = Mac1Key::new(&k);
        let msg = b"some initiation bytes before mac1";
        let tag = m.compute(msg);
        assert!(m.verify(msg, &tag));
        assert!(!Mac1Key::new(&key()).verify(msg, &tag));
        for i in 0..MAC_LEN * 8 {
            let mut t = tag;
            t[i / 8] ^= 1 << (i % 8);
            assert!(!m.verify(msg, &t));
        }
    }

    #[test]
    fn cookie_reply_roundtrip_binds_addr_port_and_mac1() {
        let k = key();
        let checker = CookieChecker::new(&k, [3; 32]);
        let src: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let mac1 = [9u8; MAC_LEN];
        let nonce = [4u8; COOKIE_NONCE_LEN];
        let enc = checker.seal_cookie(&src, &mac1, &nonce);
        let cookie = open_cookie_reply(&k, &mac1, &nonce, &enc).unwrap();
        assert!(open_cookie_reply(&k, &[8; MAC_LEN], &nonce, &enc).is_err());
        assert!(open_cookie_reply(&key(), &mac1, &nonce, &enc).is_err());
        let msg = b"initiation up to mac2";
        let mac2 = cookie.mac2(msg);
        assert!(checker.verify_mac2(&src, msg, &mac2));
        let other_port: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let other_ip: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        assert!(!checker.verify_mac2(&other_port, msg, &mac2));
        assert!(!checker.verify_mac2(&other_ip, msg, &mac2));
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        assert!(!checker.verify_mac2(&v6, msg, &mac2));
    }

    #[test]
    fn rotating_secret_invalidates_cookies() {
        let k = key();
        let mut checker = CookieChecker::new(&k, [3; 32]);
        let src: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let enc = checker.seal_cookie(&src, &[1; 16], &[2; 24]);
        let cookie = open_cookie_reply(&k, &[1; 16], &[2; 24], &enc).unwrap();
        let mac2 = cookie.mac2(b"m");
        assert!(checker.verify_mac2(&src, b"m", &mac2));
        checker.rotate_secret([5; 32]);
        assert!(
            checker.verify_mac2(&src, b"m", &mac2),
            "previous secret still valid"
        );
        checker.rotate_secret([6; 32]);
        assert!(!checker.verify_mac2(&src, b"m", &mac2));
    }

    #[test]
    fn debug_is_redacted() {
        let checker = CookieChecker::new(&key(), [3; 32]);
        assert!(format!("{checker:?}").contains("<redacted>"));
        let c = Cookie([1; 16]);
        assert!(format!("{c:?}").contains("<redacted>"));
    }
}
