//! `[[peer]]`: one static peer (key, endpoint, tunnel address, VNIs, PSK
//! file, keepalive) and endpoint resolution. The peers' cross-checks
//! (duplicates, prefix) live in `validate`; fleet peers come from etcd.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::{de, Deserialize, Deserializer};
use toml::Spanned;
use vxsec_crypto::key::PublicKey;

/// One `[[peer]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub name: Option<String>,
    #[serde(deserialize_with = "de_public_key")]
    pub public_key: Spanned<PublicKey>,
    /// `host:port`; resolved once at load.
    #[serde(default, deserialize_with = "de_endpoint")]
    pub endpoint: Option<SocketAddr>,
    pub tunnel_address: Spanned<IpAddr>,
    /// VNIs this peer may send and receive; omitted = any.
    pub allowed_vnis: Option<Spanned<Vec<u32>>>,
    pub psk_file: Option<PathBuf>,
    pub persistent_keepalive_seconds: Option<u16>,
}

impl PeerEntry {
    /// The label used in logs and status: the name, or the key fingerprint.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.public_key.get_ref().fingerprint(),
        }
    }
}

fn de_public_key<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<PublicKey>, D::Error> {
    let s: Spanned<String> = Spanned::deserialize(d)?;
    let span = s.span();
    let key = s.get_ref().parse::<PublicKey>().map_err(|_| {
        de::Error::custom("not a public key: expected 44 characters of base64 (`vxsec pubkey`)")
    })?;
    Ok(Spanned::new(span, key))
}

fn de_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    resolve_endpoint(&s).map(Some).map_err(de::Error::custom)
}

/// Resolves `host:port` (IP literals need no resolver).
pub fn resolve_endpoint(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!("`{s}` has no port; expected host:port"));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{s}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}
