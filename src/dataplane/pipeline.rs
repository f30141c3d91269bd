//! The per-batch data path between TUN, the protocol core and UDP: on the
//! way out, classify → police → route → seal in place; on the way in, open →
//! police → hand to TUN. Pure logic over an [`Arena`]: no sockets, no
//! threads, no clock (the agent's workers do the I/O around it).

use std::collections::HashMap;
#[cfg(test)]
use std::net::Ipv4Addr;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use tracing::{debug, trace};
use vxsec_crypto::batch::Arena;
use vxsec_crypto::sa::DATA_HEADER_LEN;

use crate::dataplane::mtu::icmp_too_big;
use crate::dataplane::policy::{Policy, PolicyDrop, VniSet};
use crate::proto::{DropReason, Endpoint, Incoming, PeerId, SealOutcome};

/// Where a data message starts in a slot: the header sits just before the
/// payload, which starts at [`Arena::HEADROOM`].
pub const MSG_OFFSET: usize = Arena::HEADROOM - DATA_HEADER_LEN;

/// What the data plane knows of a peer besides the protocol core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub peer: PeerId,
    pub tunnel_addr: IpAddr,
    pub vnis: VniSet,
    /// The configured underlay endpoint, if any.
    pub endpoint: Option<SocketAddr>,
}

/// Tunnel address → peer, and the peer's policy. The send path does one
/// binary search over a sorted array (no hashing per packet); the receive
/// path looks routes up by peer.
#[derive(Debug, Default)]
pub struct Router {
    /// Sorted by [`addr_key`]; one entry per peer.
    by_addr: Vec<(u128, Route)>,
    by_peer: HashMap<PeerId, Route>,
    by_endpoint: HashMap<SocketAddr, PeerId>,
    /// Policy drops per peer (received packets the peer may not send).
    policy_drops: HashMap<PeerId, u64>,
}

/// An address as one integer (IPv4 as its IPv4-mapped IPv6 form).
fn addr_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Router {
    /// Adds or replaces `route` (a peer has exactly one tunnel address).
    pub fn insert(&mut self, route: Route) {
        self.remove(route.peer);
        let key = addr_key(route.tunnel_addr);
        let at = self.by_addr.partition_point(|(k, _)| *k < key);
        if self.by_addr.get(at).is_some_and(|(k, _)| *k == key) {
            if let Some((_, old)) = self.by_addr.get(at) {
                let old = old.peer;
                self.remove(old);
            }
        }
        let at = self.by_addr.partition_point(|(k, _)| *k < key);
        self.by_addr.insert(at, (key, route.clone()));
        if let Some(e) = route.endpoint {
            self.by_endpoint.insert(e, route.peer);
        }
        self.by_peer.insert(route.peer, route);
    }

    pub fn remove(&mut self, peer: PeerId) -> Option<Route> {
        let r = self.by_peer.remove(&peer)?;
        self.by_addr.retain(|(_, x)| x.peer != peer);
        if let Some(e) = r.endpoint {
            self.by_endpoint.remove(&e);
        }
        self.policy_drops.remove(&peer);
        Some(r)
    }

    pub fn route(&self, peer: PeerId) -> Option<&Route> {
        self.by_peer.get(&peer)
    }

    pub fn lookup(&self, dst: IpAddr) -> Option<&Route> {
        let key = addr_key(dst);
        self.by_addr
            .binary_search_by(|(k, _)| k.cmp(&key))
            .ok()
            .and_then(|i| self.by_addr.get(i))
            .map(|(_, r)| r)
    }

    /// The peer configured at underlay address `from`.
    pub fn by_endpoint(&self, from: SocketAddr) -> Option<PeerId> {
        let from = match from {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::from((v4, v6.port())),
                None => from,
            },
            v4 => v4,
        };
        self.by_endpoint.get(&from).copied()
    }

    pub fn policy_drops(&self, peer: PeerId) -> u64 {
        self.policy_drops.get(&peer).copied().unwrap_or(0)
    }
}

/// Data-plane drops by reason (the protocol core counts its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataplaneDrops {
    pub malformed_inner: u64,
    pub not_vxlan: u64,
    pub vni_not_allowed: u64,
    pub no_route: u64,
    pub too_big: u64,
    pub spoofed_source: u64,
    pub no_session: u64,
}

impl DataplaneDrops {
    fn count(&mut self, d: PolicyDrop) {
        let c = match d {
            PolicyDrop::Malformed(_) => &mut self.malformed_inner,
            PolicyDrop::NotVxlan | PolicyDrop::Fragment | PolicyDrop::IcmpNotAllowed => {
                &mut self.not_vxlan
            }
            PolicyDrop::VniNotAllowed(_) => &mut self.vni_not_allowed,
            PolicyDrop::SourceMismatch => &mut self.spoofed_source,
        };
        *c += 1;
    }
}

/// Output of [`Pipeline::outbound`]: what to send over UDP and what to
/// write back to TUN (ICMP too-big replies). Reused across batches, so
/// steady state allocates nothing.
#[derive(Debug, Default)]
pub struct Outbound {
    pub send_slots: Vec<usize>,
    pub send_dests: Vec<SocketAddr>,
    pub to_tun: Vec<usize>,
}

impl Outbound {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            send_slots: Vec::with_capacity(n),
            send_dests: Vec::with_capacity(n),
            to_tun: Vec::with_capacity(n),
        }
    }
    fn clear(&mut self) {
        self.send_slots.clear();
        self.send_dests.clear();
        self.to_tun.clear();
    }
}

/// The protocol core plus what the data plane needs around it.
pub struct Pipeline {
    pub endpoint: Endpoint,
    pub router: Router,
    pub policy: Policy,
    /// Enforce the policy (VXLAN only, VNIs); off only by explicit config.
    pub enforce_policy: bool,
    pub tunnel_addr: IpAddr,
    pub tunnel_mtu: u32,
    pub drops: DataplaneDrops,
    icmp_scratch: Box<[u8; 1280]>,
    /// When an unknown-SPI datagram last triggered a handshake, per peer.
    unknown_spi_handshake: HashMap<PeerId, Instant>,
}

/// At most one handshake per peer per this interval is started because of
/// data under an SPI we do not know.
const UNKNOWN_SPI_HANDSHAKE_INTERVAL: Duration = Duration::from_secs(1);

impl Pipeline {
    pub fn new(endpoint: Endpoint, policy: Policy, tunnel_addr: IpAddr, tunnel_mtu: u32) -> Self {
        Self {
            endpoint,
            router: Router::default(),
            policy,
            enforce_policy: true,
            tunnel_addr,
            tunnel_mtu,
            drops: DataplaneDrops::default(),
            icmp_scratch: Box::new([0; 1280]),
            unknown_spi_handshake: HashMap::new(),
        }
    }

    /// Packets read from TUN in slots `0..n` (each at `HEADROOM`, length
    /// `arena.len(i)`): sealed in place for their peers. Fills `out` with
    /// the slots to send (message at [`MSG_OFFSET`], `arena.len(i)` set to
    /// its length) and the slots holding ICMP replies for TUN.
    pub fn outbound(&mut self, now: Instant, arena: &mut Arena, n: usize, out: &mut Outbound) {
        out.clear();
        for i in 0..n {
            let len = arena.len(i);
            let Some(pkt) = arena.slot(i).get(Arena::HEADROOM..Arena::HEADROOM + len) else {
                self.drops.malformed_inner += 1;
                continue;
            };
            let c = match self.policy.classify(pkt) {
                Ok(c) => c,
                Err(d) => {
                    trace!("TUN packet dropped: {d}");
                    self.drops.count(d);
                    continue;
                }
            };
            let Some(route) = self.router.lookup(c.dst) else {
                trace!(dst = %c.dst, "TUN packet dropped: no peer owns the destination");
                self.drops.no_route += 1;
                continue;
            };
            if self.enforce_policy {
                if let Err(d) = self.policy.check(&c, &route.vnis) {
                    self.drops.count(d);
                    continue;
                }
            }
            let peer = route.peer;
            if len > self.tunnel_mtu as usize {
                self.drops.too_big += 1;
                if c.dont_frag && self.icmp_reply(arena, i) {
                    out.to_tun.push(i);
                }
                continue;
            }
            let Some(buf) = arena.slot_mut(i).get_mut(MSG_OFFSET..) else {
                continue;
            };
            match self.endpoint.seal(now, peer, buf, len) {
                Ok(SealOutcome::Sealed { len, dst, .. }) => {
                    arena.set_len(i, len);
                    out.send_slots.push(i);
                    out.send_dests.push(dst);
                }
                Ok(SealOutcome::Queued) => trace!(%peer, "queued until the handshake completes"),
                Err(e) => {
                    trace!(%peer, "TUN packet dropped: {e}");
                    self.drops.no_session += 1;
                }
            }
        }
    }

    /// Builds an ICMP too-big reply to the packet in slot `i`, in place.
    fn icmp_reply(&mut self, arena: &mut Arena, i: usize) -> bool {
        let len = arena.len(i);
        let Some(pkt) = arena.slot(i).get(Arena::HEADROOM..Arena::HEADROOM + len) else {
            return false;
        };
        let Ok(n) = icmp_too_big(
            pkt,
            self.tunnel_addr,
            self.tunnel_mtu,
            &mut self.icmp_scratch[..],
        ) else {
            return false;
        };
        let (Some(dst), Some(src)) = (
            arena
                .slot_mut(i)
                .get_mut(Arena::HEADROOM..Arena::HEADROOM + n),
            self.icmp_scratch.get(..n),
        ) else {
            return false;
        };
        dst.copy_from_slice(src);
        arena.set_len(i, n);
        true
    }

    /// Datagrams received in slots `0..n` (each at [`MSG_OFFSET`], length
    /// `arena.len(i)`, from `from[i]`): opened in place; slots whose
    /// plaintext passed the policy go to `to_tun` (at `HEADROOM`).
    pub fn inbound(
        &mut self,
        now: Instant,
        arena: &mut Arena,
        n: usize,
        from: &[SocketAddr],
        to_tun: &mut Vec<usize>,
    ) {
        to_tun.clear();
        for (i, &src) in from.iter().enumerate().take(n) {
            let len = arena.len(i);
            let Some(buf) = arena.slot_mut(i).get_mut(MSG_OFFSET..MSG_OFFSET + len) else {
                continue;
            };
            let (peer, payload) = match self.endpoint.handle_datagram(now, src, buf) {
                Ok(Incoming::Data { peer, payload }) => (peer, payload),
                Err(DropReason::UnknownSpi) => {
                    self.unknown_spi_from(now, src);
                    continue;
                }
                // Keepalives, handshakes and other drops (counted by the core).
                Ok(_) | Err(_) => continue,
            };
            if let Some(plen) = self.admit_received(arena, i, peer, payload) {
                arena.set_len(i, plen);
                to_tun.push(i);
            }
        }
    }

    /// Data under an SPI we do not know, from a configured peer's address:
    /// the peer still holds an SA we lost (we restarted, or our SA expired
    /// first). Start a handshake now rather than after its dead-peer
    /// timeout. The datagram is unauthenticated, so this only ever asks for
    /// a handshake (which authenticates) and is rate-limited per peer.
    fn unknown_spi_from(&mut self, now: Instant, src: SocketAddr) {
        let Some(peer) = self.router.by_endpoint(src) else {
            return;
        };
        let due = self
            .unknown_spi_handshake
            .get(&peer)
            .is_none_or(|t| now.saturating_duration_since(*t) >= UNKNOWN_SPI_HANDSHAKE_INTERVAL);
        if due {
            self.unknown_spi_handshake.insert(peer, now);
            let established = self
                .endpoint
                .peer_status(peer)
                .is_some_and(|s| s.established);
            if !established {
                debug!(%peer, %src, "data under an unknown SPI from a peer without SA: handshaking");
                self.endpoint.rekey(now, Some(peer));
            }
        }
    }

    /// Moves the plaintext to `HEADROOM` if needed and checks the policy.
    fn admit_received(
        &mut self,
        arena: &mut Arena,
        i: usize,
        peer: PeerId,
        payload: Range<usize>,
    ) -> Option<usize> {
        let plen = payload.len();
        let start = MSG_OFFSET + payload.start;
        if start != Arena::HEADROOM {
            let slot = arena.slot_mut(i);
            if start + plen > slot.len() || Arena::HEADROOM + plen > slot.len() {
                return None;
            }
            slot.copy_within(start..start + plen, Arena::HEADROOM);
        }
        let pkt = arena.slot(i).get(Arena::HEADROOM..Arena::HEADROOM + plen)?;
        let route = self.router.route(peer)?;
        let verdict = if self.enforce_policy {
            self.policy
                .admit_receive(pkt, &route.vnis, route.tunnel_addr)
                .map(|_| ())
        } else {
            Ok(())
        };
        match verdict {
            Ok(()) => Some(plen),
            Err(d) => {
                self.drops.count(d);
                *self.router.policy_drops.entry(peer).or_insert(0) += 1;
                None
            }
        }
    }

    /// Moves the core's pending datagrams (handshakes, cookie replies,
    /// keepalives, queued data) into slots of `arena` for one batched send.
    pub fn drain_transmits(&mut self, now: Instant, arena: &mut Arena, out: &mut Outbound) {
        out.clear();
        for i in 0..arena.slot_count() {
            let Some(buf) = arena.slot_mut(i).get_mut(MSG_OFFSET..) else {
                break;
            };
            let Some(t) = self.endpoint.poll_transmit(now, buf) else {
                break;
            };
            arena.set_len(i, t.len);
            out.send_slots.push(i);
            out.send_dests.push(t.dst);
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
        let mapped = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 3).to_ipv6_mapped(), 51830));
        assert_eq!(r.by_endpoint(mapped), Some(PeerId(3)));
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
        assert_eq!(
            r.by_endpoint(SocketAddr::from(([192, 0, 2, 5], 51830))),
            None
        );
    }
}
