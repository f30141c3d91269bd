//! A change of static key on either side of one peer: the peer rolled its
//! key (the same peer takes the new one and keeps its SAs), or we rolled
//! ours (a rekey with the new key is due later, unless a handshake with it
//! comes first).
//!
//! It reads no clock and decides no timing: the endpoint
//! (`proto::rotation`) passes the instants.

use std::sync::Arc;
use std::time::Instant;

use tracing::info;
use vxsec_crypto::cookie::Mac1Key;
use vxsec_crypto::key::{Psk, PublicKey};

use super::super::core::Core;
use super::{Peer, PeerFixed};

impl Peer {
    /// The peer rolled its static key to `key` (same peer: SAs, counters
    /// and address stay). What depends on the key follows it: the mac1 key
    /// of what we send, the span, the newest initiation timestamp and the
    /// cookie (both were the old key's). A handshake in flight with the old
    /// key is abandoned; with an SA (or data waiting) one starts now, with
    /// the new key.
    pub fn change_key(&mut self, core: &Core, now: Instant, key: PublicKey) {
        let old = &self.fixed;
        info!(new = %key.fingerprint(), "peer's static key changed; SAs kept");
        self.fixed = Arc::new(PeerFixed {
            id: old.id,
            key,
            psk: old
                .psk
                .as_ref()
                .map(|p| Psk::from_bytes(*p.dangerous_as_bytes())),
            name: old.name.clone(),
            mac1_to_peer: Mac1Key::new(&key),
            persistent_keepalive: old.persistent_keepalive,
            span: tracing::debug_span!("peer", key = %key.fingerprint()),
        });
        self.abandon_initiation(core);
        self.revive();
        self.last_initiation = None;
        self.cookie = None;
        if self.sas.current.is_some() || !self.queue.is_empty() {
            self.force_rekey(core, now);
        }
    }

    /// Our static key rotated: with an SA, a rekey (with the new key) is
    /// due at `at`, unless a handshake with the new key happens first (the
    /// peer, once it learns the key, usually starts one).
    pub fn schedule_identity_rekey(&mut self, at: Instant) {
        if self.sas.current.is_some() {
            self.identity_rekey_at = Some(at);
        }
    }
}
