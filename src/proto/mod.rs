//! The sans-I/O protocol core (DESIGN §4–§5): an [`Endpoint`] that
//! demultiplexes datagrams by SPI, runs Noise IKpsk2 handshakes with mac1 /
//! cookie DoS protection, and keeps each peer's `next` / `current` /
//! `previous` SAs rotating without loss. Time is always an argument; outputs
//! come out of `poll_transmit`, `poll_timeout` and `poll_event`.
//!
//! It touches no socket and reads no clock. [`Endpoint`] is `Send + Sync`
//! with `&self` methods: each peer's state has its own lock, so workers
//! serving different peers do not wait on each other (the lock order is in
//! `endpoint.rs`). Data goes one way only, in phases so the AEAD runs with
//! no lock held: [`Endpoint::reserve_seal`] then [`SealJob::seal`];
//! [`Endpoint::precheck_datagram`], [`OpenJob::open`], then
//! [`Endpoint::commit_datagram`], one datagram at a time or a batch in runs
//! that lock each peer once ([`SendRun`], [`ReceiveRun`]). Handshake
//! messages go to [`Endpoint::handle_handshake`]. Timers are kept in a
//! schedule, so an idle endpoint with many peers does nothing between
//! deadlines. The dataplane owns buffers and batching.

use ::core::net::SocketAddr;
use ::core::ops::Range;
use std::time::Instant;

use vxsec_crypto::key::PublicKey;
use vxsec_crypto::suite::Suite;

pub mod config;
mod core;
mod endpoint;
mod handshake;
mod identity;
mod jobs;
mod load;
mod peer;
mod peers;
mod rotation;
mod runs;
mod sa_set;
pub mod stats;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod timers;

pub use config::{
    ConfigError, EndpointConfig, LoadConfig, PeerConfig, RotationLimits, TimerConfig,
};
pub use endpoint::Endpoint;
pub use jobs::{OpenJob, OpenedJob, Received, SealJob, SealStart};
pub use runs::{Prechecked, ReceiveRun, SendRun};
pub use sa_set::Role;
pub use stats::{DropCounters, DropReason, EndpointStats, PeerStats, TrafficCounters};

/// A peer's handle within one [`Endpoint`] (never reused by that endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u32);

impl ::core::fmt::Display for PeerId {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// What a datagram turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Authenticated data; the plaintext is `buf[payload]`.
    Data { peer: PeerId, payload: Range<usize> },
    /// An authenticated empty data message.
    Keepalive { peer: PeerId },
    /// A handshake or cookie message was consumed (see `poll_transmit` / `poll_event`).
    Handshake { peer: Option<PeerId> },
}

/// Which key and counter a data message used (for nonce-reuse audits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealRecord {
    /// `SealingKey::key_fingerprint` (one-way).
    pub key_fingerprint: [u8; 8],
    pub counter: u64,
}

/// Result of [`SealJob::seal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealOutcome {
    /// `buf[..len]` is the data message; send it to `dst`.
    Sealed {
        len: usize,
        dst: SocketAddr,
        record: SealRecord,
    },
    /// No usable SA: a copy was queued and a handshake is under way.
    Queued,
}

/// A datagram to send, written into the caller's buffer by `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub len: usize,
    /// Set for data messages (including keepalives).
    pub record: Option<SealRecord>,
}

/// Why [`Endpoint::reserve_seal`] (or [`SealJob::seal`]) could not take a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("unknown peer")]
    UnknownPeer,
    #[error("peer has no known endpoint")]
    NoEndpoint,
    #[error("buffer too small: need 16 bytes headroom and 16 bytes for the tag")]
    BufferTooSmall,
    #[error("queue full while waiting for a handshake")]
    QueueFull,
    #[error("handshakes with this peer are paused after a suite mismatch")]
    Suppressed,
    /// A [`SealJob`] was sealed with another SA's cipher (a driver bug);
    /// its counter is burnt, nothing was written.
    #[error("sealing key does not match the reservation")]
    KeyMismatch,
}

/// Something the operator or the agent should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first SA with this peer is in use.
    HandshakeComplete {
        peer: PeerId,
        role: Role,
        local_spi: u32,
        remote_spi: u32,
    },
    /// A new SA replaced the current one.
    Rekeyed {
        peer: PeerId,
        role: Role,
        local_spi: u32,
        remote_spi: u32,
    },
    /// The peer uses another suite; no SA was made. Handshakes pause.
    SuiteMismatch {
        peer: PeerId,
        ours: Suite,
        /// `None` if the peer's suite id is unknown to us.
        theirs: Option<Suite>,
    },
    /// Handshake attempts ran out without an answer.
    PeerUnreachable { peer: PeerId },
    /// Handshake load protection engaged (cookies required, proven
    /// sources rate-limited) or, with `false`, ended.
    LoadProtection { engaged: bool },
    /// An authenticated packet came from a new address.
    Roamed {
        peer: PeerId,
        from: Option<SocketAddr>,
        to: SocketAddr,
    },
}

/// One SA as shown by `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaStatus {
    pub local_spi: u32,
    pub remote_spi: u32,
    pub suite: Suite,
    pub role: Role,
    pub created: Instant,
    pub rekey_at: Instant,
    pub reject_at: Instant,
    pub traffic: TrafficCounters,
    pub key_fingerprint: [u8; 8],
}

/// One peer as shown by `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: PeerId,
    pub public_key: PublicKey,
    pub name: Option<String>,
    pub endpoint: Option<SocketAddr>,
    /// A current SA exists.
    pub established: bool,
    pub next: Option<SaStatus>,
    pub current: Option<SaStatus>,
    pub previous: Option<SaStatus>,
    /// When the next time-based rekey is due (if one is scheduled).
    pub next_rekey: Option<Instant>,
    pub handshake_pending: bool,
    pub queued_packets: usize,
    pub last_rx: Option<Instant>,
    pub stats: PeerStats,
}
