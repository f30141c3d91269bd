//! The endpoint: one local identity, its peers (by public key, by
//! [`PeerId`], by SPI and by current address), and the sans-I/O driver API
//! (`handle_*` in, `poll_*` out) the agent, the simulations and the fuzz
//! targets call. [`Endpoint`] is `Send + Sync` and every method takes
//! `&self`: one endpoint serves every worker thread.
//!
//! # Locks
//!
//! * the peer table (`RwLock`, `peers.rs`): read on every call to find a
//!   peer, written only to add or remove one;
//! * each peer's `Mutex<Peer>`: its SAs, counters, handshake and timers;
//!   workers serving different peers never wait on each other;
//! * the handshake load state (`Mutex`): only on the handshake path and in
//!   `handle_timeout`, never while a peer's lock is held;
//! * leaves (the static identities, the SPI table, the address index, the
//!   `ss` snapshot, the transmit and event queues, the timer schedule):
//!   each held for a few instructions, nothing taken under them.
//!
//! Order: table → peer → leaf, or load → leaf. A table guard is dropped
//! before a peer is locked (its `Arc` is cloned). No lock is held across
//! the AEAD (the jobs of `jobs.rs` run unlocked) or across the
//! Diffie-Hellman that reads an initiation (anyone may send one;
//! `handshake.rs`). The DHs that build our initiation and our response run
//! under the lock of the one peer concerned, once per handshake with it:
//! that peer's data waits for them, no other peer's does.
//!
//! It does not own sockets, buffers of the batched data path or a clock.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::trace;
use vxsec_crypto::key::PublicKey;
use vxsec_crypto::noise::NoiseIdentity;
use vxsec_crypto::sa::OpenCipher;
use vxsec_crypto::suite::Suite;

use super::config::{ConfigError, EndpointConfig, PeerConfig};
use super::core::{lock, Core, CoreConfig};
use super::handshake::{cookie_reply, initiation, response, Refusal};
use super::identity::{Identities, LocalIdentity};
use super::jobs::{OpenedJob, Received, SealStart};
use super::load::{update_load, LoadControl, LoadState};
use super::peer::Peer;
use super::peers::{PeerRun, Peers};
use super::stats::{Counter, DropReason, EndpointStats};
use super::{Event, Incoming, PeerId, PeerStatus, SendError, Transmit};
use crate::wire::outer::{parse_message, Message};

/// A vxsec endpoint: one identity (two during a key rotation's grace, see
/// `rotation.rs`), many peers, one UDP socket's worth of traffic.
pub struct Endpoint {
    pub(super) core: Core,
    pub(super) peers: Peers,
    pub(super) load: Mutex<LoadState>,
}

impl Endpoint {
    /// A fresh endpoint: new SPIs, new cookie secret, no SAs. `unix_time` is
    /// the wall clock at `now` (for TAI64N timestamps). Never panics: an
    /// invalid configuration is logged and its invalid groups replaced by
    /// defaults; use [`Endpoint::try_new`] to refuse it instead.
    pub fn new(config: EndpointConfig, now: Instant, unix_time: Duration) -> Self {
        let config = match config.validate() {
            Ok(()) => config,
            Err(e) => {
                tracing::error!(error = %e, "invalid endpoint configuration; using defaults for it");
                config.sanitized()
            }
        };
        Self::build(config, now, unix_time)
    }

    /// Like [`Endpoint::new`] but refuses an invalid configuration.
    pub fn try_new(
        config: EndpointConfig,
        now: Instant,
        unix_time: Duration,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config, now, unix_time))
    }

    fn build(config: EndpointConfig, now: Instant, unix_time: Duration) -> Self {
        let mut rng = match config.rng_seed {
            Some(seed) => StdRng::from_seed(seed),
            None => StdRng::from_entropy(),
        };
        let identity = NoiseIdentity::new(config.private_key, config.network_id.as_bytes());
        let control = LoadControl::new(config.load, identity.public_key(), now, &mut rng);
        Endpoint {
            core: Core::new(CoreConfig {
                identities: Identities::new(LocalIdentity::new(identity)),
                network_id: config.network_id,
                suite: config.suite,
                rotation: config.rotation,
                timers: config.timers,
                queue_packets: config.queue_packets,
                start: now,
                unix_at_start: unix_time,
            }),
            peers: Peers::default(),
            load: Mutex::new(LoadState { control, rng }),
        }
    }

    /// Our static public key (the current one, after a rotation).
    pub fn public_key(&self) -> PublicKey {
        *self.core.identities.current().public_key()
    }

    /// Our suite.
    pub fn suite(&self) -> Suite {
        self.core.suite
    }

    /// Adds a peer. Its first handshake starts when data is sealed for it
    /// (or on [`Endpoint::rekey`]).
    pub fn add_peer(&self, _now: Instant, peer: PeerConfig) -> Result<PeerId, ConfigError> {
        if self.core.identities.is_ours(&peer.public_key) {
            return Err(ConfigError::new(
                "peer.public_key",
                "is this endpoint's own public key",
            ));
        }
        if peer.persistent_keepalive.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "peer.persistent_keepalive",
                "must be positive when set",
            ));
        }
        let ss = self
            .core
            .identities
            .current()
            .noise
            .precompute_ss(&peer.public_key)
            .map_err(|_| {
                ConfigError::new(
                    "peer.public_key",
                    "is a low-order X25519 point: no handshake with it can succeed",
                )
            })?;
        let seed: [u8; 32] = lock(&self.load).rng.gen();
        let (key, address) = (peer.public_key, peer.endpoint);
        let id = self
            .peers
            .insert(key, |id| Peer::new(id, peer, StdRng::from_seed(seed)))?;
        self.core.update_ss(|t| t.insert(ss));
        self.core.addresses.moved(id, None, address);
        Ok(id)
    }

    /// Removes a peer and all its SAs.
    pub fn remove_peer(&self, key: &PublicKey) -> bool {
        if !self.peers.remove(&self.core, key) {
            return false;
        }
        self.core.update_ss(|t| {
            t.remove(key);
        });
        true
    }

    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.peers.id(key)
    }

    /// See [`Peers::run`].
    pub(super) fn peer_run<R>(&self, f: impl FnOnce(&mut PeerRun<'_>) -> R) -> R {
        self.peers.run(&self.core, f)
    }

    /// See [`Peers::with_peer`].
    fn with_peer<R>(
        &self,
        id: PeerId,
        exact: bool,
        f: impl FnOnce(&mut Peer, &Core) -> R,
    ) -> Option<R> {
        self.peers.with_peer(&self.core, id, exact, f)
    }

    /// A handshake message (initiation, response or cookie reply) from the
    /// UDP socket. Anything else is refused as [`DropReason::Malformed`]
    /// (data goes through [`Endpoint::precheck_datagram`]). Every refusal
    /// is counted.
    pub fn handle_handshake(
        &self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Incoming, DropReason> {
        let (core, peers, load) = (&self.core, &self.peers, &self.load);
        let (handshake, r) = match parse_message(buf) {
            Ok(Message::Initiation(m)) => (true, initiation(core, peers, load, now, from, &m)),
            Ok(Message::Response(m)) => (true, response(core, peers, now, from, &m)),
            Ok(Message::CookieReply(m)) => (true, cookie_reply(core, peers, now, &m)),
            Ok(Message::Data(_)) | Err(_) => (false, Err((None, DropReason::Malformed))),
        };
        r.map_err(|(peer, reason): Refusal| {
            if handshake {
                self.core.stats.count(Counter::HandshakeDrops);
            }
            if let Some(id) = peer {
                self.with_peer(id, false, |p, _| p.count_drop(reason));
            }
            self.count_drop(from, reason)
        })
    }

    /// The driver's handshake queue (messages received, not yet handed to
    /// [`Endpoint::handle_handshake`]) holds `queued` of `capacity`: a
    /// backlog of 1/8 or more puts the endpoint under load for a second
    /// (cookies required, proven sources rate-limited), as wireguard-go
    /// decides from its handshake queue. The configured handshake rate
    /// (`load.handshakes_per_second_before_cookies`) engages it too.
    pub fn handle_handshake_backlog(&self, now: Instant, queued: usize, capacity: usize) {
        let mut l = lock(&self.load);
        l.control.note_backlog(now, queued, capacity);
        update_load(&self.core, &mut l.control, now);
    }

    /// Whether the endpoint is under load now (mac2 required).
    pub fn under_load(&self, now: Instant) -> bool {
        lock(&self.load).control.under_load(now)
    }

    /// Counts a dropped datagram endpoint-wide (the caller counts it for
    /// the peer).
    fn count_drop(&self, from: SocketAddr, reason: DropReason) -> DropReason {
        self.core.stats.count_drop(reason);
        trace!(%from, %reason, "datagram dropped");
        reason
    }

    /// The first phase of a receive. A data message for one of our SAs that
    /// passes the checks made before decryption (reject time, length,
    /// limit, replay window) comes back as [`Received::Data`]: open it with
    /// [`super::OpenJob::open`] (no lock needed), then call
    /// [`Endpoint::commit_datagram`]. Anything else is handled in full
    /// here, as by [`Endpoint::handle_handshake`]; every drop is counted.
    pub fn precheck_datagram(
        &self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Received, DropReason> {
        let spi = match parse_message(buf) {
            Ok(Message::Data(d)) => d.receiver_spi(),
            _ => return self.handle_handshake(now, from, buf).map(Received::Done),
        };
        let Some(entry) = self
            .core
            .spis
            .owner(spi)
            .and_then(|id| self.peers.entry(id))
        else {
            return Err(self.count_drop(from, DropReason::UnknownSpi));
        };
        // Changes nothing the schedule depends on (drop counters only).
        let mut p = lock(&entry);
        match p.precheck(now, from, spi, buf) {
            Ok((job, opener)) => Ok(Received::Data { job, opener }),
            Err(reason) => {
                p.count_drop(reason);
                Err(self.count_drop(from, reason))
            }
        }
    }

    /// The last phase of a receive: commits an opened data message on its
    /// SA if that SA (found again by SPI) is still the one `opener` belongs
    /// to, then does the bookkeeping of an accepted message (counters,
    /// liveness, promotion of `next`, roaming, rekey triggers). A duplicate
    /// that passed its precheck before the first copy was committed is a
    /// [`DropReason::Replay`]; an SA rotated out meanwhile is
    /// [`DropReason::SaGone`]. Every drop is counted.
    pub fn commit_datagram(
        &self,
        now: Instant,
        job: OpenedJob,
        opener: &Arc<OpenCipher>,
    ) -> Result<Incoming, DropReason> {
        let from = job.from;
        let r = self.with_peer(job.peer, false, |p, core| {
            p.commit(core, now, job, opener).inspect_err(|&reason| {
                p.count_drop(reason);
            })
        });
        match r {
            Some(Ok(incoming)) => Ok(incoming),
            Some(Err(reason)) => Err(self.count_drop(from, reason)),
            None => Err(self.count_drop(from, DropReason::SaGone)),
        }
    }

    /// The first phase of a send: everything but the AEAD. Reserves a
    /// counter on the peer's current SA for the plaintext at
    /// `buf[16..16 + payload_len]` (and does the bookkeeping of a sent
    /// packet), or queues a copy and starts a handshake. Seal the returned
    /// job with [`super::SealJob::seal`] and the returned cipher, on any
    /// thread, into a buffer holding the same plaintext.
    pub fn reserve_seal(
        &self,
        now: Instant,
        peer: PeerId,
        buf: &[u8],
        payload_len: usize,
    ) -> Result<SealStart, SendError> {
        let r = self
            .with_peer(peer, false, |p, core| {
                p.reserve(core, now, buf, payload_len)
            })
            .ok_or(SendError::UnknownPeer)?;
        Ok(match r? {
            Some((job, cipher)) => SealStart::Reserved { job, cipher },
            None => SealStart::Queued,
        })
    }

    /// Data under an SPI we do not know arrived from `from`: if `from` is a
    /// configured peer's current address (roaming included) and that peer
    /// has no SA, a handshake starts (at most one per peer per second; the
    /// datagram proves nothing, the handshake authenticates). Returns
    /// whether one started.
    pub fn handle_unknown_spi(&self, now: Instant, from: SocketAddr) -> bool {
        let Some(id) = self.core.addresses.peer_at(from) else {
            return false;
        };
        self.with_peer(id, true, |p, core| p.handle_unknown_spi(core, now))
            .unwrap_or(false)
    }

    /// Whether `ip` is a configured peer's current endpoint address
    /// (roaming included): a driver gives such sources' handshakes
    /// priority.
    pub fn is_peer_endpoint(&self, ip: IpAddr) -> bool {
        self.core.addresses.is_peer_ip(ip)
    }

    /// Fires every due timer (retransmissions, rekeys, keepalives, expiry)
    /// of the peers that are due, and the load state's.
    pub fn handle_timeout(&self, now: Instant) {
        {
            let mut l = lock(&self.load);
            let LoadState { control, rng } = &mut *l;
            control.refresh_secret(now, rng);
            update_load(&self.core, control, now);
        }
        self.peers.handle_timeout(&self.core, now);
    }

    /// When `handle_timeout` should next be called. Corrects entries of the
    /// schedule that the data path left earlier than their peer's deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let load = lock(&self.load).control.poll_timeout();
        let peers = self.peers.poll_timeout(&self.core);
        [peers, load].into_iter().flatten().min()
    }

    /// Bumped whenever a call moved the earliest deadline earlier (and
    /// earlier than the horizon, once set): a driver sleeping until the
    /// last [`Endpoint::poll_timeout`] should wake and ask again when this
    /// changed.
    pub fn timers_generation(&self) -> u64 {
        self.peers.timers_generation()
    }

    /// The driver promises to call [`Endpoint::poll_timeout`] again by `by`
    /// unwoken; deadlines that move earlier but not before `by` then leave
    /// [`Endpoint::timers_generation`] alone. Set before reading both.
    pub fn set_timers_horizon(&self, by: Instant) {
        self.peers.set_timers_horizon(by);
    }

    /// Next datagram to send (handshakes, cookie replies, keepalives,
    /// queued data), written into `out`. A datagram larger than `out` is
    /// dropped (use a buffer of at least the tunnel MTU + 32).
    pub fn poll_transmit(&self, _now: Instant, out: &mut [u8]) -> Option<Transmit> {
        self.core.pop_transmit(out)
    }

    /// Whether `poll_transmit` may have something (no lock taken).
    pub fn has_transmits(&self) -> bool {
        self.core.has_transmits()
    }

    pub fn poll_event(&self) -> Option<Event> {
        self.core.pop_event()
    }

    /// Operator-forced rotation of one peer or all.
    pub fn rekey(&self, now: Instant, peer: Option<PeerId>) {
        let ids: Vec<PeerId> = match peer {
            Some(id) => vec![id],
            None => self.peers.ids(),
        };
        for id in ids {
            self.with_peer(id, true, |p, core| p.force_rekey(core, now));
        }
    }

    /// Every peer's status, in [`PeerId`] order.
    pub fn peers(&self) -> std::vec::IntoIter<PeerStatus> {
        self.peers
            .all()
            .iter()
            .map(|e| lock(e).status())
            .collect::<Vec<_>>()
            .into_iter()
    }

    pub fn peer_status(&self, peer: PeerId) -> Option<PeerStatus> {
        self.peers.entry(peer).map(|e| lock(&e).status())
    }

    /// The endpoint-wide counters now.
    pub fn stats(&self) -> EndpointStats {
        self.core.stats.snapshot()
    }

    /// Local SPIs in use (SAs and pending initiations), for leak checks.
    pub fn live_spis(&self) -> usize {
        self.core.spis.len()
    }

    /// Entries in the timer schedule (at most one per peer).
    pub fn scheduled_timers(&self) -> usize {
        self.peers.scheduled_timers()
    }
}
