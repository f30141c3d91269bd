//! Deterministic simulation harness for the protocol core: N endpoints on a
//! virtual clock over a simulated network with latency, jitter (reordering),
//! loss, duplication, tampering and partitions, plus application traffic
//! whose every packet is tracked end to end and a nonce-reuse audit over
//! every data message any endpoint ever sealed.
//!
//! In the spirit of quinn-proto's `Pair` and smoltcp's fault injector. No
//! sockets, no wall clock (one `Instant` is read as the epoch). Data takes
//! the production path: `reserve_seal` → `SealJob::seal` to send,
//! `precheck_datagram` → `OpenJob::open` → `commit_datagram` to receive.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

pub mod phases;
// Not every test binary that includes the simulation calls both.
#[allow(unused_imports)]
pub use phases::{receive, seal};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vxsec::proto::{
    DropReason, Endpoint, EndpointConfig, Event, Incoming, OpenedJob, PeerConfig, PeerId, Received,
    SealOutcome, SealRecord,
};
use vxsec_crypto::key::{PrivateKey, PublicKey};
use vxsec_crypto::sa::OpenCipher;
use vxsec_crypto::suite::Suite;

pub const BUF: usize = 2048;
/// Application payload: src node u32 ‖ dst node u32 ‖ seq u64 ‖ padding.
pub const PAYLOAD_LEN: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub latency: Duration,
    /// Extra uniform delay in [0, jitter): reorders packets.
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// Probability of flipping one random bit.
    pub tamper: f64,
    /// Probability that a data message, prechecked and opened on arrival,
    /// is committed only at the next step of the world (after other
    /// datagrams and timers, which may rotate its SA out meanwhile), as a
    /// worker's batch does while other workers run.
    pub phase_gap: f64,
}

/// A data message between its open and its commit.
struct Deferred {
    to: usize,
    job: OpenedJob,
    opener: Arc<OpenCipher>,
    bytes: Vec<u8>,
    record: Option<SealRecord>,
    tampered: bool,
}

#[derive(Debug, Clone)]
pub struct Packet {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
    pub record: Option<SealRecord>,
    pub tampered: bool,
}

pub struct Node {
    pub ep: Endpoint,
    pub addr: SocketAddr,
    pub key: PublicKey,
    secret: [u8; 32],
    pub peers: BTreeMap<usize, PeerId>,
    pub incarnation: u32,
}

/// What happened to application traffic.
#[derive(Default)]
pub struct Ledger {
    /// (src, dst, seq) → how often the receiver accepted it.
    pub accepted: HashMap<(usize, usize, u64), u32>,
    /// Data messages sealed with a known payload: record → (src, dst, seq).
    pub sealed: HashMap<SealRecord, (usize, usize, u64)>,
    /// Records of data messages the network delivered untampered at least once.
    pub delivered: HashSet<SealRecord>,
    /// Sent by the application (sealed or queued).
    pub sent: u64,
    pub queued: u64,
    pub send_errors: u64,
    /// Every (key fingerprint, counter) ever sealed, and violations.
    pub nonces: HashSet<SealRecord>,
    pub nonce_reuse: Vec<SealRecord>,
    /// Per key fingerprint: first use, last use, highest counter.
    pub key_use: HashMap<[u8; 8], (Instant, Instant, u64)>,
    /// Tampered packets that were accepted (must stay empty).
    pub tampered_accepted: Vec<String>,
    pub duplicates_accepted: Vec<(usize, usize, u64)>,
}

pub struct Sim {
    pub epoch: Instant,
    pub now: Instant,
    pub unix0: Duration,
    pub nodes: Vec<Node>,
    pub faults: Faults,
    pub partitioned: HashSet<(usize, usize)>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, Packet>,
    seq: u64,
    pub rng: StdRng,
    pub ledger: Ledger,
    pub events: Vec<(Instant, usize, Event)>,
    /// Every datagram the network carried (for capture-based tests).
    pub capture: Option<Vec<Packet>>,
    next_app_seq: HashMap<(usize, usize), u64>,
    /// Opened data messages waiting for their commit (see `Faults::phase_gap`).
    deferred: Vec<Deferred>,
    /// Commits that ran after such a gap.
    pub gap_commits: u64,
    out_buf: Vec<u8>,
    pub make_config: Box<dyn Fn(PrivateKey, u64) -> EndpointConfig>,
}

pub fn default_config(key: PrivateKey, seed: u64) -> EndpointConfig {
    let mut c = EndpointConfig::new(key, "sim");
    c.suite = Suite::ChaCha20Poly1305;
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    c.rng_seed = Some(s);
    c
}

impl Sim {
    pub fn new(
        n: usize,
        seed: u64,
        make_config: Box<dyn Fn(PrivateKey, u64) -> EndpointConfig>,
    ) -> Self {
        let epoch = Instant::now();
        let unix0 = Duration::from_secs(1_700_000_000);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret);
            let pk = PrivateKey::from_bytes(secret);
            let key = pk.public_key();
            let addr: SocketAddr = format!("10.0.0.{}:51830", i + 1).parse().unwrap();
            let ep =
                Endpoint::try_new(make_config(pk, seed * 1000 + i as u64), epoch, unix0).unwrap();
            nodes.push(Node {
                ep,
                addr,
                key,
                secret,
                peers: BTreeMap::new(),
                incarnation: 0,
            });
        }
        let mut sim = Sim {
            epoch,
            now: epoch,
            unix0,
            nodes,
            faults: Faults {
                latency: Duration::from_millis(10),
                ..Faults::default()
            },
            partitioned: HashSet::new(),
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            seq: 0,
            rng,
            ledger: Ledger::default(),
            events: Vec::new(),
            capture: None,
            next_app_seq: HashMap::new(),
            deferred: Vec::new(),
            gap_commits: 0,
            out_buf: Vec::new(),
            make_config,
        };
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    sim.connect(a, b);
                }
            }
        }
        sim
    }

    fn connect(&mut self, a: usize, b: usize) {
        let cfg = PeerConfig::new(self.nodes[b].key, Some(self.nodes[b].addr));
        let id = self.nodes[a].ep.add_peer(self.now, cfg).unwrap();
        self.nodes[a].peers.insert(b, id);
    }

    pub fn peer(&self, a: usize, b: usize) -> PeerId {
        self.nodes[a].peers[&b]
    }

    /// Replaces node `i` by a fresh endpoint with the same identity.
    pub fn restart(&mut self, i: usize) {
        let pk = PrivateKey::from_bytes(self.nodes[i].secret);
        self.nodes[i].incarnation += 1;
        let seed = 7_000_000 + i as u64 * 100 + u64::from(self.nodes[i].incarnation);
        let unix = self.unix0 + self.now.duration_since(self.epoch);
        self.nodes[i].ep = Endpoint::try_new((self.make_config)(pk, seed), self.now, unix).unwrap();
        self.nodes[i].peers.clear();
        for b in 0..self.nodes.len() {
            if b != i {
                self.connect(i, b);
            }
        }
    }

    pub fn node_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    /// Puts a datagram on the wire (faults applied).
    pub fn send(&mut self, mut pkt: Packet) {
        if let Some(c) = self.capture.as_mut() {
            c.push(pkt.clone());
        }
        let Some(b) = self.node_of(pkt.to) else {
            return; // nobody there (e.g. a reply to a spoofed source)
        };
        let cut = self
            .node_of(pkt.from)
            .is_some_and(|a| self.partitioned.contains(&(a, b)));
        if cut || self.rng.gen_bool(self.faults.loss) {
            return;
        }
        if self.rng.gen_bool(self.faults.tamper) && !pkt.bytes.is_empty() {
            let bit = self.rng.gen_range(0..pkt.bytes.len() * 8);
            pkt.bytes[bit / 8] ^= 1 << (bit % 8);
            pkt.tampered = true;
        }
        let copies = if self.rng.gen_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.faults.jitter.is_zero() {
                Duration::ZERO
            } else {
                self.faults.jitter.mul_f64(self.rng.gen::<f64>())
            };
            let at = self.now + self.faults.latency + jitter;
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq)));
            self.in_flight.insert(self.seq, pkt.clone());
        }
    }

    /// Delivers one datagram to its node and accounts for the outcome.
    pub fn deliver(&mut self, pkt: Packet) -> Option<Result<Incoming, DropReason>> {
        let to = self.node_of(pkt.to)?;
        let mut bytes = pkt.bytes;
        let now = self.now;
        if let (Some(rec), false) = (pkt.record, pkt.tampered) {
            self.ledger.delivered.insert(rec);
        }
        let gap = self.faults.phase_gap > 0.0 && self.rng.gen_bool(self.faults.phase_gap);
        let ep = &self.nodes[to].ep;
        let r = match ep.precheck_datagram(now, pkt.from, &mut bytes) {
            Ok(Received::Data { job, opener }) => {
                let job = job.open(&opener, &mut bytes);
                if gap {
                    self.deferred.push(Deferred {
                        to,
                        job,
                        opener,
                        bytes,
                        record: pkt.record,
                        tampered: pkt.tampered,
                    });
                    return None;
                }
                ep.commit_datagram(now, job, &opener)
            }
            Ok(Received::Done(incoming)) => Ok(incoming),
            Err(e) => Err(e),
        };
        self.account(to, &r, &bytes, pkt.record, pkt.tampered);
        Some(r)
    }

    /// Commits the messages left between their phases.
    fn commit_deferred(&mut self) {
        let now = self.now;
        for d in std::mem::take(&mut self.deferred) {
            let r = self.nodes[d.to].ep.commit_datagram(now, d.job, &d.opener);
            self.gap_commits += 1;
            self.account(d.to, &r, &d.bytes, d.record, d.tampered);
        }
    }

    /// Accounts for what node `to` made of a datagram.
    fn account(
        &mut self,
        to: usize,
        r: &Result<Incoming, DropReason>,
        bytes: &[u8],
        record: Option<SealRecord>,
        tampered: bool,
    ) {
        let pkt = (record, tampered);
        match r {
            Ok(Incoming::Data { payload, .. }) => {
                if pkt.1 {
                    self.ledger
                        .tampered_accepted
                        .push(format!("data {:?}", pkt.0));
                }
                let p = &bytes[payload.clone()];
                let src = u32::from_be_bytes(p[0..4].try_into().unwrap()) as usize;
                let dst = u32::from_be_bytes(p[4..8].try_into().unwrap()) as usize;
                let seq = u64::from_be_bytes(p[8..16].try_into().unwrap());
                assert_eq!(dst, to, "payload delivered to the wrong node");
                let c = self.ledger.accepted.entry((src, dst, seq)).or_insert(0);
                *c += 1;
                if *c > 1 {
                    self.ledger.duplicates_accepted.push((src, dst, seq));
                }
            }
            Ok(other) if pkt.1 => {
                self.ledger.tampered_accepted.push(format!("{other:?}"));
            }
            _ => {}
        }
    }

    fn account_seal(&mut self, node: usize, rec: SealRecord) {
        if !self.ledger.nonces.insert(rec) {
            self.ledger.nonce_reuse.push(rec);
        }
        let now = self.now;
        let e = self
            .ledger
            .key_use
            .entry(rec.key_fingerprint)
            .or_insert((now, now, 0));
        e.1 = now;
        e.2 = e.2.max(rec.counter);
        let _ = node;
    }

    /// The application at `src` sends one tracked packet to `dst`.
    pub fn app_send(&mut self, src: usize, dst: usize) -> Option<SealOutcome> {
        let seq = {
            let s = self.next_app_seq.entry((src, dst)).or_insert(0);
            *s += 1;
            *s
        };
        let mut buf = vec![0u8; PAYLOAD_LEN + 32];
        buf[16..20].copy_from_slice(&(src as u32).to_be_bytes());
        buf[20..24].copy_from_slice(&(dst as u32).to_be_bytes());
        buf[24..32].copy_from_slice(&seq.to_be_bytes());
        let peer = self.peer(src, dst);
        let now = self.now;
        self.ledger.sent += 1;
        match seal(&self.nodes[src].ep, now, peer, &mut buf, PAYLOAD_LEN) {
            Ok(SealOutcome::Sealed {
                len,
                dst: to,
                record,
            }) => {
                self.account_seal(src, record);
                self.ledger.sealed.insert(record, (src, dst, seq));
                let from = self.nodes[src].addr;
                buf.truncate(len);
                self.send(Packet {
                    from,
                    to,
                    bytes: buf,
                    record: Some(record),
                    tampered: false,
                });
                Some(SealOutcome::Sealed {
                    len,
                    dst: to,
                    record,
                })
            }
            Ok(SealOutcome::Queued) => {
                self.ledger.queued += 1;
                Some(SealOutcome::Queued)
            }
            Err(_) => {
                self.ledger.send_errors += 1;
                None
            }
        }
    }

    /// Moves everything the endpoints want to send onto the network and
    /// collects their events.
    pub fn flush(&mut self) {
        let now = self.now;
        let mut out = std::mem::take(&mut self.out_buf);
        out.resize(BUF, 0);
        for i in 0..self.nodes.len() {
            while let Some(t) = self.nodes[i].ep.poll_transmit(now, &mut out) {
                if let Some(rec) = t.record {
                    self.account_seal(i, rec);
                }
                let from = self.nodes[i].addr;
                self.send(Packet {
                    from,
                    to: t.dst,
                    bytes: out[..t.len].to_vec(),
                    record: t.record,
                    tampered: false,
                });
            }
            while let Some(e) = self.nodes[i].ep.poll_event() {
                self.events.push((now, i, e));
            }
        }
        self.out_buf = out;
    }

    fn next_timer(&self) -> Option<Instant> {
        self.nodes.iter().filter_map(|n| n.ep.poll_timeout()).min()
    }

    /// Runs the world until `until`, calling `traffic` every `tick` (if set).
    pub fn run(
        &mut self,
        until: Instant,
        tick: Option<Duration>,
        traffic: &mut dyn FnMut(&mut Sim),
    ) {
        let mut next_tick = tick.map(|_| self.now);
        let mut spins = 0u32;
        loop {
            self.flush();
            let t_net = self.queue.peek().map(|Reverse((t, _))| *t);
            let t = [t_net, self.next_timer(), next_tick]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = t.filter(|t| *t <= until) else {
                self.now = self.now.max(until);
                return;
            };
            if t <= self.now {
                spins += 1;
                assert!(
                    spins < 100_000,
                    "livelock: no progress at {:?}",
                    self.now - self.epoch
                );
            } else {
                spins = 0;
                self.now = t;
            }
            while let Some(Reverse((at, id))) = self.queue.peek().copied() {
                if at > self.now {
                    break;
                }
                self.queue.pop();
                if let Some(p) = self.in_flight.remove(&id) {
                    self.deliver(p);
                }
            }
            self.commit_deferred();
            let now = self.now;
            for n in &mut self.nodes {
                if n.ep.poll_timeout().is_some_and(|t| t <= now) {
                    n.ep.handle_timeout(now);
                }
            }
            if let (Some(nt), Some(dt)) = (next_tick, tick) {
                if nt <= self.now {
                    traffic(self);
                    next_tick = Some(nt + dt);
                }
            }
        }
    }

    pub fn at(&self, secs: f64) -> Instant {
        self.epoch + Duration::from_secs_f64(secs)
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Application packets that were sealed, delivered untampered by the
    /// network, and not accepted: must be empty.
    pub fn delivered_but_not_accepted(&self) -> Vec<(usize, usize, u64)> {
        let mut v: Vec<_> = self
            .ledger
            .delivered
            .iter()
            .filter_map(|r| self.ledger.sealed.get(r))
            .filter(|k| !self.ledger.accepted.contains_key(k))
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    pub fn count_events(&self, node: usize, f: impl Fn(&Event) -> bool) -> usize {
        self.events
            .iter()
            .filter(|(_, n, e)| *n == node && f(e))
            .count()
    }

    /// Basic invariants every test wants.
    pub fn assert_clean(&self) {
        assert!(
            self.ledger.nonce_reuse.is_empty(),
            "nonce reuse: {:?}",
            &self.ledger.nonce_reuse[..self.ledger.nonce_reuse.len().min(5)]
        );
        assert!(
            self.ledger.duplicates_accepted.is_empty(),
            "duplicates accepted: {:?}",
            self.ledger.duplicates_accepted.len()
        );
        assert!(
            self.ledger.tampered_accepted.is_empty(),
            "tampered accepted: {:?}",
            self.ledger.tampered_accepted
        );
    }
}

/// Two-way traffic between every listed pair on each tick.
pub fn two_way(pairs: &'static [(usize, usize)]) -> impl FnMut(&mut Sim) {
    move |sim: &mut Sim| {
        for &(a, b) in pairs {
            sim.app_send(a, b);
            sim.app_send(b, a);
        }
    }
}
