//! Peers from the config file, the control socket and the fleet registry,
//! turned into what [`Node`] takes (a `PeerConfig` and a [`PeerRoute`]),
//! and the bookkeeping of what is configured: adding and removing through
//! the control socket, and SIGHUP's diff (unchanged peers keep their SAs,
//! changed routes are updated in place, changed identities re-created).
//!
//! It holds no protocol or routing state itself (the [`Node`] does) and
//! steers no traffic (`agent::transparent` does, from the node's VTEPs).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vxsec_crypto::key::PublicKey;

use super::config::{Config, PeerEntry};
use super::configured::{Configured, ConfiguredPeer, PeerIdentity};
use super::control::protocol::{PeerSpec, Response};
use super::keys;
use super::shared::Shared;
use crate::dataplane::node::AddPeerError;
use crate::dataplane::policy::VniSet;
use crate::dataplane::{Node, PeerRoute};
use crate::proto::PeerConfig;

/// Adds each `(config, route)` to `node` at start; the configured set.
pub(super) fn add_initial(
    node: &Node,
    now: Instant,
    peers: Vec<(PeerConfig, PeerRoute)>,
) -> Result<Configured, String> {
    let mut configured = Vec::new();
    for (pc, r) in peers {
        configured.push(add(node, now, pc, r).map_err(|e| e.to_string())?);
    }
    Ok(Configured(Mutex::new(configured)))
}

/// Adds (or replaces) one peer in `node`.
fn add(
    node: &Node,
    now: Instant,
    pc: PeerConfig,
    r: PeerRoute,
) -> Result<ConfiguredPeer, AddPeerError> {
    let key = pc.public_key;
    let identity = PeerIdentity::of(&pc);
    node.add_peer(now, pc, r)?;
    Ok(ConfiguredPeer { key, identity })
}

/// `peer add` over the control socket (or from the fleet registry).
pub(super) fn add_from_spec(s: &Shared, spec: &PeerSpec, now: Instant) -> Response {
    let (pc, r) = match peer_from_spec(spec) {
        Ok(p) => p,
        Err(e) => return Response::error(e),
    };
    let key = pc.public_key;
    let mut conf = s.peers.lock();
    match add(&s.node, now, pc, r) {
        Ok(cp) => {
            conf.retain(|c| c.key != key);
            conf.push(cp);
            drop(conf);
            super::transparent::apply_logged(&s.running, s.node.vteps());
            info!(peer = %key.fingerprint(), "peer added over the control socket");
            Response::ok_message(format!("peer {key} added"))
        }
        Err(e) => Response::error(e.to_string()),
    }
}

/// The peer with key `old` rolled its static key and is now `spec` (from
/// the fleet registry, or `peer_key_change` over the control socket): the
/// same peer takes the new key and route and keeps its SAs. Refused if
/// more than the key and route changed (endpoint, PSK, keepalive): then
/// the caller re-creates the peer.
pub(super) fn change_key(s: &Shared, old: &PublicKey, spec: &PeerSpec, now: Instant) -> Response {
    let (pc, r) = match peer_from_spec(spec) {
        Ok(p) => p,
        Err(e) => return Response::error(e),
    };
    let key = pc.public_key;
    let identity = PeerIdentity::of(&pc);
    let mut conf = s.peers.lock();
    let Some(entry) = conf.iter_mut().find(|c| c.key == *old) else {
        return Response::error(format!("no peer {old}"));
    };
    if entry.identity != identity {
        return Response::error("endpoint, psk or keepalive changed with the key");
    }
    match s.node.update_peer_key(now, old, key, r) {
        Ok(_) => {
            entry.key = key;
            drop(conf);
            super::transparent::apply_logged(&s.running, s.node.vteps());
            info!(old = %old.fingerprint(), new = %key.fingerprint(),
                  "peer's static key changed; SAs kept");
            Response::ok_message(format!("peer {old} is now {key}"))
        }
        Err(e) => Response::error(e.to_string()),
    }
}

/// `peer remove` over the control socket (or from the fleet registry).
pub(super) fn remove(s: &Shared, key: &PublicKey) -> Response {
    let mut conf = s.peers.lock();
    let removed = s.node.remove_peer(key);
    conf.retain(|c| c.key != *key);
    drop(conf);
    if removed {
        super::transparent::apply_logged(&s.running, s.node.vteps());
        info!(peer = %key.fingerprint(), "peer removed over the control socket");
        Response::ok_message(format!("peer {key} removed"))
    } else {
        Response::error(format!("no peer {key}"))
    }
}

/// SIGHUP: re-read the peers. Unchanged peers keep their SAs; changed
/// routes are updated in place; changed identities are re-created.
pub(super) fn reload(s: &Shared, path: &Path, now: Instant) -> Result<String, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let mut fresh = Vec::new();
    for (n, e) in config.peers.iter().enumerate() {
        fresh.push(peer_from_entry(e).map_err(|m| format!("peer[{n}]: {m}"))?);
    }
    let mut conf = s.peers.lock();
    let (mut added, mut removed, mut kept) = (0, 0, 0);
    let mut updated: Vec<String> = Vec::new();
    for old in conf.iter() {
        if !fresh.iter().any(|(pc, _)| pc.public_key == old.key) {
            s.node.remove_peer(&old.key);
            removed += 1;
        }
    }
    let mut next = Vec::new();
    for (pc, r) in fresh {
        let key = pc.public_key;
        let identity = PeerIdentity::of(&pc);
        match conf.iter().find(|c| c.key == key) {
            Some(old) if old.identity == identity => {
                let changes = s.node.update_route(&key, r).unwrap_or_default();
                next.push(ConfiguredPeer { key, identity });
                if changes.is_empty() {
                    kept += 1;
                } else {
                    let name = pc.name.clone().unwrap_or_else(|| key.fingerprint());
                    updated.push(format!("{name}: {}", changes.join(", ")));
                }
            }
            _ => match add(&s.node, now, pc, r) {
                Ok(cp) => {
                    next.push(cp);
                    added += 1;
                }
                Err(e) => warn!(peer = %key.fingerprint(), "not added: {e}"),
            },
        }
    }
    *conf = next;
    drop(conf);
    super::transparent::apply_logged(&s.running, s.node.vteps());
    let ignored = s.running.restart_only_changes(&config);
    let mut msg = format!(
        "{added} peers added or re-created, {} updated in place{}, {removed} removed, \
         {kept} unchanged (SAs kept)",
        updated.len(),
        if updated.is_empty() {
            String::new()
        } else {
            format!(" ({}; SAs kept)", updated.join("; "))
        }
    );
    if !ignored.is_empty() {
        warn!(
            "SIGHUP: changed settings take effect only at restart: {}",
            ignored.join(", ")
        );
        msg.push_str(&format!("; restart to apply: {}", ignored.join(", ")));
    }
    Ok(msg)
}

/// A peer of the config file.
pub(super) fn peer_from_entry(p: &PeerEntry) -> Result<(PeerConfig, PeerRoute), String> {
    build_peer(
        *p.public_key.get_ref(),
        p.endpoint,
        p.label(),
        *p.tunnel_address.get_ref(),
        PeerExtras {
            allowed_vnis: p.allowed_vnis.as_ref().map(|v| v.get_ref().as_slice()),
            psk_file: p.psk_file.as_deref(),
            keepalive_seconds: p.persistent_keepalive_seconds,
        },
    )
}

/// A peer given over the control socket or by the fleet registry.
fn peer_from_spec(s: &PeerSpec) -> Result<(PeerConfig, PeerRoute), String> {
    let key: PublicKey = s
        .public_key
        .parse()
        .map_err(|_| "public_key: not a base64 X25519 public key".to_string())?;
    let endpoint = s
        .endpoint
        .as_deref()
        .map(super::config::resolve_endpoint)
        .transpose()
        .map_err(|e| format!("endpoint: {e}"))?;
    let tunnel_addr: IpAddr = s.tunnel_address.parse().map_err(|_| {
        format!(
            "tunnel_address: `{}` is not an IP address",
            s.tunnel_address
        )
    })?;
    let name = s.name.clone().unwrap_or_else(|| key.fingerprint());
    build_peer(
        key,
        endpoint,
        name,
        tunnel_addr,
        PeerExtras {
            allowed_vnis: s.allowed_vnis.as_deref(),
            psk_file: s.psk_file.as_deref(),
            keepalive_seconds: s.persistent_keepalive_seconds,
        },
    )
}

/// The optional parts of a peer, from the config file or the control socket.
struct PeerExtras<'a> {
    allowed_vnis: Option<&'a [u32]>,
    psk_file: Option<&'a Path>,
    keepalive_seconds: Option<u16>,
}

/// One peer's core config and route, however it was given.
fn build_peer(
    key: PublicKey,
    endpoint: Option<SocketAddr>,
    name: String,
    tunnel_addr: IpAddr,
    x: PeerExtras<'_>,
) -> Result<(PeerConfig, PeerRoute), String> {
    let mut pc = PeerConfig::new(key, endpoint);
    pc.name = Some(name);
    pc.persistent_keepalive = x
        .keepalive_seconds
        .filter(|&s| s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    if let Some(f) = x.psk_file {
        pc.psk = Some(keys::load_psk(f).map_err(|e| e.to_string())?);
    }
    let vnis = VniSet::from_config(x.allowed_vnis).map_err(|e| format!("allowed_vnis: {e}"))?;
    Ok((
        pc,
        PeerRoute {
            tunnel_addr,
            vnis,
            endpoint,
        },
    ))
}

#[cfg(test)]
mod tests {
    use vxsec_crypto::key::PrivateKey;

    use super::*;

    fn spec(key: &PublicKey, endpoint: Option<&str>, keepalive: Option<u16>) -> PeerSpec {
        PeerSpec {
            public_key: key.to_string(),
            endpoint: endpoint.map(str::to_string),
            tunnel_address: "10.200.0.9".into(),
            name: None,
            allowed_vnis: None,
            psk_file: None,
            persistent_keepalive_seconds: keepalive,
        }
    }

    /// The identity that decides "keep SAs or re-create" is a typed value:
    /// a route-only change (tunnel address, VNIs) keeps it, an endpoint or
    /// keepalive change does not.
    #[test]
    fn identity_changes_with_endpoint_and_keepalive_not_with_the_route() {
        let key = PrivateKey::generate().public_key();
        let (a, ra) = peer_from_spec(&spec(&key, Some("192.0.2.9:51830"), None)).expect("a");
        let mut moved = spec(&key, Some("192.0.2.9:51830"), None);
        moved.tunnel_address = "10.200.0.10".into();
        moved.allowed_vnis = Some(vec![7]);
        let (b, rb) = peer_from_spec(&moved).expect("b");
        assert_eq!(PeerIdentity::of(&a), PeerIdentity::of(&b));
        assert_ne!(ra, rb);
        let (c, _) = peer_from_spec(&spec(&key, Some("192.0.2.10:51830"), None)).expect("c");
        assert_ne!(PeerIdentity::of(&a), PeerIdentity::of(&c));
        let (d, _) = peer_from_spec(&spec(&key, Some("192.0.2.9:51830"), Some(25))).expect("d");
        assert_ne!(PeerIdentity::of(&a), PeerIdentity::of(&d));
        // Zero keepalive means none, as in the config file.
        let (e, _) = peer_from_spec(&spec(&key, Some("192.0.2.9:51830"), Some(0))).expect("e");
        assert_eq!(PeerIdentity::of(&a), PeerIdentity::of(&e));
    }

    #[test]
    fn a_bad_spec_is_refused_with_the_field_named() {
        let key = PrivateKey::generate().public_key();
        let mut bad = spec(&key, None, None);
        bad.tunnel_address = "nope".into();
        let e = peer_from_spec(&bad).err().unwrap_or_default();
        assert!(e.starts_with("tunnel_address:"), "{e}");
        bad = spec(&key, None, None);
        bad.public_key = "xyz".into();
        let e = peer_from_spec(&bad).err().unwrap_or_default();
        assert!(e.starts_with("public_key:"), "{e}");
    }
}
