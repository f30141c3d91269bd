//! The state that the data-plane workers, the control thread, the control
//! socket and the signal loop share while the agent runs: the [`Node`] (the
//! one owner of peer state), the configured peers, the handshake queue, the
//! I/O counters' sources and what `status` shows that never changes.
//!
//! It only holds state: `agent::run` builds it, the others read it; it
//! imports none of them.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vxsec_crypto::suite::Suite;

use super::config::Config;
use super::configured::Configured;
use super::fleet;
use super::handshake_queue::HandshakeQueue;
use crate::dataplane::Node;
use crate::io::tun::TunStats;
use crate::io::udp::BatchUdp;

/// Packets per batch, end to end.
pub(super) const BATCH: usize = 64;

/// State shared by the workers, the control thread, the control socket
/// and the signal loop.
pub(super) struct Shared {
    /// The one owner of peer state.
    pub(super) node: Node,
    pub(super) stop: AtomicBool,
    pub(super) started: Instant,
    pub(super) info: StaticInfo,
    /// Peers as configured (for SIGHUP diffs).
    pub(super) peers: Configured,
    /// The configuration the agent started with: SIGHUP applies peer
    /// changes only and names the other settings that changed.
    pub(super) running: Config,
    pub(super) workers: usize,
    /// For the I/O counters in `status` and metrics.
    pub(super) tun_stats: Arc<TunStats>,
    pub(super) io_sockets: Mutex<Vec<BatchUdp>>,
    /// Fleet mode's state for `status` and metrics.
    pub(super) fleet: Option<Arc<fleet::FleetState>>,
    /// Handshake messages from the workers to the control thread, and its
    /// wake-up.
    pub(super) hs: HandshakeQueue,
}

/// What `status` shows that does not change while the agent runs.
pub(super) struct StaticInfo {
    pub(super) interface: String,
    pub(super) listen_port: u16,
    pub(super) tunnel_address: String,
    pub(super) suite: Suite,
    pub(super) tunnel_mtu: u32,
    pub(super) offloads: Vec<String>,
    /// `interface.mode`, as status shows it.
    pub(super) mode: &'static str,
    /// Whether the overlay's VTEPs are IPv6 (the tunnel address's family
    /// in route mode, the underlay's in transparent mode): the VXLAN MTU.
    pub(super) vtep_v6: bool,
}
