//! Handshake floods against a real agent: a rogue host on the underlay
//! sends initiations with a valid mac1 (anyone who knows a node's public
//! key can) from 150 spoofed source addresses nobody owns, so every reply
//! waits on ARP. The peer's rekeys still complete within 2 s, the overlay
//! keeps carrying traffic, cookie replies stay under their cap, and status
//! shows what happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use vxsec_lab::flood::start_flood;

/// Rekeys `node`'s SA with `peer` and waits (up to 5 s) until its status
/// shows one more rekey; returns how long it took.
fn timed_rekey(lab: &Lab, node: u8, peer: u8) -> Option<Duration> {
    let before = num(&lab.cluster.peer_status(node, peer).unwrap(), "rekeys");
    let t0 = Instant::now();
    lab.cluster.ctl(node, &["rekey"]).expect("vxsec rekey");
    while t0.elapsed() < Duration::from_secs(5) {
        if num(&lab.cluster.peer_status(node, peer).unwrap(), "rekeys") > before {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn peer_rekeys_within_2s_during_a_spoofed_valid_mac1_flood() {
    if !root_or_skip("peer_rekeys_within_2s_during_a_spoofed_valid_mac1_flood") {
        return;
    }
    let mut lab = Lab::new(LabSpec {
        nodes: 2,
        ..LabSpec::default()
    });
    let rogue = lab.topo.add_underlay_host(66).unwrap();
    lab.ping(1, 2, 1).expect("warm-up ping");
    let key2 = lab.status(2)["public_key"].as_str().unwrap().to_owned();
    let secs = 12.0;
    let flood = start_flood(
        &helper_bin(),
        &rogue,
        lab.endpoint(2),
        "spoofed",
        20_000,
        secs,
        &key2,
    )
    .expect("flood starts");
    std::thread::sleep(Duration::from_secs(2));
    let mut took = Vec::new();
    for _ in 0..3 {
        took.push(timed_rekey(&lab, 1, 2));
        std::thread::sleep(Duration::from_millis(500));
    }
    // The overlay carries traffic during the flood.
    let r = lab.tcp(1, 2, 5030, 2_000_000, None);
    let during = lab.status(2);
    let rep = flood.finish(Duration::from_secs(30)).expect("flood ends");
    let after = lab.status(2);
    eprintln!(
        "rekeys took {took:?}; flood {rep:?}; node2 handshake counters {}",
        after["handshake"]
    );
    for t in &took {
        assert!(
            t.is_some_and(|t| t < Duration::from_secs(2)),
            "a rekey during the flood took {took:?}"
        );
    }
    assert!(r.intact(), "TCP over the overlay during the flood: {r:?}");
    assert!(
        rep.sent as f64 > 0.5 * 20_000.0 * secs,
        "flood too slow: {rep:?}"
    );
    let h = &after["handshake"];
    assert!(num(h, "load_engaged") >= 1, "{h}");
    assert!(
        during["handshake"]["under_load"].as_bool() == Some(true),
        "load protection not engaged mid-flood: {}",
        during["handshake"]
    );
    // Cookie replies: at most the global cap per second (+ burst), not one
    // per forged initiation.
    let cap = vxsec::proto::LoadConfig::default().cookie_replies_per_second as f64;
    let sent = num(h, "cookie_replies_sent") as f64;
    assert!(sent <= cap * (rep.secs + 4.0), "{sent} cookie replies: {h}");
    assert!(num(h, "cookie_replies_dropped") > 0, "{h}");
    // Every forged initiation the core saw is a refused handshake message.
    let (refused, _) = drops(&after, "handshake", "auth");
    assert!(
        refused as f64 > 0.5 * rep.sent as f64,
        "drops.handshake {refused} for {} forged initiations",
        rep.sent
    );
    assert!(lab.cluster.is_running(2).unwrap());
}
