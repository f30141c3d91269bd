//! Test fixtures shared by the node, tx and rx tests: two nodes whose
//! endpoints completed a handshake, and batches of VXLAN packets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::io::Arena;

use crate::dataplane::node::Node;
use crate::dataplane::policy::{Policy, VniSet};
use crate::dataplane::router::{InnerAddr, PeerRoute};
use crate::dataplane::{RxBatch, TxBatch};
use crate::proto::testing::{pair, pass, A, B};
use crate::proto::Endpoint;
use crate::wire::{emit_vxlan_in_ipv4, VxlanFlow};

pub(crate) const TA: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub(crate) const TB: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

/// Two nodes (routing by `mode`) whose endpoints completed a handshake.
pub(crate) fn nodes_in(mode: InnerAddr) -> (Node, Node, Instant) {
    let (a, b, ab, _, now) = pair();
    a.rekey(now, Some(ab));
    for _ in 0..3 {
        pass(&a, A, &b, now);
        pass(&b, B, &a, now);
    }
    let mk = |ep: Endpoint, own: Ipv4Addr, addr: Ipv4Addr, at: &str| {
        let key = ep.peers().next().expect("one peer").public_key;
        let node = Node::new(ep, Policy::default(), true, IpAddr::V4(own), 1400, mode);
        let route = PeerRoute {
            tunnel_addr: IpAddr::V4(addr),
            vnis: VniSet::any(),
            endpoint: Some(at.parse().expect("addr")),
        };
        assert_eq!(node.update_route(&key, route), Some(vec![]));
        node
    };
    (mk(a, TA, TB, B), mk(b, TB, TA, A), now)
}

/// [`nodes_in`] route mode.
pub(crate) fn nodes() -> (Node, Node, Instant) {
    nodes_in(InnerAddr::Tunnel)
}

/// `n` VXLAN packets from a to b (one of them too big, with DF).
pub(crate) fn fill(arena: &mut Arena, n: usize) {
    let flow = VxlanFlow {
        src_port: 49_152,
        dst_port: 4789,
        vni: 42,
    };
    for i in 0..n {
        let size = if i == 3 { 1450 } else { 60 + i };
        let frame = vec![i as u8; size];
        let slot = arena.slot_mut(i);
        let len =
            emit_vxlan_in_ipv4(&mut slot[Arena::HEADROOM..], TA, TB, flow, &frame).expect("fits");
        arena.set_len(i, len);
    }
}

/// Copies the messages of `slots` of `tx` into slots `0..` of a fresh
/// arena, each from `from`.
pub(crate) fn deliver(tx: &Arena, slots: &[usize], from: &str) -> (Arena, Vec<SocketAddr>) {
    let mut rx = Arena::new(16, 2048);
    let mut src = Vec::new();
    for (j, &i) in slots.iter().enumerate() {
        let msg = tx.message(i).expect("sealed").to_vec();
        rx.slot_mut(j)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + msg.len()]
            .copy_from_slice(&msg);
        rx.set_len(j, msg.len());
        src.push(from.parse().expect("addr"));
    }
    (rx, src)
}

/// The plaintexts of `rxb.to_tun()`.
pub(crate) fn plaintexts(rx: &Arena, rxb: &RxBatch) -> Vec<Vec<u8>> {
    rxb.to_tun()
        .iter()
        .map(|&i| rx.slot(i)[Arena::HEADROOM..Arena::HEADROOM + rx.len(i)].to_vec())
        .collect()
}

/// Sends `n` packets of [`fill`] from `a`; returns the arena and batch.
pub(crate) fn send(a: &Node, now: Instant, n: usize) -> (Arena, TxBatch) {
    let mut tx = Arena::new(16, 2048);
    fill(&mut tx, n);
    let mut out = TxBatch::with_capacity(16);
    out.send(a, now, &mut tx, n);
    (tx, out)
}
