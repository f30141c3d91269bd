#![no_main]
//! The protocol core as an attacker who knows both public keys meets it:
//! victim V with one configured peer P (a real peer, real traffic). The
//! harness computes a valid mac1 over fuzzer-chosen bodies for initiations
//! and responses (and a valid mac2 once it holds a cookie V sent to the
//! attacker's address), forges cookie replies to P's pending initiation,
//! drives V's load state through the handshake backlog, and runs V's
//! production two-phase paths (precheck → open → commit; reserve → seal)
//! with a rotation between the phases (every datagram takes these phases:
//! the endpoint has no other data path). Ephemeral keys, SPIs and jitter are
//! seeded: every input replays exactly.
//!
//! Invariants: nothing panics; V delivers only plaintexts P sealed, each at
//! most once; P delivers only what V sealed, at most once; cookie replies
//! V sends to non-peer addresses stay within the global cap; counters add
//! up (handshake drops never exceed all drops).

#[path = "../../tests/sim/phases.rs"]
mod phases;
use phases::{receive, seal};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vxsec::proto::{
    Endpoint, EndpointConfig, Incoming, LoadConfig, OpenJob, PeerConfig, PeerId, Received,
    SealOutcome, SealStart,
};
use vxsec::wire::outer::{mac_offsets, MSG_COOKIE_REPLY};
use vxsec_crypto::cookie::{open_cookie_reply, Cookie, CookieChecker, Mac1Key};
use vxsec_crypto::key::{PrivateKey, PublicKey};
use vxsec_crypto::sa::OpenCipher;
use vxsec_crypto::suite::Suite;

const V_ADDR: &str = "192.0.2.1:51830";
const P_ADDR: &str = "192.0.2.2:51830";
const X_ADDR: &str = "198.51.100.9:4444";
const COOKIE_CAP: u32 = 20;

struct World {
    v: Endpoint,
    p: Endpoint,
    v_to_p: PeerId,
    p_to_v: PeerId,
    v_key: PublicKey,
    p_key: PublicKey,
    v_addr: SocketAddr,
    p_addr: SocketAddr,
    x_addr: SocketAddr,
    start: Instant,
    now: Instant,
    sealed_by_p: HashSet<Vec<u8>>,
    sealed_by_v: HashSet<Vec<u8>>,
    delivered_v: HashSet<Vec<u8>>,
    delivered_p: HashSet<Vec<u8>>,
    genuine: Vec<Vec<u8>>,
    /// P's last initiation (its pending SPI and mac1, for forged replies).
    p_init: Option<Vec<u8>>,
    /// The cookie V gave the attacker's address, and when.
    cookie: Option<Cookie>,
    /// mac1 of the attacker's last initiation (cookie replies bind to it).
    x_mac1: [u8; 16],
    cookies_to_others: u64,
    counter: u64,
}

fn config(secret: u8) -> EndpointConfig {
    let mut c = EndpointConfig::new(PrivateKey::from_bytes([secret; 32]), "fuzz");
    c.suite = Suite::ChaCha20Poly1305;
    c.rotation.rekey_after_seconds = 5;
    c.rotation.rekey_after_packets = Some(20);
    c.rotation.reject_after_packets = Some(40);
    c.load = LoadConfig {
        handshakes_per_second_before_cookies: 4,
        per_source_per_second: 2,
        per_source_burst: 3,
        cookie_replies_per_second: COOKIE_CAP,
        cookie_replies_per_source_per_second: 2,
        cookie_replies_per_source_burst: 4,
    };
    c.rng_seed = Some([secret; 32]);
    c
}

impl World {
    fn new(seed: u64) -> Self {
        vxsec_crypto::x25519::dangerous_seed_handshake_rng(Some(seed));
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let unix = Duration::from_secs(1_700_000_000);
        let (cv, cp) = (config(1), config(2));
        let (kv, kp) = (cv.private_key.public_key(), cp.private_key.public_key());
        let v_addr: SocketAddr = V_ADDR.parse().unwrap();
        let p_addr: SocketAddr = P_ADDR.parse().unwrap();
        let v = Endpoint::new(cv, now, unix);
        let p = Endpoint::new(cp, now, unix);
        let v_to_p = v.add_peer(now, PeerConfig::new(kp, Some(p_addr))).unwrap();
        let p_to_v = p.add_peer(now, PeerConfig::new(kv, Some(v_addr))).unwrap();
        World {
            v,
            p,
            v_to_p,
            p_to_v,
            v_key: kv,
            p_key: kp,
            v_addr,
            p_addr,
            x_addr: X_ADDR.parse().unwrap(),
            start: now,
            now,
            sealed_by_p: HashSet::new(),
            sealed_by_v: HashSet::new(),
            delivered_v: HashSet::new(),
            delivered_p: HashSet::new(),
            genuine: Vec::new(),
            p_init: None,
            cookie: None,
            x_mac1: [0; 16],
            cookies_to_others: 0,
            counter: 0,
        }
    }

    fn accept_v(&mut self, pt: Vec<u8>) {
        assert!(
            self.sealed_by_p.contains(&pt),
            "V delivered data P never sealed"
        );
        assert!(
            self.delivered_v.insert(pt),
            "V delivered the same data twice"
        );
    }

    /// A datagram to V, through the receive phases back to back.
    fn to_v(&mut self, from: SocketAddr, bytes: Vec<u8>) {
        self.to_v_two_phase(from, bytes, 0);
    }

    /// A datagram to V through the production two-phase path; `rotate`
    /// runs between precheck and commit.
    fn to_v_two_phase(&mut self, from: SocketAddr, mut bytes: Vec<u8>, rotate: u8) {
        let (job, opener): (OpenJob, Arc<OpenCipher>) =
            match self.v.precheck_datagram(self.now, from, &mut bytes) {
                Ok(Received::Data { job, opener }) => (job, opener),
                _ => return,
            };
        self.rotation(rotate);
        let opened = job.open(&opener, &mut bytes);
        if let Ok(Incoming::Data { payload, .. }) =
            self.v.commit_datagram(self.now, opened, &opener)
        {
            let pt = bytes[payload].to_vec();
            self.accept_v(pt);
        }
    }

    /// Something that may retire SAs: a rekey and its handshake, time, or nothing.
    fn rotation(&mut self, how: u8) {
        match how % 4 {
            0 => {}
            1 => {
                let now = self.now;
                self.v.rekey(now, None);
                self.pump();
            }
            2 => {
                let now = self.now;
                self.p.rekey(now, None);
                self.pump();
            }
            _ => self.advance(u64::from(how) * 40),
        }
    }

    fn from_v(&mut self, mut bytes: Vec<u8>) {
        if let Ok(Incoming::Data { payload, .. }) =
            receive(&self.p, self.now, self.v_addr, &mut bytes)
        {
            let pt = bytes[payload].to_vec();
            assert!(
                self.sealed_by_v.contains(&pt),
                "P delivered data V never sealed"
            );
            assert!(
                self.delivered_p.insert(pt),
                "P delivered the same data twice"
            );
        }
    }

    /// Genuine datagrams both ways until quiet (bounded); V's replies to
    /// the attacker's address are opened when they are cookie replies.
    fn pump(&mut self) {
        let mut buf = vec![0u8; 2048];
        for _ in 0..8 {
            let mut any = false;
            while let Some(t) = self.p.poll_transmit(self.now, &mut buf) {
                let d = buf[..t.len].to_vec();
                if d.first() == Some(&1) {
                    self.p_init = Some(d.clone());
                }
                if self.genuine.len() < 64 {
                    self.genuine.push(d.clone());
                }
                self.to_v(self.p_addr, d);
                any = true;
            }
            while let Some(t) = self.v.poll_transmit(self.now, &mut buf) {
                let d = buf[..t.len].to_vec();
                if t.dst == self.p_addr {
                    self.from_v(d);
                } else {
                    if d.first() == Some(&MSG_COOKIE_REPLY) {
                        self.cookies_to_others += 1;
                    }
                    if t.dst == self.x_addr && d.len() == 64 {
                        let nonce: [u8; 24] = d[8..32].try_into().unwrap();
                        let enc: [u8; 32] = d[32..64].try_into().unwrap();
                        if let Ok(c) = open_cookie_reply(&self.v_key, &self.x_mac1, &nonce, &enc) {
                            self.cookie = Some(c);
                        }
                    }
                }
                any = true;
            }
            while self.v.poll_event().is_some() || self.p.poll_event().is_some() {}
            if !any {
                break;
            }
        }
        let secs = self.now.saturating_duration_since(self.start).as_secs() + 1;
        assert!(
            self.cookies_to_others <= u64::from(COOKIE_CAP) * (secs + 1),
            "{} cookie replies to non-peers in {secs} s",
            self.cookies_to_others
        );
        let st = self.v.stats();
        assert!(st.handshake_drops <= st.drops.total());
    }

    fn p_sends(&mut self, two_phase: Option<u8>) {
        self.counter += 1;
        let mut pt = b"FROM-P".to_vec();
        pt.extend_from_slice(&self.counter.to_be_bytes());
        let mut buf = vec![0u8; pt.len() + 32];
        buf[16..16 + pt.len()].copy_from_slice(&pt);
        self.sealed_by_p.insert(pt.clone());
        if let Ok(SealOutcome::Sealed { len, .. }) =
            seal(&self.p, self.now, self.p_to_v, &mut buf, pt.len())
        {
            buf.truncate(len);
            if self.genuine.len() < 64 {
                self.genuine.push(buf.clone());
            }
            match two_phase {
                Some(r) => self.to_v_two_phase(self.p_addr, buf, r),
                None => self.to_v(self.p_addr, buf),
            }
        }
    }

    /// V seals through reserve → (rotation) → seal, as the data plane does.
    fn v_sends_two_phase(&mut self, rotate: u8) {
        self.counter += 1;
        let mut pt = b"FROM-V".to_vec();
        pt.extend_from_slice(&self.counter.to_be_bytes());
        let mut buf = vec![0u8; pt.len() + 32];
        buf[16..16 + pt.len()].copy_from_slice(&pt);
        self.sealed_by_v.insert(pt.clone());
        let (job, cipher) = match self.v.reserve_seal(self.now, self.v_to_p, &buf, pt.len()) {
            Ok(SealStart::Reserved { job, cipher }) => (job, cipher),
            _ => return,
        };
        self.rotation(rotate);
        if let Ok(SealOutcome::Sealed { len, .. }) = job.seal(&cipher, &mut buf) {
            buf.truncate(len);
            self.from_v(buf);
        }
    }

    /// An initiation to V with `body`, a valid mac1, and mac2 when we hold a cookie.
    fn forged_initiation(&mut self, from: SocketAddr, body: &[u8], with_mac2: bool) {
        let mut m = vec![1u8, 0, 0, 0];
        m.extend_from_slice(body.get(..4).unwrap_or(&[0, 0, 0, 1]));
        m.extend_from_slice(body.get(4..).unwrap_or(&[]));
        while m.len() < 8 + 96 {
            m.push(m.len() as u8);
        }
        m.extend_from_slice(&[0u8; 32]);
        let (m1, m2) = mac_offsets(m.len());
        let mac1 = Mac1Key::new(&self.v_key).compute(&m[..m1]);
        m[m1..m2].copy_from_slice(&mac1);
        if with_mac2 {
            if let Some(c) = &self.cookie {
                let mac2 = c.mac2(&m[..m2]);
                m[m2..].copy_from_slice(&mac2);
            }
        }
        if from == self.x_addr {
            self.x_mac1 = mac1;
        }
        self.to_v(from, m);
    }

    /// A response to P's pending initiation with `body` and a valid mac1.
    fn forged_response(&mut self, body: &[u8]) {
        let Some(init) = self.p_init.clone() else {
            return;
        };
        let mut m = vec![2u8, 0, 0, 0];
        m.extend_from_slice(body.get(..4).unwrap_or(&[0, 0, 0, 2]));
        m.extend_from_slice(&init[4..8]);
        m.extend_from_slice(body.get(4..).unwrap_or(&[]));
        while m.len() < 12 + 48 {
            m.push(0);
        }
        m.extend_from_slice(&[0u8; 32]);
        let (m1, m2) = mac_offsets(m.len());
        let mac1 = Mac1Key::new(&self.p_key).compute(&m[..m1]);
        m[m1..m2].copy_from_slice(&mac1);
        let mut m = m;
        if let Ok(Incoming::Data { .. }) = receive(&self.p, self.now, self.v_addr, &mut m) {
            panic!("a forged response was taken for data");
        }
    }

    /// A cookie reply to P's pending initiation, sealed like V would (with
    /// the attacker's own cookie secret): P stores a cookie V will refuse.
    fn forged_cookie_reply(&mut self, secret: u8, nonce: u8) {
        let Some(init) = self.p_init.clone() else {
            return;
        };
        let (m1, m2) = mac_offsets(init.len());
        let mac1: [u8; 16] = init[m1..m2].try_into().unwrap();
        let checker = CookieChecker::new(&self.v_key, [secret; 32]);
        let n = [nonce; 24];
        let enc = checker.seal_cookie(&self.p_addr, &mac1, &n);
        let mut m = vec![3u8, 0, 0, 0];
        m.extend_from_slice(&init[4..8]);
        m.extend_from_slice(&n);
        m.extend_from_slice(&enc);
        let _ = receive(&self.p, self.now, self.v_addr, &mut m);
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.v.handle_timeout(self.now);
        self.p.handle_timeout(self.now);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut it = data.iter().copied();
    let seed = u64::from(it.next().unwrap_or(0));
    let mut w = World::new(seed);
    let mut steps = 0;
    while let Some(op) = it.next() {
        steps += 1;
        if steps > 200 {
            break;
        }
        match op % 12 {
            0 => {
                let ms = u64::from(it.next().unwrap_or(0)) * 50;
                w.advance(ms);
            }
            1 => w.p_sends(None),
            2 => {
                let r = it.next().unwrap_or(0);
                w.p_sends(Some(r));
            }
            3 => {
                let r = it.next().unwrap_or(0);
                w.v_sends_two_phase(r);
            }
            4 | 5 => {
                // A valid-mac1 initiation with a fuzzer body, from the
                // attacker's address (mac2 if it holds a cookie), a spoofed
                // unowned address, or P's own address.
                let len = usize::from(it.next().unwrap_or(0));
                let sel = it.next().unwrap_or(0);
                let body: Vec<u8> = it.by_ref().take(len).collect();
                let from = match sel % 3 {
                    0 => w.x_addr,
                    1 => SocketAddr::from(([203, 0, 113, sel], 1000 + u16::from(sel))),
                    _ => w.p_addr,
                };
                w.forged_initiation(from, &body, op % 12 == 5);
            }
            6 => {
                let len = usize::from(it.next().unwrap_or(0));
                let body: Vec<u8> = it.by_ref().take(len).collect();
                w.forged_response(&body);
            }
            7 => {
                let (s, n) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                w.forged_cookie_reply(s, n);
            }
            8 => {
                // The driver's handshake backlog.
                let depth = usize::from(it.next().unwrap_or(0)) * 8;
                let now = w.now;
                w.v.handle_handshake_backlog(now, depth, 1024);
            }
            9 => {
                // Replay or mutate a genuine datagram.
                let idx = usize::from(it.next().unwrap_or(0));
                let x = it.next().unwrap_or(0);
                if let Some(mut d) = w.genuine.get(idx % w.genuine.len().max(1)).cloned() {
                    if x != 0 && !d.is_empty() {
                        let p = usize::from(x) % d.len();
                        d[p] ^= x;
                    }
                    w.to_v(w.p_addr, d);
                }
            }
            10 => {
                let now = w.now;
                if op & 0x10 == 0 {
                    w.v.rekey(now, None);
                } else {
                    w.p.rekey(now, None);
                }
            }
            _ => w.pump(),
        }
        if op & 0x20 == 0 {
            w.pump();
        }
    }
    w.pump();
    vxsec_crypto::x25519::dangerous_seed_handshake_rng(None);
});
