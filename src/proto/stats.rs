//! Counters of the protocol core: why datagrams were dropped, per-peer and
//! per-SA traffic, handshakes, rekeys, collisions and cookie activity.
//!
//! Plain numbers only; exporting them (status, Prometheus) is the agent's job.

use serde::Serialize;

/// Why [`super::Endpoint::handle_datagram`] refused a datagram. Each reason
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

/// The name the brief's API uses for the drop reason.
pub type Drop = DropReason;

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
    }
}
