#![no_main]
//! The protocol core under arbitrary input: endpoint A (victim) with one
//! configured peer B (a real sealing peer). The input is a script of
//! operations: time advances, genuine traffic B→A and A→B, arbitrary
//! datagrams from arbitrary sources, mutated or replayed genuine datagrams,
//! forced rekeys. Everything goes through the endpoint's production phases
//! (reserve → seal; precheck → open → commit). Invariants: nothing panics,
//! and A delivers only plaintexts that B really sealed in this run, each at
//! most once.
//!
//! Ephemeral keys (`dangerous_seed_handshake_rng`), SPIs and jitter are
//! seeded, so every input replays exactly.

#[path = "../../tests/sim/phases.rs"]
mod phases;
use phases::{receive, seal};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vxsec::proto::{Endpoint, EndpointConfig, Incoming, PeerConfig, PeerId, SealOutcome};
use vxsec_crypto::key::PrivateKey;
use vxsec_crypto::suite::Suite;

const A_ADDR: &str = "192.0.2.1:51830";
const B_ADDR: &str = "192.0.2.2:51830";

struct World {
    a: Endpoint,
    b: Endpoint,
    a_to_b: PeerId,
    b_to_a: PeerId,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    now: Instant,
    /// Plaintexts B sealed (or queued) for A.
    sealed_by_b: HashSet<Vec<u8>>,
    delivered: HashSet<Vec<u8>>,
    /// Genuine datagrams B sent to A (for replay and mutation).
    genuine: Vec<Vec<u8>>,
    counter: u64,
}

fn config(secret: u8, suite: Suite) -> EndpointConfig {
    let mut c = EndpointConfig::new(PrivateKey::from_bytes([secret; 32]), "fuzz");
    c.suite = suite;
    c.rotation.rekey_after_seconds = 5;
    c.rotation.rekey_after_packets = Some(20);
    c.rotation.reject_after_packets = Some(40);
    c.load.handshakes_per_second_before_cookies = 4;
    c.rng_seed = Some([secret; 32]);
    c
}

impl World {
    fn new(suite_b: Suite) -> Self {
        vxsec_crypto::x25519::dangerous_seed_handshake_rng(Some(u64::from(suite_b.wire_id())));
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let unix = Duration::from_secs(1_700_000_000);
        let (ca, cb) = (config(1, Suite::ChaCha20Poly1305), config(2, suite_b));
        let (ka, kb) = (ca.private_key.public_key(), cb.private_key.public_key());
        let a_addr: SocketAddr = A_ADDR.parse().unwrap();
        let b_addr: SocketAddr = B_ADDR.parse().unwrap();
        let a = Endpoint::new(ca, now, unix);
        let b = Endpoint::new(cb, now, unix);
        let a_to_b = a.add_peer(now, PeerConfig::new(kb, Some(b_addr))).unwrap();
        let b_to_a = b.add_peer(now, PeerConfig::new(ka, Some(a_addr))).unwrap();
        World {
            a,
            b,
            a_to_b,
            b_to_a,
            a_addr,
            b_addr,
            now,
            sealed_by_b: HashSet::new(),
            delivered: HashSet::new(),
            genuine: Vec::new(),
            counter: 0,
        }
    }

    /// Delivers a datagram to A and checks the invariant.
    fn to_a(&mut self, from: SocketAddr, mut bytes: Vec<u8>) {
        if let Ok(Incoming::Data { payload, .. }) = receive(&self.a, self.now, from, &mut bytes) {
            let pt = bytes[payload].to_vec();
            assert!(
                self.sealed_by_b.contains(&pt),
                "A delivered data B never sealed"
            );
            assert!(self.delivered.insert(pt), "A delivered the same data twice");
        }
    }

    /// Moves genuine datagrams both ways until quiet (bounded).
    fn pump(&mut self) {
        let mut buf = vec![0u8; 2048];
        for _ in 0..8 {
            let mut any = false;
            while let Some(t) = self.b.poll_transmit(self.now, &mut buf) {
                let d = buf[..t.len].to_vec();
                if self.genuine.len() < 64 {
                    self.genuine.push(d.clone());
                }
                self.to_a(self.b_addr, d);
                any = true;
            }
            while let Some(t) = self.a.poll_transmit(self.now, &mut buf) {
                let _ = receive(&self.b, self.now, self.a_addr, &mut buf[..t.len]);
                any = true;
            }
            while self.a.poll_event().is_some() || self.b.poll_event().is_some() {}
            if !any {
                break;
            }
        }
    }

    fn b_sends(&mut self) {
        self.counter += 1;
        let mut pt = b"FUZZ".to_vec();
        pt.extend_from_slice(&self.counter.to_be_bytes());
        let mut buf = vec![0u8; pt.len() + 32];
        buf[16..16 + pt.len()].copy_from_slice(&pt);
        self.sealed_by_b.insert(pt.clone());
        if let Ok(SealOutcome::Sealed { len, .. }) =
            seal(&self.b, self.now, self.b_to_a, &mut buf, pt.len())
        {
            buf.truncate(len);
            if self.genuine.len() < 64 {
                self.genuine.push(buf.clone());
            }
            self.to_a(self.b_addr, buf);
        }
    }

    fn a_sends(&mut self) {
        let mut buf = vec![0u8; 64];
        if let Ok(SealOutcome::Sealed { len, .. }) =
            seal(&self.a, self.now, self.a_to_b, &mut buf, 32)
        {
            let _ = receive(&self.b, self.now, self.a_addr, &mut buf[..len]);
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        if let Some(t) = self.a.poll_timeout() {
            assert!(
                t + Duration::from_secs(3600 * 24 * 400) > self.now,
                "timeout in the far past"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut it = data.iter().copied();
    let suite_b = if it.next().unwrap_or(0) & 1 == 0 {
        Suite::ChaCha20Poly1305
    } else {
        Suite::Aes256Gcm
    };
    let mut w = World::new(suite_b);
    let mut steps = 0;
    while let Some(op) = it.next() {
        steps += 1;
        if steps > 200 {
            break;
        }
        match op % 8 {
            0 => {
                let ms = u64::from(it.next().unwrap_or(0)) * 50;
                w.advance(ms);
            }
            1 => w.b_sends(),
            2 => w.a_sends(),
            3 => {
                // An arbitrary datagram from an arbitrary source.
                let len = usize::from(it.next().unwrap_or(0));
                let src_sel = it.next().unwrap_or(0);
                let bytes: Vec<u8> = it.by_ref().take(len).collect();
                let src = if src_sel & 1 == 0 {
                    w.b_addr
                } else {
                    SocketAddr::from(([198, 51, 100, src_sel], 1000 + u16::from(src_sel)))
                };
                w.to_a(src, bytes);
            }
            4 => {
                // A genuine datagram with bytes xor-ed at one position.
                let idx = usize::from(it.next().unwrap_or(0));
                let pos = usize::from(it.next().unwrap_or(0));
                let x = it.next().unwrap_or(1).max(1);
                if let Some(mut d) = w.genuine.get(idx % w.genuine.len().max(1)).cloned() {
                    if !d.is_empty() {
                        let p = pos % d.len();
                        d[p] ^= x;
                        w.to_a(w.b_addr, d);
                    }
                }
            }
            5 => {
                // Replay a genuine datagram, possibly from elsewhere.
                let idx = usize::from(it.next().unwrap_or(0));
                if let Some(d) = w.genuine.get(idx % w.genuine.len().max(1)).cloned() {
                    let src = if idx & 0x80 == 0 {
                        w.b_addr
                    } else {
                        SocketAddr::from(([203, 0, 113, 7], 9))
                    };
                    w.to_a(src, d);
                }
            }
            6 => {
                let now = w.now;
                if op & 0x10 == 0 {
                    w.a.rekey(now, None);
                } else {
                    w.b.rekey(now, None);
                }
            }
            _ => w.pump(),
        }
        w.pump_if(op);
    }
    // Whatever happened, the endpoint's bookkeeping stays sane.
    for p in w.a.peers() {
        assert!(p.queued_packets <= 64);
    }
});

impl World {
    /// Pumps after most operations so handshakes make progress; op bit 0x20
    /// leaves datagrams queued, letting the script interleave.
    fn pump_if(&mut self, op: u8) {
        if op & 0x20 == 0 {
            self.pump();
        }
    }
}
