//! What is configured, apart from what runs: each configured peer's key
//! and the identity that decides, on SIGHUP, whether it keeps its SAs.
//!
//! It only records; `agent::peers` adds, removes and diffs through it, and
//! the [`crate::dataplane::Node`] holds the peers' state.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use vxsec_crypto::key::PublicKey;

use crate::proto::PeerConfig;

/// What of a peer, besides its route, needs new SAs when it changes: two
/// configurations of the same key with equal identities keep the peer's
/// SAs on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PeerIdentity {
    endpoint: Option<SocketAddr>,
    has_psk: bool,
    persistent_keepalive: Option<Duration>,
}

impl PeerIdentity {
    pub(super) fn of(pc: &PeerConfig) -> Self {
        Self {
            endpoint: pc.endpoint,
            has_psk: pc.psk.is_some(),
            persistent_keepalive: pc.persistent_keepalive,
        }
    }
}

/// A peer as configured (config file, control socket or fleet).
#[derive(Debug, Clone)]
pub(super) struct ConfiguredPeer {
    pub(super) key: PublicKey,
    pub(super) identity: PeerIdentity,
}

/// The configured peers, for SIGHUP's diff.
#[derive(Debug, Default)]
pub(super) struct Configured(pub(super) Mutex<Vec<ConfiguredPeer>>);

impl Configured {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ConfiguredPeer>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
