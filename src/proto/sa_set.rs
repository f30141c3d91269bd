//! The SA lifecycle of one peer (DESIGN §5): an [`Sa`] (keys, SPIs, creation
//! time, time limits) that answers "seal, rekey soon, or refuse", and the
//! named `next` / `current` / `previous` slots it moves through. (The
//! crypto crate's `sa.rs` is the AEAD with its counters; this is the
//! protocol's lifecycle around it.)
//!
//! It does not run handshakes or decide when to rekey by policy; the peer
//! state machine (`peer.rs`) does, asking the SAs here. The SPI table the
//! slots release into is the endpoint's (`core.rs`).

use core::ops::Range;
use core::time::Duration;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::Rng;
use vxsec_crypto::kdf::{derive_data_keys, Direction};
use vxsec_crypto::noise::SessionSecrets;
use vxsec_crypto::sa::{
    message_fits, LimitStatus, OpenCipher, OpenError, OpenTicket, Opened, OpeningKey, SealCipher,
    SealError, SealTicket, Sealed, SealingKey,
};
use vxsec_crypto::suite::{SaLimits, Suite};

use super::core::SpiTable;
use super::stats::{DropReason, TrafficCounters};

/// Which side of the handshake that created an SA we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Time limits of an SA, fixed at creation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SaTimes {
    pub created: Instant,
    /// Rekey time with jitter applied (when the SA's initiator rekeys).
    pub rekey_at: Instant,
    /// When the SA's responder rekeys if the initiator has not (fallback).
    pub responder_rekey_at: Instant,
    /// Hard end: no seal or open at or after this instant.
    pub reject_at: Instant,
}

impl SaTimes {
    /// `jitter_percent` of `rekey_after` is the most that is subtracted.
    pub fn new(
        now: Instant,
        rekey_after: Duration,
        reject_after: Duration,
        jitter_percent: u8,
        retry_base: Duration,
        rng: &mut StdRng,
    ) -> Self {
        let max_jitter = rekey_after.mul_f64(f64::from(jitter_percent) / 100.0);
        let jitter = if max_jitter.is_zero() {
            Duration::ZERO
        } else {
            max_jitter.mul_f64(rng.gen::<f64>())
        };
        let rekey_at = now + rekey_after.saturating_sub(jitter);
        let reject_at = now + reject_after;
        // The responder waits a little longer, so that normally only the
        // initiator rekeys on time and collisions stay rare.
        let grace = (reject_at.saturating_duration_since(rekey_at) / 2)
            .min((retry_base * 3).max(rekey_after / 2));
        SaTimes {
            created: now,
            rekey_at,
            responder_rekey_at: rekey_at + grace,
            reject_at,
        }
    }
}

/// One security association: both directions of one completed handshake.
pub(crate) struct Sa {
    pub role: Role,
    pub local_spi: u32,
    pub remote_spi: u32,
    pub times: SaTimes,
    pub traffic: TrafficCounters,
    sealing: SealingKey,
    opening: OpeningKey,
    limits: SaLimits,
}

/// Why an SA will not seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealRefusal {
    /// Past its reject time or limits.
    Exhausted,
    /// Caller buffer too small.
    BufferTooSmall,
}

impl Sa {
    /// Derives the directional keys from the Noise split for our `role`.
    pub fn new(
        role: Role,
        local_spi: u32,
        remote_spi: u32,
        secrets: &SessionSecrets,
        suite: Suite,
        limits: SaLimits,
        times: SaTimes,
    ) -> Self {
        let i2r = derive_data_keys(
            &secrets.initiator_to_responder,
            suite,
            Direction::InitiatorToResponder,
        );
        let r2i = derive_data_keys(
            &secrets.responder_to_initiator,
            suite,
            Direction::ResponderToInitiator,
        );
        let (tx, rx) = match role {
            Role::Initiator => (i2r, r2i),
            Role::Responder => (r2i, i2r),
        };
        Sa {
            role,
            local_spi,
            remote_spi,
            times,
            traffic: TrafficCounters::default(),
            sealing: SealingKey::new(tx, suite, remote_spi, limits),
            opening: OpeningKey::new(rx, suite, limits),
            limits,
        }
    }

    /// Whether this SA may still seal at `now`.
    pub fn can_seal(&self, now: Instant) -> bool {
        now < self.times.reject_at && self.sealing.status() != LimitStatus::Exhausted
    }

    /// Reserves the next counter for one message of `len` payload bytes and
    /// counts it (the stateful half of [`Sa::seal`]; see
    /// `SealingKey::reserve`). A refusal consumes nothing.
    pub fn reserve(&mut self, now: Instant, len: usize) -> Result<SealTicket, SealRefusal> {
        if now >= self.times.reject_at {
            return Err(SealRefusal::Exhausted);
        }
        let ticket = self.sealing.reserve(len).map_err(seal_refusal)?;
        self.traffic.tx(len);
        Ok(ticket)
    }

    /// The shareable AEAD half of the sending direction.
    pub fn seal_cipher(&self) -> &Arc<SealCipher> {
        self.sealing.cipher()
    }

    /// Seals `buf[16..16 + len]` in place (see `SealingKey::seal`):
    /// [`Sa::reserve`] then the cipher, with the buffer checked first so a
    /// refusal consumes nothing.
    pub fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Sealed, SealRefusal> {
        if now >= self.times.reject_at {
            return Err(SealRefusal::Exhausted);
        }
        if !message_fits(buf.len(), len) {
            return Err(SealRefusal::BufferTooSmall);
        }
        let ticket = self.reserve(now, len)?;
        self.sealing
            .cipher()
            .seal(ticket, buf)
            .map_err(seal_refusal)
    }

    /// The checks before decryption (reject time, length, reject limit,
    /// replay window), changing nothing.
    pub fn precheck(&self, now: Instant, msg: &[u8]) -> Result<OpenTicket, DropReason> {
        if now >= self.times.reject_at {
            return Err(DropReason::Expired);
        }
        self.opening.precheck(msg).map_err(drop_reason)
    }

    /// The shareable AEAD half of the receiving direction.
    pub fn open_cipher(&self) -> &Arc<OpenCipher> {
        self.opening.cipher()
    }

    /// Records the outcome of opening a message that passed
    /// [`Sa::precheck`]: the window is checked again (a duplicate committed
    /// meanwhile is a replay), then the counter committed and traffic
    /// counted, or an authentication failure counted by the key. Refuses
    /// at or past the reject time as the precheck does.
    pub fn commit(&mut self, now: Instant, opened: Opened) -> Result<Range<usize>, DropReason> {
        if now >= self.times.reject_at {
            return Err(DropReason::Expired);
        }
        let r = self.opening.commit(opened).map_err(drop_reason)?;
        self.traffic.rx(r.len());
        Ok(r)
    }

    /// Whether a packet or byte limit (either direction) asks for a rekey.
    pub fn volume_rekey_due(&self) -> bool {
        self.sealing.status() != LimitStatus::Ok
            || self.opening.packets() >= self.limits.rekey_after_packets
            || self.opening.bytes() >= self.limits.rekey_after_bytes
    }

    /// When a time-based rekey of this SA is due, given our role in it.
    pub fn time_rekey_at(&self) -> Instant {
        match self.role {
            Role::Initiator => self.times.rekey_at,
            Role::Responder => self.times.responder_rekey_at,
        }
    }

    pub fn key_fingerprint(&self) -> [u8; 8] {
        self.sealing.key_fingerprint()
    }

    pub fn suite(&self) -> Suite {
        self.sealing.suite()
    }
}

fn seal_refusal(e: SealError) -> SealRefusal {
    match e {
        SealError::Exhausted => SealRefusal::Exhausted,
        // WrongKey is unreachable here: an SA seals its own tickets.
        SealError::BufferTooSmall | SealError::WrongKey => SealRefusal::BufferTooSmall,
    }
}

/// The drop reason of a refused data message.
pub(crate) fn drop_reason(e: OpenError) -> DropReason {
    match e {
        OpenError::Truncated => DropReason::Malformed,
        OpenError::Replay => DropReason::Replay,
        OpenError::AuthFailed => DropReason::Auth,
        OpenError::Exhausted => DropReason::Expired,
        // A ticket of another key: the SA it was checked against is gone.
        OpenError::WrongKey => DropReason::SaGone,
    }
}

/// Which slot an SA sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Next,
    Current,
    Previous,
}

/// The three named SA slots of a peer. Boxed: an SA is kilobytes (keys,
/// replay window), and a peer with no traffic has none, so a thousand idle
/// peers cost a pointer per slot instead of ~15 KiB each.
#[derive(Default)]
pub(crate) struct SaSet {
    /// Responder side: installed before replying, RX only, unconfirmed.
    pub next: Option<Box<Sa>>,
    /// TX and RX.
    pub current: Option<Box<Sa>>,
    /// RX only, until its reject time.
    pub previous: Option<Box<Sa>>,
}

impl SaSet {
    /// The slot holding local SPI `spi`.
    pub fn find(&mut self, spi: u32) -> Option<(Slot, &mut Sa)> {
        if let Some(sa) = self.current.as_deref_mut().filter(|s| s.local_spi == spi) {
            return Some((Slot::Current, sa));
        }
        if let Some(sa) = self.next.as_deref_mut().filter(|s| s.local_spi == spi) {
            return Some((Slot::Next, sa));
        }
        if let Some(sa) = self.previous.as_deref_mut().filter(|s| s.local_spi == spi) {
            return Some((Slot::Previous, sa));
        }
        None
    }

    /// The SA holding local SPI `spi`, read-only.
    pub fn get(&self, spi: u32) -> Option<&Sa> {
        [&self.current, &self.next, &self.previous]
            .into_iter()
            .flatten()
            .map(|s| &**s)
            .find(|s| s.local_spi == spi)
    }

    /// Responder: installs an unconfirmed SA (replacing an older unconfirmed one).
    pub fn install_next(&mut self, sa: Sa, spis: &SpiTable) {
        if let Some(old) = self.next.replace(Box::new(sa)) {
            spis.release(old.local_spi);
        }
    }

    /// Initiator: the response arrived; the new SA is current at once,
    /// the old current becomes previous, an unconfirmed next is dropped.
    pub fn install_current(&mut self, sa: Sa, spis: &SpiTable) -> bool {
        let had_current = self.current.is_some();
        if let Some(old) = self.next.take() {
            spis.release(old.local_spi);
        }
        self.demote_current(spis);
        self.current = Some(Box::new(sa));
        had_current
    }

    /// Responder: first authenticated packet under `next`.
    pub fn promote_next(&mut self, spis: &SpiTable) -> bool {
        let had_current = self.current.is_some();
        if let Some(next) = self.next.take() {
            self.demote_current(spis);
            self.current = Some(next);
        }
        had_current
    }

    fn demote_current(&mut self, spis: &SpiTable) {
        if let Some(cur) = self.current.take() {
            if let Some(old) = self.previous.replace(cur) {
                spis.release(old.local_spi);
            }
        }
    }

    /// Drops every SA at or past its reject time; returns whether `current` went.
    pub fn expire(&mut self, now: Instant, spis: &SpiTable) -> bool {
        let mut current_gone = false;
        for (slot, sa) in [
            (Slot::Next, &mut self.next),
            (Slot::Current, &mut self.current),
            (Slot::Previous, &mut self.previous),
        ] {
            if sa.as_ref().is_some_and(|s| now >= s.times.reject_at) {
                if let Some(s) = sa.take() {
                    spis.release(s.local_spi);
                    current_gone |= slot == Slot::Current;
                }
            }
        }
        current_gone
    }

    /// Earliest reject time of any SA.
    pub fn next_expiry(&self) -> Option<Instant> {
        [&self.next, &self.current, &self.previous]
            .into_iter()
            .flatten()
            .map(|s| s.times.reject_at)
            .min()
    }

    /// Drops everything.
    pub fn clear(&mut self, spis: &SpiTable) {
        for sa in [self.next.take(), self.current.take(), self.previous.take()]
            .into_iter()
            .flatten()
        {
            spis.release(sa.local_spi);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
    use super::super::PeerId;
    use super::*;
    use rand::SeedableRng;
    use vxsec_crypto::key::SymmetricKey;

    fn secrets(b: u8) -> SessionSecrets {
        SessionSecrets {
            initiator_to_responder: SymmetricKey::from_bytes([b; 32]),
            responder_to_initiator: SymmetricKey::from_bytes([b.wrapping_add(1); 32]),
        }
    }

    fn limits() -> SaLimits {
        SaLimits {
            rekey_after_packets: 3,
            reject_after_packets: 5,
            rekey_after_bytes: 1 << 30,
            reject_after_bytes: 1 << 31,
        }
    }

    /// Precheck, open and commit on `sa`, back to back.
    fn open(sa: &mut Sa, now: Instant, msg: &mut [u8]) -> Result<Range<usize>, DropReason> {
        let ticket = sa.precheck(now, msg)?;
        let opened = Arc::clone(sa.open_cipher()).open(ticket, msg);
        sa.commit(now, opened)
    }

    fn pair(now: Instant) -> (Sa, Sa) {
        let mut rng = StdRng::from_seed([1; 32]);
        let t = SaTimes::new(
            now,
            Duration::from_secs(10),
            Duration::from_secs(70),
            10,
            Duration::from_secs(1),
            &mut rng,
        );
        let s = secrets(9);
        let i = Sa::new(
            Role::Initiator,
            1,
            2,
            &s,
            Suite::ChaCha20Poly1305,
            limits(),
            t,
        );
        let r = Sa::new(
            Role::Responder,
            2,
            1,
            &s,
            Suite::ChaCha20Poly1305,
            limits(),
            t,
        );
        (i, r)
    }

    #[test]
    fn roles_get_mirrored_keys_and_limits_hold() {
        let now = Instant::now();
        let (mut i, mut r) = pair(now);
        assert!(i.times.rekey_at >= now + Duration::from_secs(9));
        assert!(i.times.rekey_at <= now + Duration::from_secs(10));
        assert!(r.time_rekey_at() > i.time_rekey_at());
        assert!(r.time_rekey_at() < i.times.reject_at);
        for n in 0..5 {
            let mut buf = [0u8; 64];
            buf[16..20].copy_from_slice(b"ping");
            let s = i.seal(now, &mut buf, 4).unwrap();
            assert_eq!(s.counter, n);
            let range = open(&mut r, now, &mut buf[..s.len]).unwrap();
            assert_eq!(&buf[range], b"ping");
            assert_eq!(r.volume_rekey_due(), n >= 2, "packet {n}");
        }
        let mut buf = [0u8; 64];
        assert_eq!(i.seal(now, &mut buf, 4), Err(SealRefusal::Exhausted));
        assert!(!i.can_seal(now));
    }

    #[test]
    fn reject_time_refuses_both_ways() {
        let now = Instant::now();
        let (mut i, mut r) = pair(now);
        let mut buf = [0u8; 64];
        let s = i.seal(now, &mut buf, 4).unwrap();
        let late = now + Duration::from_secs(70);
        assert_eq!(
            open(&mut r, late, &mut buf[..s.len]),
            Err(DropReason::Expired)
        );
        assert_eq!(i.seal(late, &mut buf, 4), Err(SealRefusal::Exhausted));
    }

    #[test]
    fn slots_rotate_and_release_spis() {
        let now = Instant::now();
        let spis = SpiTable::default();
        let mut rng = StdRng::from_seed([2; 32]);
        let mut set = SaSet::default();
        let mk = |spis: &SpiTable, rng: &mut StdRng| {
            let spi = spis.allocate(PeerId(0), rng);
            let (mut a, _) = pair(now);
            a.local_spi = spi;
            a
        };
        let a = mk(&spis, &mut rng);
        assert!(!set.install_current(a, &spis));
        let b = mk(&spis, &mut rng);
        set.install_next(b, &spis);
        assert!(set.promote_next(&spis));
        let c = mk(&spis, &mut rng);
        assert!(set.install_current(c, &spis));
        assert!(set.next.is_none());
        assert_eq!(spis.len(), 2, "the oldest SA's SPI was released");
        let cur = set.current.as_ref().unwrap().local_spi;
        assert!(matches!(set.find(cur), Some((Slot::Current, _))));
        assert!(set.expire(now + Duration::from_secs(70), &spis));
        assert_eq!(spis.len(), 0);
    }
}
