//! The per-batch data path between TUN, the protocol core and UDP: on the
//! way out, classify → police → route → seal in place; on the way in, open →
//! police → hand to TUN. Pure logic over an [`Arena`]: no sockets, no
//! threads, no clock (the agent's workers do the I/O around it).
//!
//! Each direction comes in steps so that a driver keeping the [`Pipeline`]
//! behind a lock can run the AEAD without it: [`Pipeline::plan_outbound`]
//! (locked) then [`Outbound::seal`] (unlocked); [`Pipeline::prepare_inbound`]
//! (locked), [`Inbound::open`] (unlocked), [`Pipeline::commit_inbound`]
//! (locked). [`Pipeline::outbound`] and [`Pipeline::inbound`] run the steps
//! back to back.

use std::collections::HashMap;
#[cfg(test)]
use std::net::Ipv4Addr;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, trace, warn};
use vxsec_crypto::batch::Arena;
use vxsec_crypto::sa::{OpenCipher, SealCipher, DATA_HEADER_LEN};

use crate::dataplane::mtu::icmp_too_big;
use crate::dataplane::policy::{Policy, PolicyDrop, VniSet};
use crate::proto::{
    DropReason, Endpoint, Incoming, OpenJob, OpenedJob, PeerId, Received, SealJob, SealOutcome,
    SealStart,
};
use crate::wire::outer::{MSG_COOKIE_REPLY, MSG_DATA, MSG_INITIATION};

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

impl Route {
    /// The address this peer's VXLAN packets carry as VTEP under `mode`;
    /// `None` for a transparent-mode peer without an endpoint.
    pub fn inner_addr(&self, mode: InnerAddr) -> Option<IpAddr> {
        match mode {
            InnerAddr::Tunnel => Some(self.tunnel_addr),
            InnerAddr::Underlay => self.endpoint.map(|e| canonical_ip(e.ip())),
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
    by_endpoint: HashMap<SocketAddr, PeerId>,
    /// Policy drops per peer: packets to or from the peer that its policy
    /// refused (a VNI it may not use, not VXLAN, a spoofed inner source).
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
        let drops = self.policy_drops.get(&route.peer).copied();
        self.remove(route.peer);
        if let Some(d) = drops {
            self.policy_drops.insert(route.peer, d);
        }
        if let Some(addr) = route.inner_addr(self.mode) {
            let key = addr_key(addr);
            let at = self.by_addr.partition_point(|(k, _)| *k < key);
            if self.by_addr.get(at).is_some_and(|(k, _)| *k == key) {
                if let Some((_, old)) = self.by_addr.get(at) {
                    let old = old.peer;
                    self.remove(old);
                }
            }
            let at = self.by_addr.partition_point(|(k, _)| *k < key);
            self.by_addr.insert(at, (key, route.clone()));
        }
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

    /// The peer whose VTEP address (tunnel or underlay, by mode) is `dst`.
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
        self.policy_drops.get(&peer).copied().unwrap_or(0)
    }
}

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
    fn count(&mut self, d: PolicyDrop) {
        let c = match d {
            PolicyDrop::Malformed(_) => &mut self.malformed_inner,
            PolicyDrop::NotVxlan | PolicyDrop::IcmpNotAllowed => &mut self.not_vxlan,
            PolicyDrop::Fragment => &mut self.fragment,
            PolicyDrop::VniNotAllowed(_) => &mut self.vni_not_allowed,
            PolicyDrop::SourceMismatch => &mut self.spoofed_source,
        };
        *c += 1;
    }
}

/// Output of [`Pipeline::plan_outbound`] and [`Outbound::seal`]: what to
/// send over UDP and what to write back to TUN (ICMP too-big replies).
/// Reused across batches, so steady state allocates nothing.
#[derive(Debug, Default)]
pub struct Outbound {
    pub send_slots: Vec<usize>,
    pub send_dests: Vec<SocketAddr>,
    pub to_tun: Vec<usize>,
    /// Planned seals: slot, job, index into `ciphers`.
    jobs: Vec<(usize, SealJob, usize)>,
    /// The distinct ciphers of this batch's jobs (one `Arc` clone per SA,
    /// not per packet).
    ciphers: Vec<Arc<SealCipher>>,
    /// Seals that failed since the pipeline last looked (counted as
    /// `no_session` by the next `plan_outbound`).
    seal_failures: u64,
}

impl Outbound {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            send_slots: Vec::with_capacity(n),
            send_dests: Vec::with_capacity(n),
            to_tun: Vec::with_capacity(n),
            jobs: Vec::with_capacity(n),
            ciphers: Vec::with_capacity(n),
            seal_failures: 0,
        }
    }
    fn clear(&mut self) {
        self.send_slots.clear();
        self.send_dests.clear();
        self.to_tun.clear();
        self.jobs.clear();
        self.ciphers.clear();
    }

    /// Seals every slot [`Pipeline::plan_outbound`] reserved a counter for,
    /// in place, and lists it in `send_slots`/`send_dests` (message at
    /// [`MSG_OFFSET`], `arena.len(i)` its length). Needs no pipeline: call
    /// it without the lock. Slots keep the plan's order.
    pub fn seal(&mut self, arena: &mut Arena) {
        for (i, job, k) in self.jobs.drain(..) {
            let (Some(cipher), Some(buf)) =
                (self.ciphers.get(k), arena.slot_mut(i).get_mut(MSG_OFFSET..))
            else {
                self.seal_failures += 1;
                continue;
            };
            match job.seal(cipher, buf) {
                Ok(SealOutcome::Sealed { len, dst, .. }) => {
                    arena.set_len(i, len);
                    self.send_slots.push(i);
                    self.send_dests.push(dst);
                }
                Ok(SealOutcome::Queued) | Err(_) => self.seal_failures += 1,
            }
        }
        self.ciphers.clear();
    }
}

/// The receive side's per-batch state across [`Pipeline::prepare_inbound`],
/// [`Inbound::open`] and [`Pipeline::commit_inbound`]; `to_tun` lists the
/// slots whose plaintext passed the policy (at `HEADROOM`). Reused across
/// batches, so steady state allocates nothing.
#[derive(Debug, Default)]
pub struct Inbound {
    pub to_tun: Vec<usize>,
    /// Prechecked data messages: slot, job, index into `openers`.
    jobs: Vec<(usize, OpenJob, usize)>,
    /// Opened, waiting for their commit.
    opened: Vec<(usize, OpenedJob, usize)>,
    /// The distinct SA ciphers of this run (one `Arc` clone per SA).
    openers: Vec<Arc<OpenCipher>>,
    /// Next slot to prepare, and the batch size.
    next: usize,
    n: usize,
    /// Leave handshake messages (types 1–3, at most
    /// [`MAX_DIVERTED_LEN`] bytes) to the driver instead of handing them
    /// to the protocol core: they are listed in `handshakes`, and the
    /// driver queues them for a handshake thread (so no data-plane worker
    /// ever waits on handshake work).
    pub divert_handshakes: bool,
    /// Slots of the batch holding diverted handshake messages, each with
    /// whether it came from a configured peer's endpoint (the driver may
    /// give those priority when its queue is full).
    pub handshakes: Vec<(usize, bool)>,
}

/// Longest handshake message diverted; a longer one is malformed and is
/// refused (and counted) by the core inline.
pub const MAX_DIVERTED_LEN: usize = 320;

impl Inbound {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            to_tun: Vec::with_capacity(n),
            jobs: Vec::with_capacity(n),
            opened: Vec::with_capacity(n),
            openers: Vec::with_capacity(n),
            next: 0,
            n: 0,
            divert_handshakes: false,
            handshakes: Vec::with_capacity(n),
        }
    }

    /// Starts a batch of `n` received datagrams.
    pub fn start(&mut self, n: usize) {
        self.to_tun.clear();
        self.handshakes.clear();
        self.jobs.clear();
        self.opened.clear();
        self.openers.clear();
        self.next = 0;
        self.n = n;
    }

    /// Whether every datagram of the batch went through
    /// [`Pipeline::prepare_inbound`] (call prepare → open → commit until it
    /// is; a handshake message between data messages ends a run, so the
    /// protocol sees the batch in order).
    pub fn done(&self) -> bool {
        self.next >= self.n
    }

    /// Opens the run's prechecked data messages in place. Needs no
    /// pipeline: call it without the lock.
    pub fn open(&mut self, arena: &mut Arena) {
        for (i, job, k) in self.jobs.drain(..) {
            let Some(opener) = self.openers.get(k) else {
                continue;
            };
            let len = arena.len(i);
            // prepare_inbound checked the range; an empty message would
            // fail as truncated and be counted at commit.
            let buf = arena
                .slot_mut(i)
                .get_mut(MSG_OFFSET..MSG_OFFSET + len)
                .unwrap_or_default();
            self.opened.push((i, job.open(opener, buf), k));
        }
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
    /// When the VXLAN MTU warning was last logged.
    fragment_warned: Option<Instant>,
    /// When the warning about a tunnel address no peer has was last logged.
    no_route_warned: Option<Instant>,
}

/// The warning about fragmented VXLAN from TUN repeats at most this often.
const FRAGMENT_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// The warning about packets for a tunnel address no peer has repeats at
/// most this often.
pub const NO_ROUTE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Whether a rate-limited warning last given at `*last` is due at `now`
/// (and if so, records `now`).
fn due(last: &mut Option<Instant>, now: Instant, interval: Duration) -> bool {
    let due = last.is_none_or(|t| now.saturating_duration_since(t) >= interval);
    if due {
        *last = Some(now);
    }
    due
}

/// Index of `a` in `v` (by pointer), appended if absent: a batch keeps one
/// `Arc` clone per SA, not one per packet.
fn index_of<T>(v: &mut Vec<Arc<T>>, a: &Arc<T>) -> usize {
    match v.iter().position(|x| Arc::ptr_eq(x, a)) {
        Some(k) => k,
        None => {
            v.push(Arc::clone(a));
            v.len() - 1
        }
    }
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
            fragment_warned: None,
            no_route_warned: None,
        }
    }

    /// Packets read from TUN in slots `0..n` (each at `HEADROOM`, length
    /// `arena.len(i)`): sealed in place for their peers. Fills `out` with
    /// the slots to send (message at [`MSG_OFFSET`], `arena.len(i)` set to
    /// its length) and the slots holding ICMP replies for TUN.
    /// [`Pipeline::plan_outbound`] then [`Outbound::seal`], all under the
    /// caller's `&mut`.
    pub fn outbound(&mut self, now: Instant, arena: &mut Arena, n: usize, out: &mut Outbound) {
        self.plan_outbound(now, arena, n, out);
        out.seal(arena);
        self.drops.no_session += std::mem::take(&mut out.seal_failures);
    }

    /// Everything of [`Pipeline::outbound`] but the AEAD: classify, route,
    /// police, MTU / ICMP too-big, and a counter reserved on the peer's SA
    /// for each packet to send (or queued until a handshake completes).
    /// `out.to_tun` is final; [`Outbound::seal`] fills `send_slots`.
    pub fn plan_outbound(&mut self, now: Instant, arena: &mut Arena, n: usize, out: &mut Outbound) {
        out.clear();
        self.drops.no_session += std::mem::take(&mut out.seal_failures);
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
                self.warn_no_route(now, c.src, c.dst);
                continue;
            };
            let peer = route.peer;
            if self.enforce_policy {
                if let Err(d) = self.policy.check(&c, &route.vnis) {
                    // Counted globally and for the peer it was meant for.
                    self.drops.count(d);
                    *self.router.policy_drops.entry(peer).or_insert(0) += 1;
                    if d == PolicyDrop::Fragment {
                        self.warn_fragments(now);
                    }
                    continue;
                }
            }
            if len > self.tunnel_mtu as usize {
                self.drops.too_big += 1;
                if c.dont_frag && self.icmp_reply(arena, i) {
                    out.to_tun.push(i);
                }
                continue;
            }
            let Some(buf) = arena.slot(i).get(MSG_OFFSET..) else {
                continue;
            };
            match self.endpoint.reserve_seal(now, peer, buf, len) {
                Ok(SealStart::Reserved { job, cipher }) => {
                    let k = index_of(&mut out.ciphers, &cipher);
                    out.jobs.push((i, job, k));
                }
                Ok(SealStart::Queued) => trace!(%peer, "queued until the handshake completes"),
                Err(e) => {
                    trace!(%peer, "TUN packet dropped: {e}");
                    self.drops.no_session += 1;
                }
            }
        }
    }

    /// The local kernel fragmented VXLAN on its way into the TUN: its VXLAN
    /// device's MTU is above what the tunnel carries, the classic overlay
    /// MTU pitfall. Every large packet is then lost, so say how to fix it
    /// (at most once per [`FRAGMENT_WARNING_INTERVAL`]).
    fn warn_fragments(&mut self, now: Instant) {
        if due(&mut self.fragment_warned, now, FRAGMENT_WARNING_INTERVAL) {
            warn!(
                fragments = self.drops.fragment,
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
    fn warn_no_route(&mut self, now: Instant, src: IpAddr, dst: IpAddr) {
        // A VTEP is a unicast address: multicast and link-local
        // destinations (the host's own IPv6 chatter) are counted only.
        let vtep_like = match dst {
            IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast() && !a.is_link_local(),
            IpAddr::V6(a) => !a.is_multicast() && !a.is_unicast_link_local(),
        };
        if vtep_like && due(&mut self.no_route_warned, now, NO_ROUTE_WARNING_INTERVAL) {
            warn!(
                %dst,
                %src,
                no_route = self.drops.no_route,
                "dropping packets to {dst}: no peer has this tunnel address (is a VTEP \
                 address, e.g. a Swarm --data-path-addr or a VXLAN remote, mistyped, or \
                 the peer not configured?)"
            );
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
    /// plaintext passed the policy go to `inb.to_tun` (at `HEADROOM`).
    /// [`Pipeline::prepare_inbound`], [`Inbound::open`] and
    /// [`Pipeline::commit_inbound`] until the batch is done, all under the
    /// caller's `&mut`.
    pub fn inbound(
        &mut self,
        now: Instant,
        arena: &mut Arena,
        n: usize,
        from: &[SocketAddr],
        inb: &mut Inbound,
    ) {
        inb.start(n);
        while !inb.done() {
            self.prepare_inbound(now, arena, from, inb);
            inb.open(arena);
            self.commit_inbound(now, arena, inb);
        }
    }

    /// The first receive step for the batch `inb` was started with: hands
    /// handshake and cookie messages to the protocol core, drops what fails
    /// the checks made before decryption (counted there), and lists the
    /// data messages to open. Stops before a non-data message that follows
    /// data messages, so the core sees the batch in order; call again after
    /// the commit until [`Inbound::done`].
    pub fn prepare_inbound(
        &mut self,
        now: Instant,
        arena: &mut Arena,
        from: &[SocketAddr],
        inb: &mut Inbound,
    ) {
        let end = inb.n.min(from.len());
        if inb.n > end {
            // A batch with fewer sources than datagrams: the rest is ignored.
            inb.n = end;
        }
        while inb.next < end {
            let i = inb.next;
            let len = arena.len(i);
            let ty = arena.slot(i).get(MSG_OFFSET).copied();
            let is_data = ty == Some(MSG_DATA);
            if inb.divert_handshakes
                && matches!(ty, Some(MSG_INITIATION..=MSG_COOKIE_REPLY))
                && len <= MAX_DIVERTED_LEN
            {
                let from_peer = from
                    .get(i)
                    .is_some_and(|&f| self.router.by_endpoint(f).is_some());
                inb.handshakes.push((i, from_peer));
                inb.next += 1;
                continue;
            }
            if !is_data && !inb.jobs.is_empty() {
                return;
            }
            inb.next += 1;
            let (Some(&src), Some(buf)) = (
                from.get(i),
                arena.slot_mut(i).get_mut(MSG_OFFSET..MSG_OFFSET + len),
            ) else {
                continue;
            };
            match self.endpoint.precheck_datagram(now, src, buf) {
                Ok(Received::Data { job, opener }) => {
                    let k = index_of(&mut inb.openers, &opener);
                    inb.jobs.push((i, job, k));
                }
                Err(DropReason::UnknownSpi) => self.unknown_spi_from(now, src),
                // Handshakes, cookies (done) and other drops (counted by the core).
                Ok(Received::Done(_)) | Err(_) => {}
            }
        }
    }

    /// The last receive step of a run: commits every opened data message
    /// on its SA (replays and SAs retired meanwhile are dropped and counted
    /// by the core), then applies the receive policy; what passes goes to
    /// `inb.to_tun`.
    pub fn commit_inbound(&mut self, now: Instant, arena: &mut Arena, inb: &mut Inbound) {
        for (i, job, k) in inb.opened.drain(..) {
            let Some(opener) = inb.openers.get(k) else {
                continue;
            };
            let (peer, payload) = match self.endpoint.commit_datagram(now, job, opener) {
                Ok(Incoming::Data { peer, payload }) => (peer, payload),
                // Keepalives and drops (counted by the core).
                Ok(_) | Err(_) => continue,
            };
            if let Some(plen) = self.admit_received(arena, i, peer, payload) {
                arena.set_len(i, plen);
                inb.to_tun.push(i);
            }
        }
        inb.openers.clear();
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
            // Anti-spoofing: the inner source must be the peer's own VTEP
            // (its tunnel address, or in transparent mode its underlay one).
            match route.inner_addr(self.router.mode()) {
                Some(vtep) => self
                    .policy
                    .admit_receive(pkt, &route.vnis, vtep)
                    .map(|_| ()),
                None => Err(PolicyDrop::SourceMismatch),
            }
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
    use crate::proto::testing::{pair, pass, A, B};
    use crate::wire::{emit_vxlan_in_ipv4, VxlanFlow};

    const TA: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    const TB: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

    /// Two pipelines whose endpoints completed a handshake.
    fn pipelines() -> (Pipeline, Pipeline, Instant) {
        let (a, b, ab, ba, now) = pair();
        a.rekey(now, Some(ab));
        for _ in 0..3 {
            pass(&a, A, &b, now);
            pass(&b, B, &a, now);
        }
        let mk = |ep, own: Ipv4Addr, peer, addr: Ipv4Addr, at: &str| {
            let mut p = Pipeline::new(ep, Policy::default(), IpAddr::V4(own), 1400);
            p.router.insert(Route {
                peer,
                tunnel_addr: IpAddr::V4(addr),
                vnis: VniSet::any(),
                endpoint: Some(at.parse().expect("addr")),
            });
            p
        };
        (mk(a, TA, ab, TB, B), mk(b, TB, ba, TA, A), now)
    }

    /// `n` VXLAN packets from a to b (one of them too big, with DF).
    fn fill(arena: &mut Arena, n: usize) {
        let flow = VxlanFlow {
            src_port: 49_152,
            dst_port: 4789,
            vni: 42,
        };
        for i in 0..n {
            let size = if i == 3 { 1450 } else { 60 + i };
            let frame = vec![i as u8; size];
            let slot = arena.slot_mut(i);
            let len = emit_vxlan_in_ipv4(&mut slot[Arena::HEADROOM..], TA, TB, flow, &frame)
                .expect("fits");
            arena.set_len(i, len);
        }
    }

    /// Sends a batch from `a` and delivers it to `b` with every datagram
    /// twice (original then duplicate, in one batch); returns what reached
    /// b's TUN and the plaintexts.
    fn round(a: &mut Pipeline, b: &mut Pipeline, now: Instant, split: bool) -> Vec<Vec<u8>> {
        let mut tx = Arena::new(16, 2048);
        fill(&mut tx, 6);
        let mut out = Outbound::with_capacity(16);
        if split {
            a.plan_outbound(now, &mut tx, 6, &mut out);
            assert!(
                out.send_slots.is_empty(),
                "nothing sealed before the seal step"
            );
            out.seal(&mut tx);
        } else {
            a.outbound(now, &mut tx, 6, &mut out);
        }
        assert_eq!(out.send_slots.len(), 5);
        let mut rx = Arena::new(16, 2048);
        let mut from = Vec::new();
        for (k, &i) in out.send_slots.iter().enumerate() {
            for d in 0..2 {
                let msg = tx.message(i).expect("sealed").to_vec();
                let j = 2 * k + d;
                rx.slot_mut(j)[MSG_OFFSET..MSG_OFFSET + msg.len()].copy_from_slice(&msg);
                rx.set_len(j, msg.len());
                from.push(A.parse().expect("addr"));
            }
        }
        let mut inb = Inbound::with_capacity(16);
        let n = from.len();
        if split {
            inb.start(n);
            while !inb.done() {
                b.prepare_inbound(now, &mut rx, &from, &mut inb);
                inb.open(&mut rx);
                b.commit_inbound(now, &mut rx, &mut inb);
            }
        } else {
            b.inbound(now, &mut rx, n, &from, &mut inb);
        }
        inb.to_tun
            .iter()
            .map(|&i| rx.slot(i)[Arena::HEADROOM..Arena::HEADROOM + rx.len(i)].to_vec())
            .collect()
    }

    #[test]
    fn split_batches_match_the_one_shot_batches() {
        let mut got = Vec::new();
        for split in [false, true] {
            let (mut a, mut b, now) = pipelines();
            let delivered = round(&mut a, &mut b, now, split);
            assert_eq!(delivered.len(), 5, "each packet once, duplicates dropped");
            assert_eq!(a.drops.too_big, 1);
            let st = b.endpoint.stats().drops;
            got.push((delivered, st.replay, st.auth, a.drops, b.drops));
        }
        assert_eq!(got[0], got[1]);
        assert_eq!(got[1].1, 5, "five duplicates counted as replays");
    }

    /// Transparent mode: the same data path keyed by underlay addresses.
    /// A VXLAN packet between the two nodes' underlay addresses (what a
    /// kernel VXLAN device with `local`/`remote` on the underlay sends) is
    /// routed to the peer and delivered; one whose inner source is not the
    /// sending peer's underlay address (here: its tunnel address) is
    /// dropped as spoofed, and a VTEP no peer owns is not sent at all.
    #[test]
    fn transparent_mode_routes_and_polices_by_underlay_address() {
        let (mut a, mut b, now) = pipelines();
        for p in [&mut a, &mut b] {
            let routes: Vec<Route> = p.router.by_peer.values().cloned().collect();
            p.router = Router::new(InnerAddr::Underlay);
            for r in routes {
                p.router.insert(r);
            }
        }
        let ua: Ipv4Addr = "192.0.2.1".parse().expect("ip");
        let ub: Ipv4Addr = "192.0.2.2".parse().expect("ip");
        assert!(
            a.router.lookup(IpAddr::V4(TB)).is_none(),
            "tunnel address is no key"
        );
        let flow = VxlanFlow {
            src_port: 49_152,
            dst_port: 4789,
            vni: 4097,
        };
        let mut tx = Arena::new(8, 2048);
        for (i, (src, dst)) in [(ua, ub), (TA, ub), (ua, TB)].into_iter().enumerate() {
            let slot = tx.slot_mut(i);
            let len = emit_vxlan_in_ipv4(&mut slot[Arena::HEADROOM..], src, dst, flow, &[7; 80])
                .expect("fits");
            tx.set_len(i, len);
        }
        let mut out = Outbound::with_capacity(8);
        a.outbound(now, &mut tx, 3, &mut out);
        assert_eq!(
            out.send_slots,
            vec![0, 1],
            "the packet to a tunnel address has no peer"
        );
        assert_eq!(a.drops.no_route, 1);
        let mut rx = Arena::new(8, 2048);
        let mut from = Vec::new();
        for (j, &i) in out.send_slots.iter().enumerate() {
            let msg = tx.message(i).expect("sealed").to_vec();
            rx.slot_mut(j)[MSG_OFFSET..MSG_OFFSET + msg.len()].copy_from_slice(&msg);
            rx.set_len(j, msg.len());
            from.push(A.parse().expect("addr"));
        }
        let mut inb = Inbound::with_capacity(8);
        b.inbound(now, &mut rx, from.len(), &from, &mut inb);
        assert_eq!(
            inb.to_tun,
            vec![0],
            "only the packet from a's underlay address"
        );
        let pkt = &rx.slot(0)[Arena::HEADROOM..Arena::HEADROOM + rx.len(0)];
        let c = b.policy.classify(pkt).expect("vxlan");
        assert_eq!(
            (c.src, c.dst, c.vni),
            (IpAddr::V4(ua), IpAddr::V4(ub), Some(4097))
        );
        assert_eq!(b.drops.spoofed_source, 1);
        assert_eq!(
            b.router
                .policy_drops(b.router.lookup(IpAddr::V4(ua)).expect("a").peer),
            1
        );
    }

    /// A packet the sending side refuses by VNI policy counts globally and
    /// for the peer it was meant for; replacing the peer's route (SIGHUP)
    /// keeps that count.
    #[test]
    fn send_side_vni_refusal_counts_for_the_peer() {
        let (mut a, _b, now) = pipelines();
        let peer = a
            .router
            .lookup(IpAddr::V4(TB))
            .map(|r| r.peer)
            .expect("route");
        let mut only_7 = a.router.route(peer).cloned().expect("route");
        only_7.vnis = VniSet::only([7]).expect("vni");
        a.router.insert(only_7.clone());
        let mut tx = Arena::new(16, 2048);
        fill(&mut tx, 6);
        let mut out = Outbound::with_capacity(16);
        a.outbound(now, &mut tx, 6, &mut out);
        assert!(out.send_slots.is_empty() && out.to_tun.is_empty());
        assert_eq!(a.drops.vni_not_allowed, 6);
        assert_eq!(a.router.policy_drops(peer), 6, "per peer too");
        a.router.insert(only_7);
        assert_eq!(a.router.policy_drops(peer), 6, "kept across a route update");
        a.router.remove(peer);
        assert_eq!(a.router.policy_drops(peer), 0, "gone with the peer");
    }

    /// Packets for a tunnel address no peer has are counted, and the
    /// warning naming it is due at most once a minute (virtual time).
    #[test]
    fn no_route_is_counted_and_warned_once_a_minute() {
        let (mut a, _b, now) = pipelines();
        a.router.remove(
            a.router
                .lookup(IpAddr::V4(TB))
                .map(|r| r.peer)
                .expect("route"),
        );
        let send = |a: &mut Pipeline, at: Instant| {
            let mut tx = Arena::new(16, 2048);
            fill(&mut tx, 6);
            a.outbound(at, &mut tx, 6, &mut Outbound::with_capacity(16));
        };
        send(&mut a, now);
        assert_eq!(a.drops.no_route, 6);
        assert_eq!(a.no_route_warned, Some(now));
        send(&mut a, now + Duration::from_secs(59));
        assert_eq!(a.drops.no_route, 12);
        assert_eq!(a.no_route_warned, Some(now), "not again within a minute");
        let later = now + NO_ROUTE_WARNING_INTERVAL;
        send(&mut a, later);
        assert_eq!(a.no_route_warned, Some(later));
    }

    #[test]
    fn diverted_handshakes_are_listed_not_handled_and_data_still_flows() {
        let (mut a, mut b, now) = pipelines();
        let before = b.endpoint.stats();
        // a's next initiation, as it would arrive at b twice: from a's
        // configured endpoint and from a stranger; then a data message.
        a.endpoint.rekey(now, None);
        let mut buf = [0u8; 2048];
        let t = a.endpoint.poll_transmit(now, &mut buf).expect("initiation");
        let init = buf[..t.len].to_vec();
        let mut tx = Arena::new(16, 2048);
        fill(&mut tx, 1);
        let mut out = Outbound::with_capacity(16);
        a.outbound(now, &mut tx, 1, &mut out);
        let data = tx.message(out.send_slots[0]).expect("sealed").to_vec();
        let mut rx = Arena::new(16, 2048);
        for (j, m) in [&init, &init, &data].into_iter().enumerate() {
            rx.slot_mut(j)[MSG_OFFSET..MSG_OFFSET + m.len()].copy_from_slice(m);
            rx.set_len(j, m.len());
        }
        let from: Vec<SocketAddr> = [A, "198.51.100.7:9", A]
            .iter()
            .map(|s| s.parse().expect("addr"))
            .collect();
        let mut inb = Inbound::with_capacity(16);
        inb.divert_handshakes = true;
        b.inbound(now, &mut rx, 3, &from, &mut inb);
        assert_eq!(inb.handshakes, vec![(0, true), (1, false)]);
        assert_eq!(inb.to_tun.len(), 1, "the data message still went through");
        let st = b.endpoint.stats();
        assert_eq!(
            st.initiations_processed, before.initiations_processed,
            "the core never saw them"
        );
        assert_eq!(st.drops.total(), before.drops.total());
    }

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
