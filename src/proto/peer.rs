//! The per-peer state machine: its SAs, its handshake state (one enum:
//! idle, initiating with retransmission, paused after a suite mismatch, or
//! given up), the queue of packets waiting for an SA, liveness (keepalives,
//! dead-peer detection), rekey triggers and roaming. A [`Peer`] lives behind
//! its own lock in the endpoint; its fields are private and every change
//! goes through the methods here.
//!
//! It does not parse datagrams or read handshake messages: `handshake.rs`
//! does, and hands the result here as a [`HandshakeOutcome`] to apply. It
//! owns no socket or clock.

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use tracing::{debug, info, warn, Span};
use vxsec_crypto::cookie::{Cookie, Mac1Key, MAC_LEN};
use vxsec_crypto::key::{Psk, PublicKey};
use vxsec_crypto::noise::{InitiationPayload, InitiatorHandshake, Tai64N, MAX_NOISE_LEN};
use vxsec_crypto::suite::Suite;

use super::config::PeerConfig;
use super::core::Core;
use super::load::COOKIE_USABLE_FOR;
use super::sa_set::{Role, Sa, SaSet, SaTimes};
use super::stats::{Counter, DropReason, PeerStats};
use super::timers::{retry_delay, Liveness};
use super::{Event, PeerId, PeerStatus, SaStatus};
use crate::wire::outer::{emit_initiation, mac_offsets};

mod data;
mod deadlines;
mod key_change;

/// At most one handshake per peer per this interval is started because of
/// data under an SPI we do not know.
pub(crate) const UNKNOWN_SPI_HANDSHAKE_INTERVAL: Duration = Duration::from_secs(1);

/// What a peer's configuration fixes: read without the peer's lock.
pub(crate) struct PeerFixed {
    pub id: PeerId,
    pub key: PublicKey,
    pub psk: Option<Psk>,
    pub name: Option<String>,
    /// mac1 key for messages we send to this peer.
    pub mac1_to_peer: Mac1Key,
    pub persistent_keepalive: Option<Duration>,
    pub span: Span,
}

/// An initiation of ours waiting for its response.
struct Pending {
    /// `None` only if snow refused to build a state (then we just retry).
    hs: Option<InitiatorHandshake>,
    local_spi: u32,
    attempts: u32,
    retry_at: Instant,
    /// mac1 of the last initiation sent (cookie replies are bound to it).
    mac1: [u8; MAC_LEN],
    /// Our static key the last initiation was made with.
    ours: Option<PublicKey>,
}

/// Where the peer's handshakes stand.
enum HandshakeState {
    /// No initiation of ours in flight.
    Idle,
    /// Our initiation waits for its response (boxed: the Noise state is
    /// most of a kilobyte, and most peers are idle).
    Initiating(Box<Pending>),
    /// A suite mismatch: no handshake of ours before `until` (after it,
    /// as `Idle`).
    Paused { until: Instant },
    /// Attempts ran out: no timer starts a handshake until traffic, the
    /// peer or the operator asks for one.
    GaveUp,
}

/// What a handshake message amounted to, for the peer to apply.
pub(crate) enum HandshakeOutcome {
    /// We answered an initiation: `sa` becomes `next` (RX-ready) before
    /// `response` leaves.
    Responded {
        sa: Sa,
        response: Vec<u8>,
        /// Whether our current static key answered (not the previous one,
        /// during a rotation's grace).
        by_current: bool,
    },
    /// Our initiation was answered: `sa` is current at once.
    Completed { sa: Sa },
    /// The peer uses another suite (`response` tells it ours, when we
    /// answer an initiation): handshakes pause.
    Mismatch {
        theirs: Option<Suite>,
        response: Option<Vec<u8>>,
    },
    /// A cookie for our pending initiation: retry now, with mac2.
    Cookie(Cookie),
}

/// What to do with an authenticated, fresh initiation from this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitiationVerdict {
    /// Answer it (any initiation of ours was abandoned).
    Answer,
    /// Answer with our suite; no SA.
    Mismatch,
    /// Simultaneous initiations and ours wins: ignore theirs.
    KeepOurs,
}

pub(crate) struct Peer {
    fixed: Arc<PeerFixed>,
    endpoint: Option<SocketAddr>,
    sas: SaSet,
    handshake: HandshakeState,
    /// Newest initiation timestamp accepted from this peer.
    last_initiation: Option<Tai64N>,
    cookie: Option<(Cookie, Instant)>,
    queue: VecDeque<Vec<u8>>,
    live: Liveness,
    stats: PeerStats,
    /// SPIs, jitter and ephemeral choices of this peer (seeded from the
    /// endpoint's generator when the peer was added).
    rng: StdRng,
    /// The deadline this peer has in the endpoint's schedule.
    scheduled: Option<Instant>,
    /// When data under an unknown SPI from this peer's address last
    /// started a handshake.
    unknown_spi_at: Option<Instant>,
    /// Removed from the endpoint: a handshake finishing now must not
    /// install anything.
    removed: bool,
    /// Our static key rotated while this peer had an SA: a rekey is due by
    /// then, unless a handshake with the new key happens first.
    identity_rekey_at: Option<Instant>,
}

impl Peer {
    pub fn new(id: PeerId, cfg: PeerConfig, rng: StdRng) -> Self {
        let span = tracing::debug_span!("peer", key = %cfg.public_key.fingerprint());
        Peer {
            fixed: Arc::new(PeerFixed {
                id,
                mac1_to_peer: Mac1Key::new(&cfg.public_key),
                key: cfg.public_key,
                psk: cfg.psk,
                name: cfg.name,
                persistent_keepalive: cfg.persistent_keepalive,
                span,
            }),
            endpoint: cfg.endpoint,
            sas: SaSet::default(),
            handshake: HandshakeState::Idle,
            last_initiation: None,
            cookie: None,
            queue: VecDeque::new(),
            live: Liveness::default(),
            stats: PeerStats::default(),
            rng,
            scheduled: None,
            unknown_spi_at: None,
            removed: false,
            identity_rekey_at: None,
        }
    }

    pub fn fixed(&self) -> &Arc<PeerFixed> {
        &self.fixed
    }

    pub fn id(&self) -> PeerId {
        self.fixed.id
    }

    pub fn is_removed(&self) -> bool {
        self.removed
    }

    pub fn scheduled(&self) -> Option<Instant> {
        self.scheduled
    }

    pub fn set_scheduled(&mut self, at: Option<Instant>) {
        self.scheduled = at;
    }

    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.drops.count(reason);
    }

    fn pending(&self) -> Option<&Pending> {
        match &self.handshake {
            HandshakeState::Initiating(p) => Some(p),
            _ => None,
        }
    }

    fn is_initiating(&self) -> bool {
        matches!(self.handshake, HandshakeState::Initiating(_))
    }

    /// Leaves `GaveUp` (traffic or the operator asks for handshakes again).
    fn revive(&mut self) {
        if matches!(self.handshake, HandshakeState::GaveUp) {
            self.handshake = HandshakeState::Idle;
        }
    }

    /// Abandons our initiation, if any, releasing its SPI.
    fn abandon_initiation(&mut self, core: &Core) {
        if let HandshakeState::Initiating(p) = &self.handshake {
            core.spis.release(p.local_spi);
            self.handshake = HandshakeState::Idle;
        }
    }

    fn mismatch_until(&self) -> Option<Instant> {
        match self.handshake {
            HandshakeState::Paused { until } => Some(until),
            _ => None,
        }
    }

    fn suppressed(&self, now: Instant) -> bool {
        self.mismatch_until().is_some_and(|t| now < t)
    }

    /// Until when we must not start a handshake of our own: after a suite
    /// mismatch, and while a handshake the peer started (our `next`) waits
    /// for its confirming packet (two retry intervals; a retransmission by
    /// the peer replaces `next` and restarts the wait).
    fn handshake_gate(&self, core: &Core) -> Option<Instant> {
        let peer_rotating =
            self.sas.next.as_ref().map(|n| {
                n.times.created + Duration::from_millis(core.timers.handshake_retry_ms) * 2
            });
        [peer_rotating, self.mismatch_until()]
            .into_iter()
            .flatten()
            .max()
    }

    /// A fresh local SPI owned by this peer.
    pub fn allocate_spi(&mut self, core: &Core) -> u32 {
        core.spis.allocate(self.fixed.id, &mut self.rng)
    }

    /// Limits of an SA created at `now`.
    pub fn sa_times(&mut self, core: &Core, now: Instant) -> SaTimes {
        SaTimes::new(
            now,
            core.rotation.rekey_after(),
            core.rotation.reject_after(),
            core.rotation.jitter_percent,
            Duration::from_millis(core.timers.handshake_retry_ms),
            &mut self.rng,
        )
    }

    /// Starts a handshake unless one is pending, handshakes are gated, or
    /// we do not know where the peer is.
    pub fn start_handshake(&mut self, core: &Core, now: Instant) {
        if self.is_initiating()
            || self.handshake_gate(core).is_some_and(|t| now < t)
            || self.endpoint.is_none()
        {
            return;
        }
        let local_spi = self.allocate_spi(core);
        self.handshake = HandshakeState::Initiating(Box::new(Pending {
            hs: None,
            local_spi,
            attempts: 0,
            retry_at: now,
            mac1: [0; MAC_LEN],
            ours: None,
        }));
        debug!(local_spi, "starting handshake");
        self.send_initiation(core, now);
    }

    /// (Re)sends an initiation with fresh ephemeral keys and timestamp.
    fn send_initiation(&mut self, core: &Core, now: Instant) {
        let fixed = Arc::clone(&self.fixed);
        let (Some(dst), HandshakeState::Initiating(p)) = (self.endpoint, &mut self.handshake)
        else {
            return;
        };
        p.attempts = p.attempts.saturating_add(1);
        p.retry_at = now + retry_delay(&core.timers, p.attempts, &mut self.rng);
        let payload = InitiationPayload {
            timestamp: core.wall(now),
            suite_id: core.suite.wire_id(),
        };
        let mut noise = [0u8; MAX_NOISE_LEN];
        let ours = core.identities.current();
        let ss = core.ss_snapshot();
        let built = ours.noise.initiate(
            &fixed.key,
            ss.get(&fixed.key),
            fixed.psk.as_ref(),
            payload,
            &mut noise,
        );
        let (hs, n) = match built {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cannot build initiation");
                p.hs = None;
                return;
            }
        };
        p.hs = Some(hs);
        p.ours = Some(*ours.public_key());
        let mut msg = vec![0u8; MAX_NOISE_LEN + 64];
        let Ok(len) = emit_initiation(&mut msg, p.local_spi, noise.get(..n).unwrap_or(&[])) else {
            return;
        };
        msg.truncate(len);
        let (m1, m2) = mac_offsets(len);
        let mac1 = fixed.mac1_to_peer.compute(msg.get(..m1).unwrap_or(&[]));
        p.mac1 = mac1;
        if let Some(s) = msg.get_mut(m1..m2) {
            s.copy_from_slice(&mac1);
        }
        if let Some((cookie, _)) = self
            .cookie
            .as_ref()
            .filter(|(_, t)| now.saturating_duration_since(*t) < COOKIE_USABLE_FOR)
        {
            let mac2 = cookie.mac2(msg.get(..m2).unwrap_or(&[]));
            if let Some(s) = msg.get_mut(m2..) {
                s.copy_from_slice(&mac2);
            }
        }
        self.stats.initiations_sent += 1;
        core.stats.count(Counter::InitiationsSent);
        debug!(attempt = p.attempts, "initiation sent");
        core.push(dst, msg, None);
    }

    /// Applies what a handshake message amounted to.
    pub fn apply(&mut self, core: &Core, now: Instant, outcome: HandshakeOutcome) {
        match outcome {
            HandshakeOutcome::Responded {
                sa,
                response,
                by_current,
            } => {
                if by_current {
                    self.identity_rekey_at = None;
                }
                let (local_spi, remote_spi) = (sa.local_spi, sa.remote_spi);
                // Make before break: RX-ready before the response leaves.
                self.sas.install_next(sa, &core.spis);
                if let Some(dst) = self.endpoint {
                    core.push(dst, response, None);
                }
                debug!(local_spi, remote_spi, "responded; next SA installed");
            }
            HandshakeOutcome::Completed { sa } => {
                let current = *core.identities.current().public_key();
                if self.pending().is_some_and(|p| p.ours == Some(current)) {
                    self.identity_rekey_at = None;
                }
                self.complete_as_initiator(core, now, sa);
            }
            HandshakeOutcome::Mismatch { theirs, response } => {
                self.report_mismatch(core, now, theirs);
                if let (Some(dst), Some(r)) = (self.endpoint, response) {
                    core.push(dst, r, None);
                }
            }
            HandshakeOutcome::Cookie(cookie) => {
                self.cookie = Some((cookie, now));
                self.stats.cookies_received += 1;
                core.stats.count(Counter::CookiesReceived);
                // Retry now, with mac2, rather than after the retry delay:
                // a rekey under load then takes one extra round trip. At
                // most one retry per initiation sent: the retry has a new
                // mac1, so a second reply to the old one no longer opens.
                if let HandshakeState::Initiating(p) = &mut self.handshake {
                    p.retry_at = p.retry_at.min(now);
                }
                debug!("cookie received; retrying with mac2");
            }
        }
    }

    /// The initiator side of a completed handshake.
    fn complete_as_initiator(&mut self, core: &Core, now: Instant, sa: Sa) {
        self.handshake = HandshakeState::Idle;
        let had = self.sas.install_current(sa, &core.spis);
        self.established(core, Role::Initiator, had);
        if self.flush_queue(core, now) == 0 {
            // Confirms the SA so the responder promotes `next` at once.
            self.send_keepalive(core, now);
        }
    }

    fn established(&mut self, core: &Core, role: Role, had_current: bool) {
        let Some(cur) = self.sas.current.as_ref() else {
            return;
        };
        self.stats.handshakes += 1;
        core.stats.count(Counter::Handshakes);
        let (peer, local_spi, remote_spi) = (self.fixed.id, cur.local_spi, cur.remote_spi);
        if had_current {
            self.stats.rekeys += 1;
            debug!(local_spi, remote_spi, ?role, "rekeyed");
            core.event(Event::Rekeyed {
                peer,
                role,
                local_spi,
                remote_spi,
            });
        } else {
            info!(local_spi, remote_spi, ?role, "handshake complete");
            core.event(Event::HandshakeComplete {
                peer,
                role,
                local_spi,
                remote_spi,
            });
        }
    }

    /// Moves the endpoint to an authenticated source address.
    pub fn roam(&mut self, core: &Core, from: SocketAddr) {
        if self.endpoint != Some(from) {
            if self.endpoint.is_some() {
                info!(%from, "peer roamed");
            }
            core.event(Event::Roamed {
                peer: self.fixed.id,
                from: self.endpoint,
                to: from,
            });
            core.addresses
                .moved(self.fixed.id, self.endpoint, Some(from));
            self.endpoint = Some(from);
        }
    }

    /// An authenticated initiation from this peer with `timestamp` arrived
    /// from `from`: refuses a stale one, else records it, roams, and says
    /// what to answer (`suite_ok`: the peer offered our suite;
    /// `ours_wins`: our static key is the larger, which keeps our
    /// initiation if both sides initiated at once).
    pub fn admit_initiation(
        &mut self,
        core: &Core,
        from: SocketAddr,
        timestamp: Tai64N,
        suite_ok: bool,
        ours_wins: bool,
    ) -> Result<InitiationVerdict, DropReason> {
        if self.last_initiation.is_some_and(|t| timestamp <= t) {
            debug!("initiation with a stale timestamp refused");
            return Err(DropReason::StaleInitiation);
        }
        self.last_initiation = Some(timestamp);
        self.roam(core, from);
        if !suite_ok {
            return Ok(InitiationVerdict::Mismatch);
        }
        if self.is_initiating() {
            // Simultaneous initiations: the larger static key keeps its
            // own, the smaller abandons its own and answers. Deterministic,
            // and each side keeps sealing on its current SA meanwhile.
            self.stats.collisions += 1;
            if ours_wins {
                debug!("handshake collision: keeping our initiation");
                return Ok(InitiationVerdict::KeepOurs);
            }
            debug!("handshake collision: answering theirs");
            self.abandon_initiation(core);
        }
        Ok(InitiationVerdict::Answer)
    }

    /// Our pending initiation's Noise state, if `spi` is its SPI.
    pub fn pending_handshake(&mut self, spi: u32) -> Option<&mut InitiatorHandshake> {
        match &mut self.handshake {
            HandshakeState::Initiating(p) if p.local_spi == spi => p.hs.as_mut(),
            _ => None,
        }
    }

    /// The mac1 of our pending initiation, if `spi` is its SPI.
    pub fn pending_mac1(&self, spi: u32) -> Option<[u8; MAC_LEN]> {
        self.pending()
            .filter(|p| p.local_spi == spi)
            .map(|p| p.mac1)
    }

    /// Data under an SPI we do not know came from this peer's address: it
    /// still holds an SA we lost (we restarted, or our SA expired first).
    /// Without an SA of our own, start a handshake now rather than after
    /// the dead-peer timeout; the datagram is unauthenticated, so this only
    /// asks for a handshake (which authenticates), at most once per
    /// [`UNKNOWN_SPI_HANDSHAKE_INTERVAL`]. Returns whether it did.
    pub fn handle_unknown_spi(&mut self, core: &Core, now: Instant) -> bool {
        let due = self
            .unknown_spi_at
            .is_none_or(|t| now.saturating_duration_since(t) >= UNKNOWN_SPI_HANDSHAKE_INTERVAL);
        if !due {
            return false;
        }
        self.unknown_spi_at = Some(now);
        if self.sas.current.is_some() {
            return false;
        }
        debug!("data under an unknown SPI from a peer without SA: handshaking");
        self.force_rekey(core, now);
        true
    }

    /// Drops all state that refers to SPIs or addresses (on removal).
    pub fn clear(&mut self, core: &Core) {
        self.removed = true;
        self.sas.clear(&core.spis);
        self.abandon_initiation(core);
        self.queue.clear();
        core.addresses.moved(self.fixed.id, self.endpoint, None);
    }

    pub fn status(&self) -> PeerStatus {
        let sa = |s: Option<&Sa>| {
            s.map(|s| SaStatus {
                local_spi: s.local_spi,
                remote_spi: s.remote_spi,
                suite: s.suite(),
                role: s.role,
                created: s.times.created,
                rekey_at: s.time_rekey_at(),
                reject_at: s.times.reject_at,
                traffic: s.traffic,
                key_fingerprint: s.key_fingerprint(),
            })
        };
        PeerStatus {
            id: self.fixed.id,
            public_key: self.fixed.key,
            name: self.fixed.name.clone(),
            endpoint: self.endpoint,
            established: self.sas.current.is_some(),
            next: sa(self.sas.next.as_deref()),
            current: sa(self.sas.current.as_deref()),
            previous: sa(self.sas.previous.as_deref()),
            next_rekey: self.sas.current.as_deref().map(Sa::time_rekey_at),
            handshake_pending: self.is_initiating(),
            queued_packets: self.queue.len(),
            last_rx: self.live.last_rx,
            stats: self.stats,
        }
    }

    /// Suite mismatch: pause handshakes, drop what waited for one; an
    /// event and a warning the first time.
    fn report_mismatch(&mut self, core: &Core, now: Instant, theirs: Option<Suite>) {
        let already = self.suppressed(now);
        self.abandon_initiation(core);
        self.queue.clear();
        self.handshake = HandshakeState::Paused {
            until: now + Duration::from_millis(core.timers.suite_mismatch_backoff_ms),
        };
        if !already {
            warn!(
                ours = core.suite.name(),
                theirs = theirs.map_or("unknown", Suite::name),
                "suite mismatch: no SA with this peer until one side changes its suite"
            );
            core.event(Event::SuiteMismatch {
                peer: self.fixed.id,
                ours: core.suite,
                theirs,
            });
        }
    }

    /// Operator-forced rotation.
    pub fn force_rekey(&mut self, core: &Core, now: Instant) {
        if !self.is_initiating() {
            self.handshake = HandshakeState::Idle;
        }
        self.start_handshake(core, now);
    }
}

#[cfg(test)]
mod tests;
