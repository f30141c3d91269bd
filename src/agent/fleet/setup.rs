//! What the fleet task needs, read and checked before the agent creates
//! anything: this node's certificate (it must verify against the configured
//! authority and name this node's key, tunnel address and network), the etcd
//! TLS and password files, and the record cache path. It talks to no etcd.

use std::path::PathBuf;

use tracing::warn;
use vxsec_crypto::key::PublicKey;
use zeroize::Zeroizing;

use crate::agent::config::{FleetConfig, TunnelCidr};
use crate::agent::{clock, keys};
use crate::fleet::authority::AuthorityKey;
use crate::fleet::cert::CertBody;
use crate::fleet::files;
use crate::fleet::view::{record_key, FleetView};

/// Everything the fleet task needs, loaded and checked before the agent
/// creates anything.
pub struct FleetSetup {
    pub(super) endpoints: Vec<String>,
    pub(super) own_record_key: String,
    pub(super) own_cert: Vec<u8>,
    /// When this node's own certificate expires (the others then drop it).
    pub(super) own_not_after_unix: u64,
    /// This node's certificate, parsed.
    pub(super) own_body: CertBody,
    /// How long a rotated-out key is still answered.
    pub(super) rotation_grace: std::time::Duration,
    pub(super) lease_ttl_seconds: i64,
    pub(super) cache_path: PathBuf,
    pub(super) tls: Option<TlsFiles>,
    pub(super) user: Option<(String, Zeroizing<String>)>,
    pub(super) view: FleetView,
}

/// PEM contents of the TLS files.
pub(super) struct TlsFiles {
    pub ca: Vec<u8>,
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

/// Reads and checks the fleet files: the node certificate must verify
/// against the configured authority and name this node's key, tunnel
/// address and network.
pub fn prepare(
    f: &FleetConfig,
    interface: &str,
    network_id: &str,
    own_key: PublicKey,
    own_cidr: TunnelCidr,
) -> Result<FleetSetup, String> {
    let authority: AuthorityKey = *f.authority_public_key.get_ref();
    let cert = files::load_certificate(&f.certificate_file).map_err(|e| e.to_string())?;
    let at = f.certificate_file.display();
    let body = authority
        .verify(&cert, network_id, clock::unix_time().as_secs())
        .map_err(|e| format!("{at}: {e}"))?
        .body;
    if body.public_key != own_key {
        return Err(format!(
            "{at}: certifies key {} but this node's key is {own_key}",
            body.public_key
        ));
    }
    if body.tunnel_address != own_cidr.addr {
        return Err(format!(
            "{at}: certifies tunnel address {} but interface.address is {}",
            body.tunnel_address, own_cidr.addr
        ));
    }
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))
    };
    let tls = match &f.ca_file {
        None => None,
        Some(ca) => Some(TlsFiles {
            ca: read(ca.get_ref())?,
            identity: match (&f.cert_file, &f.key_file) {
                (Some(c), Some(k)) => {
                    let key = keys::read_secret(k.get_ref()).map_err(|e| e.to_string())?;
                    Some((read(c.get_ref())?, Zeroizing::new(key.as_bytes().to_vec())))
                }
                _ => None,
            },
        }),
    };
    let user = match (&f.user, &f.password_file) {
        (Some(u), Some(p)) => {
            let pw = keys::read_secret(p.get_ref()).map_err(|e| e.to_string())?;
            Some((
                u.get_ref().clone(),
                Zeroizing::new(pw.trim_end_matches('\n').to_string()),
            ))
        }
        _ => None,
    };
    let prefix = f.prefix.get_ref();
    Ok(FleetSetup {
        endpoints: f.endpoints.get_ref().clone(),
        own_record_key: record_key(prefix, network_id, own_cidr.addr),
        own_cert: cert,
        own_not_after_unix: body.not_after_unix,
        rotation_grace: f.rotation_grace(),
        lease_ttl_seconds: i64::from(*f.lease_ttl_seconds.get_ref()),
        cache_path: f.cache_path(interface),
        tls,
        user,
        view: FleetView::new(authority, prefix, network_id, own_key, own_cidr),
        own_body: body,
    })
}

/// Saves the verified records (logs, never fails the task).
pub(super) fn save_cache(setup: &FleetSetup) {
    if let Some(dir) = setup.cache_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = files::save_cache(&setup.cache_path, &setup.view.cached()) {
        warn!("fleet: cannot write the cache: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{config, signed_sample};
    use super::*;
    use crate::fleet::authority::Authority;

    #[test]
    fn own_certificate_must_fit_this_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, body, crt) = signed_sample(dir.path());
        let c = config(&a, &crt, "");
        let f = c.fleet.as_ref().expect("fleet");
        let cidr: TunnelCidr = "10.200.0.5/16".parse().expect("cidr");
        let ok = prepare(f, "vxsec0", "prod", body.public_key, cidr);
        assert!(ok.is_ok(), "{:?}", ok.err());
        let e = prepare(f, "vxsec0", "prod", PublicKey::from_bytes([2; 32]), cidr).err();
        assert!(e.is_some_and(|e| e.contains("certifies key")));
        let other: TunnelCidr = "10.200.0.6/16".parse().expect("cidr");
        let e = prepare(f, "vxsec0", "prod", body.public_key, other).err();
        assert!(e.is_some_and(|e| e.contains("certifies tunnel address")));
        let e = prepare(f, "vxsec0", "dev", body.public_key, cidr).err();
        assert!(e.is_some_and(|e| e.contains("another network")));
        // Signed by someone else.
        let rogue = Authority::generate().expect("key");
        let crt2 = dir.path().join("r.crt");
        files::write_certificate(&crt2, &rogue.sign(body).expect("signs")).expect("write");
        let c2 = config(&a, &crt2, "");
        let e = prepare(
            c2.fleet.as_ref().expect("fleet"),
            "vxsec0",
            "prod",
            PublicKey::from_bytes([9; 32]),
            cidr,
        )
        .err();
        assert!(e.is_some_and(|e| e.contains("another authority")));
    }
}
