//! `rotate_identity` and `retire_previous_identity` on the running agent:
//! this node rolls its static key to a new private key whose certificate
//! the fleet authority signed off-node. Everything is checked before
//! anything changes (the key file is the owner's only, the certificate
//! verifies against the configured authority, names the new key, is valid
//! now, and keeps this node's name, tunnel address, VNIs and endpoints, so
//! peers update the same peer in place); the new files are written beside
//! the configured ones; then the endpoint rotates (the old key is still
//! answered), the files are renamed over the configured ones (a restart
//! uses the new identity) and the fleet task publishes the certificate in
//! place of the old record and retires the old key after the grace period.
//!
//! It talks to no etcd itself (the fleet task does, `etcd.rs`).

use std::path::Path;
use std::time::Instant;

use tracing::{info, warn};
use vxsec_crypto::key::PrivateKey;

use crate::agent::control::protocol::Response;
use crate::agent::shared::Shared;
use crate::agent::{clock, keys};
use crate::fleet::cert::CertBody;
use crate::fleet::files::{self, Staged};

/// A rotation whose inputs passed every check.
struct Checked {
    key: PrivateKey,
    /// The key file's text and the certificate file's, to be written over
    /// the configured files as they are.
    key_text: zeroize::Zeroizing<String>,
    cert_text: Vec<u8>,
    cert: Vec<u8>,
    body: CertBody,
}

/// Rotates this node's static key (see the module doc).
pub(in crate::agent) fn rotate_identity(
    s: &Shared,
    key_file: &Path,
    cert_file: &Path,
    now: Instant,
) -> Response {
    let (Some(fleet), Some(fc)) = (s.fleet.as_ref(), s.running.fleet.as_ref()) else {
        return Response::error(
            "identity rotation needs fleet mode (a [fleet] section): peers learn the new key from etcd",
        );
    };
    let _one_at_a_time = fleet.rotation_guard();
    let c = match check(s, key_file, cert_file) {
        Ok(c) => c,
        Err(e) => return Response::error(e),
    };
    let key_path = s.running.interface.private_key_file.get_ref();
    let cert_path = &fc.certificate_file;
    let staged_key = match Staged::write(key_path, c.key_text.as_bytes(), 0o600) {
        Ok(f) => f,
        Err(e) => return Response::error(format!("cannot write the new key beside it: {e}")),
    };
    let staged_cert = match Staged::write(cert_path, &c.cert_text, 0o644) {
        Ok(f) => f,
        Err(e) => return Response::error(format!("cannot write the new certificate: {e}")),
    };
    let new = c.key.public_key();
    let old = match s.node.rotate_identity(now, c.key) {
        Ok(old) => old,
        Err(e) => return Response::error(format!("not rotated: {e}")),
    };
    let retire_at = fleet.begin_rotation(old, c.cert, c.body, now);
    let mut unsaved = Vec::new();
    for f in [staged_key, staged_cert] {
        if let Err(e) = f.commit() {
            unsaved.push(e.to_string());
        }
    }
    let grace = retire_at.saturating_duration_since(now).as_secs();
    info!(old = %old.fingerprint(), new = %new.fingerprint(), grace_seconds = grace,
          "this node's static key rotated; publishing the new certificate");
    if !unsaved.is_empty() {
        warn!(
            "rotated, but the configured files were not replaced ({}): a restart would use the old key",
            unsaved.join("; ")
        );
        return Response::error(format!(
            "rotated to {new}, but the configured files were not replaced ({}): \
             copy the new key and certificate over them before any restart",
            unsaved.join("; ")
        ));
    }
    Response::ok_message(format!(
        "rotated: this node's key is now {new}; the certificate is being published in etcd; \
         the previous key {old} is answered for {grace}s more, then retired; \
         {} and {} replaced",
        key_path.display(),
        cert_path.display()
    ))
}

/// Ends the grace period now.
pub(in crate::agent) fn retire_previous(s: &Shared) -> Response {
    let retired = s.node.retire_previous_identity();
    if let Some(f) = &s.fleet {
        f.retired();
    }
    if retired {
        Response::ok_message("previous static key retired")
    } else {
        Response::error("no previous static key to retire")
    }
}

/// Every check of a rotation, before anything changes.
fn check(s: &Shared, key_file: &Path, cert_file: &Path) -> Result<Checked, String> {
    let (Some(fleet), Some(fc)) = (s.fleet.as_ref(), s.running.fleet.as_ref()) else {
        return Err("identity rotation needs fleet mode".into());
    };
    let key_text = keys::read_secret(key_file).map_err(|e| e.to_string())?;
    let key = PrivateKey::from_base64(key_text.trim())
        .map_err(|_| format!("{}: not a private key (`vxsec genkey`)", key_file.display()))?;
    let cert_text = std::fs::read(cert_file)
        .map_err(|e| format!("{}: cannot read: {e}", cert_file.display()))?;
    let cert = files::load_certificate(cert_file).map_err(|e| e.to_string())?;
    let at = cert_file.display();
    let body = fc
        .authority_public_key
        .get_ref()
        .verify(
            &cert,
            &s.running.interface.network_id,
            clock::unix_time().as_secs(),
        )
        .map_err(|e| format!("{at}: {e}"))?
        .body;
    let new = key.public_key();
    if body.public_key != new {
        return Err(format!(
            "{at}: certifies key {} but {} holds key {new}",
            body.public_key,
            key_file.display()
        ));
    }
    if new == s.node.public_key() || s.node.previous_public_key() == Some(new) {
        return Err(format!(
            "{}: {new} is already this node's key (`vxsec genkey` a new one)",
            key_file.display()
        ));
    }
    let own = fleet.own_body();
    let mut kept = Vec::new();
    if body.name != own.name {
        kept.push(format!("name {:?} (now {:?})", body.name, own.name));
    }
    if body.tunnel_address != own.tunnel_address {
        kept.push(format!(
            "tunnel address {} (now {})",
            body.tunnel_address, own.tunnel_address
        ));
    }
    if body.allowed_vnis != own.allowed_vnis {
        kept.push(format!(
            "VNIs {:?} (now {:?})",
            body.allowed_vnis, own.allowed_vnis
        ));
    }
    if body.endpoints != own.endpoints {
        kept.push(format!(
            "endpoints {:?} (now {:?})",
            body.endpoints, own.endpoints
        ));
    }
    if !kept.is_empty() {
        return Err(format!(
            "{at}: a rotation keeps everything but the key; this certificate changes {}",
            kept.join(", ")
        ));
    }
    Ok(Checked {
        key,
        key_text,
        cert_text,
        cert,
        body,
    })
}
