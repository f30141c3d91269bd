//! The data half of a peer: reserving counters for the send jobs, sealing
//! what the endpoint sends itself (queued packets, keepalives), and the
//! prechecks and commits of the receive jobs with the bookkeeping of an
//! accepted message (promotion of `next`, liveness, roaming, volume rekey).
//!
//! It runs no AEAD for the data path (the jobs of `jobs.rs` do, unlocked).

use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use vxsec_crypto::sa::{LimitStatus, OpenCipher, SealCipher, DATA_HEADER_LEN, DATA_OVERHEAD};

use super::super::core::Core;
use super::super::jobs::{OpenJob, OpenedJob, SealJob};
use super::super::sa_set::{Role, SealRefusal, Slot};
use super::super::stats::DropReason;
use super::super::{Incoming, SealRecord, SendError};
use super::Peer;

impl Peer {
    /// Reserves a counter on the current SA for the plaintext at
    /// `buf[16..16 + len]` and does all the bookkeeping of a sent packet
    /// (traffic, liveness, rekey at a soft limit), returning the job and
    /// the cipher to seal it with; or queues a copy and starts a handshake
    /// (`Ok(None)`).
    pub fn reserve(
        &mut self,
        core: &Core,
        now: Instant,
        buf: &[u8],
        len: usize,
    ) -> Result<Option<(SealJob, Arc<SealCipher>)>, SendError> {
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
                    let cipher = Arc::clone(cur.seal_cipher());
                    self.stats.traffic.tx(len);
                    self.live.on_tx(now, len == 0);
                    if ticket.status() != LimitStatus::Ok {
                        self.start_handshake(core, now);
                    }
                    return Ok(Some((SealJob::new(ticket, dst, record), cipher)));
                }
                Err(SealRefusal::BufferTooSmall) => return Err(SendError::BufferTooSmall),
                Err(SealRefusal::Exhausted) => {}
            }
        }
        if self.suppressed(now) {
            return Err(SendError::Suppressed);
        }
        self.revive();
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

    /// Seals one message onto the current SA inside the endpoint (queued
    /// data, keepalives) and queues it for `poll_transmit`.
    pub(super) fn seal_internal(&mut self, core: &Core, now: Instant, payload: &[u8]) -> bool {
        let (Some(dst), Some(cur)) = (self.endpoint, self.sas.current.as_mut()) else {
            return false;
        };
        let mut msg = vec![0u8; payload.len() + DATA_OVERHEAD];
        if let Some(s) = msg.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()) {
            s.copy_from_slice(payload);
        }
        let Ok(s) = cur.seal(now, &mut msg, payload.len()) else {
            return false;
        };
        msg.truncate(s.len);
        let record = SealRecord {
            key_fingerprint: cur.key_fingerprint(),
            counter: s.counter,
        };
        self.stats.traffic.tx(payload.len());
        core.push(dst, msg, Some(record));
        true
    }

    /// Seals queued packets onto the current SA.
    pub(super) fn flush_queue(&mut self, core: &Core, now: Instant) -> usize {
        let mut sent = 0;
        while let Some(payload) = self.queue.pop_front() {
            if !self.seal_internal(core, now, &payload) {
                self.queue.push_front(payload);
                break;
            }
            self.live.on_tx(now, payload.is_empty());
            sent += 1;
        }
        sent
    }

    /// Sends an empty data message on the current SA.
    pub(super) fn send_keepalive(&mut self, core: &Core, now: Instant) {
        // Whatever happens, the keepalive deadlines are consumed.
        self.live.on_tx(now, true);
        if self.seal_internal(core, now, &[]) {
            self.stats.keepalives_sent += 1;
        }
    }

    /// Whether one of this peer's SAs has local SPI `spi`.
    pub fn has_sa(&self, spi: u32) -> bool {
        self.sas.get(spi).is_some()
    }

    /// The first half of a receive: the prechecks of the SA with local SPI
    /// `spi` (reject time, length, limit, replay window), changing nothing.
    /// Drops are counted by the caller.
    pub fn precheck(
        &self,
        now: Instant,
        from: SocketAddr,
        spi: u32,
        buf: &[u8],
    ) -> Result<(OpenJob, Arc<OpenCipher>), DropReason> {
        let sa = self.sas.get(spi).ok_or(DropReason::UnknownSpi)?;
        let ticket = sa.precheck(now, buf)?;
        let opener = Arc::clone(sa.open_cipher());
        Ok((OpenJob::new(ticket, self.fixed.id, spi, from), opener))
    }

    /// The second half of a receive: finds the SA again by SPI, and only
    /// if it is the very SA whose cipher `opener` is (it may have been
    /// rotated out and its SPI reused meanwhile) commits the result there
    /// (window re-check, counters), then the bookkeeping of an accepted
    /// message.
    pub fn commit(
        &mut self,
        core: &Core,
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
    pub(super) fn accepted(
        &mut self,
        core: &Core,
        now: Instant,
        from: SocketAddr,
        slot: Slot,
        range: core::ops::Range<usize>,
        volume: bool,
    ) -> Incoming {
        if slot == Slot::Next {
            let had = self.sas.promote_next(&core.spis);
            self.established(core, Role::Responder, had);
            self.flush_queue(core, now);
        }
        let keepalive = range.is_empty();
        self.stats.traffic.rx(range.len());
        self.live.on_rx(now, keepalive);
        self.revive();
        self.roam(core, from);
        if volume && slot != Slot::Previous {
            self.start_handshake(core, now);
        }
        let peer = self.fixed.id;
        if keepalive {
            Incoming::Keepalive { peer }
        } else {
            Incoming::Data {
                peer,
                payload: range,
            }
        }
    }
}
