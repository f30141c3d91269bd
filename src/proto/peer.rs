//! The per-peer state machine: its SAs, its pending initiation (with
//! retransmission), the queue of packets waiting for an SA, liveness
//! (keepalives, dead-peer detection), rekey triggers and roaming.
//!
//! It does not parse datagrams or answer initiations (`handshake.rs` does,
//! then hands the result here) and owns no socket or clock.

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn, Span};
use vxsec_crypto::cookie::{Cookie, Mac1Key, MAC_LEN};
use vxsec_crypto::key::{Psk, PublicKey};
use vxsec_crypto::noise::{InitiationPayload, InitiatorHandshake, Tai64N, MAX_NOISE_LEN};
use vxsec_crypto::sa::{LimitStatus, OpenCipher, SealCipher, DATA_HEADER_LEN, DATA_OVERHEAD};

use super::config::PeerConfig;
use super::endpoint::Core;
use super::load::COOKIE_USABLE_FOR;
use super::sa::{Role, Sa, SaSet, SealRefusal, Slot};
use super::split::{OpenJob, OpenedJob, SealJob};
use super::stats::{DropReason, PeerStats};
use super::timers::{retry_delay, Liveness};
use super::{Event, Incoming, PeerId, PeerStatus, SaStatus, SealOutcome, SealRecord, SendError};
use crate::wire::outer::{emit_initiation, mac_offsets};

/// An initiation of ours waiting for its response.
pub(crate) struct Pending {
    /// `None` only if snow refused to build a state (then we just retry).
    pub hs: Option<InitiatorHandshake>,
    pub local_spi: u32,
    pub attempts: u32,
    pub retry_at: Instant,
    /// mac1 of the last initiation sent (cookie replies are bound to it).
    pub mac1: [u8; MAC_LEN],
}

pub(crate) struct Peer {
    pub id: PeerId,
    pub key: PublicKey,
    pub psk: Option<Psk>,
    pub name: Option<String>,
    /// mac1 key for messages we send to this peer.
    pub mac1_to_peer: Mac1Key,
    pub endpoint: Option<SocketAddr>,
    persistent_keepalive: Option<Duration>,
    pub sas: SaSet,
    pub pending: Option<Pending>,
    /// Newest initiation timestamp accepted from this peer.
    pub last_initiation: Option<Tai64N>,
    pub cookie: Option<(Cookie, Instant)>,
    queue: VecDeque<Vec<u8>>,
    live: Liveness,
    pub mismatch_until: Option<Instant>,
    unreachable: bool,
    pub stats: PeerStats,
    pub span: Span,
}

impl Peer {
    pub fn new(id: PeerId, cfg: PeerConfig) -> Self {
        let span = tracing::debug_span!("peer", key = %cfg.public_key.fingerprint());
        Peer {
            id,
            mac1_to_peer: Mac1Key::new(&cfg.public_key),
            key: cfg.public_key,
            psk: cfg.psk,
            name: cfg.name,
            endpoint: cfg.endpoint,
            persistent_keepalive: cfg.persistent_keepalive,
            sas: SaSet::default(),
            pending: None,
            last_initiation: None,
            cookie: None,
            queue: VecDeque::new(),
            live: Liveness::default(),
            mismatch_until: None,
            unreachable: false,
            stats: PeerStats::default(),
            span,
        }
    }

    fn suppressed(&self, now: Instant) -> bool {
        self.mismatch_until.is_some_and(|t| now < t)
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
        [peer_rotating, self.mismatch_until]
            .into_iter()
            .flatten()
            .max()
    }

    /// Starts a handshake unless one is pending, handshakes are gated, or
    /// we do not know where the peer is.
    pub fn start_handshake(&mut self, core: &mut Core, now: Instant) {
        if self.pending.is_some()
            || self.handshake_gate(core).is_some_and(|t| now < t)
            || self.endpoint.is_none()
        {
            return;
        }
        let local_spi = core.spis.allocate(self.id, &mut core.rng);
        self.pending = Some(Pending {
            hs: None,
            local_spi,
            attempts: 0,
            retry_at: now,
            mac1: [0; MAC_LEN],
        });
        debug!(local_spi, "starting handshake");
        self.send_initiation(core, now);
    }

    /// (Re)sends an initiation with fresh ephemeral keys and timestamp.
    fn send_initiation(&mut self, core: &mut Core, now: Instant) {
        let (Some(dst), Some(p)) = (self.endpoint, self.pending.as_mut()) else {
            return;
        };
        p.attempts = p.attempts.saturating_add(1);
        p.retry_at = now + retry_delay(&core.timers, p.attempts, &mut core.rng);
        let payload = InitiationPayload {
            timestamp: core.wall(now),
            suite_id: core.suite.wire_id(),
        };
        let mut noise = [0u8; MAX_NOISE_LEN];
        let ss = core.ss_table.get(&self.key);
        let (hs, n) =
            match core
                .identity
                .initiate(&self.key, ss, self.psk.as_ref(), payload, &mut noise)
            {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "cannot build initiation");
                    p.hs = None;
                    return;
                }
            };
        p.hs = Some(hs);
        let mut msg = vec![0u8; MAX_NOISE_LEN + 64];
        let Ok(len) = emit_initiation(&mut msg, p.local_spi, noise.get(..n).unwrap_or(&[])) else {
            return;
        };
        msg.truncate(len);
        let (m1, m2) = mac_offsets(len);
        let mac1 = self.mac1_to_peer.compute(msg.get(..m1).unwrap_or(&[]));
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
        core.stats.initiations_sent += 1;
        debug!(attempt = p.attempts, "initiation sent");
        core.push(dst, msg, None);
    }

    /// Seals one plaintext at `buf[16..16 + len]`, or queues it:
    /// [`Peer::reserve`] then [`SealJob::seal`] with the current SA's cipher.
    pub fn seal(
        &mut self,
        core: &mut Core,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<SealOutcome, SendError> {
        let Some(job) = self.reserve(core, now, buf, len)? else {
            return Ok(SealOutcome::Queued);
        };
        let cipher = self.seal_cipher().ok_or(SendError::KeyMismatch)?;
        job.seal(cipher, buf)
    }

    /// The stateful half of [`Peer::seal`]: reserves a counter on the
    /// current SA for the plaintext at `buf[16..16 + len]` and does all the
    /// bookkeeping of a sent packet (traffic, liveness, rekey at a soft
    /// limit), or queues a copy and starts a handshake (`Ok(None)`).
    pub fn reserve(
        &mut self,
        core: &mut Core,
        now: Instant,
        buf: &[u8],
        len: usize,
    ) -> Result<Option<SealJob>, SendError> {
        if buf.len() < len.saturating_add(DATA_OVERHEAD) {
            return Err(SendError::BufferTooSmall);
        }
        let dst = self.endpoint.ok_or(SendError::NoEndpoint)?;
        if let Some(cur) = self.sas.current.as_mut().filter(|c| c.can_seal(now)) {
            match cur.reserve(now, len) {
                Ok(ticket) => {
                    let record = SealRecord {
                        key_fingerprint: cur.key_fingerprint(),
                        counter: ticket.counter(),
                    };
                    self.stats.traffic.tx(len);
                    self.live.on_tx(now, len == 0);
                    if ticket.status() != LimitStatus::Ok {
                        self.start_handshake(core, now);
                    }
                    return Ok(Some(SealJob::new(ticket, dst, record)));
                }
                Err(SealRefusal::BufferTooSmall) => return Err(SendError::BufferTooSmall),
                Err(SealRefusal::Exhausted) => {}
            }
        }
        if self.suppressed(now) {
            return Err(SendError::Suppressed);
        }
        self.unreachable = false;
        self.start_handshake(core, now);
        if self.queue.len() >= core.queue_packets {
            return Err(SendError::QueueFull);
        }
        let payload = buf
            .get(DATA_HEADER_LEN..DATA_HEADER_LEN + len)
            .ok_or(SendError::BufferTooSmall)?;
        self.queue.push_back(payload.to_vec());
        Ok(None)
    }

    /// The cipher of the current SA (the one [`Peer::reserve`] reserves on).
    pub fn seal_cipher(&self) -> Option<&Arc<SealCipher>> {
        self.sas.current.as_deref().map(Sa::seal_cipher)
    }

    /// Seals queued packets onto the current SA.
    fn flush_queue(&mut self, core: &mut Core, now: Instant) -> usize {
        let mut sent = 0;
        let Some(dst) = self.endpoint else { return 0 };
        while let Some(payload) = self.queue.pop_front() {
            let Some(cur) = self.sas.current.as_mut() else {
                self.queue.push_front(payload);
                break;
            };
            let mut msg = vec![0u8; payload.len() + DATA_OVERHEAD];
            if let Some(s) = msg.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()) {
                s.copy_from_slice(&payload);
            }
            match cur.seal(now, &mut msg, payload.len()) {
                Ok(s) => {
                    msg.truncate(s.len);
                    let record = SealRecord {
                        key_fingerprint: cur.key_fingerprint(),
                        counter: s.counter,
                    };
                    self.stats.traffic.tx(payload.len());
                    self.live.on_tx(now, payload.is_empty());
                    core.push(dst, msg, Some(record));
                    sent += 1;
                }
                Err(_) => {
                    self.queue.push_front(payload);
                    break;
                }
            }
        }
        sent
    }

    /// Sends an empty data message on the current SA.
    fn send_keepalive(&mut self, core: &mut Core, now: Instant) {
        // Whatever happens, the keepalive deadlines are consumed.
        self.live.on_tx(now, true);
        let (Some(dst), Some(cur)) = (self.endpoint, self.sas.current.as_mut()) else {
            return;
        };
        let mut msg = vec![0u8; DATA_OVERHEAD];
        if let Ok(s) = cur.seal(now, &mut msg, 0) {
            let record = SealRecord {
                key_fingerprint: cur.key_fingerprint(),
                counter: s.counter,
            };
            self.stats.traffic.tx(0);
            self.stats.keepalives_sent += 1;
            core.push(dst, msg, Some(record));
        }
    }

    /// The initiator side of a completed handshake.
    pub fn complete_as_initiator(&mut self, core: &mut Core, now: Instant, sa: Sa) {
        self.pending = None;
        let had = self.sas.install_current(sa, &mut core.spis);
        self.established(core, Role::Initiator, had);
        self.unreachable = false;
        if self.flush_queue(core, now) == 0 {
            // Confirms the SA so the responder promotes `next` at once.
            self.send_keepalive(core, now);
        }
    }

    fn established(&mut self, core: &mut Core, role: Role, had_current: bool) {
        let Some(cur) = self.sas.current.as_ref() else {
            return;
        };
        self.stats.handshakes += 1;
        core.stats.handshakes += 1;
        let (peer, local_spi, remote_spi) = (self.id, cur.local_spi, cur.remote_spi);
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
    pub fn roam(&mut self, core: &mut Core, from: SocketAddr) {
        if self.endpoint != Some(from) {
            if self.endpoint.is_some() {
                info!(%from, "peer roamed");
            }
            core.event(Event::Roamed {
                peer: self.id,
                from: self.endpoint,
                to: from,
            });
            self.endpoint = Some(from);
        }
    }

    /// Opens a data message addressed to one of our SAs (the one-shot:
    /// [`Sa::open`] is precheck, open and commit on the same SA).
    pub fn open(
        &mut self,
        core: &mut Core,
        now: Instant,
        from: SocketAddr,
        spi: u32,
        buf: &mut [u8],
    ) -> Result<Incoming, DropReason> {
        let (slot, sa) = self.sas.find(spi).ok_or(DropReason::UnknownSpi)?;
        let range = sa.open(now, buf)?;
        let volume = sa.volume_rekey_due();
        Ok(self.accepted(core, now, from, slot, range, volume))
    }

    /// The first half of a two-phase receive: the prechecks of the SA with
    /// local SPI `spi` (reject time, length, limit, replay window), changing
    /// nothing. Drops are counted by the caller.
    pub fn precheck(
        &self,
        now: Instant,
        from: SocketAddr,
        spi: u32,
        buf: &[u8],
    ) -> Result<OpenJob, DropReason> {
        let sa = self.sas.get(spi).ok_or(DropReason::UnknownSpi)?;
        let ticket = sa.precheck(now, buf)?;
        Ok(OpenJob::new(ticket, self.id, spi, from))
    }

    /// The cipher of the SA with local SPI `spi`.
    pub fn open_cipher(&self, spi: u32) -> Option<&Arc<OpenCipher>> {
        self.sas.get(spi).map(Sa::open_cipher)
    }

    /// The second half of a two-phase receive: finds the SA again by SPI,
    /// and only if it is the very SA whose cipher `opener` is (it may have
    /// been rotated out and its SPI reused meanwhile) commits the result
    /// there (window re-check, counters) and does what [`Peer::open`] does
    /// after an accepted message.
    pub fn commit(
        &mut self,
        core: &mut Core,
        now: Instant,
        job: OpenedJob,
        opener: &Arc<OpenCipher>,
    ) -> Result<Incoming, DropReason> {
        let (slot, sa) = self.sas.find(job.spi).ok_or(DropReason::SaGone)?;
        if !Arc::ptr_eq(sa.open_cipher(), opener) {
            return Err(DropReason::SaGone);
        }
        let range = sa.commit(now, job.result)?;
        let volume = sa.volume_rekey_due();
        Ok(self.accepted(core, now, job.from, slot, range, volume))
    }

    /// The bookkeeping of an accepted data message on the SA in `slot`:
    /// promotes `next`, counts, liveness, roaming, volume rekey.
    fn accepted(
        &mut self,
        core: &mut Core,
        now: Instant,
        from: SocketAddr,
        slot: Slot,
        range: core::ops::Range<usize>,
        volume: bool,
    ) -> Incoming {
        if slot == Slot::Next {
            let had = self.sas.promote_next(&mut core.spis);
            self.established(core, Role::Responder, had);
            self.flush_queue(core, now);
        }
        let keepalive = range.is_empty();
        self.stats.traffic.rx(range.len());
        self.live.on_rx(now, keepalive);
        self.unreachable = false;
        self.roam(core, from);
        if volume && slot != Slot::Previous {
            self.start_handshake(core, now);
        }
        if keepalive {
            Incoming::Keepalive { peer: self.id }
        } else {
            Incoming::Data {
                peer: self.id,
                payload: range,
            }
        }
    }

    /// When a time- or volume-based rekey is due, if one may start.
    fn rekey_due_at(&self, core: &Core) -> Option<Instant> {
        if self.pending.is_some() || self.unreachable || self.endpoint.is_none() {
            return None;
        }
        let cur = self.sas.current.as_ref()?;
        let mut at = if cur.volume_rekey_due() {
            cur.times.created
        } else {
            cur.time_rekey_at()
        };
        if let Some(gate) = self.handshake_gate(core) {
            at = at.max(gate);
        }
        Some(at)
    }

    /// Fires every timer that is due.
    pub fn handle_timeout(&mut self, core: &mut Core, now: Instant) {
        if self.sas.expire(now, &mut core.spis) {
            debug!("current SA reached its reject time");
        }
        if let Some(p) = self.pending.as_ref().filter(|p| now >= p.retry_at) {
            if p.attempts >= core.timers.handshake_attempts {
                core.spis.release(p.local_spi);
                self.pending = None;
                self.unreachable = true;
                self.queue.clear();
                warn!(
                    attempts = core.timers.handshake_attempts,
                    "peer unreachable: handshake gave up"
                );
                core.events
                    .push_back(Event::PeerUnreachable { peer: self.id });
            } else {
                self.send_initiation(core, now);
            }
        }
        if self.rekey_due_at(core).is_some_and(|t| now >= t) {
            self.start_handshake(core, now);
        }
        if self.queued_start_at(core).is_some_and(|t| now >= t) {
            self.start_handshake(core, now);
        }
        if self.live.dead_at(&core.timers).is_some_and(|t| now >= t) {
            self.live.awaiting_reply_since = None;
            debug!("no reply to data: new handshake");
            self.unreachable = false;
            self.start_handshake(core, now);
        }
        let keepalive_due = self
            .live
            .keepalive_at(&core.timers)
            .is_some_and(|t| now >= t)
            || self.persistent_at().is_some_and(|t| now >= t);
        if keepalive_due {
            self.send_keepalive(core, now);
        }
    }

    /// When packets waiting for an SA may start a handshake (after a gate).
    fn queued_start_at(&self, core: &Core) -> Option<Instant> {
        if self.queue.is_empty() || self.pending.is_some() || self.endpoint.is_none() {
            return None;
        }
        if self.sas.current.is_some() {
            return None;
        }
        self.handshake_gate(core)
    }

    fn persistent_at(&self) -> Option<Instant> {
        let cur = self.sas.current.as_ref()?;
        self.live
            .persistent_at(self.persistent_keepalive, cur.times.created)
    }

    /// Earliest instant at which `handle_timeout` has something to do.
    pub fn poll_timeout(&self, core: &Core) -> Option<Instant> {
        let keepalive = if self.sas.current.is_some() {
            self.live.keepalive_at(&core.timers)
        } else {
            None
        };
        [
            self.pending.as_ref().map(|p| p.retry_at),
            self.rekey_due_at(core),
            self.queued_start_at(core),
            self.live.dead_at(&core.timers),
            keepalive,
            self.persistent_at(),
            self.sas.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drops all state that refers to SPIs (before removal).
    pub fn clear(&mut self, core: &mut Core) {
        self.sas.clear(&mut core.spis);
        if let Some(p) = self.pending.take() {
            core.spis.release(p.local_spi);
        }
        self.queue.clear();
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
            id: self.id,
            public_key: self.key,
            name: self.name.clone(),
            endpoint: self.endpoint,
            established: self.sas.current.is_some(),
            next: sa(self.sas.next.as_deref()),
            current: sa(self.sas.current.as_deref()),
            previous: sa(self.sas.previous.as_deref()),
            next_rekey: self.sas.current.as_deref().map(Sa::time_rekey_at),
            handshake_pending: self.pending.is_some(),
            queued_packets: self.queue.len(),
            last_rx: self.live.last_rx,
            stats: self.stats,
        }
    }

    /// Suite mismatch: pause handshakes, drop what waited for one.
    pub fn pause_after_mismatch(&mut self, core: &mut Core, now: Instant) {
        if let Some(p) = self.pending.take() {
            core.spis.release(p.local_spi);
        }
        self.queue.clear();
        self.mismatch_until =
            Some(now + Duration::from_millis(core.timers.suite_mismatch_backoff_ms));
    }

    /// Operator-forced rotation.
    pub fn force_rekey(&mut self, core: &mut Core, now: Instant) {
        self.mismatch_until = None;
        self.unreachable = false;
        self.start_handshake(core, now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
    use super::super::endpoint::tests::{established, pair, pass, A, B};
    use super::*;

    #[test]
    fn queue_is_bounded_and_never_sends_cleartext() {
        let (mut a, _, ab, _, now) = pair();
        let mut buf = [0u8; 64];
        for _ in 0..64 {
            assert_eq!(a.seal(now, ab, &mut buf, 32), Ok(SealOutcome::Queued));
        }
        assert_eq!(a.seal(now, ab, &mut buf, 32), Err(SendError::QueueFull));
        assert_eq!(
            a.seal(now, ab, &mut buf[..40], 32),
            Err(SendError::BufferTooSmall)
        );
        let mut out = [0u8; 2048];
        let mut n = 0;
        while let Some(t) = a.poll_transmit(now, &mut out) {
            assert_eq!(out[0], crate::wire::outer::MSG_INITIATION);
            assert!(t.record.is_none());
            n += 1;
        }
        assert_eq!(n, 1, "one initiation, not one per packet");
    }

    #[test]
    fn passive_and_persistent_keepalives() {
        let (mut a, mut b, ab, _, now) = established();
        // b received data (the confirming keepalive is empty, so send real data).
        let mut buf = [0u8; 64];
        let SealOutcome::Sealed { len, .. } = a.seal(now, ab, &mut buf, 8).unwrap() else {
            panic!()
        };
        b.handle_datagram(now, A.parse().unwrap(), &mut buf[..len])
            .unwrap();
        let due = b.poll_timeout().unwrap();
        assert_eq!(
            due,
            now + Duration::from_secs(10),
            "passive keepalive 10 s after data"
        );
        b.handle_timeout(due);
        let mut out = [0u8; 2048];
        let t = b.poll_transmit(due, &mut out).unwrap();
        assert_eq!(t.len, DATA_OVERHEAD, "an empty data message");
        // Persistent keepalive on a fresh peer config.
        let key = b.public_key();
        a.remove_peer(&key);
        let mut cfg = PeerConfig::new(key, Some(B.parse().unwrap()));
        cfg.persistent_keepalive = Some(Duration::from_secs(25));
        let now2 = now + Duration::from_secs(1);
        let ab = a.add_peer(now2, cfg).unwrap();
        a.rekey(now2, Some(ab));
        let mut b2 = b;
        for _ in 0..3 {
            pass(&mut a, A, &mut b2, now2);
            pass(&mut b2, B, &mut a, now2);
        }
        assert!(a.peer_status(ab).unwrap().established);
        assert_eq!(a.poll_timeout(), Some(now2 + Duration::from_secs(25)));
        let t25 = now2 + Duration::from_secs(25);
        a.handle_timeout(t25);
        let t = a.poll_transmit(t25, &mut out).unwrap();
        assert_eq!(t.len, DATA_OVERHEAD);
        assert_eq!(a.peer_status(ab).unwrap().stats.keepalives_sent, 2);
    }
}
