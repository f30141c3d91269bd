//! Timers: the arithmetic of the peer state machine (handshake
//! retransmission backoff with jitter, the liveness bookkeeping behind
//! keepalives, persistent keepalives and dead-peer detection), and the
//! endpoint's [`Schedule`] of each peer's earliest deadline, so that
//! `poll_timeout` does not scan the peers and `handle_timeout` touches
//! only those that are due (quinn's `connection/timer.rs`, one level up).
//!
//! It holds instants and computes deadlines; it sends nothing and reads no
//! clock (every method takes `now`).

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::Rng;

use super::config::TimerConfig;
use super::core::lock;
use super::PeerId;

/// Each peer's earliest deadline, ordered by time. A leaf lock: taken
/// under a peer's lock, never the other way round.
///
/// An entry may be earlier than its peer's real deadline (the data path
/// moves a deadline later, e.g. a keepalive no longer owed, without
/// touching the schedule, so that workers do not meet here on every
/// packet); it is never later. `poll_timeout` corrects stale entries at
/// the front, and `handle_timeout` fires only the entries that are due.
#[derive(Default)]
pub(crate) struct Schedule {
    entries: Mutex<Entries>,
    /// Bumped whenever the earliest deadline moved earlier than the
    /// driver's horizon (a driver sleeping until the old one must wake up
    /// and ask again).
    earlier: AtomicU64,
}

#[derive(Default)]
struct Entries {
    set: BTreeSet<(Instant, PeerId)>,
    /// The driver looks at the schedule again by then without being woken
    /// ([`Schedule::set_horizon`]); `None`: it sleeps until the earliest
    /// entry, however far.
    horizon: Option<Instant>,
}

impl Schedule {
    /// Reconciles `peer`'s entry (now `scheduled`) with its deadline
    /// `want`; returns what is scheduled afterwards. With `exact`, a later
    /// or vanished deadline replaces the entry; without (the data path),
    /// only an earlier one does.
    pub fn update(
        &self,
        peer: PeerId,
        scheduled: Option<Instant>,
        want: Option<Instant>,
        exact: bool,
    ) -> Option<Instant> {
        let earlier = match (scheduled, want) {
            (_, None) if !exact => return scheduled,
            (Some(s), Some(w)) if w >= s && !exact => return scheduled,
            (s, w) if s == w => return scheduled,
            (Some(s), Some(w)) => w < s,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => return None,
        };
        let mut e = lock(&self.entries);
        let first = e.set.first().map(|(t, _)| *t);
        if let Some(s) = scheduled {
            e.set.remove(&(s, peer));
        }
        if let Some(w) = want {
            e.set.insert((w, peer));
            if earlier && first.is_none_or(|f| w < f) && e.horizon.is_none_or(|h| w < h) {
                self.earlier.fetch_add(1, Ordering::Release);
            }
        }
        want
    }

    /// The driver will look at the schedule again by `by` without being
    /// woken: a deadline that moves earlier but not before `by` leaves the
    /// generation alone. Data that arms a keepalive 10 s ahead then wakes
    /// nobody (it did, once per received packet, when every earlier
    /// deadline counted). Set it before reading the generation and the
    /// earliest deadline, and sleep no later than `by`.
    pub fn set_horizon(&self, by: Instant) {
        lock(&self.entries).horizon = Some(by);
    }

    /// Forgets `peer`'s entry (it was removed).
    pub fn remove(&self, peer: PeerId, scheduled: Option<Instant>) {
        if let Some(s) = scheduled {
            lock(&self.entries).set.remove(&(s, peer));
        }
    }

    /// The earliest entry.
    pub fn first(&self) -> Option<(Instant, PeerId)> {
        lock(&self.entries).set.first().copied()
    }

    /// Takes every entry due at `now` out of the schedule.
    pub fn take_due(&self, now: Instant) -> Vec<PeerId> {
        let mut e = lock(&self.entries);
        let mut due = Vec::new();
        while let Some(&(t, id)) = e.set.first() {
            if t > now {
                break;
            }
            e.set.pop_first();
            due.push(id);
        }
        due
    }

    /// How often the earliest deadline moved earlier so far.
    pub fn generation(&self) -> u64 {
        self.earlier.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).set.len()
    }
}

/// Delay before retransmission number `attempt` (1 = after the first
/// initiation): `retry × 2^(attempt−1)` capped, plus uniform jitter.
pub(crate) fn retry_delay(cfg: &TimerConfig, attempt: u32, rng: &mut StdRng) -> Duration {
    let base = Duration::from_millis(cfg.handshake_retry_ms);
    let cap = Duration::from_millis(cfg.handshake_retry_max_ms);
    let shift = attempt.saturating_sub(1).min(20);
    let delay = base.saturating_mul(1 << shift).min(cap);
    let jitter_max = delay.mul_f64(f64::from(cfg.handshake_retry_jitter_percent) / 100.0);
    delay + jitter_max.mul_f64(rng.gen::<f64>())
}

/// Liveness instants of one peer.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Liveness {
    /// Last data message (or keepalive) sent.
    pub last_tx: Option<Instant>,
    /// Last authenticated data message (or keepalive) received.
    pub last_rx: Option<Instant>,
    /// First non-empty data sent since we last heard from the peer.
    pub awaiting_reply_since: Option<Instant>,
    /// First non-empty data received since we last sent anything.
    pub keepalive_owed_since: Option<Instant>,
}

impl Liveness {
    pub fn on_tx(&mut self, now: Instant, keepalive: bool) {
        self.last_tx = Some(now);
        self.keepalive_owed_since = None;
        if !keepalive && self.awaiting_reply_since.is_none() {
            self.awaiting_reply_since = Some(now);
        }
    }

    pub fn on_rx(&mut self, now: Instant, keepalive: bool) {
        self.last_rx = Some(now);
        self.awaiting_reply_since = None;
        if !keepalive && self.keepalive_owed_since.is_none() {
            self.keepalive_owed_since = Some(now);
        }
    }

    /// When a passive keepalive is due (we received data and sent nothing).
    pub fn keepalive_at(&self, cfg: &TimerConfig) -> Option<Instant> {
        self.keepalive_owed_since
            .map(|t| t + Duration::from_millis(cfg.keepalive_ms))
    }

    /// When a persistent keepalive is due.
    pub fn persistent_at(
        &self,
        interval: Option<Duration>,
        established: Instant,
    ) -> Option<Instant> {
        interval.map(|i| self.last_tx.unwrap_or(established).max(established) + i)
    }

    /// When the peer is presumed dead (data sent, nothing heard back).
    pub fn dead_at(&self, cfg: &TimerConfig) -> Option<Instant> {
        self.awaiting_reply_since
            .map(|t| t + Duration::from_millis(cfg.dead_peer_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        let cfg = TimerConfig::default();
        let mut rng = StdRng::from_seed([3; 32]);
        let mut seen_jitter = false;
        for attempt in 1..12 {
            let nominal = Duration::from_millis(
                (cfg.handshake_retry_ms << (attempt - 1)).min(cfg.handshake_retry_max_ms),
            );
            for _ in 0..50 {
                let d = retry_delay(&cfg, attempt, &mut rng);
                assert!(d >= nominal, "attempt {attempt}: {d:?} < {nominal:?}");
                assert!(d <= nominal.mul_f64(1.2), "attempt {attempt}: {d:?}");
                seen_jitter |= d != nominal;
            }
        }
        assert!(seen_jitter);
    }

    #[test]
    fn generation_moves_only_for_deadlines_before_the_horizon() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let s = Schedule::default();
        let (a, b) = (PeerId(1), PeerId(2));
        let rekey = s.update(a, None, Some(t0 + Duration::from_secs(600)), true);
        assert_eq!(s.generation(), 1, "the first deadline wakes the driver");
        // No horizon: any earlier deadline counts, however far.
        s.update(b, None, Some(t0 + Duration::from_secs(300)), false);
        assert_eq!(s.generation(), 2);
        s.update(b, Some(t0 + Duration::from_secs(300)), None, true);
        // The driver looks again within 1 s: a keepalive armed 10 s ahead
        // (earlier than the rekey) need not wake it...
        s.set_horizon(t0 + Duration::from_secs(1));
        let ka = s.update(b, None, Some(t0 + Duration::from_secs(10)), false);
        assert_eq!(s.generation(), 2);
        assert_eq!(s.first(), Some((t0 + Duration::from_secs(10), b)));
        // ...one due before the horizon must.
        s.update(b, ka, Some(t0 + Duration::from_millis(500)), false);
        assert_eq!(s.generation(), 3);
        // Nor does one that is not earlier than the first entry.
        s.update(a, rekey, Some(t0 + Duration::from_millis(700)), false);
        assert_eq!(s.generation(), 3);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn keepalive_and_dead_peer_deadlines() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let mut l = Liveness::default();
        l.on_rx(t0, false);
        assert_eq!(l.keepalive_at(&cfg), Some(t0 + Duration::from_secs(10)));
        l.on_tx(t0 + Duration::from_secs(1), false);
        assert_eq!(l.keepalive_at(&cfg), None);
        assert_eq!(
            l.dead_at(&cfg),
            Some(t0 + Duration::from_secs(1) + Duration::from_secs(15))
        );
        l.on_rx(t0 + Duration::from_secs(2), true);
        assert_eq!(l.dead_at(&cfg), None);
        assert_eq!(
            l.keepalive_at(&cfg),
            None,
            "keepalives do not owe keepalives"
        );
    }
}
