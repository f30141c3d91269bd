//! Handshake cost: a bare `snow` IKpsk2 handshake (baseline: both sides on
//! one thread, builders, four messages' worth of DH, raw split) beside a
//! complete vxsec handshake through two `Endpoint`s (framing, mac1,
//! TAI64N check, SPI allocation, HKDF data keys, SA install, the confirming
//! keepalive and the responder's promotion of `next`), and the CPU cost of
//! one operator-forced rotation under an established session.
//!
//! Run: `cargo bench --bench handshake -- --warm-up-time 1 --measurement-time 3`.
//! Bar (issue 3): vxsec ≤ 1.25 × bare snow, ≥ 2,000 complete handshakes/s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use vxsec::proto::{Endpoint, EndpointConfig, Incoming, PeerConfig, PeerId, SealOutcome};
use vxsec_crypto::key::{PrivateKey, PublicKey};
use vxsec_crypto::suite::Suite;

const PARAMS: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"vxsec v1bench";

fn bare_snow(a_priv: &[u8; 32], b_priv: &[u8; 32], b_pub: &[u8; 32], psk: &[u8; 32]) -> [u8; 32] {
    let params: snow::params::NoiseParams = PARAMS.parse().unwrap();
    let mut i = snow::Builder::new(params.clone())
        .local_private_key(a_priv)
        .and_then(|b| b.remote_public_key(b_pub))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.psk(2, psk))
        .and_then(|b| b.build_initiator())
        .unwrap();
    let mut r = snow::Builder::new(params)
        .local_private_key(b_priv)
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .unwrap();
    let mut m1 = [0u8; 256];
    let mut m2 = [0u8; 256];
    let mut p = [0u8; 256];
    let n1 = i.write_message(&[0u8; 13], &mut m1).unwrap();
    r.read_message(&m1[..n1], &mut p).unwrap();
    r.set_psk(2, psk).unwrap();
    let n2 = r.write_message(&[1u8; 2], &mut m2).unwrap();
    i.read_message(&m2[..n2], &mut p).unwrap();
    let (k1, _) = i.dangerously_get_raw_split();
    let _ = r.dangerously_get_raw_split();
    k1
}

struct Pair {
    a: Endpoint,
    b: Endpoint,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    a_key: PublicKey,
    b_key: PublicKey,
    a_peer: PeerId,
    now: Instant,
    buf: Vec<u8>,
}

fn config(key: PrivateKey, seed: u8) -> EndpointConfig {
    let mut c = EndpointConfig::new(key, "bench");
    c.suite = Suite::ChaCha20Poly1305;
    c.rng_seed = Some([seed; 32]);
    c
}

impl Pair {
    fn new() -> Self {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let unix = Duration::from_secs(1_700_000_000);
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let (a_key, b_key) = (ka.public_key(), kb.public_key());
        let a_addr: SocketAddr = "192.0.2.1:51830".parse().unwrap();
        let b_addr: SocketAddr = "192.0.2.2:51830".parse().unwrap();
        let mut a = Endpoint::new(config(ka, 1), now, unix);
        let mut b = Endpoint::new(config(kb, 2), now, unix);
        let a_peer = a
            .add_peer(now, PeerConfig::new(b_key, Some(b_addr)))
            .unwrap();
        b.add_peer(now, PeerConfig::new(a_key, Some(a_addr)))
            .unwrap();
        Pair {
            a,
            b,
            a_addr,
            b_addr,
            a_key,
            b_key,
            a_peer,
            now,
            buf: vec![0u8; 2048],
        }
    }

    /// Moves datagrams until both sides are quiet; returns how many.
    fn exchange(&mut self) -> usize {
        let mut moved = 0;
        loop {
            let mut any = false;
            while let Some(t) = self.a.poll_transmit(self.now, &mut self.buf) {
                let r = self
                    .b
                    .handle_datagram(self.now, self.a_addr, &mut self.buf[..t.len]);
                assert!(r.is_ok(), "{r:?}");
                any = true;
                moved += 1;
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut self.buf) {
                let r = self
                    .a
                    .handle_datagram(self.now, self.b_addr, &mut self.buf[..t.len]);
                assert!(r.is_ok(), "{r:?}");
                any = true;
                moved += 1;
            }
            if !any {
                return moved;
            }
        }
    }

    /// One operator-forced rotation: initiation, response, keepalive, promotion.
    fn rotate(&mut self) {
        // Each handshake is a new second: fresh TAI64N, per-source buckets refilled.
        self.now += Duration::from_secs(1);
        self.a.rekey(self.now, Some(self.a_peer));
        let moved = self.exchange();
        debug_assert_eq!(moved, 3);
    }

    /// A first handshake: peers re-added (no SAs), one packet queued, sent after it.
    fn first_handshake(&mut self) {
        self.now += Duration::from_secs(1);
        self.a.remove_peer(&self.b_key);
        self.b.remove_peer(&self.a_key);
        self.a_peer = self
            .a
            .add_peer(self.now, PeerConfig::new(self.b_key, Some(self.b_addr)))
            .unwrap();
        self.b
            .add_peer(self.now, PeerConfig::new(self.a_key, Some(self.a_addr)))
            .unwrap();
        let mut pkt = [0u8; 64 + 32];
        let r = self.a.seal(self.now, self.a_peer, &mut pkt, 64);
        assert_eq!(r, Ok(SealOutcome::Queued));
        let moved = self.exchange();
        debug_assert_eq!(moved, 3);
    }
}

fn handshakes(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    let a = PrivateKey::generate();
    let b = PrivateKey::generate();
    let b_pub = *b.public_key().as_bytes();
    let psk = [0u8; 32];
    g.bench_function("bare_snow_ikpsk2", |bench| {
        bench.iter(|| {
            black_box(bare_snow(
                a.dangerous_as_bytes(),
                b.dangerous_as_bytes(),
                &b_pub,
                &psk,
            ))
        })
    });
    let mut pair = Pair::new();
    pair.first_handshake();
    g.bench_function("vxsec_first_handshake", |bench| {
        bench.iter(|| pair.first_handshake())
    });
    let mut pair = Pair::new();
    pair.first_handshake();
    g.bench_function("vxsec_rotation", |bench| bench.iter(|| pair.rotate()));
    g.finish();
    // Sanity outside the timing loop: the last rotation left a working SA.
    let mut pkt = [0u8; 16 + 4 + 16];
    pkt[16..20].copy_from_slice(b"ping");
    let SealOutcome::Sealed { len, .. } = pair.a.seal(pair.now, pair.a_peer, &mut pkt, 4).unwrap()
    else {
        panic!("no SA after rotations")
    };
    let r = pair
        .b
        .handle_datagram(pair.now, pair.a_addr, &mut pkt[..len]);
    assert!(matches!(r, Ok(Incoming::Data { .. })), "{r:?}");
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
