//! Simulation: scheduled rotation without loss (lossless and lossy
//! networks), simultaneous rekeys, peer restart, packet limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod sim;

use std::time::Duration;

use sim::{default_config, two_way, Sim};
use vxsec::proto::{Event, SealOutcome};
use vxsec_crypto::key::PrivateKey;

fn rekey_every_second(key: PrivateKey, seed: u64) -> vxsec::proto::EndpointConfig {
    let mut c = default_config(key, seed);
    c.rotation.rekey_after_seconds = 1;
    c
}

fn rekeys(sim: &Sim, node: usize) -> Vec<std::time::Instant> {
    sim.events
        .iter()
        .filter(|(_, n, e)| *n == node && matches!(e, Event::Rekeyed { .. }))
        .map(|(t, _, _)| *t)
        .collect()
}

/// Runs two-way traffic until `node` has seen `n` rotations, then drains.
fn rotate_until(sim: &mut Sim, n: usize, tick: Duration, limit_secs: f64) {
    let mut traffic = two_way(&[(0, 1)]);
    while rekeys(sim, 0).len() < n {
        let until = sim.now + Duration::from_secs(20);
        sim.run(until, Some(tick), &mut traffic);
        assert!(
            sim.elapsed().as_secs_f64() < limit_secs,
            "only {} rotations",
            rekeys(sim, 0).len()
        );
    }
    // Let everything in flight land.
    let until = sim.now + Duration::from_secs(2);
    sim.run(until, None, &mut |_| {});
}

fn assert_sa_limits_respected(sim: &Sim, reject_after: Duration, reject_packets: u64) {
    for (fp, (first, last, max_counter)) in &sim.ledger.key_use {
        assert!(
            *last - *first <= reject_after,
            "key {fp:?} used for {:?}",
            *last - *first
        );
        assert!(
            *max_counter < reject_packets,
            "key {fp:?} counter {max_counter}"
        );
    }
}

#[test]
fn thousand_rotations_lossless_exactly_once() {
    let mut sim = Sim::new(2, 1, Box::new(rekey_every_second));
    rotate_until(&mut sim, 1000, Duration::from_millis(40), 1200.0);
    sim.assert_clean();
    let l = &sim.ledger;
    assert_eq!(l.send_errors, 0);
    assert_eq!(
        l.accepted.len() as u64,
        l.sent,
        "every packet delivered exactly once"
    );
    for n in &sim.nodes {
        assert_eq!(n.ep.stats().drops, Default::default(), "no drops at all");
    }
    assert!(rekeys(&sim, 1).len() >= 1000);
    // Rotations keep to the schedule: 1 s minus up to 10 % jitter, plus a round trip.
    let r = rekeys(&sim, 0);
    for w in r.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(880) && gap <= Duration::from_millis(1100),
            "gap {gap:?}"
        );
    }
    assert_sa_limits_respected(&sim, Duration::from_secs(61), u64::MAX);
}

#[test]
fn thousand_rotations_with_loss_reordering_duplication() {
    let mut sim = Sim::new(2, 2, Box::new(rekey_every_second));
    sim.faults.loss = 0.05;
    sim.faults.jitter = Duration::from_millis(30);
    sim.faults.duplicate = 0.01;
    rotate_until(&mut sim, 1000, Duration::from_millis(40), 1500.0);
    sim.assert_clean();
    let missing = sim.delivered_but_not_accepted();
    assert!(
        missing.is_empty(),
        "{} delivered packets not accepted: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(sim.ledger.send_errors, 0);
    // Loss is the network's: well over 90 % of what was sent arrived.
    assert!(sim.ledger.accepted.len() as f64 > sim.ledger.sent as f64 * 0.93);
    let r = rekeys(&sim, 0);
    let gaps: Vec<Duration> = r.windows(2).map(|w| w[1] - w[0]).collect();
    // Never early; a lost handshake message costs one retransmission.
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(850)),
        "early rotation"
    );
    let on_time = gaps
        .iter()
        .filter(|g| **g <= Duration::from_millis(1150))
        .count();
    assert!(
        on_time as f64 >= gaps.len() as f64 * 0.8,
        "{on_time}/{} on schedule",
        gaps.len()
    );
    assert!(
        gaps.iter().all(|g| *g < Duration::from_secs(10)),
        "stalled rotation"
    );
    assert_sa_limits_respected(&sim, Duration::from_secs(61), u64::MAX);
}

/// Receive phases far apart, as on a busy multi-worker node: a third of the
/// data messages are committed only after the rest of their step (other
/// datagrams, handshakes completing, SAs rotating). Rotation stays
/// exactly-once for what is committed and never reuses a nonce; a message
/// whose SA was retired before its commit is dropped and counted, not
/// accepted on another SA.
#[test]
fn rotations_with_sas_retired_between_the_receive_phases() {
    let mut sim = Sim::new(2, 4, Box::new(rekey_every_second));
    sim.faults.phase_gap = 0.3;
    sim.faults.jitter = Duration::from_millis(30);
    sim.faults.duplicate = 0.02;
    rotate_until(&mut sim, 200, Duration::from_millis(40), 400.0);
    sim.assert_clean();
    assert!(
        sim.gap_commits > 1000,
        "{} commits after a gap",
        sim.gap_commits
    );
    let missing = sim.delivered_but_not_accepted().len() as u64;
    let retired: u64 = sim.nodes.iter().map(|n| n.ep.stats().drops.expired).sum();
    assert!(
        missing <= retired,
        "{missing} delivered packets lost, only {retired} counted as retired"
    );
    assert!(sim.ledger.accepted.len() as f64 > sim.ledger.sent as f64 * 0.95);
}

#[test]
fn hundred_simultaneous_rekeys_converge_without_loss() {
    let mut sim = Sim::new(2, 3, Box::new(default_config));
    let mut traffic = two_way(&[(0, 1)]);
    let tick = Some(Duration::from_millis(10));
    let until = sim.at(1.0);
    sim.run(until, tick, &mut traffic);
    for round in 0..100 {
        let now = sim.now;
        sim.nodes[0].ep.rekey(now, None);
        sim.nodes[1].ep.rekey(now, None);
        let until = sim.now + Duration::from_millis(500);
        sim.run(until, tick, &mut traffic);
        if rekeys(&sim, 0).len() != round + 1 {
            for e in &sim.events {
                eprintln!("{:?} {} {:?}", e.0 - sim.epoch, e.1, e.2);
            }
        }
        assert_eq!(
            rekeys(&sim, 0).len(),
            round + 1,
            "round {round} did not converge"
        );
        assert_eq!(rekeys(&sim, 1).len(), round + 1);
    }
    let until = sim.now + Duration::from_secs(1);
    sim.run(until, None, &mut |_| {});
    sim.assert_clean();
    assert_eq!(sim.ledger.accepted.len() as u64, sim.ledger.sent);
    for i in 0..2 {
        let st = sim.nodes[i].ep.peer_status(sim.peer(i, 1 - i)).unwrap();
        assert!(
            st.stats.collisions >= 100,
            "node {i}: {} collisions",
            st.stats.collisions
        );
        assert_eq!(sim.nodes[i].ep.stats().drops, Default::default());
    }
}

#[test]
fn restart_recovers_within_one_retry_interval() {
    let mut sim = Sim::new(
        2,
        4,
        Box::new(|k, s| {
            let mut c = default_config(k, s);
            c.rotation.rekey_after_seconds = 10;
            c
        }),
    );
    let mut traffic = two_way(&[(0, 1)]);
    let tick = Some(Duration::from_millis(20));
    let until = sim.at(30.0);
    sim.run(until, tick, &mut traffic);
    let before = sim.nodes[0].ep.peer_status(sim.peer(0, 1)).unwrap();
    let old_keys: Vec<[u8; 8]> = [&before.current, &before.previous, &before.next]
        .into_iter()
        .flatten()
        .map(|s| s.key_fingerprint)
        .collect();
    assert!(!old_keys.is_empty());
    let restart_at = sim.now;
    sim.restart(1);
    sim.events.clear();
    let accepted_before = sim.ledger.accepted.clone();
    let until = restart_at + Duration::from_secs(1);
    sim.run(until, tick, &mut traffic);
    // Back within one retry interval (1 s): new data accepted both ways.
    let fresh = |a: usize, b: usize| {
        sim.ledger
            .accepted
            .keys()
            .filter(|(s, d, _)| *s == a && *d == b)
            .filter(|k| !accepted_before.contains_key(k))
            .count()
    };
    assert!(
        fresh(0, 1) > 10 && fresh(1, 0) > 10,
        "tunnel not back: {} / {}",
        fresh(0, 1),
        fresh(1, 0)
    );
    // Then run past the old SAs' reject time.
    let until = restart_at + Duration::from_secs(75);
    sim.run(until, tick, &mut traffic);
    let after = sim.nodes[0].ep.peer_status(sim.peer(0, 1)).unwrap();
    for s in [&after.current, &after.previous, &after.next]
        .into_iter()
        .flatten()
    {
        assert!(
            !old_keys.contains(&s.key_fingerprint),
            "old SA still installed"
        );
    }
    for k in &old_keys {
        if let Some((_, last, _)) = sim.ledger.key_use.get(k) {
            assert!(
                *last <= restart_at + Duration::from_secs(1),
                "old key used after recovery"
            );
        }
    }
    assert!(sim.nodes[0].ep.live_spis() <= 3);
    sim.assert_clean();
}

#[test]
fn packet_limit_rekeys_before_and_refuses_at_hard_limit() {
    let mut sim = Sim::new(
        2,
        5,
        Box::new(|k, s| {
            let mut c = default_config(k, s);
            c.rotation.rekey_after_packets = Some(100);
            c.rotation.reject_after_packets = Some(150);
            c
        }),
    );
    let mut traffic = two_way(&[(0, 1)]);
    let tick = Some(Duration::from_millis(5));
    let until = sim.at(10.0);
    sim.run(until, tick, &mut traffic);
    // ~2,000 packets each way: many packet-triggered rotations, none lost.
    let until = sim.now + Duration::from_secs(1);
    sim.run(until, None, &mut |_| {});
    assert!(
        rekeys(&sim, 0).len() >= 15,
        "{} rotations",
        rekeys(&sim, 0).len()
    );
    assert_eq!(sim.ledger.accepted.len() as u64, sim.ledger.sent);
    for (_, _, max) in sim.ledger.key_use.values() {
        assert!(*max < 150);
    }
    // Now cut the network: the rekey cannot complete, the SA runs out.
    sim.partitioned.insert((0, 1));
    sim.partitioned.insert((1, 0));
    let peer = sim.peer(0, 1);
    let mut queued = 0;
    for _ in 0..400 {
        match sim.app_send(0, 1) {
            Some(SealOutcome::Queued) => queued += 1,
            Some(SealOutcome::Sealed { record, .. }) => assert!(record.counter < 150),
            None => {}
        }
    }
    assert!(queued > 0, "sealing must stop at the hard limit");
    let st = sim.nodes[0].ep.peer_status(peer).unwrap();
    assert!(st.handshake_pending);
    assert!(
        sim.ledger.send_errors > 0,
        "bounded queue refuses the overflow"
    );
    for (_, _, max) in sim.ledger.key_use.values() {
        assert!(*max < 150, "sealed past the reject limit");
    }
    // Heal: the handshake completes and the queue drains onto the new SA.
    sim.partitioned.clear();
    let until = sim.now + Duration::from_secs(3);
    sim.run(until, None, &mut |_| {});
    let st = sim.nodes[0].ep.peer_status(peer).unwrap();
    assert_eq!(st.queued_packets, 0);
    assert!(st.current.unwrap().traffic.tx_packets >= 64);
    sim.assert_clean();
}

/// Node 0 rolls its static key mid-stream; the store tells node 1 the new
/// key 300 ms later and node 2 two seconds later (node 2 re-keys with the
/// old key meanwhile); the old key retires 10 s after the rotation. Every packet the network delivered is accepted
/// exactly once, and every peer ends up with handshakes under the new key.
fn static_key_rotation(loss: f64, seed: u64) -> Sim {
    let mut sim = Sim::new(3, seed, Box::new(default_config));
    sim.faults.loss = loss;
    sim.faults.jitter = Duration::from_millis(5);
    let mut traffic = two_way(&[(0, 1), (0, 2), (1, 2)]);
    let tick = Duration::from_millis(20);
    let run = |sim: &mut Sim, secs: f64, traffic: &mut dyn FnMut(&mut Sim)| {
        let until = sim.now + Duration::from_secs_f64(secs);
        sim.run(until, Some(tick), traffic);
    };
    run(&mut sim, 3.0, &mut traffic);
    let old = sim.nodes[0].key;
    let secret = [42u8; 32];
    let new = PrivateKey::from_bytes(secret).public_key();
    let rotated = sim.now;
    let replaced = sim.nodes[0]
        .ep
        .rotate_identity(rotated, PrivateKey::from_bytes(secret))
        .unwrap();
    assert_eq!(replaced, old);
    sim.nodes[0].key = new;
    run(&mut sim, 0.3, &mut traffic);
    let now = sim.now;
    assert_eq!(
        sim.nodes[1].ep.update_peer_key(now, &old, new),
        Ok(sim.peer(1, 0))
    );
    // Node 2 still knows only the old key and re-keys with it: the
    // previous identity answers.
    let now = sim.now;
    let (hs_before, p20) = (sim.nodes[2].ep.stats().handshakes, sim.peer(2, 0));
    sim.nodes[2].ep.rekey(now, Some(p20));
    run(&mut sim, 2.0, &mut traffic);
    assert!(
        sim.nodes[2].ep.stats().handshakes > hs_before,
        "old key answered"
    );
    let now = sim.now;
    assert_eq!(
        sim.nodes[2].ep.update_peer_key(now, &old, new),
        Ok(sim.peer(2, 0))
    );
    let retire_at = rotated + Duration::from_secs(10);
    let left = retire_at.saturating_duration_since(sim.now).as_secs_f64();
    run(&mut sim, left, &mut traffic);
    assert!(sim.nodes[0].ep.retire_previous_identity());
    // Past node 0's own rotation rekey (at most 15 s after the rotation).
    run(&mut sim, 10.0, &mut traffic);
    let until = sim.now + Duration::from_secs(2);
    sim.run(until, None, &mut |_| {});
    sim.assert_clean();
    let missing = sim.delivered_but_not_accepted();
    assert!(
        missing.is_empty(),
        "{} delivered packets not accepted: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for b in [1, 2] {
        let p = sim.nodes[b].ep.peer_status(sim.peer(b, 0)).unwrap();
        assert_eq!(p.public_key, new);
        let cur = p.current.expect("established");
        assert!(
            cur.created > rotated,
            "node {b}: no SA made with the new key"
        );
        let q = sim.nodes[0].ep.peer_status(sim.peer(0, b)).unwrap();
        assert!(q.current.expect("established").created > rotated);
    }
    sim
}

#[test]
fn static_key_rotation_mid_stream_exactly_once() {
    let sim = static_key_rotation(0.0, 11);
    let l = &sim.ledger;
    assert_eq!(l.send_errors, 0);
    assert_eq!(
        l.accepted.len() as u64,
        l.sent,
        "every packet delivered exactly once"
    );
    for n in &sim.nodes {
        assert_eq!(n.ep.stats().drops, Default::default(), "no drops at all");
    }
}

#[test]
fn static_key_rotation_with_loss_accepts_all_that_arrives() {
    let sim = static_key_rotation(0.03, 12);
    assert!(sim.ledger.accepted.len() as f64 > sim.ledger.sent as f64 * 0.95);
}
