//! Static key rotation, both sides of it, with no lost packet:
//!
//! * ours ([`Endpoint::rotate_identity`]): the new key becomes current at
//!   once (our initiations and responses use it, every peer's `ss` is
//!   recomputed), the old one stays as previous so initiations still
//!   addressed to it are answered, until
//!   [`Endpoint::retire_previous_identity`]. SAs are untouched: data keeps
//!   flowing on them. Peers that learn the new key handshake with it; any
//!   established peer that has not done so within [`IDENTITY_REKEY_DELAY`]
//!   (plus a spread) is re-keyed by us;
//! * a peer's ([`Endpoint::update_peer_key`]): the same peer (id, SAs,
//!   counters, address) takes its new static key; a handshake in flight
//!   with the old key is abandoned and, if the peer has an SA, a handshake
//!   with the new key starts.
//!
//! It decides no timing (the agent arms the grace timer) and reads no clock.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::info;
use vxsec_crypto::key::{PrivateKey, PublicKey};
use vxsec_crypto::noise::NoiseIdentity;
use vxsec_crypto::x25519::SsTable;

use super::config::ConfigError;
use super::core::lock;
use super::endpoint::Endpoint;
use super::identity::LocalIdentity;
use super::load::LoadState;
use super::PeerId;

/// After a rotation, each peer with an SA is re-keyed by us this long
/// after it at the latest (plus a spread), if it did not handshake with the
/// new key first: time for the new key to reach it through the store.
pub(crate) const IDENTITY_REKEY_DELAY: Duration = Duration::from_secs(10);
/// Upper bound of the random spread added to [`IDENTITY_REKEY_DELAY`].
const IDENTITY_REKEY_SPREAD_MS: u64 = 5_000;

impl Endpoint {
    /// Makes `new_secret` our static key. The old key is kept as the
    /// previous one (initiations and responses addressed to it are still
    /// answered) until [`Endpoint::retire_previous_identity`]; an older
    /// previous key still held is dropped now. Existing SAs stay; every
    /// peer with an SA is re-keyed with the new key after
    /// [`IDENTITY_REKEY_DELAY`] plus up to 5 s, unless it handshakes with
    /// that key first (initiating now would only be refused by peers that
    /// have not learned the key yet). Returns the
    /// replaced public key. Refused (nothing changed) if the key is one of
    /// ours already or a peer's.
    pub fn rotate_identity(
        &self,
        now: Instant,
        new_secret: PrivateKey,
    ) -> Result<PublicKey, ConfigError> {
        let new_key = new_secret.public_key();
        if self.core.identities.is_ours(&new_key) {
            return Err(ConfigError::new(
                "private_key",
                "is already this endpoint's (current or previous) key",
            ));
        }
        if self.peers.id(&new_key).is_some() {
            return Err(ConfigError::new(
                "private_key",
                "is a configured peer's key",
            ));
        }
        let identity = LocalIdentity::new(NoiseIdentity::new(
            new_secret,
            self.core.network_id.as_bytes(),
        ));
        // Every peer's `ss` under the new key, no lock held across the DHs.
        let keys = self.peers.keys();
        let table = ss_table(&identity, &keys);
        {
            let mut l = lock(&self.load);
            let LoadState { control, rng } = &mut *l;
            control.rotate_identity(&new_key, rng);
        }
        let old_ss = self.core.replace_ss(table);
        let old = *self.core.identities.rotate(identity, old_ss).public_key();
        // Peers added or removed while the table was made: bring it in step
        // (a value missing or stale costs a DH per handshake, never a
        // wrong one: each value names the key of ours it was made with).
        self.resync_ss(&keys);
        info!(
            old = %old.fingerprint(),
            new = %new_key.fingerprint(),
            "static identity rotated; the previous key is still answered until retired"
        );
        // Peers learn the new key from their peer source and handshake
        // with it themselves; a rekey of ours follows later, spread out,
        // for those that did not (an initiation now would only be refused
        // by peers that do not know the key yet, and would win collisions
        // against theirs).
        let seed: [u8; 32] = lock(&self.load).rng.gen();
        let mut rng = StdRng::from_seed(seed);
        for id in self.peers.ids() {
            let spread = Duration::from_millis(rng.gen_range(0..=IDENTITY_REKEY_SPREAD_MS));
            self.peers.with_peer(&self.core, id, true, |p, _| {
                p.schedule_identity_rekey(now + IDENTITY_REKEY_DELAY + spread);
            });
        }
        Ok(old)
    }

    /// Drops the previous static key (its private key is wiped once no
    /// handshake holds it): initiations addressed to it are refused from
    /// now on. Returns whether there was one.
    pub fn retire_previous_identity(&self) -> bool {
        lock(&self.load).control.retire_previous();
        let retired = self.core.identities.retire_previous();
        if retired {
            info!("previous static identity retired");
        }
        retired
    }

    /// Our previous static key, while it is still answered.
    pub fn previous_public_key(&self) -> Option<PublicKey> {
        self.core.identities.previous_key()
    }

    /// The peer with static key `old` now has key `new`: it keeps its id,
    /// SAs, counters and address; its `ss`, the mac1 key of what we send it
    /// and its handshake state follow the new key (a handshake in flight is
    /// abandoned; one with the new key starts if the peer has an SA).
    /// Refused (nothing changed) if `new` is ours, another peer's or a
    /// low-order point, or if there is no peer `old`.
    pub fn update_peer_key(
        &self,
        now: Instant,
        old: &PublicKey,
        new: PublicKey,
    ) -> Result<PeerId, ConfigError> {
        if *old == new {
            return self
                .peers
                .id(old)
                .ok_or_else(|| ConfigError::new("peer.public_key", "no such peer"));
        }
        if self.core.identities.is_ours(&new) {
            return Err(ConfigError::new(
                "peer.public_key",
                "is this endpoint's own public key",
            ));
        }
        let ss = self
            .core
            .identities
            .current()
            .noise
            .precompute_ss(&new)
            .map_err(|_| {
                ConfigError::new(
                    "peer.public_key",
                    "is a low-order X25519 point: no handshake with it can succeed",
                )
            })?;
        let id = self.peers.change_key(old, new)?;
        self.peers
            .with_peer(&self.core, id, true, |p, core| p.change_key(core, now, new));
        self.core.update_ss(|t| {
            t.remove(old);
            t.insert(ss);
        });
        Ok(id)
    }

    /// Brings the `ss` table in step with the peers after a rotation
    /// whose table was made for `made_for`: peers added meanwhile get a
    /// value, peers removed meanwhile lose theirs.
    fn resync_ss(&self, made_for: &[PublicKey]) {
        let now_keys: HashSet<PublicKey> = self.peers.keys().into_iter().collect();
        let before: HashSet<&PublicKey> = made_for.iter().collect();
        let stale: Vec<&PublicKey> = made_for.iter().filter(|k| !now_keys.contains(k)).collect();
        let missing: Vec<PublicKey> = now_keys
            .iter()
            .filter(|k| !before.contains(k))
            .copied()
            .collect();
        if missing.is_empty() && stale.is_empty() {
            return;
        }
        let identity = self.core.identities.current();
        let fresh: Vec<_> = missing
            .iter()
            .filter_map(|k| identity.noise.precompute_ss(k).ok())
            .collect();
        self.core.update_ss(|t| {
            for k in stale {
                t.remove(k);
            }
            for ss in fresh {
                t.insert(ss);
            }
        });
    }
}

/// The `ss` values of `keys` under `identity` (low-order keys, which no
/// peer can have, are skipped).
fn ss_table(identity: &LocalIdentity, keys: &[PublicKey]) -> SsTable {
    let mut table = SsTable::default();
    for k in keys {
        if let Ok(ss) = identity.noise.precompute_ss(k) {
            table.insert(ss);
        }
    }
    table
}

#[cfg(test)]
mod tests;
