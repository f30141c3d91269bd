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

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("datapath");
    let policy = Policy::default();
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let template = packet_buffer(size, PEERS - 1);
        let mut buf = template.clone();
        let head = RESTORE.min(template.len());

        // (a) Raw ring AES-256-GCM seal, AAD = a 16-byte header.
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9; 32]).expect("32-byte key"));
        let mut counter = 0u64;
        g.bench_function(BenchmarkId::new("raw_ring_seal", size), |b| {
            b.iter(|| {
                buf[..head].copy_from_slice(&template[..head]);
                counter += 1;
                let mut n = [0u8; 12];
                n[4..].copy_from_slice(&counter.to_be_bytes());
                let (hdr, rest) = buf.split_at_mut(DATA_HEADER_LEN);
                let (payload, tag_out) = rest.split_at_mut(size);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from(&hdr[..]),
                        payload,
                    )
                    .expect("seal");
                tag_out.copy_from_slice(tag.as_ref());
                black_box(&buf);
            })
        });

        // (b) Full send path: classify + route + policy + SA seal (header included).
        let mut table = Table::new();
        g.bench_function(BenchmarkId::new("parse_policy_seal", size), |b| {
            b.iter(|| {
                buf[..head].copy_from_slice(&template[..head]);
                let inner = &buf[DATA_HEADER_LEN..DATA_HEADER_LEN + size];
                let c = policy.classify(inner).expect("valid packet");
                let p = table.route(c.dst).expect("route");
                let peer = &mut table.peers[p];
                policy.check(&c, &peer.allowed).expect("allowed");
                let sealed = peer.tx.seal(&mut buf, c.total_len).expect("seal");
                black_box(sealed);
            })
        });

        // (c) The added work alone: classify + route + policy, no crypto.
        let table = Table::new();
        g.bench_function(BenchmarkId::new("parse_policy_only", size), |b| {
            b.iter(|| {
                buf[..head].copy_from_slice(&template[..head]);
                let c = policy
                    .classify(&buf[DATA_HEADER_LEN..DATA_HEADER_LEN + size])
                    .expect("valid");
                let p = table.route(c.dst).expect("route");
                black_box(policy.check(&c, &table.peers[p].allowed).is_ok());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
