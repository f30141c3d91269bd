//! The fleet authority: an Ed25519 key pair (ring) that signs node
//! certificates, and the verifier agents run with only its public key.
//! No file I/O here (see [`super::files`]); the clock comes in as an argument.

use std::fmt;

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroizing;

use super::cert::{CertBody, CertError, SignedCert, SIG_LEN};

/// Why a record is not accepted as a certificate of this fleet. Each
/// variant is a counter (`reason()` names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("malformed certificate: {0}")]
    Malformed(CertError),
    #[error("issued by another authority")]
    WrongAuthority,
    #[error("signature does not verify")]
    BadSignature,
    #[error("certificate for another network")]
    WrongNetwork,
    #[error("certificate not valid yet")]
    NotYetValid,
    #[error("certificate expired")]
    Expired,
}

impl Reject {
    /// The counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Malformed(_) => "malformed",
            Reject::WrongAuthority => "wrong_authority",
            Reject::BadSignature => "bad_signature",
            Reject::WrongNetwork => "wrong_network",
            Reject::NotYetValid => "not_yet_valid",
            Reject::Expired => "expired",
        }
    }
}

/// An authority public key (32 bytes, base64 in configs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthorityKey([u8; 32]);

impl AuthorityKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// First 8 bytes of SHA-256 of the key: the issuer id in certificates.
    pub fn id(&self) -> [u8; 8] {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.as_ref()[..8]);
        id
    }

    /// Verifies a certificate for `network_id` at `now_unix`.
    pub fn verify(
        &self,
        bytes: &[u8],
        network_id: &str,
        now_unix: u64,
    ) -> Result<SignedCert, Reject> {
        let (cert, signed) = SignedCert::parse(bytes).map_err(Reject::Malformed)?;
        if cert.body.issuer != self.id() {
            return Err(Reject::WrongAuthority);
        }
        UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(signed, &cert.signature)
            .map_err(|_| Reject::BadSignature)?;
        if cert.body.network_id != network_id {
            return Err(Reject::WrongNetwork);
        }
        if now_unix < cert.body.not_before_unix {
            return Err(Reject::NotYetValid);
        }
        if now_unix >= cert.body.not_after_unix {
            return Err(Reject::Expired);
        }
        Ok(cert)
    }
}

impl fmt::Display for AuthorityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorityKey({self})")
    }
}

impl std::str::FromStr for AuthorityKey {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        use base64::Engine as _;
        let v = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| ())?;
        Ok(Self(v.try_into().map_err(|_| ())?))
    }
}

/// The authority's signing key. Holds the PKCS#8 document (wiped on drop);
/// no `Clone`, no `Debug` of the secret.
pub struct Authority {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Authority({}, <redacted>)", self.public_key())
    }
}

/// The authority key could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("not an Ed25519 authority key")]
pub struct BadAuthorityKey;

impl Authority {
    /// A fresh key pair from the system RNG.
    pub fn generate() -> Result<Self, BadAuthorityKey> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| BadAuthorityKey)?;
        Self::from_pkcs8(Zeroizing::new(doc.as_ref().to_vec()))
    }

    pub fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, BadAuthorityKey> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| BadAuthorityKey)?;
        Ok(Self { pkcs8, pair })
    }

    /// The PKCS#8 document, for writing the key file.
    pub fn dangerous_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public_key(&self) -> AuthorityKey {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.pair.public_key().as_ref());
        AuthorityKey(b)
    }

    /// Signs `body` (its issuer is set to this authority) and returns the
    /// encoded certificate.
    pub fn sign(&self, mut body: CertBody) -> Result<Vec<u8>, CertError> {
        body.issuer = self.public_key().id();
        let mut bytes = body.encode()?;
        let sig = self.pair.sign(&bytes);
        debug_assert_eq!(sig.as_ref().len(), SIG_LEN);
        bytes.extend_from_slice(sig.as_ref());
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::cert::tests::sample;

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn signed_certificate_verifies_and_every_bit_flip_is_refused() {
        let a = Authority::generate().expect("key");
        let bytes = a.sign(sample()).expect("signs");
        let cert = a.public_key().verify(&bytes, "prod", NOW).expect("valid");
        assert_eq!(cert.body.name, "node-1");
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = bytes.clone();
                t[i] ^= bit;
                assert!(
                    a.public_key().verify(&t, "prod", NOW).is_err(),
                    "flip at byte {i} accepted"
                );
            }
        }
    }

    #[test]
    fn reasons_are_told_apart() {
        let a = Authority::generate().expect("key");
        let other = Authority::generate().expect("key");
        let pk = a.public_key();
        let bytes = a.sign(sample()).expect("signs");
        assert_eq!(pk.verify(&bytes, "dev", NOW), Err(Reject::WrongNetwork));
        assert_eq!(
            pk.verify(&bytes, "prod", 1_800_000_000),
            Err(Reject::Expired)
        );
        assert_eq!(pk.verify(&bytes, "prod", 1), Err(Reject::NotYetValid));
        let forged = other.sign(sample()).expect("signs");
        assert_eq!(pk.verify(&forged, "prod", NOW), Err(Reject::WrongAuthority));
        // Another key claiming our issuer id: the signature fails.
        let mut body = sample();
        body.issuer = pk.id();
        let mut f = body.encode().expect("encodes");
        f.extend_from_slice(&[0u8; SIG_LEN]);
        assert_eq!(pk.verify(&f, "prod", NOW), Err(Reject::BadSignature));
        assert_eq!(
            pk.verify(b"hello", "prod", NOW).map_err(|r| r.reason()),
            Err("malformed")
        );
    }

    #[test]
    fn authority_debug_is_redacted_and_keys_round_trip() {
        let a = Authority::generate().expect("key");
        let d = format!("{a:?}");
        assert!(d.contains("<redacted>"));
        let b = Authority::from_pkcs8(Zeroizing::new(a.dangerous_pkcs8().to_vec())).expect("ok");
        assert_eq!(a.public_key(), b.public_key());
        let text = a.public_key().to_string();
        assert_eq!(text.parse::<AuthorityKey>(), Ok(a.public_key()));
        assert!("AAAA".parse::<AuthorityKey>().is_err());
    }
}
