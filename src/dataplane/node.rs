//! [`Node`]: the one owner of peer state. It holds the protocol core
//! (`proto::Endpoint`), the [`Router`] (VTEP address → peer, per-peer
//! policy), the [`Policy`], the tunnel's address and MTU and the data
//! plane's drop counters, all private, behind a `&self` API that every
//! thread shares: workers move packets through it ([`super::tx`],
//! [`super::rx`]), the agent's control thread feeds it handshakes and
//! timers, and the agent adds, removes and updates peers and reads status.
//!
//! Locks: the endpoint is `Sync` and keeps each peer behind its own lock
//! (workers serving different peers never wait on each other; a batch
//! takes a peer's lock once per run of its packets, see
//! `proto::endpoint`). The router's `RwLock` is read by every batch (never
//! while the batch is inside the endpoint) and written only when peers
//! change, around the endpoint's own change. Drop counters are atomics. It
//! does no I/O and reads no clock: time comes in as `now`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::io::Arena;
use vxsec_crypto::key::{PrivateKey, PublicKey};
use vxsec_crypto::suite::Suite;

use crate::dataplane::policy::{Policy, PolicyDrop};
use crate::dataplane::router::{InnerAddr, PeerRoute, Route, Router};
use crate::proto::{ConfigError, Endpoint, EndpointStats, Event, PeerConfig, PeerId, PeerStatus};

/// Data-plane drops by reason (the protocol core counts its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataplaneDrops {
    pub malformed_inner: u64,
    pub not_vxlan: u64,
    /// IPv4 fragments (of VXLAN whose device MTU is above the tunnel's).
    pub fragment: u64,
    pub vni_not_allowed: u64,
    pub no_route: u64,
    pub too_big: u64,
    pub spoofed_source: u64,
    pub no_session: u64,
}

impl DataplaneDrops {
    /// Counts one policy refusal under its reason.
    pub(super) fn count(&mut self, d: PolicyDrop) {
        let c = match d {
            PolicyDrop::Malformed(_) => &mut self.malformed_inner,
            PolicyDrop::NotVxlan | PolicyDrop::IcmpNotAllowed => &mut self.not_vxlan,
            PolicyDrop::Fragment => &mut self.fragment,
            PolicyDrop::VniNotAllowed(_) => &mut self.vni_not_allowed,
            PolicyDrop::SourceMismatch => &mut self.spoofed_source,
        };
        *c += 1;
    }

    fn fields(&self) -> [u64; 8] {
        [
            self.malformed_inner,
            self.not_vxlan,
            self.fragment,
            self.vni_not_allowed,
            self.no_route,
            self.too_big,
            self.spoofed_source,
            self.no_session,
        ]
    }
}

/// [`DataplaneDrops`] shared by every worker: a batch counts locally and
/// adds its counts here once.
#[derive(Debug, Default)]
struct SharedDrops([AtomicU64; 8]);

impl SharedDrops {
    fn add(&self, d: &DataplaneDrops) {
        for (c, v) in self.0.iter().zip(d.fields()) {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        }
    }

    fn snapshot(&self) -> DataplaneDrops {
        let [malformed_inner, not_vxlan, fragment, vni_not_allowed, no_route, too_big, spoofed_source, no_session] =
            self.0.each_ref().map(|c| c.load(Ordering::Relaxed));
        DataplaneDrops {
            malformed_inner,
            not_vxlan,
            fragment,
            vni_not_allowed,
            no_route,
            too_big,
            spoofed_source,
            no_session,
        }
    }
}

/// The one owner of peer state (see the module doc).
pub struct Node {
    /// The protocol core: `Sync`, per-peer locks inside.
    endpoint: Endpoint,
    router: RwLock<Router>,
    policy: Policy,
    /// Enforce the policy (VXLAN only, VNIs); off only by explicit config.
    enforce_policy: bool,
    tunnel_addr: IpAddr,
    tunnel_mtu: u32,
    drops: SharedDrops,
    /// When the VXLAN MTU warning was last logged.
    fragment_warned: Mutex<Option<Instant>>,
    /// When the warning about a tunnel address no peer has was last logged.
    no_route_warned: Mutex<Option<Instant>>,
}

/// One peer as [`Node::status`] shows it.
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    pub status: PeerStatus,
    pub route: Option<Route>,
    /// Policy drops counted by the data plane for this peer.
    pub policy_drops: u64,
}

/// Everything `status` and metrics show of the node, read at one instant.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub peers: Vec<PeerSnapshot>,
    pub endpoint: EndpointStats,
    pub drops: DataplaneDrops,
    pub under_load: bool,
}

/// Why a peer could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddPeerError {
    #[error("transparent mode needs the peer's endpoint (its underlay address)")]
    NoUnderlayAddress,
    #[error("{kind} address {addr} belongs to another peer")]
    AddressTaken { kind: &'static str, addr: IpAddr },
    #[error("{0}")]
    Endpoint(#[from] crate::proto::ConfigError),
}

/// An event from the core with the name of the peer it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedEvent {
    pub event: Event,
    /// The peer's configured name (or `?` if unknown or not about a peer).
    pub peer_name: String,
}

/// Datagrams the core wants sent (handshakes, cookie replies, keepalives,
/// data that waited for a handshake), as filled by [`Node::poll_transmits`].
#[derive(Debug, Default)]
pub struct Transmits {
    slots: Vec<usize>,
    dests: Vec<SocketAddr>,
}

impl Transmits {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            slots: Vec::with_capacity(n),
            dests: Vec::with_capacity(n),
        }
    }
    /// Slots holding a datagram (at [`Arena::MESSAGE_OFFSET`], `arena.len(i)` long).
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }
    /// Where each of [`Transmits::slots`] goes.
    pub fn dests(&self) -> &[SocketAddr] {
        &self.dests
    }
}

impl Node {
    /// A node with no peers around `endpoint`, routing by the `mode`
    /// address of each peer.
    pub fn new(
        endpoint: Endpoint,
        policy: Policy,
        enforce_policy: bool,
        tunnel_addr: IpAddr,
        tunnel_mtu: u32,
        mode: InnerAddr,
    ) -> Self {
        Self {
            endpoint,
            router: RwLock::new(Router::new(mode)),
            policy,
            enforce_policy,
            tunnel_addr,
            tunnel_mtu,
            drops: SharedDrops::default(),
            fragment_warned: Mutex::new(None),
            no_route_warned: Mutex::new(None),
        }
    }

    // --- for tx.rs and rx.rs (the dataplane) only ---

    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    pub(super) fn router(&self) -> RwLockReadGuard<'_, Router> {
        self.router.read().unwrap_or_else(|e| e.into_inner())
    }
    fn router_mut(&self) -> RwLockWriteGuard<'_, Router> {
        self.router.write().unwrap_or_else(|e| e.into_inner())
    }
    pub(super) fn policy(&self) -> &Policy {
        &self.policy
    }
    pub(super) fn enforce_policy(&self) -> bool {
        self.enforce_policy
    }
    pub(super) fn tunnel_addr(&self) -> IpAddr {
        self.tunnel_addr
    }
    pub fn tunnel_mtu(&self) -> u32 {
        self.tunnel_mtu
    }
    /// Adds a batch's drop counts to the node's.
    pub(super) fn count_drops(&self, d: &DataplaneDrops) {
        self.drops.add(d);
    }

    /// The local kernel fragmented VXLAN on its way into the TUN: its VXLAN
    /// device's MTU is above what the tunnel carries, the classic overlay
    /// MTU pitfall. Every large packet is then lost, so say how to fix it
    /// (at most once per [`FRAGMENT_WARNING_INTERVAL`]).
    pub(super) fn warn_fragments(&self, now: Instant, fragments_in_batch: u64) {
        if due(&self.fragment_warned, now, FRAGMENT_WARNING_INTERVAL) {
            tracing::warn!(
                fragments = self.drops.snapshot().fragment + fragments_in_batch,
                vxlan_mtu =
                    crate::dataplane::mtu::vxlan_mtu(self.tunnel_mtu, self.tunnel_addr.is_ipv6())
                        .unwrap_or(0),
                "dropping fragmented VXLAN from TUN: the VXLAN device's MTU is above what the \
                 tunnel carries; set it to vxlan_mtu (see `vxsec mtu`)"
            );
        }
    }

    /// A packet for a tunnel address that no peer has: usually a VTEP
    /// address that is on no node (a mistyped Swarm `--data-path-addr`,
    /// a VXLAN `remote` or FDB entry), which otherwise fails silently.
    /// Names the address, at most once per [`NO_ROUTE_WARNING_INTERVAL`].
    pub(super) fn warn_no_route(&self, now: Instant, src: IpAddr, dst: IpAddr, in_batch: u64) {
        // A VTEP is a unicast address: multicast and link-local
        // destinations (the host's own IPv6 chatter) are counted only.
        let vtep_like = match dst {
            IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast() && !a.is_link_local(),
            IpAddr::V6(a) => !a.is_multicast() && !a.is_unicast_link_local(),
        };
        if vtep_like && due(&self.no_route_warned, now, NO_ROUTE_WARNING_INTERVAL) {
            tracing::warn!(
                %dst,
                %src,
                no_route = self.drops.snapshot().no_route + in_batch,
                "dropping packets to {dst}: no peer has this tunnel address (is a VTEP \
                 address, e.g. a Swarm --data-path-addr or a VXLAN remote, mistyped, or \
                 the peer not configured?)"
            );
        }
    }

    // --- peers: config entries, the control socket, fleet ---

    /// Adds the peer `pc` with `route`, replacing a peer with the same key
    /// (its SAs are dropped). Refused if its VTEP address (tunnel, or
    /// underlay in transparent mode) belongs to another peer, or the core
    /// refuses it; the peer it would replace is gone either way.
    pub fn add_peer(
        &self,
        now: Instant,
        pc: PeerConfig,
        route: PeerRoute,
    ) -> Result<PeerId, AddPeerError> {
        let key = pc.public_key;
        // The router's write lock spans the change, so no batch sees the
        // endpoint and the router disagree about this peer.
        let mut router = self.router_mut();
        remove(&self.endpoint, &mut router, &key);
        let probe = Route::new(PeerId(0), route.clone());
        let Some(vtep) = probe.inner_addr(router.mode()) else {
            return Err(AddPeerError::NoUnderlayAddress);
        };
        if let Some(other) = router.lookup(vtep) {
            let other_key = self.endpoint.peer_status(other.peer).map(|s| s.public_key);
            if other_key != Some(key) {
                return Err(AddPeerError::AddressTaken {
                    kind: router.mode().name(),
                    addr: vtep,
                });
            }
        }
        let id = self.endpoint.add_peer(now, pc)?;
        router.insert(Route::new(id, route));
        Ok(id)
    }

    /// The peer with key `old` rolled its static key to `new`, its route
    /// is now `route`: the same peer (id, SAs, counters) takes both, so no
    /// packet is lost (remove + add would drop its SAs). Refused, changing
    /// nothing, if the VTEP address is another peer's or the core refuses.
    pub fn update_peer_key(
        &self,
        now: Instant,
        old: &PublicKey,
        new: PublicKey,
        route: PeerRoute,
    ) -> Result<PeerId, AddPeerError> {
        let mut router = self.router_mut();
        let no_peer = || ConfigError::new("peer.public_key", "no such peer");
        let id = self.endpoint.peer_id(old).ok_or_else(no_peer)?;
        let Some(vtep) = Route::new(id, route.clone()).inner_addr(router.mode()) else {
            return Err(AddPeerError::NoUnderlayAddress);
        };
        if router.lookup(vtep).is_some_and(|other| other.peer != id) {
            let kind = router.mode().name();
            return Err(AddPeerError::AddressTaken { kind, addr: vtep });
        }
        let id = self.endpoint.update_peer_key(now, old, new)?;
        router.insert(Route::new(id, route));
        Ok(id)
    }

    /// This node's static key becomes `new`; the old one is still
    /// answered until [`Node::retire_previous_identity`]. Returns the old.
    pub fn rotate_identity(&self, now: Instant, new: PrivateKey) -> Result<PublicKey, ConfigError> {
        self.endpoint.rotate_identity(now, new)
    }

    /// Drops the previous static key; whether there was one.
    pub fn retire_previous_identity(&self) -> bool {
        self.endpoint.retire_previous_identity()
    }

    /// This node's static public key now, and the previous one while it is
    /// still answered.
    pub fn public_key(&self) -> PublicKey {
        self.endpoint.public_key()
    }
    pub fn previous_public_key(&self) -> Option<PublicKey> {
        self.endpoint.previous_public_key()
    }

    /// Removes the peer with `key` and its route; whether it existed.
    pub fn remove_peer(&self, key: &PublicKey) -> bool {
        let mut router = self.router_mut();
        remove(&self.endpoint, &mut router, key)
    }

    /// Replaces the route of the peer with `key` in place (its SAs and
    /// policy drops stay); returns what changed, by config name (`None` if
    /// there is no such peer).
    pub fn update_route(&self, key: &PublicKey, route: PeerRoute) -> Option<Vec<&'static str>> {
        let mut router = self.router_mut();
        let id = self.endpoint.peer_id(key)?;
        let changes = router
            .route(id)
            .map_or_else(Vec::new, |old| old.changes_to(&route));
        router.insert(Route::new(id, route));
        Some(changes)
    }

    /// Starts a rekey with the peer with `key`, or with every peer; `false`
    /// if there is no such peer.
    pub fn rekey(&self, now: Instant, key: Option<&PublicKey>) -> bool {
        let id = match key {
            None => None,
            Some(k) => match self.endpoint.peer_id(k) {
                Some(id) => Some(id),
                None => return false,
            },
        };
        self.endpoint.rekey(now, id);
        true
    }

    /// Every peer's VTEP address (tunnel, or underlay in transparent mode), sorted.
    pub fn vteps(&self) -> Vec<IpAddr> {
        self.router().vteps()
    }

    pub fn suite(&self) -> Suite {
        self.endpoint.suite()
    }

    /// Peers with their routes, the endpoint's and the data plane's
    /// counters, at one instant.
    pub fn status(&self, now: Instant) -> NodeStatus {
        let router = self.router();
        let peers = self
            .endpoint
            .peers()
            .map(|status| PeerSnapshot {
                route: router.route(status.id).cloned(),
                policy_drops: router.policy_drops(status.id),
                status,
            })
            .collect();
        NodeStatus {
            peers,
            endpoint: self.endpoint.stats(),
            drops: self.drops.snapshot(),
            under_load: self.endpoint.under_load(now),
        }
    }

    // --- the control thread: handshakes, timers, control sends ---

    /// Hands queued handshake messages (source, bytes) to the core, after
    /// telling it how deep the handshake backlog is
    /// (`backlog` of a queue of `capacity`). Stops when `msgs` ends (the
    /// caller may end it on a time budget); returns how many it took.
    /// Refusals are counted by the core.
    pub fn handle_handshakes<'a>(
        &self,
        now: Instant,
        backlog: usize,
        capacity: usize,
        msgs: impl Iterator<Item = (SocketAddr, &'a mut [u8])>,
    ) -> usize {
        self.endpoint
            .handle_handshake_backlog(now, backlog, capacity);
        let mut n = 0;
        for (from, buf) in msgs {
            let _ = self.endpoint.handle_handshake(now, from, buf);
            n += 1;
        }
        n
    }

    /// When [`Node::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    /// Changes whenever a worker's call moved the earliest protocol timer
    /// earlier: a control thread sleeping until the last
    /// [`Node::poll_timeout`] must wake and ask again.
    pub fn timers_generation(&self) -> u64 {
        self.endpoint.timers_generation()
    }

    /// See [`Endpoint::set_timers_horizon`].
    pub fn set_timers_horizon(&self, by: Instant) {
        self.endpoint.set_timers_horizon(by);
    }

    /// Whether the core may have datagrams for [`Node::poll_transmits`]
    /// (no lock taken).
    pub fn has_transmits(&self) -> bool {
        self.endpoint.has_transmits()
    }

    /// Fires every due protocol timer (retransmissions, rekeys,
    /// keepalives, expiry).
    pub fn handle_timeout(&self, now: Instant) {
        self.endpoint.handle_timeout(now);
    }

    /// Moves the core's pending datagrams into slots of `arena` (from slot
    /// 0, at [`Arena::MESSAGE_OFFSET`]) for one batched send; fewer than
    /// `arena.slot_count()` means none are left.
    pub fn poll_transmits(&self, now: Instant, arena: &mut Arena, out: &mut Transmits) {
        out.slots.clear();
        out.dests.clear();
        for i in 0..arena.slot_count() {
            let Some(buf) = arena.slot_mut(i).get_mut(Arena::MESSAGE_OFFSET..) else {
                break;
            };
            let Some(t) = self.endpoint.poll_transmit(now, buf) else {
                break;
            };
            arena.set_len(i, t.len);
            out.slots.push(i);
            out.dests.push(t.dst);
        }
    }

    /// The next event of the core, with the name of the peer it is about.
    pub fn poll_event(&self) -> Option<NamedEvent> {
        let event = self.endpoint.poll_event()?;
        let peer = match &event {
            Event::HandshakeComplete { peer, .. }
            | Event::Rekeyed { peer, .. }
            | Event::SuiteMismatch { peer, .. }
            | Event::PeerUnreachable { peer }
            | Event::Roamed { peer, .. } => Some(*peer),
            Event::LoadProtection { .. } => None,
        };
        let peer_name = peer
            .and_then(|p| self.endpoint.peer_status(p))
            .and_then(|s| s.name)
            .unwrap_or_else(|| "?".into());
        Some(NamedEvent { event, peer_name })
    }
}

/// Removes the peer with `key` from both the core and the router.
fn remove(endpoint: &Endpoint, router: &mut Router, key: &PublicKey) -> bool {
    if let Some(id) = endpoint.peer_id(key) {
        router.remove(id);
    }
    endpoint.remove_peer(key)
}

/// The warning about fragmented VXLAN from TUN repeats at most this often.
const FRAGMENT_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// The warning about packets for a tunnel address no peer has repeats at
/// most this often.
pub const NO_ROUTE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Whether a rate-limited warning last given at `*last` is due at `now`
/// (and if so, records `now`).
fn due(last: &Mutex<Option<Instant>>, now: Instant, interval: Duration) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    let due = last.is_none_or(|t| now.saturating_duration_since(t) >= interval);
    if due {
        *last = Some(now);
    }
    due
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use vxsec_crypto::key::PrivateKey;

    use super::*;
    use crate::dataplane::policy::VniSet;
    use crate::dataplane::testing::{nodes, send, TB};

    /// Packets for a tunnel address no peer has are counted, and the
    /// warning naming it is due at most once a minute (virtual time).
    #[test]
    fn no_route_is_counted_and_warned_once_a_minute() {
        let (a, _b, now) = nodes();
        let key = a.status(now).peers[0].status.public_key;
        assert!(a.remove_peer(&key));
        let warned = |a: &Node| *a.no_route_warned.lock().expect("lock");
        send(&a, now, 6);
        assert_eq!(a.status(now).drops.no_route, 6);
        assert_eq!(warned(&a), Some(now));
        send(&a, now + Duration::from_secs(59), 6);
        assert_eq!(a.status(now).drops.no_route, 12);
        assert_eq!(warned(&a), Some(now), "not again within a minute");
        let later = now + NO_ROUTE_WARNING_INTERVAL;
        send(&a, later, 6);
        assert_eq!(warned(&a), Some(later));
    }

    /// A peer whose VTEP address another peer has is refused, naming the
    /// address; a free address is taken, and removal forgets the peer.
    #[test]
    fn a_peer_may_not_take_another_peers_tunnel_address() {
        let (a, _b, now) = nodes();
        let key = PrivateKey::generate().public_key();
        let pc = || PeerConfig::new(key, Some("192.0.2.9:51830".parse().expect("addr")));
        let route = |ip: Ipv4Addr| PeerRoute {
            tunnel_addr: IpAddr::V4(ip),
            vnis: VniSet::any(),
            endpoint: Some("192.0.2.9:51830".parse().expect("addr")),
        };
        assert_eq!(
            a.add_peer(now, pc(), route(TB)),
            Err(AddPeerError::AddressTaken {
                kind: "tunnel",
                addr: IpAddr::V4(TB)
            })
        );
        let id = a.add_peer(now, pc(), route(Ipv4Addr::new(10, 200, 0, 9)));
        assert!(id.is_ok(), "{id:?}");
        assert_eq!(a.status(now).peers.len(), 2);
        assert_eq!(a.vteps().len(), 2);
        // Adding the same key again replaces it (no conflict with itself).
        assert!(a
            .add_peer(now, pc(), route(Ipv4Addr::new(10, 200, 0, 9)))
            .is_ok());
        assert_eq!(a.status(now).peers.len(), 2);
        assert!(a.remove_peer(&key));
        assert!(!a.remove_peer(&key));
        assert_eq!(a.vteps(), vec![IpAddr::V4(TB)]);
        assert!(!a.rekey(now, Some(&key)), "no such peer");
    }

    #[test]
    fn the_node_is_shared_by_reference_across_threads() {
        fn sync<T: Sync + Send>() {}
        sync::<Node>();
    }
}
