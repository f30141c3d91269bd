//! Per-packet data-path cost on the send side, beside its baseline in the
//! same run: (a) ring's raw AES-256-GCM seal of the payload; (b) the full
//! path: classify IPv4/UDP/VXLAN, route lookup by destination tunnel address
//! among 16 peers, VNI allow-list check, `SealingKey::seal` (which writes the
//! 16-byte data header and counts limits); (c) classify + route + policy
//! alone. Inner packet sizes 64, 512, 1450 and 9000 bytes. (b) − (a) is what
//! issue 2 bounds at 50 ns/packet. No I/O, single-packet (not batch) path.
//!
//! Every variant restores the first 64 bytes of the buffer from a template
//! before each packet (sealing in place encrypts the headers (b) parses), so
//! the baseline pays the same small copy.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a bench: a failure should stop it loudly

use core::net::{IpAddr, Ipv4Addr};
use std::hint::black_box;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use vxsec::dataplane::policy::{Policy, VniSet};
use vxsec::wire::{emit_vxlan_in_ipv4, VxlanFlow};
use vxsec_crypto::kdf::{derive_data_keys, Direction};
use vxsec_crypto::key::SymmetricKey;
use vxsec_crypto::sa::{SealingKey, DATA_HEADER_LEN, TAG_LEN};
use vxsec_crypto::suite::{SaLimits, Suite};

const SIZES: [usize; 4] = [64, 512, 1450, 9000];
const PEERS: usize = 16;
const RESTORE: usize = 64;
/// Never reached in a bench run, so the SA never refuses.
const NO_LIMITS: SaLimits = SaLimits {
    rekey_after_packets: u64::MAX,
    reject_after_packets: u64::MAX,
    rekey_after_bytes: u64::MAX,
    reject_after_bytes: u64::MAX,
};

fn tunnel_addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, 0, 2 + i as u8))
}

/// `[16 headroom][inner IPv4/UDP/VXLAN packet of `size` bytes][16 spare]`,
/// addressed to peer `to`.
fn packet_buffer(size: usize, to: usize) -> Vec<u8> {
    let mut buf = vec![0u8; DATA_HEADER_LEN + size + TAG_LEN];
    let frame = vec![0x5au8; size - 20 - 8 - 8];
    let flow = VxlanFlow {
        src_port: 49_152,
        dst_port: 4789,
        vni: 42,
    };
    let IpAddr::V4(dst) = tunnel_addr(to) else {
        unreachable!()
    };
    let n = emit_vxlan_in_ipv4(
        &mut buf[DATA_HEADER_LEN..],
        Ipv4Addr::new(10, 200, 0, 1),
        dst,
        flow,
        &frame,
    )
    .expect("bench packet fits");
    assert_eq!(n, size);
    buf
}

/// What the data plane keeps per peer for the send side.
struct Peer {
    allowed: VniSet,
    tx: SealingKey,
}

/// Peers plus the route table: tunnel address -> peer index, sorted.
struct Table {
    routes: Vec<(IpAddr, usize)>,
    peers: Vec<Peer>,
}

impl Table {
    fn new() -> Self {
        let mut routes: Vec<(IpAddr, usize)> = (0..PEERS).map(|i| (tunnel_addr(i), i)).collect();
        routes.sort_unstable();
        let peers = (0..PEERS)
            .map(|i| {
                let secret = SymmetricKey::from_bytes([i as u8 + 1; 32]);
                let keys =
                    derive_data_keys(&secret, Suite::Aes256Gcm, Direction::InitiatorToResponder);
                Peer {
                    allowed: VniSet::only([7, 42, 100 + i as u32]).expect("small VNIs"),
                    tx: SealingKey::new(keys, Suite::Aes256Gcm, 0x1000 + i as u32, NO_LIMITS),
                }
            })
            .collect();
        Table { routes, peers }
    }

    fn route(&self, dst: IpAddr) -> Option<usize> {
        self.routes
            .binary_search_by(|(a, _)| a.cmp(&dst))
            .ok()
            .and_then(|i| self.routes.get(i))
            .map(|&(_, p)| p)
    }
}

/// One packet size's state, shared by the three variants.
struct Case {
    size: usize,
    template: Vec<u8>,
    buf: Vec<u8>,
    policy: Policy,
    key: LessSafeKey,
    counter: u64,
    table: Table,
}

impl Case {
    fn new(size: usize) -> Self {
        let template = packet_buffer(size, PEERS - 1);
        Case {
            size,
            buf: template.clone(),
            template,
            policy: Policy::default(),
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9; 32]).expect("32-byte key")),
            counter: 0,
            table: Table::new(),
        }
    }

    fn restore(&mut self) {
        let head = RESTORE.min(self.template.len());
        self.buf[..head].copy_from_slice(&self.template[..head]);
    }

    /// (a) Raw ring AES-256-GCM seal in place, AAD = a 16-byte header.
    fn raw_seal(&mut self) {
        self.restore();
        self.counter += 1;
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        let (hdr, rest) = self.buf.split_at_mut(DATA_HEADER_LEN);
        let (payload, tag_out) = rest.split_at_mut(self.size);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(&hdr[..]),
                payload,
            )
            .expect("seal");
        tag_out.copy_from_slice(tag.as_ref());
        black_box(&self.buf);
    }

    /// (b) Full send path: classify + route + policy + SA seal (header included).
    fn full_path(&mut self) {
        self.restore();
        let inner = &self.buf[DATA_HEADER_LEN..DATA_HEADER_LEN + self.size];
        let c = self.policy.classify(inner).expect("valid packet");
        let p = self.table.route(c.dst).expect("route");
        let peer = &mut self.table.peers[p];
        self.policy.check(&c, &peer.allowed).expect("allowed");
        black_box(peer.tx.seal(&mut self.buf, c.total_len).expect("seal"));
    }

    /// (c) The added work alone: classify + route + policy, no crypto.
    fn parse_policy(&mut self) {
        self.restore();
        let inner = &self.buf[DATA_HEADER_LEN..DATA_HEADER_LEN + self.size];
        let c = self.policy.classify(black_box(inner)).expect("valid");
        let p = self.table.route(c.dst).expect("route");
        black_box(self.policy.check(&c, &self.table.peers[p].allowed).is_ok());
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("datapath");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut case = Case::new(size);
        g.bench_function(BenchmarkId::new("raw_ring_seal", size), |b| {
            b.iter(|| case.raw_seal())
        });
        g.bench_function(BenchmarkId::new("parse_policy_seal", size), |b| {
            b.iter(|| case.full_path())
        });
        g.bench_function(BenchmarkId::new("parse_policy_only", size), |b| {
            b.iter(|| case.parse_policy())
        });
    }
    g.finish();
}

/// Interleaved bursts of the three variants, many rounds, keeping the best
/// and the median burst of each: on a shared, loaded machine the minimum is
/// the run least disturbed by preemption, and interleaving exposes all three
/// to the same conditions. Prints ns/packet and (b) − (a).
#[allow(clippy::disallowed_methods)] // timing is this function's whole job
fn interleaved_summary() {
    const ROUNDS: usize = 400;
    println!("\ninterleaved min-of-bursts ({ROUNDS} rounds), ns/packet: min (median)");
    println!("| inner bytes | (a) raw ring seal | (b) parse+policy+seal | (b) − (a) | (c) parse+policy alone |");
    println!("|---:|---:|---:|---:|---:|");
    for size in SIZES {
        let mut case = Case::new(size);
        let burst = (32_768 / size).max(8);
        let mut samples: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (v, out) in samples.iter_mut().enumerate() {
                let t = std::time::Instant::now();
                for _ in 0..burst {
                    match v {
                        0 => case.raw_seal(),
                        1 => case.full_path(),
                        _ => case.parse_policy(),
                    }
                }
                out.push(t.elapsed().as_nanos() as f64 / burst as f64);
            }
        }
        let stat = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() / 2])
        };
        let [a, b, c] = samples.map(|mut v| stat(&mut v));
        println!(
            "| {size} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:+.1} ({:+.1}) | {:.1} ({:.1}) |",
            a.0,
            a.1,
            b.0,
            b.1,
            b.0 - a.0,
            b.1 - a.1,
            c.0,
            c.1
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    interleaved_summary();
}
