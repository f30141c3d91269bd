//! Tests of the responder's DoS rules: no per-source limit unless under
//! load, and then only for sources proven by mac2; cookie replies capped
//! globally and per source (a peer's endpoint skips both); the
//! backlog signal; what `handshake_drops` counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use core::time::Duration;
use std::net::SocketAddr;
use std::time::Instant;

use vxsec_crypto::cookie::{open_cookie_reply, Cookie, Mac1Key};
use vxsec_crypto::key::PrivateKey;

use super::super::config::{EndpointConfig, LoadConfig, PeerConfig};
use super::super::stats::DropReason;
use super::super::testing::{A, B};
use super::super::{Endpoint, Event, Incoming, PeerId};
use crate::wire::outer::{mac_offsets, MSG_COOKIE_REPLY, MSG_INITIATION};

/// Two endpoints configured with each other, b with `load`.
fn pair_with(load: LoadConfig) -> (Endpoint, Endpoint, PeerId, Instant) {
    let now = Instant::now();
    let unix = Duration::from_secs(1_700_000_000);
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let a = Endpoint::try_new(EndpointConfig::new(ka, "t"), now, unix).unwrap();
    let mut cb = EndpointConfig::new(kb, "t");
    cb.load = load;
    let b = Endpoint::try_new(cb, now, unix).unwrap();
    let ab = a
        .add_peer(now, PeerConfig::new(pb, Some(B.parse().unwrap())))
        .unwrap();
    b.add_peer(now, PeerConfig::new(pa, Some(A.parse().unwrap())))
        .unwrap();
    (a, b, ab, now)
}

/// Everything `x` wants to send now.
fn drain(x: &Endpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = vec![0u8; 2048];
    let mut v = Vec::new();
    while let Some(t) = x.poll_transmit(now, &mut out) {
        v.push((t.dst, out[..t.len].to_vec()));
    }
    v
}

/// a's next initiation to b (a retry if one is pending) and when it left.
fn initiation(a: &Endpoint, ab: PeerId, now: Instant) -> (Vec<u8>, Instant) {
    a.rekey(now, Some(ab));
    let mut sent = drain(a, now);
    let mut at = now;
    if sent.is_empty() {
        at = a.poll_timeout().unwrap().max(now);
        a.handle_timeout(at);
        sent = drain(a, at);
    }
    let (_, m) = sent.pop().unwrap();
    assert_eq!(m[0], MSG_INITIATION);
    (m, at)
}

/// The cookie in a cookie reply to `init` from b, as its receiver opens it.
fn open_cookie(b: &Endpoint, init: &[u8], reply: &[u8]) -> Cookie {
    let (m1, m2) = mac_offsets(init.len());
    let mac1: [u8; 16] = init[m1..m2].try_into().unwrap();
    let nonce: [u8; 24] = reply[8..32].try_into().unwrap();
    let enc: [u8; 32] = reply[32..64].try_into().unwrap();
    open_cookie_reply(&b.public_key(), &mac1, &nonce, &enc).unwrap()
}

/// A forged initiation that also carries a valid mac2 under `cookie`.
fn forged_with_mac2(template: &[u8], b: &Endpoint, k: u32, cookie: &Cookie) -> Vec<u8> {
    let mut m = forged(template, b, k);
    let (_, m2) = mac_offsets(m.len());
    let mac2 = cookie.mac2(&m[..m2]);
    m[m2..].copy_from_slice(&mac2);
    m
}

/// What an attacker who knows b's public key can make: an initiation with
/// a random body and a valid mac1 (no mac2).
fn forged(template: &[u8], b: &Endpoint, k: u32) -> Vec<u8> {
    let mut m = template.to_vec();
    let (m1, m2) = mac_offsets(m.len());
    for (j, byte) in m[8..m1].iter_mut().enumerate() {
        *byte = (k as usize * 31 + j * 7) as u8;
    }
    let mac1 = Mac1Key::new(&b.public_key()).compute(&m[..m1]);
    m[m1..m2].copy_from_slice(&mac1);
    m[m2..].fill(0);
    m
}

fn load(threshold: u32) -> LoadConfig {
    LoadConfig {
        handshakes_per_second_before_cookies: threshold,
        ..LoadConfig::default()
    }
}

#[test]
fn spoofing_a_peers_address_below_load_does_not_lock_it_out() {
    let (a, b, ab, now) = pair_with(load(200));
    let (genuine, _) = initiation(&a, ab, now);
    let from: SocketAddr = A.parse().unwrap();
    // 150 forged initiations "from" a, below the load threshold: each costs
    // a (failing) DH, none may spend a's handshake budget.
    for k in 0..150 {
        let mut f = forged(&genuine, &b, k);
        assert_eq!(b.handle_handshake(now, from, &mut f), Err(DropReason::Auth));
    }
    assert!(!b.under_load(now));
    assert_eq!(b.stats().drops.rate_limited, 0);
    let mut g = genuine.clone();
    let r = b.handle_handshake(now, from, &mut g);
    assert!(
        matches!(r, Ok(Incoming::Handshake { peer: Some(_) })),
        "{r:?}"
    );
    assert!(b.peers().next().unwrap().next.is_some(), "responded");
}

#[test]
fn under_load_only_mac2_proven_sources_are_rate_limited() {
    let (a, b, ab, now) = pair_with(load(0));
    let from: SocketAddr = A.parse().unwrap();
    // Under load, no mac2: a (capped) cookie reply, no DH.
    let (mut g, _) = initiation(&a, ab, now);
    let template = g.clone();
    assert_eq!(
        b.handle_handshake(now, from, &mut g),
        Err(DropReason::RateLimited)
    );
    assert!(b.under_load(now));
    assert_eq!(b.stats().initiations_processed, 0);
    let (to, reply) = drain(&b, now).pop().unwrap();
    assert_eq!((to, reply[0]), (from, MSG_COOKIE_REPLY));
    // Whoever receives at `from` now proves that address with mac2: its
    // initiations are processed up to the per-source burst, then limited.
    let cookie = open_cookie(&b, &template, &reply);
    let burst = LoadConfig::default().per_source_burst;
    let mut processed = 0;
    for k in 0..burst + 5 {
        let mut f = forged_with_mac2(&template, &b, k, &cookie);
        match b.handle_handshake(now, from, &mut f) {
            Err(DropReason::Auth) => processed += 1,
            r => assert_eq!(r, Err(DropReason::RateLimited)),
        }
    }
    assert_eq!(processed, burst, "the rest were rate-limited");
    assert_eq!(b.stats().drops.rate_limited, 1 + 5);
    assert_eq!(b.stats().initiations_processed, u64::from(burst));
    // Another source is not affected by that bucket.
    let other: SocketAddr = "192.0.2.77:1".parse().unwrap();
    let _ = b.handle_handshake(now, other, &mut forged(&template, &b, 99));
    let (_, reply) = drain(&b, now).pop().unwrap();
    let cookie = open_cookie(&b, &forged(&template, &b, 99), &reply);
    let mut f = forged_with_mac2(&template, &b, 100, &cookie);
    assert_eq!(
        b.handle_handshake(now, other, &mut f),
        Err(DropReason::Auth)
    );
}

#[test]
fn cookie_replies_are_capped_but_a_peer_still_gets_its_own() {
    let cfg = LoadConfig {
        cookie_replies_per_second: 50,
        ..load(0)
    };
    let (a, b, ab, now) = pair_with(cfg);
    let (template, _) = initiation(&a, ab, now);
    // A flood from 5000 spoofed, unowned addresses.
    for k in 0..5000u32 {
        let src = SocketAddr::from(([198, 18, (k >> 8) as u8, k as u8], 1000));
        let mut f = forged(&template, &b, k);
        assert_eq!(
            b.handle_handshake(now, src, &mut f),
            Err(DropReason::RateLimited)
        );
    }
    let st = b.stats();
    assert_eq!(st.cookie_replies_sent, 50, "global cap");
    assert_eq!(st.cookie_replies_dropped, 5000 - 50);
    assert_eq!(drain(&b, now).len(), 50);
    // The same address over and over: its per-source burst, no more.
    let one: SocketAddr = "203.0.113.7:9".parse().unwrap();
    let later = now + Duration::from_secs(1);
    for k in 0..100 {
        let mut f = forged(&template, &b, k);
        let _ = b.handle_handshake(later, one, &mut f);
    }
    let burst = u64::from(LoadConfig::default().cookie_replies_per_source_burst);
    assert_eq!(drain(&b, later).len() as u64, burst);
    // The global bucket is empty again; the peer's own initiation from its
    // endpoint still gets a cookie, and the handshake completes with it.
    for k in 0..200u32 {
        let src = SocketAddr::from(([198, 19, 0, k as u8], 1000));
        let _ = b.handle_handshake(later, src, &mut forged(&template, &b, k));
    }
    drain(&b, later);
    let from: SocketAddr = A.parse().unwrap();
    let (mut g, t) = initiation(&a, ab, later);
    assert!(b.handle_handshake(t, from, &mut g).is_err());
    let (to, mut cookie) = drain(&b, t).pop().expect("a cookie for the peer");
    assert_eq!((to, cookie[0]), (from, MSG_COOKIE_REPLY));
    assert!(a
        .handle_handshake(t, B.parse().unwrap(), &mut cookie)
        .is_ok());
    assert_eq!(a.stats().cookies_received, 1);
    // Its retry carries mac2 and is answered.
    let (mut g, t) = initiation(&a, ab, t);
    assert!(matches!(
        b.handle_handshake(t, from, &mut g),
        Ok(Incoming::Handshake { peer: Some(_) })
    ));
    let (_, mut resp) = drain(&b, t).pop().unwrap();
    assert!(a.handle_handshake(t, B.parse().unwrap(), &mut resp).is_ok());
    assert!(a.peers().next().unwrap().established);
}

#[test]
fn backlog_engages_load_and_both_transitions_are_reported() {
    let (a, b, ab, now) = pair_with(load(1_000_000));
    b.handle_handshake_backlog(now, 10, 1024);
    assert!(!b.under_load(now));
    b.handle_handshake_backlog(now, 1024 / 8, 1024);
    assert!(b.under_load(now));
    assert_eq!(
        b.poll_event(),
        Some(Event::LoadProtection { engaged: true })
    );
    assert_eq!(b.stats().load_engaged, 1);
    // Under load a plain initiation gets a cookie, no DH.
    let (mut g, _) = initiation(&a, ab, now);
    assert_eq!(
        b.handle_handshake(now, A.parse().unwrap(), &mut g),
        Err(DropReason::RateLimited)
    );
    // The timer that ends it is scheduled; at it, the end is reported.
    let end = b.poll_timeout().unwrap();
    assert!(end <= now + Duration::from_secs(1));
    b.handle_timeout(end);
    assert!(!b.under_load(end));
    assert_eq!(
        b.poll_event(),
        Some(Event::LoadProtection { engaged: false })
    );
}

#[test]
fn handshake_drops_count_refused_handshake_messages_only() {
    let (a, b, ab, now) = pair_with(load(200));
    let from: SocketAddr = A.parse().unwrap();
    let (genuine, _) = initiation(&a, ab, now);
    // Bad mac1.
    let mut bad = genuine.clone();
    bad[10] ^= 1;
    assert_eq!(
        b.handle_handshake(now, from, &mut bad),
        Err(DropReason::Auth)
    );
    // Accepted, then replayed.
    assert!(b.handle_handshake(now, from, &mut genuine.clone()).is_ok());
    assert_eq!(
        b.handle_handshake(now, from, &mut genuine.clone()),
        Err(DropReason::StaleInitiation)
    );
    // Not handshake messages: garbage and unknown-SPI data.
    let mut junk = vec![9u8, 0, 0, 0];
    let _ = b.precheck_datagram(now, from, &mut junk);
    let mut data = vec![0u8; 48];
    data[0] = 4;
    let _ = b.precheck_datagram(now, from, &mut data);
    let st = b.stats();
    assert_eq!(st.handshake_drops, 2);
    assert_eq!((st.drops.auth, st.drops.replay), (1, 1));
    assert_eq!(st.drops.malformed + st.drops.unknown_spi, 2);
}
