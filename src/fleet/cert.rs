//! Node certificates: a compact, versioned, canonical binary encoding and
//! its strict parser. Signing and verification live in
//! [`super::authority`]; this module only turns bytes into a typed
//! [`SignedCert`] (or a typed error) and back, with no I/O and no clock.
//!
//! Layout v1 (integers big-endian), the signature covers every byte before it:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `VXC` + version `1` |
//! | 8 | issuer id: first 8 bytes of SHA-256(authority public key) |
//! | 1 + n | network id, 1..=64 bytes UTF-8 |
//! | 1 + n | node name, 0..=64 bytes of `[A-Za-z0-9._-]` |
//! | 32 | node X25519 public key |
//! | 1 + 4/16 | tunnel address: family 4 or 6, then the address |
//! | 8 + 8 | not before, not after (Unix seconds; not after > not before) |
//! | 2 + 4n | allowed VNIs, strictly ascending, each < 2^24; none = any |
//! | 1 + n × (1 + 4/16 + 2) | underlay endpoints (at most 4), port != 0 |
//! | 64 | Ed25519 signature |
//!
//! Parsing accepts exactly one encoding per certificate (no trailing bytes,
//! no unordered or duplicate VNIs), so `encode(parse(b)) == b`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vxsec_crypto::key::PublicKey;

/// Magic and version.
pub const MAGIC_V1: [u8; 4] = *b"VXC\x01";
/// Length of the Ed25519 signature at the end.
pub const SIG_LEN: usize = 64;
/// Longest network id and node name.
pub const MAX_NAME_LEN: usize = 64;
/// Most VNIs a certificate may list.
pub const MAX_VNIS: usize = 1024;
/// Most underlay endpoints a certificate may list.
pub const MAX_ENDPOINTS: usize = 4;
/// Upper bound of an encoded certificate.
pub const MAX_CERT_LEN: usize =
    4 + 8 + 2 * (1 + MAX_NAME_LEN) + 32 + 17 + 16 + 2 + 4 * MAX_VNIS + 1 + 19 * MAX_ENDPOINTS + 64;

/// Why bytes are not a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("truncated")]
    Truncated,
    #[error("not a vxsec node certificate (bad magic)")]
    BadMagic,
    #[error("unsupported certificate version {0}")]
    UnsupportedVersion(u8),
    #[error("longer than a certificate may be")]
    TooLong,
    #[error("trailing bytes after the signature")]
    Trailing,
    #[error("bad network id")]
    BadNetworkId,
    #[error("bad node name")]
    BadName,
    #[error("bad address family {0}")]
    BadFamily(u8),
    #[error("validity ends before it starts")]
    BadValidity,
    #[error("VNIs not strictly ascending below 2^24, or too many")]
    BadVnis,
    #[error("bad or too many endpoints")]
    BadEndpoints,
}

/// What the authority vouches for about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBody {
    /// First 8 bytes of SHA-256 of the authority's public key.
    pub issuer: [u8; 8],
    pub network_id: String,
    pub name: String,
    pub public_key: PublicKey,
    pub tunnel_address: IpAddr,
    pub not_before_unix: u64,
    pub not_after_unix: u64,
    /// Empty = any VNI.
    pub allowed_vnis: Vec<u32>,
    pub endpoints: Vec<SocketAddr>,
}

/// A body and the signature over its encoding (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCert {
    pub body: CertBody,
    pub signature: [u8; SIG_LEN],
}

/// Whether `s` may be a network id.
pub fn valid_network_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.chars().all(|c| c.is_ascii_graphic())
}

/// Whether `s` may be a node name.
pub fn valid_name(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

impl CertBody {
    /// Checks what the parser would refuse, so that a body that encodes
    /// also parses.
    pub fn check(&self) -> Result<(), CertError> {
        if !valid_network_id(&self.network_id) {
            return Err(CertError::BadNetworkId);
        }
        if !valid_name(&self.name) {
            return Err(CertError::BadName);
        }
        if self.not_after_unix <= self.not_before_unix {
            return Err(CertError::BadValidity);
        }
        let v = &self.allowed_vnis;
        if v.len() > MAX_VNIS
            || v.windows(2).any(|w| w[0] >= w[1])
            || v.iter().any(|&x| x >= 1 << 24)
        {
            return Err(CertError::BadVnis);
        }
        if self.endpoints.len() > MAX_ENDPOINTS || self.endpoints.iter().any(|e| e.port() == 0) {
            return Err(CertError::BadEndpoints);
        }
        Ok(())
    }

    /// The bytes the signature covers.
    pub fn encode(&self) -> Result<Vec<u8>, CertError> {
        self.check()?;
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&MAGIC_V1);
        b.extend_from_slice(&self.issuer);
        for s in [&self.network_id, &self.name] {
            b.push(u8::try_from(s.len()).map_err(|_| CertError::BadName)?);
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(self.public_key.as_bytes());
        put_ip(&mut b, self.tunnel_address);
        b.extend_from_slice(&self.not_before_unix.to_be_bytes());
        b.extend_from_slice(&self.not_after_unix.to_be_bytes());
        let n = u16::try_from(self.allowed_vnis.len()).map_err(|_| CertError::BadVnis)?;
        b.extend_from_slice(&n.to_be_bytes());
        for v in &self.allowed_vnis {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.push(u8::try_from(self.endpoints.len()).map_err(|_| CertError::BadEndpoints)?);
        for e in &self.endpoints {
            put_ip(&mut b, e.ip());
            b.extend_from_slice(&e.port().to_be_bytes());
        }
        Ok(b)
    }
}

impl SignedCert {
    /// The whole certificate: body then signature.
    pub fn encode(&self) -> Result<Vec<u8>, CertError> {
        let mut b = self.body.encode()?;
        b.extend_from_slice(&self.signature);
        Ok(b)
    }

    /// Parses a certificate; returns it with the signed bytes (a prefix of
    /// `bytes`), which the caller verifies.
    pub fn parse(bytes: &[u8]) -> Result<(SignedCert, &[u8]), CertError> {
        if bytes.len() > MAX_CERT_LEN {
            return Err(CertError::TooLong);
        }
        let mut r = Reader { b: bytes, pos: 0 };
        let magic: [u8; 4] = r.array()?;
        if magic[..3] != MAGIC_V1[..3] {
            return Err(CertError::BadMagic);
        }
        if magic[3] != MAGIC_V1[3] {
            return Err(CertError::UnsupportedVersion(magic[3]));
        }
        let issuer = r.array()?;
        let network_id = r.string().ok_or(CertError::BadNetworkId)??;
        let name = r.string().ok_or(CertError::BadName)??;
        let public_key = PublicKey::from_bytes(r.array()?);
        let tunnel_address = r.ip()?;
        let not_before_unix = u64::from_be_bytes(r.array()?);
        let not_after_unix = u64::from_be_bytes(r.array()?);
        let n_vnis = usize::from(u16::from_be_bytes(r.array()?));
        if n_vnis > MAX_VNIS {
            return Err(CertError::BadVnis);
        }
        let mut allowed_vnis = Vec::with_capacity(n_vnis);
        for _ in 0..n_vnis {
            allowed_vnis.push(u32::from_be_bytes(r.array()?));
        }
        let n_ep = usize::from(r.array::<1>()?[0]);
        if n_ep > MAX_ENDPOINTS {
            return Err(CertError::BadEndpoints);
        }
        let mut endpoints = Vec::with_capacity(n_ep);
        for _ in 0..n_ep {
            let ip = r.ip()?;
            endpoints.push(SocketAddr::new(ip, u16::from_be_bytes(r.array()?)));
        }
        let signed_len = r.pos;
        let signature = r.array()?;
        if r.pos != bytes.len() {
            return Err(CertError::Trailing);
        }
        let body = CertBody {
            issuer,
            network_id,
            name,
            public_key,
            tunnel_address,
            not_before_unix,
            not_after_unix,
            allowed_vnis,
            endpoints,
        };
        body.check()?;
        let signed = bytes.get(..signed_len).ok_or(CertError::Truncated)?;
        Ok((SignedCert { body, signature }, signed))
    }
}

fn put_ip(b: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            b.push(4);
            b.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b.push(6);
            b.extend_from_slice(&a.octets());
        }
    }
}

/// A cursor whose reads fail with `Truncated` instead of panicking.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CertError> {
        let end = self.pos.checked_add(n).ok_or(CertError::Truncated)?;
        let s = self.b.get(self.pos..end).ok_or(CertError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CertError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A length-prefixed UTF-8 string; `None` if it is not UTF-8.
    fn string(&mut self) -> Option<Result<String, CertError>> {
        let n = match self.array::<1>() {
            Ok([n]) => usize::from(n),
            Err(e) => return Some(Err(e)),
        };
        match self.take(n) {
            Ok(s) => std::str::from_utf8(s).ok().map(|s| Ok(s.to_string())),
            Err(e) => Some(Err(e)),
        }
    }

    fn ip(&mut self) -> Result<IpAddr, CertError> {
        match self.array::<1>()?[0] {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            f => Err(CertError::BadFamily(f)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> CertBody {
        CertBody {
            issuer: [7; 8],
            network_id: "prod".into(),
            name: "node-1".into(),
            public_key: PublicKey::from_bytes([9; 32]),
            tunnel_address: "10.200.0.5".parse().expect("ip"),
            not_before_unix: 1_700_000_000,
            not_after_unix: 1_800_000_000,
            allowed_vnis: vec![42, 4096],
            endpoints: vec![
                "192.0.2.5:51830".parse().expect("sa"),
                "[2001:db8::5]:51830".parse().expect("sa"),
            ],
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let c = SignedCert {
            body: sample(),
            signature: [3; SIG_LEN],
        };
        let bytes = c.encode().expect("encodes");
        let (back, signed) = SignedCert::parse(&bytes).expect("parses");
        assert_eq!(back, c);
        assert_eq!(signed, &bytes[..bytes.len() - SIG_LEN]);
        assert_eq!(back.encode().expect("encodes"), bytes);
        assert!(bytes.len() <= MAX_CERT_LEN);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = SignedCert {
            body: sample(),
            signature: [3; SIG_LEN],
        }
        .encode()
        .expect("encodes");
        for n in 0..bytes.len() {
            assert!(SignedCert::parse(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(SignedCert::parse(&long).unwrap_err(), CertError::Trailing);
        let mut v2 = bytes;
        v2[3] = 2;
        assert_eq!(
            SignedCert::parse(&v2).unwrap_err(),
            CertError::UnsupportedVersion(2)
        );
    }

    #[test]
    fn non_canonical_bodies_do_not_encode() {
        let mut b = sample();
        b.allowed_vnis = vec![42, 42];
        assert_eq!(b.encode().unwrap_err(), CertError::BadVnis);
        b.allowed_vnis = vec![1 << 24];
        assert_eq!(b.encode().unwrap_err(), CertError::BadVnis);
        let mut b = sample();
        b.not_after_unix = b.not_before_unix;
        assert_eq!(b.encode().unwrap_err(), CertError::BadValidity);
        let mut b = sample();
        b.name = "a b".into();
        assert_eq!(b.encode().unwrap_err(), CertError::BadName);
        let mut b = sample();
        b.network_id = String::new();
        assert_eq!(b.encode().unwrap_err(), CertError::BadNetworkId);
        let mut b = sample();
        b.endpoints = vec!["192.0.2.1:0".parse().expect("sa")];
        assert_eq!(b.encode().unwrap_err(), CertError::BadEndpoints);
    }

    #[test]
    fn unordered_vnis_on_the_wire_are_refused() {
        let mut b = sample();
        b.allowed_vnis = vec![42, 43];
        let mut bytes = SignedCert {
            body: b,
            signature: [0; SIG_LEN],
        }
        .encode()
        .expect("encodes");
        // Swap the two VNIs in place: same length, not canonical.
        let at = bytes
            .windows(4)
            .position(|w| w == 42u32.to_be_bytes())
            .expect("vni present");
        bytes[at..at + 4].copy_from_slice(&43u32.to_be_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&42u32.to_be_bytes());
        assert_eq!(SignedCert::parse(&bytes).unwrap_err(), CertError::BadVnis);
    }
}
