//! Multi-core scaling of the data path through the real [`Node`], as the
//! agent's workers use it (one `Node` shared by reference, each thread
//! with its own [`TxBatch`] / [`RxBatch`] and arena): 1 thread vs 2
//! threads pushing batches of 64 × 1400-byte VXLAN packets.
//!
//! * same peer: every batch to (TX) or from (RX) one peer. Received
//!   batches are sealed beforehand (outside the timing) and handed out in
//!   counter order to whichever thread asks next, as a shared socket's
//!   batches would be.
//! * 2 peers: the node has two peers; with 2 threads each thread serves
//!   its own peer (as SO_REUSEPORT spreads peers over the workers'
//!   sockets), with 1 thread it alternates between them.
//!
//! Cases and thread counts are interleaved round by round so that load
//! from other processes hits all alike; the table gives the median and
//! best packets/s over the rounds and the 2-thread / 1-thread ratio of the
//! medians. No criterion: `cargo bench --bench scaling`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::disallowed_methods)] // a bench: a failure should stop it loudly; timing is its job

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use vxsec::dataplane::policy::{Policy, VniSet};
use vxsec::dataplane::{InnerAddr, Node, PeerRoute, RxBatch, TxBatch};
use vxsec::io::Arena;
use vxsec::proto::{Endpoint, EndpointConfig, PeerConfig, Received};
use vxsec::wire::{emit_vxlan_in_ipv4, VxlanFlow};
use vxsec_crypto::key::{PrivateKey, PublicKey};

const BATCH: usize = 64;
const INNER: usize = 1400;
/// 64 headroom + 1400 + 16 tag, rounded up to 64.
const STRIDE: usize = 1536;
/// Batches per measurement (shared by the threads).
const BATCHES: usize = 400;
const ROUNDS: usize = 7;
/// The hub's tunnel address and underlay endpoint; spoke `i` has
/// 10.200.0.(2+i) and 192.0.2.(2+i):51830.
const TH: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const H: &str = "192.0.2.1:51830";

fn spoke_tunnel(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, 2 + i as u8)
}
fn spoke_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 2 + i as u8], 51830))
}

/// Moves everything `x` has queued into `y`.
fn pass(x: &Endpoint, x_addr: SocketAddr, y: &Endpoint, now: Instant) {
    let mut out = vec![0u8; 2048];
    while let Some(t) = x.poll_transmit(now, &mut out) {
        let mut m = out[..t.len].to_vec();
        // Handshakes, and the confirming keepalive through the data phases.
        if let Ok(Received::Data { job, opener }) = y.precheck_datagram(now, x_addr, &mut m) {
            let opened = job.open(&opener, &mut m);
            let _ = y.commit_datagram(now, opened, &opener);
        }
    }
}

fn node(ep: Endpoint, own: Ipv4Addr, routes: Vec<(PublicKey, Ipv4Addr, SocketAddr)>) -> Node {
    let n = Node::new(
        ep,
        Policy::default(),
        true,
        IpAddr::V4(own),
        1450,
        InnerAddr::Tunnel,
    );
    for (key, addr, at) in routes {
        let r = PeerRoute {
            tunnel_addr: IpAddr::V4(addr),
            vnis: VniSet::any(),
            endpoint: Some(at),
        };
        n.update_route(&key, r).expect("peer");
    }
    n
}

/// A hub node and `spokes` spoke nodes, each spoke with an established SA
/// pair with the hub.
fn star(now: Instant, spokes: usize) -> (Node, Vec<Node>) {
    let unix = Duration::from_secs(1_700_000_000);
    let kh = PrivateKey::generate();
    let ph = kh.public_key();
    let hub = Endpoint::try_new(EndpointConfig::new(kh, "bench"), now, unix).unwrap();
    let mut hub_routes = Vec::new();
    let mut out = Vec::new();
    for i in 0..spokes {
        let ks = PrivateKey::generate();
        let ps = ks.public_key();
        let s = Endpoint::try_new(EndpointConfig::new(ks, "bench"), now, unix).unwrap();
        let hs = hub
            .add_peer(now, PeerConfig::new(ps, Some(spoke_addr(i))))
            .unwrap();
        let sh = s
            .add_peer(now, PeerConfig::new(ph, Some(H.parse().unwrap())))
            .unwrap();
        hub.rekey(now, Some(hs));
        for _ in 0..3 {
            pass(&hub, H.parse().unwrap(), &s, now);
            pass(&s, spoke_addr(i), &hub, now);
        }
        assert!(s.peer_status(sh).unwrap().established);
        hub_routes.push((ps, spoke_tunnel(i), spoke_addr(i)));
        out.push(node(s, spoke_tunnel(i), vec![(ph, TH, H.parse().unwrap())]));
    }
    (node(hub, TH, hub_routes), out)
}

/// One inner VXLAN packet of `INNER` bytes from `src` to `dst`.
fn template(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let frame = vec![0x5a; INNER - 20 - 8 - 8];
    let mut buf = vec![0u8; INNER];
    let flow = VxlanFlow {
        src_port: 49_152,
        dst_port: 4789,
        vni: 42,
    };
    let n = emit_vxlan_in_ipv4(&mut buf, src, dst, flow, &frame).unwrap();
    assert_eq!(n, INNER);
    buf
}

fn fill(arena: &mut Arena, pkt: &[u8]) {
    for i in 0..BATCH {
        arena.slot_mut(i)[Arena::HEADROOM..Arena::HEADROOM + pkt.len()].copy_from_slice(pkt);
        arena.set_len(i, pkt.len());
    }
}

/// How a measurement hands out its `BATCHES` batches.
#[derive(Clone, Copy)]
enum Spread {
    /// All threads share one counter (one peer, one socket's batches).
    Shared,
    /// Two peers: with 2 threads each has its own counter and peer; with 1
    /// thread it alternates. The work gets (peer, batch of that peer).
    PerPeer,
}

/// Runs `threads` workers; `work(peer, k)` moves the k-th batch (of that
/// peer); returns packets/s and the packets the workers counted.
fn run<W>(threads: usize, spread: Spread, work: W) -> (f64, usize)
where
    W: Fn(usize, usize) -> usize + Sync,
{
    let counters = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let barrier = Barrier::new(threads + 1);
    let (elapsed, packets) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (counters, barrier, work) = (&counters, &barrier, &work);
                s.spawn(move || {
                    barrier.wait();
                    let mut moved = 0;
                    loop {
                        let (counter, limit) = match spread {
                            Spread::Shared => (&counters[0], BATCHES),
                            Spread::PerPeer => (&counters[t], BATCHES / threads),
                        };
                        let k = counter.fetch_add(1, Ordering::Relaxed);
                        if k >= limit {
                            break;
                        }
                        moved += match (spread, threads) {
                            (Spread::Shared, _) => work(0, k),
                            (Spread::PerPeer, 1) => work(k % 2, k / 2),
                            (Spread::PerPeer, _) => work(t, k),
                        };
                    }
                    moved
                })
            })
            .collect();
        barrier.wait();
        let t = Instant::now();
        let packets: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        (t.elapsed(), packets)
    });
    (packets as f64 / elapsed.as_secs_f64(), packets)
}

thread_local! {
    static TX: RefCell<(Arena, TxBatch)> =
        RefCell::new((Arena::new(BATCH, STRIDE), TxBatch::with_capacity(BATCH)));
    static RX: RefCell<RxBatch> = RefCell::new(RxBatch::with_capacity(BATCH));
}

/// Seals batches from the hub to `pkts[peer]`.
fn tx(hub: &Node, now: Instant, pkts: &[Vec<u8>], threads: usize, spread: Spread) -> f64 {
    let (pps, packets) = run(threads, spread, |peer, _| {
        TX.with(|b| {
            let (arena, out) = &mut *b.borrow_mut();
            fill(arena, &pkts[peer]);
            out.send(hub, now, arena, BATCH);
            out.send_slots().len()
        })
    });
    assert_eq!(packets, BATCHES * BATCH, "every packet sealed");
    pps
}

/// Seals `n` batches from `sender` to the hub (outside any timing).
fn received_batches(sender: &Node, now: Instant, pkt: &[u8], n: usize) -> Vec<Mutex<Arena>> {
    let mut out = TxBatch::with_capacity(BATCH);
    (0..n)
        .map(|_| {
            let mut arena = Arena::new(BATCH, STRIDE);
            fill(&mut arena, pkt);
            out.send(sender, now, &mut arena, BATCH);
            assert_eq!(out.send_slots(), (0..BATCH).collect::<Vec<_>>());
            Mutex::new(arena)
        })
        .collect()
}

/// Opens the batches of `pools[peer]` (from `spoke_addr(peer)`) at the hub.
fn rx(
    hub: &Node,
    pools: &[Vec<Mutex<Arena>>],
    now: Instant,
    threads: usize,
    spread: Spread,
) -> f64 {
    let from: Vec<Vec<SocketAddr>> = (0..pools.len())
        .map(|i| vec![spoke_addr(i); BATCH])
        .collect();
    let (pps, packets) = run(threads, spread, |peer, k| {
        let mut arena = pools[peer][k].lock().unwrap();
        RX.with(|inb| {
            let mut inb = inb.borrow_mut();
            inb.receive(hub, now, &mut arena, BATCH, &from[peer]);
            inb.to_tun().len()
        })
    });
    // Packets/s counts delivered packets only. A thread preempted for
    // longer than the replay window (255 batches) finds its batch too old:
    // those are dropped before the AEAD, counted here and reported.
    NOT_DELIVERED.fetch_add(BATCHES * BATCH - packets, Ordering::Relaxed);
    pps
}

/// Received packets not delivered, over all RX measurements.
static NOT_DELIVERED: AtomicUsize = AtomicUsize::new(0);

fn stats(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let now = Instant::now();
    // Sending: a hub with two peers. Receiving: a hub with two peers whose
    // spokes seal the batches.
    let (tx_hub, _) = star(now, 2);
    let (rx_hub, spokes) = star(now, 2);
    let to_peer: Vec<Vec<u8>> = (0..2).map(|i| template(TH, spoke_tunnel(i))).collect();
    let to_hub: Vec<Vec<u8>> = (0..2).map(|i| template(spoke_tunnel(i), TH)).collect();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    // [dir][case][threads-1] samples in packets/s.
    let mut samples = vec![vec![vec![Vec::new(); 2]; 2]; 2];
    for _ in 0..ROUNDS {
        for (c, spread) in [Spread::Shared, Spread::PerPeer].into_iter().enumerate() {
            for threads in [1, 2] {
                samples[0][c][threads - 1].push(tx(&tx_hub, now, &to_peer, threads, spread));
                let pools: Vec<Vec<Mutex<Arena>>> = match spread {
                    Spread::Shared => {
                        vec![received_batches(&spokes[0], now, &to_hub[0], BATCHES)]
                    }
                    Spread::PerPeer => (0..2)
                        .map(|i| received_batches(&spokes[i], now, &to_hub[i], BATCHES / 2))
                        .collect(),
                };
                samples[1][c][threads - 1].push(rx(&rx_hub, &pools, now, threads, spread));
            }
        }
    }
    println!(
        "\n## scaling: one shared Node (Sync endpoint with per-peer locks, router read-mostly), batches of {BATCH} x {INNER}-byte VXLAN packets, AES-256-GCM, {cpus} CPUs, {ROUNDS} interleaved rounds of {BATCHES} batches\n"
    );
    println!("| direction | case | 1 thread pkt/s median (best) | 2 threads pkt/s median (best) | 2t/1t (median) |");
    println!("|---|---|---:|---:|---:|");
    for (d, dir) in ["TX route+reserve+seal", "RX precheck+open+commit+policy"]
        .into_iter()
        .enumerate()
    {
        for (c, name) in ["same peer", "2 peers (2 threads: one each; 1 thread: both)"]
            .into_iter()
            .enumerate()
        {
            let (m1, b1) = stats(&mut samples[d][c][0]);
            let (m2, b2) = stats(&mut samples[d][c][1]);
            println!(
                "| {dir} | {name} | {m1:.0} ({b1:.0}) | {m2:.0} ({b2:.0}) | {:.2}x |",
                m2 / m1
            );
        }
    }
    let total = ROUNDS * 4 * BATCHES * BATCH;
    println!(
        "\nRX packets not delivered (too old for the replay window after a preempted thread): {} of {total}",
        NOT_DELIVERED.load(Ordering::Relaxed)
    );
}
