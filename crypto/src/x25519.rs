//! X25519 for the Noise handshake, backed by aws-lc-rs and plugged into
//! `snow` as a [`CryptoResolver`] ([`NoiseResolver`]): our static key is
//! loaded into aws-lc once per identity (so no handshake re-derives its
//! public key), ephemeral keys and every DH run in aws-lc, and the
//! static-static DH `ss` — the same for every handshake between two given
//! peers — can be computed once per configured peer ([`PrecomputedSs`],
//! [`SsTable`]), as WireGuard does.
//!
//! It does not hash or encrypt (snow's default resolver supplies BLAKE2s,
//! ChaCha20-Poly1305 and the RNG), build handshake states (see
//! [`crate::noise`]) or generate identity keys (`x25519-dalek`, see
//! [`crate::key`]). ring has the fast X25519 too but no API for a static
//! private key, hence aws-lc-rs here.

use core::fmt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use aws_lc_rs::agreement;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::key::{PrivateKey, PublicKey, KEY_LEN};

/// Length of an X25519 public key, private key and shared secret.
pub const X25519_LEN: usize = KEY_LEN;

/// An X25519 operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// The shared secret would be all zero: the public key is a low-order
    /// point (RFC 7748 §6.1; WireGuard refuses it too).
    #[error("X25519 with a low-order public key")]
    LowOrder,
    /// aws-lc refused the key (it cannot for 32-byte X25519 keys unless it
    /// is out of memory).
    #[error("X25519 key refused by aws-lc")]
    Refused,
}

/// A private key loaded into aws-lc, with its public key. The raw bytes
/// are kept only because snow's `Dh::privkey` must return them.
struct KeyPair {
    secret: Zeroizing<[u8; X25519_LEN]>,
    public: [u8; X25519_LEN],
    /// aws-lc wipes the key when it frees it (`OPENSSL_free` cleanses).
    lc: agreement::PrivateKey,
}

impl KeyPair {
    /// Loads `secret` into aws-lc, which derives the public key (one
    /// basepoint multiplication).
    fn new(secret: Zeroizing<[u8; X25519_LEN]>) -> Result<Self, DhError> {
        let lc = agreement::PrivateKey::from_private_key(&agreement::X25519, &secret[..])
            .map_err(|_| DhError::Refused)?;
        let public = lc.compute_public_key().map_err(|_| DhError::Refused)?;
        let public = <[u8; X25519_LEN]>::try_from(public.as_ref()).map_err(|_| DhError::Refused)?;
        Ok(KeyPair { secret, public, lc })
    }

    /// X25519(our key, `peer`) into `out`; an all-zero result is an error.
    fn agree(&self, peer: &[u8; X25519_LEN], out: &mut [u8; X25519_LEN]) -> Result<(), DhError> {
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        // aws-lc's X25519 already fails on an all-zero result; the check
        // below keeps that property whatever a future aws-lc does.
        agreement::agree(&self.lc, peer, DhError::LowOrder, |shared| {
            let shared = <&[u8; X25519_LEN]>::try_from(shared).map_err(|_| DhError::Refused)?;
            if bool::from(shared.ct_eq(&[0u8; X25519_LEN])) {
                return Err(DhError::LowOrder);
            }
            out.copy_from_slice(shared);
            Ok(())
        })
    }
}

/// Our static key pair, loaded into aws-lc once and shared (by reference,
/// never copied) with the DH objects of every handshake.
pub struct StaticKeyPair(Arc<KeyPair>);

impl fmt::Debug for StaticKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StaticKeyPair({}, <redacted>)",
            PublicKey::from_bytes(self.0.public)
        )
    }
}

impl StaticKeyPair {
    /// Loads `private` into aws-lc.
    pub fn new(private: &PrivateKey) -> Result<Self, DhError> {
        KeyPair::new(Zeroizing::new(*private.dangerous_as_bytes()))
            .map(|k| StaticKeyPair(Arc::new(k)))
    }

    /// The public key (as aws-lc derived it; equal to `PrivateKey::public_key`).
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.0.public)
    }

    /// DH(our static, `remote`): the Noise `ss` of every handshake with
    /// that peer, computed once. Fails for a low-order `remote`.
    pub fn precompute_ss(&self, remote: &PublicKey) -> Result<PrecomputedSs, DhError> {
        let mut shared = Zeroizing::new([0u8; X25519_LEN]);
        self.0.agree(remote.as_bytes(), &mut shared)?;
        Ok(PrecomputedSs {
            local: self.0.public,
            remote: *remote,
            shared,
        })
    }
}

/// DH(our static key, one peer's static key), computed when the peer is
/// configured. Wipes itself on drop, cannot be cloned, prints `<redacted>`.
pub struct PrecomputedSs {
    /// Our public key: the value is used only with the key it was made with.
    local: [u8; X25519_LEN],
    remote: PublicKey,
    shared: Zeroizing<[u8; X25519_LEN]>,
}

impl fmt::Debug for PrecomputedSs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrecomputedSs(<redacted>)")
    }
}

impl PrecomputedSs {
    /// The peer this value belongs to.
    pub fn remote(&self) -> &PublicKey {
        &self.remote
    }

    /// A wiped-on-drop copy for one handshake's resolver (crate-internal:
    /// the type itself offers no `Clone`).
    fn duplicate(&self) -> Self {
        PrecomputedSs {
            local: self.local,
            remote: self.remote,
            shared: Zeroizing::new(*self.shared),
        }
    }

    /// The value for a DH of our static key `local` with `peer`, if this is it.
    fn for_keys(
        &self,
        local: &[u8; X25519_LEN],
        peer: &[u8; X25519_LEN],
    ) -> Option<&[u8; X25519_LEN]> {
        (self.local == *local && self.remote.as_bytes() == peer).then_some(&*self.shared)
    }

    /// A value with arbitrary bytes, to prove in tests that a cached value
    /// is really used (a wrong one must break the handshake).
    #[cfg(test)]
    pub(crate) fn dangerous_from_parts(
        local: &PublicKey,
        remote: &PublicKey,
        shared: [u8; X25519_LEN],
    ) -> Self {
        PrecomputedSs {
            local: *local.as_bytes(),
            remote: *remote,
            shared: Zeroizing::new(shared),
        }
    }
}

type SsMap = HashMap<PublicKey, Arc<PrecomputedSs>>;

/// The precomputed `ss` of every configured peer, for the responder side
/// (which learns the initiator's static key only inside message 1).
/// A handshake in progress keeps the snapshot it started with; inserting
/// or removing copies the map only while such a snapshot is alive.
#[derive(Default, Clone)]
pub struct SsTable(Arc<SsMap>);

impl fmt::Debug for SsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SsTable({} peers, <redacted>)", self.0.len())
    }
}

impl SsTable {
    /// Adds (or replaces) the value for `ss.remote()`.
    pub fn insert(&mut self, ss: PrecomputedSs) {
        Arc::make_mut(&mut self.0).insert(ss.remote, Arc::new(ss));
    }

    /// Forgets the value for `remote` (it is wiped once no handshake holds it).
    pub fn remove(&mut self, remote: &PublicKey) -> bool {
        if !self.0.contains_key(remote) {
            return false;
        }
        Arc::make_mut(&mut self.0).remove(remote).is_some()
    }

    /// The value for `remote`, if configured.
    pub fn get(&self, remote: &PublicKey) -> Option<&PrecomputedSs> {
        self.0.get(remote).map(|a| &**a)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where a handshake's `ss` may come from instead of a fresh DH.
enum SsSource {
    None,
    /// Initiator towards one peer: its value.
    Initiator(PrecomputedSs),
    /// Responder: a snapshot of every configured peer's value.
    Responder(Arc<SsMap>),
}

impl SsSource {
    /// The cached value for the `call`-th DH of our static key with `peer`.
    ///
    /// Which call is `ss`: in IK (`<- s ... -> e, es, s, ss  <- e, ee, se`)
    /// the initiator's static key does `ss` (message 1) then `se`
    /// (message 2), so `ss` is its first static DH; the responder's static
    /// key does `es` then `ss` (both in message 1), so `ss` is its second.
    ///
    /// Correctness does not rest on that order: a value is returned only
    /// for exactly the peer key (and our key) it was computed with, so it
    /// equals the DH it replaces whichever call this is. The order matters
    /// for timing only: the responder's first static DH (`es`) takes the
    /// initiator's *ephemeral* key, which an attacker chooses freely before
    /// proving anything; were the cache consulted there, sending a
    /// configured peer's static key as the ephemeral would reveal, by a
    /// faster answer, that the peer is configured. At `ss` the key is the
    /// initiator's static, decrypted under the `es` key, so the attacker
    /// must have run `es` honestly with our public key; what the timing
    /// then tells it (whether that static key is configured) it learns
    /// anyway from whether a response comes back, as with WireGuard.
    fn cached(
        &self,
        call: u32,
        local: &[u8; X25519_LEN],
        peer: &[u8; X25519_LEN],
    ) -> Option<&[u8; X25519_LEN]> {
        match self {
            SsSource::Initiator(ss) if call == 1 => ss.for_keys(local, peer),
            SsSource::Responder(map) if call == 2 => map
                .get(&PublicKey::from_bytes(*peer))
                .and_then(|ss| ss.for_keys(local, peer)),
            _ => None,
        }
    }
}

struct Context {
    local: Option<Arc<KeyPair>>,
    ss: SsSource,
}

/// A snow [`CryptoResolver`]: aws-lc-rs X25519 for `25519`, snow's
/// [`DefaultResolver`] for everything else. Build one per handshake (snow
/// takes it by value); it is cheap (two reference counts and at most one
/// 32-byte copy).
pub struct NoiseResolver(Arc<Context>);

impl fmt::Debug for NoiseResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoiseResolver(<redacted>)")
    }
}

impl Default for NoiseResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl NoiseResolver {
    /// aws-lc X25519 with no known static key: `set` loads whatever it is
    /// given (deriving the public key) and no `ss` is cached.
    pub fn new() -> Self {
        NoiseResolver(Arc::new(Context {
            local: None,
            ss: SsSource::None,
        }))
    }

    /// With our static key: a `set` with its bytes reuses the loaded key.
    pub fn with_static(local: &StaticKeyPair) -> Self {
        Self::build(local, SsSource::None)
    }

    /// For an initiator: as [`Self::with_static`], and the first DH of our
    /// static key with exactly `ss.remote()` (that is `ss`) uses `ss`.
    pub fn initiator(local: &StaticKeyPair, ss: Option<&PrecomputedSs>) -> Self {
        let ss = ss.map_or(SsSource::None, |s| SsSource::Initiator(s.duplicate()));
        Self::build(local, ss)
    }

    /// For a responder: as [`Self::with_static`], and the `ss` DH with an
    /// initiator's static key found in `table` uses the stored value.
    pub fn responder(local: &StaticKeyPair, table: &SsTable) -> Self {
        Self::build(local, SsSource::Responder(Arc::clone(&table.0)))
    }

    fn build(local: &StaticKeyPair, ss: SsSource) -> Self {
        NoiseResolver(Arc::new(Context {
            local: Some(Arc::clone(&local.0)),
            ss,
        }))
    }
}

impl CryptoResolver for NoiseResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        #[cfg(feature = "fuzzing")]
        if seeded::active() {
            return Some(Box::new(seeded::SeededRng));
        }
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519Dh {
                ctx: Arc::clone(&self.0),
                key: None,
                is_local_static: false,
                static_calls: AtomicU32::new(0),
            })),
            other => DefaultResolver.resolve_dh(other),
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// snow's view of one key (its `s` or its `e`).
struct X25519Dh {
    ctx: Arc<Context>,
    key: Option<Arc<KeyPair>>,
    /// `key` is the resolver's static key, so its `ss` may be cached.
    is_local_static: bool,
    /// DH calls made with `key` while it is the static key.
    static_calls: AtomicU32,
}

const NO_KEY: [u8; X25519_LEN] = [0; X25519_LEN];

impl Dh for X25519Dh {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        X25519_LEN
    }

    fn priv_len(&self) -> usize {
        X25519_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        self.static_calls = AtomicU32::new(0);
        if let Some(local) = self
            .ctx
            .local
            .as_ref()
            .filter(|l| bool::from(l.secret[..].ct_eq(privkey)))
        {
            // Our static key: already loaded, public key already known.
            self.key = Some(Arc::clone(local));
            self.is_local_static = true;
            return;
        }
        // Any other key is loaded afresh; a cached `ss` never applies to it.
        self.is_local_static = false;
        self.key = <[u8; X25519_LEN]>::try_from(privkey)
            .ok()
            .and_then(|b| KeyPair::new(Zeroizing::new(b)).ok())
            .map(Arc::new);
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut secret = Zeroizing::new([0u8; X25519_LEN]);
        rng.try_fill_bytes(&mut secret[..])?;
        let key = KeyPair::new(secret).map_err(|_| snow::Error::Dh)?;
        self.key = Some(Arc::new(key));
        self.is_local_static = false;
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        self.key.as_ref().map_or(&NO_KEY[..], |k| &k.public[..])
    }

    fn privkey(&self) -> &[u8] {
        self.key.as_ref().map_or(&NO_KEY[..], |k| &k.secret[..])
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let key = self.key.as_ref().ok_or(snow::Error::Dh)?;
        // snow hands over its whole key buffer (longer than 32 bytes).
        let peer = pubkey
            .get(..X25519_LEN)
            .and_then(|p| <&[u8; X25519_LEN]>::try_from(p).ok())
            .ok_or(snow::Error::Dh)?;
        let out = out
            .get_mut(..X25519_LEN)
            .and_then(|o| <&mut [u8; X25519_LEN]>::try_from(o).ok())
            .ok_or(snow::Error::Dh)?;
        if self.is_local_static {
            let call = self
                .static_calls
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_add(1))
                })
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            if let Some(shared) = self.ctx.ss.cached(call, &key.public, peer) {
                out.copy_from_slice(shared);
                return Ok(());
            }
        }
        key.agree(peer, out).map_err(|_| snow::Error::Dh)
    }
}

/// Fuzzing only: handshakes on this thread draw their ephemeral keys from a
/// seeded stream instead of the OS, so a fuzz input replays exactly.
#[cfg(feature = "fuzzing")]
pub fn dangerous_seed_handshake_rng(seed: Option<u64>) {
    seeded::set(seed);
}

#[cfg(feature = "fuzzing")]
mod seeded {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<Option<u64>> = const { Cell::new(None) };
    }

    pub(super) fn set(seed: Option<u64>) {
        STATE.with(|s| s.set(seed));
    }

    pub(super) fn active() -> bool {
        STATE.with(|s| s.get().is_some())
    }

    /// splitmix64 over the thread's seed (not random: fuzzing only).
    pub(super) struct SeededRng;

    impl snow::types::Random for SeededRng {
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
            STATE.with(|s| {
                let mut x = s.get().unwrap_or(0);
                for chunk in dest.chunks_mut(8) {
                    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = x;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
                }
                s.set(Some(x));
            });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
