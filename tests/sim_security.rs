//! Simulation: what the protocol core refuses — replays, tampering,
//! strangers, suite mismatches, handshake floods — and the liveness
//! machinery (dead peers, roaming).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod sim;

use std::net::SocketAddr;
use std::time::Duration;

use sim::{default_config, receive, seal, two_way, Packet, Sim};
use vxsec::proto::{DropReason, Event, Incoming, SealOutcome};
use vxsec_crypto::suite::Suite;

const INIT: u8 = 1;
const RESP: u8 = 2;
const COOKIE: u8 = 3;
const DATA: u8 = 4;

/// Everything `node` wants to send right now, as packets.
fn drain(sim: &mut Sim, node: usize) -> Vec<Packet> {
    let mut out = vec![0u8; 2048];
    let mut v = Vec::new();
    let now = sim.now;
    while let Some(t) = sim.nodes[node].ep.poll_transmit(now, &mut out) {
        v.push(Packet {
            from: sim.nodes[node].addr,
            to: t.dst,
            bytes: out[..t.len].to_vec(),
            record: t.record,
            tampered: false,
        });
    }
    v
}

/// Feeds every single-bit flip of `pkt` to its destination: all must be refused,
/// and none may make the endpoint answer with anything but a cookie reply.
fn assert_every_flip_refused(sim: &mut Sim, pkt: &Packet) {
    let to = sim.node_of(pkt.to).unwrap();
    for bit in 0..pkt.bytes.len() * 8 {
        let mut b = pkt.bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let now = sim.now;
        let r = receive(&sim.nodes[to].ep, now, pkt.from, &mut b);
        assert!(
            r.is_err(),
            "type {} bit {bit} accepted: {r:?}",
            pkt.bytes[0]
        );
        for out in drain(sim, to) {
            assert_eq!(out.bytes[0], COOKIE, "a flipped packet caused a reply");
        }
    }
}

fn deliver_now(sim: &mut Sim, pkt: &Packet) -> Result<Incoming, DropReason> {
    sim.deliver(pkt.clone()).unwrap()
}

#[test]
fn every_single_bit_flip_is_refused() {
    let mut sim = Sim::new(2, 20, Box::new(default_config));
    // Initiation.
    assert_eq!(sim.app_send(0, 1), Some(SealOutcome::Queued));
    let init = drain(&mut sim, 0).pop().unwrap();
    assert_eq!(init.bytes[0], INIT);
    assert_every_flip_refused(&mut sim, &init);
    assert!(matches!(
        deliver_now(&mut sim, &init),
        Ok(Incoming::Handshake { .. })
    ));
    // Response.
    let resp = drain(&mut sim, 1).pop().unwrap();
    assert_eq!(resp.bytes[0], RESP);
    assert_every_flip_refused(&mut sim, &resp);
    assert!(matches!(
        deliver_now(&mut sim, &resp),
        Ok(Incoming::Handshake { .. })
    ));
    // The queued data message.
    let data = drain(&mut sim, 0).pop().unwrap();
    assert_eq!(data.bytes[0], DATA);
    assert_every_flip_refused(&mut sim, &data);
    assert!(matches!(
        deliver_now(&mut sim, &data),
        Ok(Incoming::Data { .. })
    ));
    // A keepalive in the other direction.
    let peer = sim.peer(1, 0);
    let mut buf = [0u8; 32];
    let now = sim.now;
    let SealOutcome::Sealed { len, dst, record } =
        seal(&sim.nodes[1].ep, now, peer, &mut buf, 0).unwrap()
    else {
        panic!("not sealed")
    };
    let ka = Packet {
        from: sim.nodes[1].addr,
        to: dst,
        bytes: buf[..len].to_vec(),
        record: Some(record),
        tampered: false,
    };
    assert_every_flip_refused(&mut sim, &ka);
    assert!(matches!(
        deliver_now(&mut sim, &ka),
        Ok(Incoming::Keepalive { .. })
    ));

    // Cookie reply: a responder that always demands mac2.
    let mut sim = Sim::new(
        2,
        21,
        Box::new(|k, s| {
            let mut c = default_config(k, s);
            c.load.handshakes_per_second_before_cookies = 0;
            c
        }),
    );
    sim.app_send(0, 1);
    let init = drain(&mut sim, 0).pop().unwrap();
    assert_eq!(deliver_now(&mut sim, &init), Err(DropReason::RateLimited));
    let cookie = drain(&mut sim, 1).pop().unwrap();
    assert_eq!(cookie.bytes[0], COOKIE);
    assert_every_flip_refused(&mut sim, &cookie);
    assert!(matches!(
        deliver_now(&mut sim, &cookie),
        Ok(Incoming::Handshake { .. })
    ));
    let st = sim.nodes[0].ep.peer_status(sim.peer(0, 1)).unwrap();
    assert_eq!(st.stats.cookies_received, 1);
}

#[test]
fn replayed_initiations_and_data_are_refused() {
    let mut sim = Sim::new(2, 22, Box::new(default_config));
    sim.capture = Some(Vec::new());
    let mut traffic = two_way(&[(0, 1)]);
    let until = sim.at(2.0);
    sim.run(until, Some(Duration::from_millis(100)), &mut traffic);
    let now = sim.now;
    sim.nodes[0].ep.rekey(now, None);
    let until = sim.at(4.0);
    sim.run(until, Some(Duration::from_millis(100)), &mut traffic);
    let cap = sim.capture.take().unwrap();
    let inits: Vec<&Packet> = cap
        .iter()
        .filter(|p| p.bytes[0] == INIT && p.from == sim.nodes[0].addr)
        .collect();
    assert!(inits.len() >= 2);
    for init in inits {
        assert_eq!(
            deliver_now(&mut sim, init),
            Err(DropReason::StaleInitiation)
        );
        assert!(
            drain(&mut sim, 1).is_empty(),
            "a replayed initiation was answered"
        );
    }
    let data = cap
        .iter()
        .filter(|p| p.bytes[0] == DATA && p.bytes.len() > 32)
        .rfind(|p| p.record.is_some_and(|r| sim.ledger.delivered.contains(&r)))
        .unwrap();
    assert_eq!(deliver_now(&mut sim, data), Err(DropReason::Replay));
    let resp = cap.iter().find(|p| p.bytes[0] == RESP).unwrap();
    assert_eq!(deliver_now(&mut sim, resp), Err(DropReason::UnknownSpi));
    let replays: u64 = sim.nodes.iter().map(|n| n.ep.stats().drops.replay).sum();
    assert!(replays >= 3, "{replays}");
    sim.assert_clean();
}

#[test]
fn unknown_static_key_is_refused() {
    let mut sim = Sim::new(3, 23, Box::new(default_config));
    let stranger = sim.nodes[2].key;
    assert!(sim.nodes[1].ep.remove_peer(&stranger));
    sim.capture = Some(Vec::new());
    let until = sim.at(3.0);
    sim.run(
        until,
        Some(Duration::from_millis(100)),
        &mut |s: &mut Sim| {
            s.app_send(2, 1);
        },
    );
    let cap = sim.capture.take().unwrap();
    assert!(cap
        .iter()
        .any(|p| p.from == sim.nodes[2].addr && p.bytes[0] == INIT));
    assert!(
        !cap.iter().any(|p| p.from == sim.nodes[1].addr),
        "node 1 answered a stranger"
    );
    assert!(sim.nodes[1].ep.stats().drops.auth >= 2);
    assert!(sim.ledger.accepted.is_empty());
}

#[test]
fn suite_mismatch_is_reported_without_retry_storm() {
    let mut sim = Sim::new(
        2,
        24,
        Box::new(|k, s| {
            let mut c = default_config(k, s);
            if s % 1000 == 0 {
                c.suite = Suite::Aes256Gcm;
            }
            c
        }),
    );
    let mut traffic = two_way(&[(0, 1)]);
    let until = sim.at(30.0);
    sim.run(until, Some(Duration::from_millis(50)), &mut traffic);
    let mismatch = |sim: &Sim, node: usize| {
        sim.count_events(node, |e| matches!(e, Event::SuiteMismatch { .. }))
    };
    assert_eq!(mismatch(&sim, 0), 1);
    assert_eq!(mismatch(&sim, 1), 1);
    let e = sim
        .events
        .iter()
        .find(|(_, n, e)| *n == 0 && matches!(e, Event::SuiteMismatch { .. }))
        .unwrap();
    assert!(matches!(
        e.2,
        Event::SuiteMismatch {
            ours: Suite::Aes256Gcm,
            theirs: Some(Suite::ChaCha20Poly1305),
            ..
        }
    ));
    for i in 0..2 {
        let st = sim.nodes[i].ep.peer_status(sim.peer(i, 1 - i)).unwrap();
        assert!(
            st.stats.initiations_sent <= 1,
            "node {i}: {} initiations",
            st.stats.initiations_sent
        );
        assert!(!st.established);
    }
    assert!(sim.ledger.accepted.is_empty());
    assert!(sim.ledger.send_errors > 0, "seal reports the paused peer");
}

#[test]
fn handshake_flood_engages_cookies_while_data_flows() {
    let mut sim = Sim::new(
        3,
        25,
        Box::new(|k, s| {
            let mut c = default_config(k, s);
            c.rotation.rekey_after_seconds = 5;
            c.load.handshakes_per_second_before_cookies = 20;
            c
        }),
    );
    let stranger = sim.nodes[2].key;
    assert!(sim.nodes[1].ep.remove_peer(&stranger));
    // A valid-mac1 initiation for node 1 from a key it does not know.
    sim.app_send(2, 1);
    let flood = drain(&mut sim, 2).pop().unwrap();
    assert_eq!(flood.bytes[0], INIT);
    let mut traffic = two_way(&[(0, 1)]);
    let tick = Some(Duration::from_millis(10));
    let until = sim.at(2.0);
    sim.run(until, tick, &mut traffic);
    let rekeys_before = sim.count_events(0, |e| matches!(e, Event::Rekeyed { .. }));
    let processed_before = sim.nodes[1].ep.stats().initiations_processed;
    let mut n = 0u32;
    let until = sim.at(22.0);
    sim.run(until, tick, &mut |s: &mut Sim| {
        traffic(s);
        for _ in 0..10 {
            n += 1;
            let src: SocketAddr = format!(
                "192.0.{}.{}:{}",
                (n / 250) % 250,
                n % 250 + 1,
                1024 + n % 60000
            )
            .parse()
            .unwrap();
            let mut p = flood.clone();
            p.from = src;
            s.send(p);
        }
    });
    let until = sim.now + Duration::from_secs(1);
    sim.run(until, None, &mut |_| {});
    let st = sim.nodes[1].ep.stats();
    assert!(st.load_engaged >= 1);
    assert!(
        st.cookie_replies_sent > 15_000,
        "{} cookie replies",
        st.cookie_replies_sent
    );
    // Only the first handshakes of the flood, and the legitimate ones, cost a DH.
    assert!(
        st.initiations_processed - processed_before < 60,
        "{} DH",
        st.initiations_processed - processed_before
    );
    // The legitimate peer kept rotating (with a cookie) and lost nothing.
    let peer = sim.nodes[0].ep.peer_status(sim.peer(0, 1)).unwrap();
    assert!(peer.stats.cookies_received >= 1);
    let rekeys = sim.count_events(0, |e| matches!(e, Event::Rekeyed { .. })) - rekeys_before;
    assert!(rekeys >= 3, "{rekeys} rotations during the flood");
    assert_eq!(
        sim.ledger.accepted.len() as u64,
        sim.ledger.sent - 1,
        "all legitimate data delivered"
    );
    sim.assert_clean();
}

#[test]
fn dead_peer_is_detected_retries_are_bounded_and_recovery_follows() {
    let mut sim = Sim::new(2, 26, Box::new(default_config));
    let mut traffic = two_way(&[(0, 1)]);
    let tick = Some(Duration::from_millis(100));
    let until = sim.at(2.0);
    sim.run(until, tick, &mut traffic);
    sim.partitioned.insert((0, 1));
    sim.partitioned.insert((1, 0));
    let sent_before = sim.nodes[0]
        .ep
        .peer_status(sim.peer(0, 1))
        .unwrap()
        .stats
        .initiations_sent;
    let until = sim.at(90.0);
    sim.run(until, tick, &mut |s: &mut Sim| {
        s.app_send(0, 1);
    });
    assert!(sim.count_events(0, |e| matches!(e, Event::PeerUnreachable { .. })) >= 1);
    let st = sim.nodes[0].ep.peer_status(sim.peer(0, 1)).unwrap();
    let retries = st.stats.initiations_sent - sent_before;
    assert!((8..=20).contains(&retries), "{retries} initiations in 88 s");
    sim.partitioned.clear();
    let healed = sim.now;
    let accepted = sim.ledger.accepted.len();
    let until = healed + Duration::from_secs(3);
    sim.run(until, tick, &mut traffic);
    assert!(
        sim.ledger.accepted.len() > accepted + 20,
        "no recovery after the partition"
    );
    sim.assert_clean();
}

#[test]
fn roaming_follows_authenticated_packets_only() {
    let mut sim = Sim::new(2, 27, Box::new(default_config));
    let mut traffic = two_way(&[(0, 1)]);
    let tick = Some(Duration::from_millis(50));
    let until = sim.at(1.0);
    sim.run(until, tick, &mut traffic);
    let peer = sim.peer(1, 0);
    // Garbage with a live SPI from elsewhere does not move the endpoint.
    let spi = sim.nodes[1]
        .ep
        .peer_status(peer)
        .unwrap()
        .current
        .unwrap()
        .local_spi;
    let mut junk = vec![0u8; 80];
    junk[0] = DATA;
    junk[4..8].copy_from_slice(&spi.to_be_bytes());
    junk[8..16].copy_from_slice(&1_000_000u64.to_be_bytes());
    let evil: SocketAddr = "203.0.113.9:4444".parse().unwrap();
    let now = sim.now;
    assert_eq!(
        receive(&sim.nodes[1].ep, now, evil, &mut junk),
        Err(DropReason::Auth)
    );
    assert_eq!(
        sim.nodes[1].ep.peer_status(peer).unwrap().endpoint,
        Some(sim.nodes[0].addr)
    );
    // Node 0 moves (NAT rebinding); its next authenticated packet moves node 1's view.
    let new_addr: SocketAddr = "10.9.9.9:40000".parse().unwrap();
    sim.nodes[0].addr = new_addr;
    let until = sim.at(2.0);
    sim.run(until, tick, &mut traffic);
    assert_eq!(
        sim.nodes[1].ep.peer_status(peer).unwrap().endpoint,
        Some(new_addr)
    );
    assert_eq!(
        sim.count_events(
            1,
            |e| matches!(e, Event::Roamed { to, .. } if *to == new_addr)
        ),
        1
    );
    let accepted = sim.ledger.accepted.len();
    let until = sim.at(3.0);
    sim.run(until, tick, &mut traffic);
    assert!(
        sim.ledger.accepted.len() >= accepted + 38,
        "traffic both ways after roaming"
    );
    sim.assert_clean();
}
