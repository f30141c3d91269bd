//! A peer's deadlines: when each of its timers is due (retransmission,
//! rekey by time, volume or our static key's rotation, queued packets after a gate, dead peer,
//! passive and persistent keepalives, SA expiry) and what firing them does.
//! The endpoint's schedule keeps only the earliest of them per peer.
//!
//! It reads no clock: `now` is an argument.

use std::time::Instant;

use tracing::{debug, warn};

use super::super::core::Core;
use super::super::Event;
use super::{HandshakeState, Peer};

impl Peer {
    /// When a time- or volume-based rekey is due, if one may start.
    pub(super) fn rekey_due_at(&self, core: &Core) -> Option<Instant> {
        if self.is_initiating()
            || matches!(self.handshake, HandshakeState::GaveUp)
            || self.endpoint.is_none()
        {
            return None;
        }
        let cur = self.sas.current.as_ref()?;
        let mut at = if cur.volume_rekey_due() {
            cur.times.created
        } else {
            cur.time_rekey_at()
        };
        if let Some(rotated) = self.identity_rekey_at {
            at = at.min(rotated);
        }
        if let Some(gate) = self.handshake_gate(core) {
            at = at.max(gate);
        }
        Some(at)
    }

    /// Fires every timer that is due.
    pub fn handle_timeout(&mut self, core: &Core, now: Instant) {
        if self.sas.expire(now, &core.spis) {
            debug!("current SA reached its reject time");
        }
        if let Some(p) = self.pending().filter(|p| now >= p.retry_at) {
            if p.attempts >= core.timers.handshake_attempts {
                core.spis.release(p.local_spi);
                self.handshake = HandshakeState::GaveUp;
                self.queue.clear();
                warn!(
                    attempts = core.timers.handshake_attempts,
                    "peer unreachable: handshake gave up"
                );
                core.event(Event::PeerUnreachable {
                    peer: self.fixed.id,
                });
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
            self.revive();
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
    pub(super) fn queued_start_at(&self, core: &Core) -> Option<Instant> {
        if self.queue.is_empty() || self.is_initiating() || self.endpoint.is_none() {
            return None;
        }
        if self.sas.current.is_some() {
            return None;
        }
        self.handshake_gate(core)
    }

    pub(super) fn persistent_at(&self) -> Option<Instant> {
        let cur = self.sas.current.as_ref()?;
        self.live
            .persistent_at(self.fixed.persistent_keepalive, cur.times.created)
    }

    /// Earliest instant at which `handle_timeout` has something to do.
    pub fn poll_timeout(&self, core: &Core) -> Option<Instant> {
        let keepalive = if self.sas.current.is_some() {
            self.live.keepalive_at(&core.timers)
        } else {
            None
        };
        [
            self.pending().map(|p| p.retry_at),
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
}
