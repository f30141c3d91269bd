//! The endpoint's static identity and its rotation: the current identity
//! (its Noise key, the mac1 key of messages sent to it, the `ss` of every
//! peer) and, during a rotation's grace period, the previous one, kept so
//! that peers still addressing the old key get answered until they learn
//! the new one. Which identity an initiation is for is told by its mac1
//! (each identity has its own mac1 key), before any Diffie-Hellman.
//!
//! It holds no peer state and schedules nothing: `endpoint.rs` rotates,
//! re-keys peers and retires; `handshake.rs` picks the identity a message
//! addresses. Both identities sit behind one leaf lock, held only to clone
//! an `Arc` or to swap them.

use std::sync::{Arc, RwLock};

use vxsec_crypto::cookie::{Mac1Key, MAC_LEN};
use vxsec_crypto::key::PublicKey;
use vxsec_crypto::noise::NoiseIdentity;
use vxsec_crypto::x25519::SsTable;

use super::core::{read, write};

/// One static identity. The private key wipes itself when the last `Arc`
/// (a handshake in progress may hold one) is dropped.
pub(crate) struct LocalIdentity {
    pub noise: NoiseIdentity,
    /// mac1 key of messages sent to this identity.
    pub mac1: Mac1Key,
}

impl LocalIdentity {
    pub fn new(noise: NoiseIdentity) -> Self {
        let mac1 = Mac1Key::new(noise.public_key());
        Self { noise, mac1 }
    }

    pub fn public_key(&self) -> &PublicKey {
        self.noise.public_key()
    }
}

/// The previous identity during a grace period, with the `ss` values it
/// had when it was replaced (a peer added since is missing there: its `ss`
/// is then computed per handshake, which is correct, only slower).
struct Previous {
    identity: Arc<LocalIdentity>,
    ss: SsTable,
}

struct Slots {
    current: Arc<LocalIdentity>,
    previous: Option<Previous>,
}

/// The identity a handshake message is addressed to, found by its mac1.
pub(crate) struct Addressed {
    pub identity: Arc<LocalIdentity>,
    /// Whether it is the previous identity (still in its grace period).
    pub is_previous: bool,
    /// The previous identity's `ss` values (`None` for the current one:
    /// the caller takes the live table).
    pub previous_ss: Option<SsTable>,
}

/// The current identity and, during a grace period, the previous one.
pub(crate) struct Identities {
    slots: RwLock<Slots>,
}

impl Identities {
    pub fn new(current: LocalIdentity) -> Self {
        Self {
            slots: RwLock::new(Slots {
                current: Arc::new(current),
                previous: None,
            }),
        }
    }

    /// The identity our initiations and responses use.
    pub fn current(&self) -> Arc<LocalIdentity> {
        Arc::clone(&read(&self.slots).current)
    }

    /// The previous identity's public key, during a grace period.
    pub fn previous_key(&self) -> Option<PublicKey> {
        read(&self.slots)
            .previous
            .as_ref()
            .map(|p| *p.identity.public_key())
    }

    /// Whether `key` is one of our identities (current or previous).
    pub fn is_ours(&self, key: &PublicKey) -> bool {
        let s = read(&self.slots);
        s.current.public_key() == key
            || s.previous
                .as_ref()
                .is_some_and(|p| p.identity.public_key() == key)
    }

    /// The identity whose mac1 key verifies `mac1` over `input` (current
    /// first), or `None`: the message is for no key of ours.
    pub fn addressed(&self, input: &[u8], mac1: &[u8; MAC_LEN]) -> Option<Addressed> {
        let s = read(&self.slots);
        if s.current.mac1.verify(input, mac1) {
            return Some(Addressed {
                identity: Arc::clone(&s.current),
                is_previous: false,
                previous_ss: None,
            });
        }
        let p = s.previous.as_ref()?;
        p.identity.mac1.verify(input, mac1).then(|| Addressed {
            identity: Arc::clone(&p.identity),
            is_previous: true,
            previous_ss: Some(p.ss.clone()),
        })
    }

    /// Makes `new` current; the current one becomes previous with the
    /// `ss` values `old_ss` (an older previous one is dropped). Returns the
    /// identity replaced.
    pub fn rotate(&self, new: LocalIdentity, old_ss: SsTable) -> Arc<LocalIdentity> {
        let mut s = write(&self.slots);
        let old = std::mem::replace(&mut s.current, Arc::new(new));
        s.previous = Some(Previous {
            identity: Arc::clone(&old),
            ss: old_ss,
        });
        old
    }

    /// Drops the previous identity; whether there was one.
    pub fn retire_previous(&self) -> bool {
        write(&self.slots).previous.take().is_some()
    }
}
