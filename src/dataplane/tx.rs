//! The send direction (wireguard-go's `send.go`): a batch of packets read
//! from TUN → classify → route → police → MTU / ICMP too-big → reserve a
//! counter on each peer's SA (the only step under a lock: the peer's, taken
//! once per run of its packets in the batch) → seal in place with no lock held → a list
//! of datagrams for one batched UDP send, and ICMP replies for TUN.
//!
//! [`TxBatch`] is one worker's state for this direction (job lists, the
//! ICMP scratch buffer), reused across batches so the steady state
//! allocates nothing. It does no I/O: the worker reads TUN and sends UDP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::io::Arena;
use tracing::trace;
use vxsec_crypto::sa::SealCipher;

use crate::dataplane::mtu::icmp_too_big;
use crate::dataplane::node::{DataplaneDrops, Node};
use crate::dataplane::policy::PolicyDrop;
use crate::proto::{PeerId, SealJob, SealOutcome, SealStart};

/// One worker's send-side state; see the module doc.
pub struct TxBatch {
    send_slots: Vec<usize>,
    send_dests: Vec<SocketAddr>,
    to_tun: Vec<usize>,
    /// Routed and policed packets waiting for a counter: slot, peer, length.
    routed: Vec<(usize, PeerId, usize)>,
    /// Reserved seals: slot, job, index into `ciphers`.
    jobs: Vec<(usize, SealJob, usize)>,
    /// The distinct ciphers of this batch's jobs (one `Arc` clone per SA,
    /// not per packet).
    ciphers: Vec<Arc<SealCipher>>,
    drops: DataplaneDrops,
    /// The batch started a handshake or queued packets for one: the
    /// control thread has something to send.
    needs_control: bool,
    icmp_scratch: Box<[u8; 1280]>,
}

impl TxBatch {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            send_slots: Vec::with_capacity(n),
            send_dests: Vec::with_capacity(n),
            to_tun: Vec::with_capacity(n),
            routed: Vec::with_capacity(n),
            jobs: Vec::with_capacity(n),
            ciphers: Vec::with_capacity(n),
            drops: DataplaneDrops::default(),
            needs_control: false,
            icmp_scratch: Box::new([0; 1280]),
        }
    }

    /// Slots sealed by the last [`TxBatch::send`], in order (message at
    /// [`Arena::MESSAGE_OFFSET`], `arena.len(i)` its length).
    pub fn send_slots(&self) -> &[usize] {
        &self.send_slots
    }
    /// Where each of [`TxBatch::send_slots`] goes.
    pub fn send_dests(&self) -> &[SocketAddr] {
        &self.send_dests
    }
    /// Slots holding ICMP too-big replies for TUN (at `HEADROOM`).
    pub fn to_tun(&self) -> &[usize] {
        &self.to_tun
    }
    /// Whether the last batch left the protocol core something to send
    /// (a handshake it started): wake the control thread.
    pub fn needs_control(&self) -> bool {
        self.needs_control
    }

    /// Packets read from TUN in slots `0..n` (each at `HEADROOM`, length
    /// `arena.len(i)`): sealed in place for their peers. Afterwards
    /// [`TxBatch::send_slots`] lists what to send over UDP and
    /// [`TxBatch::to_tun`] the ICMP replies for TUN.
    pub fn send(&mut self, node: &Node, now: Instant, arena: &mut Arena, n: usize) {
        self.plan(node, now, arena, n);
        self.seal(arena);
        node.count_drops(&self.drops);
    }

    /// Everything but the AEAD: route and police under the router's read
    /// lock, then reserve counters in one run (each peer's lock once per
    /// run of its packets).
    fn plan(&mut self, node: &Node, now: Instant, arena: &mut Arena, n: usize) {
        self.send_slots.clear();
        self.send_dests.clear();
        self.to_tun.clear();
        self.routed.clear();
        self.jobs.clear();
        self.ciphers.clear();
        self.drops = DataplaneDrops::default();
        self.needs_control = false;
        self.route(node, now, arena, n);
        if self.routed.is_empty() {
            return;
        }
        let (routed, jobs, ciphers) = (&self.routed, &mut self.jobs, &mut self.ciphers);
        let (drops, needs_control) = (&mut self.drops, &mut self.needs_control);
        let arena = &*arena;
        node.endpoint().send_run(|run| {
            for &(i, peer, len) in routed {
                let Some(buf) = arena.slot(i).get(Arena::MESSAGE_OFFSET..) else {
                    continue;
                };
                match run.reserve_seal(now, peer, buf, len) {
                    Ok(SealStart::Reserved { job, cipher }) => {
                        let k = index_of(ciphers, &cipher);
                        jobs.push((i, job, k));
                    }
                    Ok(SealStart::Queued) => {
                        trace!(%peer, "queued until the handshake completes");
                        *needs_control = true;
                    }
                    Err(e) => {
                        trace!(%peer, "TUN packet dropped: {e}");
                        drops.no_session += 1;
                    }
                }
            }
        });
        // A reservation may start a rekey (a soft limit): its initiation
        // waits in the core for the control thread.
        self.needs_control |= node.has_transmits();
    }

    /// Classify → route → police → MTU for each packet; what may go is
    /// listed in `routed`.
    fn route(&mut self, node: &Node, now: Instant, arena: &mut Arena, n: usize) {
        let router = node.router();
        let policy = node.policy();
        for i in 0..n {
            let len = arena.len(i);
            let Some(pkt) = arena.slot(i).get(Arena::HEADROOM..Arena::HEADROOM + len) else {
                self.drops.malformed_inner += 1;
                continue;
            };
            let c = match policy.classify(pkt) {
                Ok(c) => c,
                Err(d) => {
                    trace!("TUN packet dropped: {d}");
                    self.drops.count(d);
                    continue;
                }
            };
            let Some(route) = router.lookup(c.dst) else {
                trace!(dst = %c.dst, "TUN packet dropped: no peer owns the destination");
                self.drops.no_route += 1;
                node.warn_no_route(now, c.src, c.dst, self.drops.no_route);
                continue;
            };
            let peer = route.peer;
            if node.enforce_policy() {
                if let Err(d) = policy.check(&c, &route.vnis) {
                    // Counted globally and for the peer it was meant for.
                    self.drops.count(d);
                    router.count_policy_drop(peer);
                    if d == PolicyDrop::Fragment {
                        node.warn_fragments(now, self.drops.fragment);
                    }
                    continue;
                }
            }
            if len > node.tunnel_mtu() as usize {
                self.drops.too_big += 1;
                if c.dont_frag && self.icmp_reply(node, arena, i) {
                    self.to_tun.push(i);
                }
                continue;
            }
            self.routed.push((i, peer, len));
        }
    }

    /// Seals every slot that got a counter, in place, with no lock held,
    /// and lists it in `send_slots`/`send_dests` (plan order).
    fn seal(&mut self, arena: &mut Arena) {
        for (i, job, k) in self.jobs.drain(..) {
            let (Some(cipher), Some(buf)) = (
                self.ciphers.get(k),
                arena.slot_mut(i).get_mut(Arena::MESSAGE_OFFSET..),
            ) else {
                self.drops.no_session += 1;
                continue;
            };
            match job.seal(cipher, buf) {
                Ok(SealOutcome::Sealed { len, dst, .. }) => {
                    arena.set_len(i, len);
                    self.send_slots.push(i);
                    self.send_dests.push(dst);
                }
                Ok(SealOutcome::Queued) | Err(_) => self.drops.no_session += 1,
            }
        }
        self.ciphers.clear();
    }

    /// Builds an ICMP too-big reply to the packet in slot `i`, in place.
    fn icmp_reply(&mut self, node: &Node, arena: &mut Arena, i: usize) -> bool {
        let len = arena.len(i);
        let Some(pkt) = arena.slot(i).get(Arena::HEADROOM..Arena::HEADROOM + len) else {
            return false;
        };
        let Ok(n) = icmp_too_big(
            pkt,
            node.tunnel_addr(),
            node.tunnel_mtu(),
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
}

/// Index of `a` in `v` (by pointer), appended if absent: a batch keeps one
/// `Arc` clone per SA, not one per packet.
pub(super) fn index_of<T>(v: &mut Vec<Arc<T>>, a: &Arc<T>) -> usize {
    match v.iter().position(|x| Arc::ptr_eq(x, a)) {
        Some(k) => k,
        None => {
            v.push(Arc::clone(a));
            v.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::dataplane::policy::VniSet;
    use crate::dataplane::router::PeerRoute;
    use crate::dataplane::testing::{fill, nodes, send, TB};

    /// The plan reserves counters and seals nothing; the seal step, with
    /// no lock, fills the send list.
    #[test]
    fn nothing_is_sealed_before_the_seal_step() {
        let (a, _b, now) = nodes();
        let mut tx = Arena::new(16, 2048);
        fill(&mut tx, 6);
        let mut out = TxBatch::with_capacity(16);
        out.plan(&a, now, &mut tx, 6);
        assert!(
            out.send_slots().is_empty(),
            "nothing sealed before the seal step"
        );
        assert_eq!(out.jobs.len(), 5);
        out.seal(&mut tx);
        assert_eq!(out.send_slots().len(), 5);
        assert_eq!(out.drops.too_big, 1);
        assert!(
            !out.needs_control(),
            "an established peer needs no handshake"
        );
    }

    /// A packet the sending side refuses by VNI policy counts globally and
    /// for the peer it was meant for; replacing the peer's route (SIGHUP)
    /// keeps that count.
    #[test]
    fn send_side_vni_refusal_counts_for_the_peer() {
        let (a, _b, now) = nodes();
        let peer = a
            .router()
            .lookup(IpAddr::V4(TB))
            .map(|r| r.peer)
            .expect("route");
        let key = a.status(now).peers[0].status.public_key;
        let only_7 = PeerRoute {
            tunnel_addr: IpAddr::V4(TB),
            vnis: VniSet::only([7]).expect("vni"),
            endpoint: a.router().route(peer).and_then(|r| r.endpoint),
        };
        assert_eq!(
            a.update_route(&key, only_7.clone()),
            Some(vec!["allowed_vnis"])
        );
        let (_, out) = send(&a, now, 6);
        assert!(out.send_slots().is_empty() && out.to_tun().is_empty());
        assert_eq!(a.status(now).drops.vni_not_allowed, 6);
        assert_eq!(a.router().policy_drops(peer), 6, "per peer too");
        assert_eq!(a.update_route(&key, only_7), Some(vec![]));
        assert_eq!(
            a.router().policy_drops(peer),
            6,
            "kept across a route update"
        );
        assert!(a.remove_peer(&key));
        assert_eq!(a.router().policy_drops(peer), 0, "gone with the peer");
    }
}
