//! Which peer a VXLAN packet is for: VTEP address → [`Route`] (one binary
//! search over a sorted array, no hashing per packet), routes by peer for
//! the receive policy, and each peer's policy-drop counter (an atomic, so
//! workers holding the router only for reading can count).
//!
//! It does not hold protocol state (SAs, endpoints as the protocol sees
//! them: `proto::Endpoint` does) nor decide policy (`dataplane::policy`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dataplane::policy::VniSet;
use crate::proto::PeerId;

/// What the data plane knows of a peer besides the protocol core, before
/// the peer has a [`PeerId`]: what a config entry, the control socket or
/// the fleet registry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    pub tunnel_addr: IpAddr,
    pub vnis: VniSet,
    /// The configured underlay endpoint, if any.
    pub endpoint: Option<SocketAddr>,
}

/// A peer's [`PeerRoute`] once the peer exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub peer: PeerId,
    pub tunnel_addr: IpAddr,
    pub vnis: VniSet,
    /// The configured underlay endpoint, if any.
    pub endpoint: Option<SocketAddr>,
}

impl Route {
    pub fn new(peer: PeerId, r: PeerRoute) -> Self {
        Self {
            peer,
            tunnel_addr: r.tunnel_addr,
            vnis: r.vnis,
            endpoint: r.endpoint,
        }
    }

    /// The address this peer's VXLAN packets carry as VTEP under `mode`;
    /// `None` for a transparent-mode peer without an endpoint.
    pub fn inner_addr(&self, mode: InnerAddr) -> Option<IpAddr> {
        match mode {
            InnerAddr::Tunnel => Some(self.tunnel_addr),
            InnerAddr::Underlay => self.endpoint.map(|e| canonical_ip(e.ip())),
        }
    }

    /// The settings a route update changes in place, by config name.
    pub fn changes_to(&self, new: &PeerRoute) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.tunnel_addr != new.tunnel_addr {
            c.push("tunnel_address");
        }
        if self.vnis != new.vnis {
            c.push("allowed_vnis");
        }
        c
    }
}

/// Which address of a peer its inner (VXLAN) packets carry, so which one
/// the router finds the peer by and the receive policy checks as source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InnerAddr {
    /// Route mode: the overlay's VTEPs are the tunnel addresses.
    #[default]
    Tunnel,
    /// Transparent mode: the overlay's VTEPs are the underlay addresses
    /// (the IP of the peer's configured endpoint).
    Underlay,
}

impl InnerAddr {
    /// What the address is called in messages to the operator.
    pub fn name(self) -> &'static str {
        match self {
            InnerAddr::Tunnel => "tunnel",
            InnerAddr::Underlay => "underlay",
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4 (a dual-stack socket reports peers so).
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// VTEP address → peer, and the peer's policy. The send path does one
/// binary search over a sorted array (no hashing per packet); the receive
/// path looks routes up by peer. Which address is the key is fixed at
/// creation ([`InnerAddr`]): both modes share everything else.
#[derive(Debug, Default)]
pub struct Router {
    mode: InnerAddr,
    /// Sorted by [`addr_key`]; one entry per peer.
    by_addr: Vec<(u128, Route)>,
    by_peer: HashMap<PeerId, Route>,
    /// Policy drops per peer: packets to or from the peer that its policy
    /// refused (a VNI it may not use, not VXLAN, a spoofed inner source).
    policy_drops: HashMap<PeerId, AtomicU64>,
}

/// An address as one integer (IPv4 as its IPv4-mapped IPv6 form).
fn addr_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Router {
    /// An empty router keyed by the `mode` address of each peer.
    pub fn new(mode: InnerAddr) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    pub fn mode(&self) -> InnerAddr {
        self.mode
    }

    /// Adds or replaces `route` (a peer has exactly one VTEP address). A
    /// transparent-mode route without an endpoint is kept by peer only:
    /// nothing is sent to it and everything it sends fails the policy.
    /// A peer's policy drops survive the replacement of its route.
    pub fn insert(&mut self, route: Route) {
        let drops = self.policy_drops(route.peer);
        self.remove(route.peer);
        if let Some(addr) = route.inner_addr(self.mode) {
            let key = addr_key(addr);
            let at = self.by_addr.partition_point(|(k, _)| *k < key);
            if let Some((k, old)) = self.by_addr.get(at) {
                if *k == key {
                    let old = old.peer;
                    self.remove(old);
                }
            }
            let at = self.by_addr.partition_point(|(k, _)| *k < key);
            self.by_addr.insert(at, (key, route.clone()));
        }
        self.policy_drops.insert(route.peer, AtomicU64::new(drops));
        self.by_peer.insert(route.peer, route);
    }

    pub fn remove(&mut self, peer: PeerId) -> Option<Route> {
        let r = self.by_peer.remove(&peer)?;
        self.by_addr.retain(|(_, x)| x.peer != peer);
        self.policy_drops.remove(&peer);
        Some(r)
    }

    pub fn route(&self, peer: PeerId) -> Option<&Route> {
        self.by_peer.get(&peer)
    }

    /// Every route, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> + '_ {
        self.by_peer.values()
    }

    /// The peer whose VTEP address (tunnel or underlay, by mode) is `dst`.
    pub fn lookup(&self, dst: IpAddr) -> Option<&Route> {
        let key = addr_key(dst);
        self.by_addr
            .binary_search_by(|(k, _)| k.cmp(&key))
            .ok()
            .and_then(|i| self.by_addr.get(i))
            .map(|(_, r)| r)
    }

    /// Every peer's VTEP address under this router's mode, sorted.
    pub fn vteps(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .by_peer
            .values()
            .filter_map(|r| r.inner_addr(self.mode))
            .collect();
        v.sort();
        v
    }

    pub fn policy_drops(&self, peer: PeerId) -> u64 {
        self.policy_drops
            .get(&peer)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts one policy drop for `peer` (a routed peer; others are
    /// counted globally only). Needs only `&self`: callers hold the
    /// router for reading.
    pub fn count_policy_drop(&self, peer: PeerId) {
        if let Some(c) = self.policy_drops.get(&peer) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn route(n: u32, addr: &str) -> Route {
        Route {
            peer: PeerId(n),
            tunnel_addr: addr.parse().expect("ip"),
            vnis: VniSet::any(),
            endpoint: Some(SocketAddr::from(([192, 0, 2, n as u8], 51830))),
        }
    }

    #[test]
    fn router_finds_by_address_peer_and_endpoint_and_forgets_on_remove() {
        let mut r = Router::default();
        for (n, a) in [
            (3, "10.200.0.3"),
            (1, "10.200.0.1"),
            (2, "fd00::2"),
            (4, "10.200.0.2"),
        ] {
            r.insert(route(n, a));
        }
        for (n, a) in [
            (3, "10.200.0.3"),
            (1, "10.200.0.1"),
            (2, "fd00::2"),
            (4, "10.200.0.2"),
        ] {
            let ip: IpAddr = a.parse().expect("ip");
            assert_eq!(r.lookup(ip).map(|x| x.peer), Some(PeerId(n)), "{a}");
        }
        assert!(r.lookup("10.200.0.9".parse().expect("ip")).is_none());
        // IPv4 and its mapped IPv6 form are the same key, nothing else collides.
        assert!(r.lookup("::a:c800:3".parse().expect("ip")).is_none());
        // Moving a peer to a new address drops the old one.
        r.insert(route(3, "10.200.0.30"));
        assert!(r.lookup("10.200.0.3".parse().expect("ip")).is_none());
        assert_eq!(
            r.route(PeerId(3)).map(|x| x.tunnel_addr),
            Some("10.200.0.30".parse().expect("ip"))
        );
        // A new peer taking an address evicts the old owner.
        r.insert(route(5, "10.200.0.1"));
        assert!(r.route(PeerId(1)).is_none());
        assert_eq!(
            r.lookup("10.200.0.1".parse().expect("ip")).map(|x| x.peer),
            Some(PeerId(5))
        );
        assert!(r.remove(PeerId(5)).is_some());
        assert!(r.lookup("10.200.0.1".parse().expect("ip")).is_none());
    }
}
