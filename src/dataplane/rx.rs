//! The receive direction (wireguard-go's `receive.go`): a batch of UDP
//! datagrams → precheck (in one run: each peer's lock once per run of its
//! datagrams; SPI, reject time, replay window) → open in place with no lock
//! held → commit (in one run: the window again, peer bookkeeping) →
//! receive policy (no endpoint lock: VNI, VXLAN only, inner source) →
//! slots for TUN.
//! Handshake messages are diverted to the caller (the agent queues them
//! for its control thread) so no worker waits on a Diffie-Hellman.
//!
//! [`RxBatch`] is one socket's state for this direction, reused across
//! batches so the steady state allocates nothing. It does no I/O.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use crate::io::Arena;
use vxsec_crypto::sa::OpenCipher;

use crate::dataplane::node::{DataplaneDrops, Node};
use crate::dataplane::policy::PolicyDrop;
use crate::dataplane::tx::index_of;
use crate::proto::{DropReason, Incoming, OpenJob, OpenedJob, PeerId, Prechecked};
use crate::wire::outer::{MSG_COOKIE_REPLY, MSG_DATA, MSG_INITIATION};

/// Longest handshake message diverted; a longer one is malformed and is
/// refused (and counted) by the core inline.
pub const MAX_DIVERTED_LEN: usize = 320;

/// One socket's receive-side state; see the module doc.
#[derive(Debug, Default)]
pub struct RxBatch {
    to_tun: Vec<usize>,
    /// Prechecked data messages: slot, job, index into `openers`.
    jobs: Vec<(usize, OpenJob, usize)>,
    /// Opened, waiting for their commit.
    opened: Vec<(usize, OpenedJob, usize)>,
    /// Committed data: slot, peer, plaintext range, waiting for the policy.
    committed: Vec<(usize, PeerId, Range<usize>)>,
    /// The distinct SA ciphers of this run (one `Arc` clone per SA).
    openers: Vec<Arc<OpenCipher>>,
    /// Next slot to precheck, and the batch size.
    next: usize,
    n: usize,
    divert_handshakes: bool,
    handshakes: Vec<(usize, bool)>,
    /// Sources of data under SPIs we do not know, for the core to judge
    /// after the run (it may start a handshake).
    unknown_spi: Vec<SocketAddr>,
    drops: DataplaneDrops,
    needs_control: bool,
}

impl RxBatch {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            to_tun: Vec::with_capacity(n),
            jobs: Vec::with_capacity(n),
            opened: Vec::with_capacity(n),
            committed: Vec::with_capacity(n),
            openers: Vec::with_capacity(n),
            handshakes: Vec::with_capacity(n),
            unknown_spi: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    /// Leave handshake messages (types 1–3, at most [`MAX_DIVERTED_LEN`]
    /// bytes) to the caller instead of handing them to the protocol core:
    /// they are listed in [`RxBatch::handshakes`].
    pub fn divert_handshakes(mut self) -> Self {
        self.divert_handshakes = true;
        self
    }

    /// Slots whose plaintext passed the policy (at `HEADROOM`, length
    /// `arena.len(i)`), in arrival order.
    pub fn to_tun(&self) -> &[usize] {
        &self.to_tun
    }
    /// Slots holding diverted handshake messages, each with whether it
    /// came from a configured peer's endpoint (the caller may give those
    /// priority when its queue is full).
    pub fn handshakes(&self) -> &[(usize, bool)] {
        &self.handshakes
    }
    /// Whether the batch left the protocol core something to send or
    /// decide (a handshake handled inline or started): wake the control
    /// thread.
    pub fn needs_control(&self) -> bool {
        self.needs_control
    }

    /// Datagrams received in slots `0..n` (each at [`Arena::MESSAGE_OFFSET`], length
    /// `arena.len(i)`, from `from[i]`): opened in place; afterwards
    /// [`RxBatch::to_tun`] lists the slots for TUN. The protocol core sees
    /// the batch in order: a non-data message after data messages ends a
    /// run (precheck → open → commit → policy), and the next run follows.
    pub fn receive(
        &mut self,
        node: &Node,
        now: Instant,
        arena: &mut Arena,
        n: usize,
        from: &[SocketAddr],
    ) {
        self.start(n.min(from.len()));
        while self.next < self.n {
            self.precheck(node, now, arena, from);
            self.open(arena);
            self.commit(node, now);
            self.admit(node, arena);
        }
        node.count_drops(&self.drops);
    }

    fn start(&mut self, n: usize) {
        self.to_tun.clear();
        self.handshakes.clear();
        self.jobs.clear();
        self.opened.clear();
        self.committed.clear();
        self.openers.clear();
        self.next = 0;
        self.n = n;
        self.drops = DataplaneDrops::default();
        self.needs_control = false;
    }

    /// Prechecks data messages in one run until the batch ends or a
    /// non-data message follows data messages (so the core sees the batch
    /// in order); diverts handshake messages, or hands them to the core
    /// between runs; drops what fails the checks made before decryption
    /// (counted by the core); lists the data messages to open.
    fn precheck(&mut self, node: &Node, now: Instant, arena: &mut Arena, from: &[SocketAddr]) {
        let ep = node.endpoint();
        loop {
            // A non-data message the core must handle (outside the run).
            let mut inline: Option<(usize, SocketAddr)> = None;
            let (jobs, openers) = (&mut self.jobs, &mut self.openers);
            let (handshakes, unknown_spi) = (&mut self.handshakes, &mut self.unknown_spi);
            let (next, n, divert) = (&mut self.next, self.n, self.divert_handshakes);
            let arena_ro = &*arena;
            ep.receive_run(|run| {
                while *next < n {
                    let i = *next;
                    let len = arena_ro.len(i);
                    let ty = arena_ro.slot(i).get(Arena::MESSAGE_OFFSET).copied();
                    if divert
                        && matches!(ty, Some(MSG_INITIATION..=MSG_COOKIE_REPLY))
                        && len <= MAX_DIVERTED_LEN
                    {
                        let from_peer = from.get(i).is_some_and(|f| ep.is_peer_endpoint(f.ip()));
                        handshakes.push((i, from_peer));
                        *next += 1;
                        continue;
                    }
                    if ty != Some(MSG_DATA) && !jobs.is_empty() {
                        return;
                    }
                    *next += 1;
                    let (Some(&src), Some(buf)) = (
                        from.get(i),
                        arena_ro
                            .slot(i)
                            .get(Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + len),
                    ) else {
                        continue;
                    };
                    match run.precheck(now, src, buf) {
                        Ok(Prechecked::Data { job, opener }) => {
                            let k = index_of(openers, &opener);
                            jobs.push((i, job, k));
                        }
                        Ok(Prechecked::NotData) => {
                            inline = Some((i, src));
                            return;
                        }
                        Err(DropReason::UnknownSpi) => unknown_spi.push(src),
                        // Other drops (counted by the core).
                        Err(_) => {}
                    }
                }
            });
            for src in self.unknown_spi.drain(..) {
                // Rate-limited per peer by the core; follows roaming.
                self.needs_control |= ep.handle_unknown_spi(now, src);
            }
            let Some((i, src)) = inline else {
                return;
            };
            let len = arena.len(i);
            if let Some(buf) = arena
                .slot_mut(i)
                .get_mut(Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + len)
            {
                // A handshake or cookie handled inline (refusals are
                // counted by the core): its answer waits.
                let _ = ep.handle_handshake(now, src, buf);
                self.needs_control = true;
            }
        }
    }

    /// Opens the run's prechecked data messages in place, with no lock.
    fn open(&mut self, arena: &mut Arena) {
        for (i, job, k) in self.jobs.drain(..) {
            let Some(opener) = self.openers.get(k) else {
                continue;
            };
            let len = arena.len(i);
            // precheck checked the range; an empty message would fail as
            // truncated and be counted at commit.
            let buf = arena
                .slot_mut(i)
                .get_mut(Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + len)
                .unwrap_or_default();
            self.opened.push((i, job.open(opener, buf), k));
        }
    }

    /// In one run: commits every opened data message on its SA (replays
    /// and SAs retired meanwhile are dropped and counted by the core).
    fn commit(&mut self, node: &Node, now: Instant) {
        if self.opened.is_empty() {
            return;
        }
        let (opened, openers, committed) = (&mut self.opened, &self.openers, &mut self.committed);
        node.endpoint().receive_run(|run| {
            for (i, job, k) in opened.drain(..) {
                let Some(opener) = openers.get(k) else {
                    continue;
                };
                // Keepalives and drops (counted by the core) go no further.
                if let Ok(Incoming::Data { peer, payload }) = run.commit(now, job, opener) {
                    committed.push((i, peer, payload));
                }
            }
        });
        // A commit may start a rekey: its initiation waits in the core.
        self.needs_control |= node.has_transmits();
        self.openers.clear();
    }

    /// Without the endpoint lock: moves each committed plaintext to
    /// `HEADROOM` and applies the receive policy; what passes goes to
    /// `to_tun`.
    fn admit(&mut self, node: &Node, arena: &mut Arena) {
        if self.committed.is_empty() {
            return;
        }
        let router = node.router();
        for (i, peer, payload) in self.committed.drain(..) {
            let plen = payload.len();
            let start = Arena::MESSAGE_OFFSET + payload.start;
            if start != Arena::HEADROOM {
                let slot = arena.slot_mut(i);
                if start + plen > slot.len() || Arena::HEADROOM + plen > slot.len() {
                    continue;
                }
                slot.copy_within(start..start + plen, Arena::HEADROOM);
            }
            let Some(pkt) = arena.slot(i).get(Arena::HEADROOM..Arena::HEADROOM + plen) else {
                continue;
            };
            let Some(route) = router.route(peer) else {
                continue;
            };
            let verdict = if node.enforce_policy() {
                // Anti-spoofing: the inner source must be the peer's own
                // VTEP (its tunnel address, or in transparent mode its
                // underlay one).
                match route.inner_addr(router.mode()) {
                    Some(vtep) => node
                        .policy()
                        .admit_receive(pkt, &route.vnis, vtep)
                        .map(|_| ()),
                    None => Err(PolicyDrop::SourceMismatch),
                }
            } else {
                Ok(())
            };
            match verdict {
                Ok(()) => {
                    arena.set_len(i, plen);
                    self.to_tun.push(i);
                }
                Err(d) => {
                    self.drops.count(d);
                    router.count_policy_drop(peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use crate::io::Arena;

    use super::*;
    use crate::dataplane::node::Transmits;
    use crate::dataplane::policy::Policy;
    use crate::dataplane::router::InnerAddr;
    use crate::dataplane::testing::{deliver, fill, nodes, nodes_in, plaintexts, TA, TB};
    use crate::dataplane::TxBatch;
    use crate::proto::testing::A;
    use crate::wire::{emit_vxlan_in_ipv4, VxlanFlow};

    /// A batch from a to b with every datagram twice (original then
    /// duplicate, in one batch): each packet reaches b's TUN once, the
    /// duplicates are counted as replays, the too-big one never left a.
    #[test]
    fn a_batch_arrives_once_and_its_duplicates_are_replays() {
        let (a, b, now) = nodes();
        let mut tx = Arena::new(16, 2048);
        fill(&mut tx, 6);
        let mut out = TxBatch::with_capacity(16);
        out.send(&a, now, &mut tx, 6);
        assert_eq!(out.send_slots().len(), 5);
        let twice: Vec<usize> = out.send_slots().iter().flat_map(|&i| [i, i]).collect();
        let (mut rx, from) = deliver(&tx, &twice, A);
        let mut inb = RxBatch::with_capacity(16);
        inb.receive(&b, now, &mut rx, from.len(), &from);
        let delivered = plaintexts(&rx, &inb);
        assert_eq!(delivered.len(), 5, "each packet once, duplicates dropped");
        assert_eq!(a.status(now).drops.too_big, 1);
        let st = b.status(now);
        assert_eq!(
            st.endpoint.drops.replay, 5,
            "five duplicates counted as replays"
        );
        assert_eq!(st.endpoint.drops.auth, 0);
        assert_eq!(st.drops, Default::default());
        // The plaintexts are what a sent, in order.
        let mut sent = Arena::new(16, 2048);
        fill(&mut sent, 6);
        let want: Vec<Vec<u8>> = [0, 1, 2, 4, 5]
            .iter()
            .map(|&i| sent.slot(i)[Arena::HEADROOM..Arena::HEADROOM + sent.len(i)].to_vec())
            .collect();
        assert_eq!(delivered, want);
    }

    /// Transparent mode: the same data path keyed by underlay addresses.
    /// A VXLAN packet between the two nodes' underlay addresses (what a
    /// kernel VXLAN device with `local`/`remote` on the underlay sends) is
    /// routed to the peer and delivered; one whose inner source is not the
    /// sending peer's underlay address (here: its tunnel address) is
    /// dropped as spoofed, and a VTEP no peer owns is not sent at all.
    #[test]
    fn transparent_mode_routes_and_polices_by_underlay_address() {
        let (a, b, now) = nodes_in(InnerAddr::Underlay);
        let ua: Ipv4Addr = "192.0.2.1".parse().expect("ip");
        let ub: Ipv4Addr = "192.0.2.2".parse().expect("ip");
        assert!(
            a.router().lookup(IpAddr::V4(TB)).is_none(),
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
        let mut out = TxBatch::with_capacity(8);
        out.send(&a, now, &mut tx, 3);
        assert_eq!(
            out.send_slots(),
            &[0, 1],
            "the packet to a tunnel address has no peer"
        );
        assert_eq!(a.status(now).drops.no_route, 1);
        let (mut rx, from) = deliver(&tx, out.send_slots(), A);
        let mut inb = RxBatch::with_capacity(8);
        inb.receive(&b, now, &mut rx, from.len(), &from);
        assert_eq!(
            inb.to_tun(),
            &[0],
            "only the packet from a's underlay address"
        );
        let pkt = &rx.slot(0)[Arena::HEADROOM..Arena::HEADROOM + rx.len(0)];
        let c = Policy::default().classify(pkt).expect("vxlan");
        assert_eq!(
            (c.src, c.dst, c.vni),
            (IpAddr::V4(ua), IpAddr::V4(ub), Some(4097))
        );
        let st = b.status(now);
        assert_eq!(st.drops.spoofed_source, 1);
        let peer = b.router().lookup(IpAddr::V4(ua)).expect("a").peer;
        assert_eq!(b.router().policy_drops(peer), 1);
        assert_eq!(st.peers[0].policy_drops, 1, "in the status snapshot too");
    }

    #[test]
    fn diverted_handshakes_are_listed_not_handled_and_data_still_flows() {
        let (a, b, now) = nodes();
        let before = b.status(now).endpoint;
        // a's next initiation, as it would arrive at b twice: from a's
        // configured endpoint and from a stranger; then a data message.
        assert!(a.rekey(now, None));
        let mut ctl = Arena::new(4, 2048);
        let mut t = Transmits::with_capacity(4);
        a.poll_transmits(now, &mut ctl, &mut t);
        let init = ctl.message(t.slots()[0]).expect("initiation").to_vec();
        let mut tx = Arena::new(16, 2048);
        fill(&mut tx, 1);
        let mut out = TxBatch::with_capacity(16);
        out.send(&a, now, &mut tx, 1);
        let data = tx.message(out.send_slots()[0]).expect("sealed").to_vec();
        let mut rx = Arena::new(16, 2048);
        for (j, m) in [&init, &init, &data].into_iter().enumerate() {
            rx.slot_mut(j)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + m.len()]
                .copy_from_slice(m);
            rx.set_len(j, m.len());
        }
        let from: Vec<SocketAddr> = [A, "198.51.100.7:9", A]
            .iter()
            .map(|s| s.parse().expect("addr"))
            .collect();
        let mut inb = RxBatch::with_capacity(16).divert_handshakes();
        inb.receive(&b, now, &mut rx, 3, &from);
        assert_eq!(inb.handshakes(), &[(0, true), (1, false)]);
        assert_eq!(inb.to_tun().len(), 1, "the data message still went through");
        let st = b.status(now).endpoint;
        assert_eq!(
            st.initiations_processed, before.initiations_processed,
            "the core never saw them"
        );
        assert_eq!(st.drops.total(), before.drops.total());
        assert!(!inb.needs_control(), "nothing for the control thread");
    }
}
