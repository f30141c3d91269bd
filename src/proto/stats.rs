//! Counters of the protocol core: why datagrams were dropped, per-peer and
//! per-SA traffic, handshakes, rekeys, collisions and cookie activity.
//!
//! Plain numbers for readers ([`EndpointStats`], [`PeerStats`]); the
//! endpoint-wide ones are kept as atomics ([`SharedStats`]) so any thread
//! counts without a lock, and read as a [`SharedStats::snapshot`].
//! Exporting them (status, Prometheus) is the agent's job.

use core::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why the endpoint refused a datagram (data or handshake). Each reason
/// is counted in exactly one [`DropCounters`] bucket (see [`DropReason::bucket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Not a well-formed vxsec message (or a MAC that does not match).
    #[error("malformed message")]
    Malformed,
    /// No live SA or pending handshake has this SPI.
    #[error("unknown SPI")]
    UnknownSpi,
    /// A data counter already seen or left of the replay window.
    #[error("replayed data")]
    Replay,
    /// An initiation whose timestamp is not newer than the last accepted one.
    #[error("replayed or stale initiation")]
    StaleInitiation,
    /// AEAD or handshake authentication failed.
    #[error("authentication failed")]
    Auth,
    /// The initiator's static key belongs to no configured peer.
    #[error("unknown static key")]
    UnknownPeer,
    /// The SA is past its reject time or limits.
    #[error("SA expired")]
    Expired,
    /// Under load: a cookie (mac2) was required, or a source that proved
    /// its address exceeded its initiation rate.
    #[error("rate limited")]
    RateLimited,
    /// Refused by protocol policy (e.g. lost a handshake collision, suite refused).
    #[error("refused by policy")]
    Policy,
    /// The SA a data message passed its replay precheck on was rotated out
    /// or expired before the message was committed (two-phase receive).
    /// Counted with [`DropReason::Expired`].
    #[error("SA retired while the message was being opened")]
    SaGone,
}

impl DropReason {
    /// The counter this reason is reported under.
    pub fn bucket(self) -> DropBucket {
        match self {
            DropReason::Malformed => DropBucket::Malformed,
            DropReason::UnknownSpi => DropBucket::UnknownSpi,
            DropReason::Replay | DropReason::StaleInitiation => DropBucket::Replay,
            DropReason::Auth | DropReason::UnknownPeer => DropBucket::Auth,
            DropReason::Expired | DropReason::SaGone => DropBucket::Expired,
            DropReason::RateLimited => DropBucket::RateLimited,
            DropReason::Policy => DropBucket::Policy,
        }
    }
}

/// The status/metrics drop buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropBucket {
    Replay,
    Auth,
    UnknownSpi,
    Expired,
    RateLimited,
    Policy,
    Malformed,
}

/// Drop counters by bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropCounters {
    pub replay: u64,
    pub auth: u64,
    pub unknown_spi: u64,
    pub expired: u64,
    pub rate_limited: u64,
    pub policy: u64,
    pub malformed: u64,
}

impl DropCounters {
    /// Counts one drop.
    pub fn count(&mut self, reason: DropReason) {
        let c = match reason.bucket() {
            DropBucket::Replay => &mut self.replay,
            DropBucket::Auth => &mut self.auth,
            DropBucket::UnknownSpi => &mut self.unknown_spi,
            DropBucket::Expired => &mut self.expired,
            DropBucket::RateLimited => &mut self.rate_limited,
            DropBucket::Policy => &mut self.policy,
            DropBucket::Malformed => &mut self.malformed,
        };
        *c = c.saturating_add(1);
    }
    /// Sum of all buckets.
    pub fn total(&self) -> u64 {
        self.replay
            + self.auth
            + self.unknown_spi
            + self.expired
            + self.rate_limited
            + self.policy
            + self.malformed
    }
}

/// Traffic through one SA (or summed over a peer's SAs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrafficCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

impl TrafficCounters {
    pub(crate) fn tx(&mut self, bytes: usize) {
        self.tx_packets += 1;
        self.tx_bytes += bytes as u64;
    }
    pub(crate) fn rx(&mut self, bytes: usize) {
        self.rx_packets += 1;
        self.rx_bytes += bytes as u64;
    }
}

/// Per-peer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    /// Payload traffic (plaintext bytes; keepalives count as packets of 0 bytes).
    pub traffic: TrafficCounters,
    /// Initiations sent (first attempts and retransmissions).
    pub initiations_sent: u64,
    /// Handshakes completed (either role).
    pub handshakes: u64,
    /// Completed handshakes that replaced an existing SA.
    pub rekeys: u64,
    /// Simultaneous initiations resolved by the collision rule.
    pub collisions: u64,
    /// Keepalives sent.
    pub keepalives_sent: u64,
    /// Cookie replies received from this peer.
    pub cookies_received: u64,
    /// Drops attributed to this peer.
    pub drops: DropCounters,
}

/// Endpoint-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EndpointStats {
    /// Every drop, attributed or not.
    pub drops: DropCounters,
    /// Handshake messages (initiations, responses, cookie replies)
    /// refused, whatever the reason; each is also counted in `drops` under
    /// its reason (`auth`, `replay`, `rate_limited`, …).
    pub handshake_drops: u64,
    /// Initiations that reached the Noise DH step (the expensive part).
    pub initiations_processed: u64,
    /// Initiations sent (all peers; first attempts and retransmissions).
    pub initiations_sent: u64,
    /// Cookie replies sent.
    pub cookie_replies_sent: u64,
    /// Cookie replies not sent: the global or per-source cap was reached.
    pub cookie_replies_dropped: u64,
    /// Cookie replies received and accepted (all peers).
    pub cookies_received: u64,
    /// Times the endpoint entered the under-load state.
    pub load_engaged: u64,
    /// Handshakes completed (all peers).
    pub handshakes: u64,
}

/// One relaxed counter (counters order nothing).
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// [`DropCounters`] as atomics.
#[derive(Debug, Default)]
struct SharedDrops {
    replay: AtomicU64,
    auth: AtomicU64,
    unknown_spi: AtomicU64,
    expired: AtomicU64,
    rate_limited: AtomicU64,
    policy: AtomicU64,
    malformed: AtomicU64,
}

/// Which counter of [`SharedStats`] to bump (the drops have
/// [`SharedStats::count_drop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    HandshakeDrops,
    InitiationsProcessed,
    InitiationsSent,
    CookieRepliesSent,
    CookieRepliesDropped,
    CookiesReceived,
    LoadEngaged,
    Handshakes,
}

/// [`EndpointStats`] as relaxed atomics: bumped from any thread holding
/// any lock (or none), read with [`SharedStats::snapshot`].
#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    drops: SharedDrops,
    handshake_drops: AtomicU64,
    initiations_processed: AtomicU64,
    initiations_sent: AtomicU64,
    cookie_replies_sent: AtomicU64,
    cookie_replies_dropped: AtomicU64,
    cookies_received: AtomicU64,
    load_engaged: AtomicU64,
    handshakes: AtomicU64,
}

impl SharedStats {
    /// Counts one drop in its bucket.
    pub fn count_drop(&self, reason: DropReason) {
        let d = &self.drops;
        bump(match reason.bucket() {
            DropBucket::Replay => &d.replay,
            DropBucket::Auth => &d.auth,
            DropBucket::UnknownSpi => &d.unknown_spi,
            DropBucket::Expired => &d.expired,
            DropBucket::RateLimited => &d.rate_limited,
            DropBucket::Policy => &d.policy,
            DropBucket::Malformed => &d.malformed,
        });
    }

    /// Counts one event of kind `c`.
    pub fn count(&self, c: Counter) {
        bump(match c {
            Counter::HandshakeDrops => &self.handshake_drops,
            Counter::InitiationsProcessed => &self.initiations_processed,
            Counter::InitiationsSent => &self.initiations_sent,
            Counter::CookieRepliesSent => &self.cookie_replies_sent,
            Counter::CookieRepliesDropped => &self.cookie_replies_dropped,
            Counter::CookiesReceived => &self.cookies_received,
            Counter::LoadEngaged => &self.load_engaged,
            Counter::Handshakes => &self.handshakes,
        });
    }

    /// The counters now, as plain numbers (each read on its own: a
    /// snapshot taken under traffic is not one instant).
    pub fn snapshot(&self) -> EndpointStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let d = &self.drops;
        EndpointStats {
            drops: DropCounters {
                replay: r(&d.replay),
                auth: r(&d.auth),
                unknown_spi: r(&d.unknown_spi),
                expired: r(&d.expired),
                rate_limited: r(&d.rate_limited),
                policy: r(&d.policy),
                malformed: r(&d.malformed),
            },
            handshake_drops: r(&self.handshake_drops),
            initiations_processed: r(&self.initiations_processed),
            initiations_sent: r(&self.initiations_sent),
            cookie_replies_sent: r(&self.cookie_replies_sent),
            cookie_replies_dropped: r(&self.cookie_replies_dropped),
            cookies_received: r(&self.cookies_received),
            load_engaged: r(&self.load_engaged),
            handshakes: r(&self.handshakes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_counts_in_one_bucket() {
        let all = [
            DropReason::Malformed,
            DropReason::UnknownSpi,
            DropReason::Replay,
            DropReason::StaleInitiation,
            DropReason::Auth,
            DropReason::UnknownPeer,
            DropReason::Expired,
            DropReason::RateLimited,
            DropReason::Policy,
            DropReason::SaGone,
        ];
        let mut c = DropCounters::default();
        for r in all {
            let before = c.total();
            c.count(r);
            assert_eq!(c.total(), before + 1, "{r}");
        }
        assert_eq!(c.replay, 2);
        assert_eq!(c.auth, 2);
        assert_eq!(c.malformed, 1);
        assert_eq!(c.expired, 2);
        let shared = SharedStats::default();
        for r in all {
            shared.count_drop(r);
        }
        shared.count(Counter::Handshakes);
        let snap = shared.snapshot();
        assert_eq!(snap.drops, c, "the atomic buckets match the plain ones");
        assert_eq!(snap.handshakes, 1);
    }
}
