//! Batched UDP against the real kernel: loopback round trips with GSO and
//! GRO on, the forced plain path (no GSO/GRO) and dual-stack sockets carry
//! every datagram intact and in order; GSO refused by the kernel (segment larger than the device MTU, veth between two
//! fresh namespaces; root only) falls back and still delivers everything.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use vxsec::io::{sys, Arena, BatchUdp, Readiness, UdpConfig};

mod tun_common;
use tun_common::{ip, root_or_skip, Netns};

fn bind(cfg: &UdpConfig) -> BatchUdp {
    BatchUdp::bind(cfg).unwrap_or_else(|e| panic!("bind {:?}: {e}", cfg.bind))
}

/// Deterministic message bytes for datagram `k` of length `len`.
fn fill(buf: &mut [u8], k: usize) {
    for (j, b) in buf.iter_mut().enumerate() {
        *b = (k * 131 + j * 7 + (j >> 8)) as u8;
    }
}

/// Lengths with runs of equal sizes (GSO groups), shorter tails and a
/// few singletons, as the data plane produces.
fn lengths(count: usize) -> Vec<usize> {
    (0..count)
        .map(|k| match k % 23 {
            22 => 200 + k % 50,
            11 => 1000,
            _ => 1472,
        })
        .collect()
}

/// Sends `count` datagrams in batches of 64 from `tx` to `dests` (chosen
/// round-robin in runs of 8); returns what was sent, per destination.
fn send_all(tx: &mut BatchUdp, dests: &[SocketAddr], count: usize) -> Vec<Vec<Vec<u8>>> {
    let mut arena = Arena::new(64, 2048);
    let lens = lengths(count);
    let mut sent = vec![Vec::new(); dests.len()];
    let mut k = 0;
    while k < count {
        let n = (count - k).min(64);
        let mut slots = Vec::new();
        let mut to = Vec::new();
        for i in 0..n {
            let len = lens[k + i];
            let d = ((k + i) / 8) % dests.len();
            let msg = &mut arena.slot_mut(i)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + len];
            fill(msg, k + i);
            sent[d].push(msg.to_vec());
            arena.set_len(i, len);
            slots.push(i);
            to.push(dests[d]);
        }
        let out = tx
            .send_batch(&arena, &slots, &to)
            .unwrap_or_else(|e| panic!("send_batch: {e}"));
        assert_eq!(out.sent, n, "all accepted ({out:?})");
        k += n;
    }
    sent
}

/// Receives until `want` datagrams arrived or 5 s passed.
fn recv_all(rx: &mut BatchUdp, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    recv_max(rx, want, 64)
}

fn round_trip(cfg_tx: UdpConfig, cfg_rx: UdpConfig, count: usize) -> (BatchUdp, BatchUdp) {
    let mut tx = bind(&cfg_tx);
    let mut rx1 = bind(&cfg_rx);
    let mut rx2 = bind(&cfg_rx);
    let d1 = rx1.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let d2 = rx2.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let src = tx.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let sent = send_all(&mut tx, &[d1, d2], count);
    for (rx, want) in [(&mut rx1, &sent[0]), (&mut rx2, &sent[1])] {
        let got = recv_all(rx, want.len());
        assert_eq!(got.len(), want.len(), "datagram count");
        for (k, ((m, from), w)) in got.iter().zip(want).enumerate() {
            assert_eq!(m, w, "datagram {k} intact and in order");
            assert_eq!(from.port(), src.port());
        }
    }
    (tx, rx1)
}

#[test]
fn udp_loopback_round_trip_with_gso_and_gro() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (tx, rx) = round_trip(UdpConfig::new(any), UdpConfig::new(any), 2000);
    println!(
        "gso={} gro={} (rcv, snd buffers) = {:?}",
        tx.gso_enabled(),
        rx.gro_enabled(),
        tx.buffer_bytes().ok()
    );
    assert!(tx.gso_enabled(), "this kernel supports UDP GSO");
    assert!(rx.gro_enabled(), "this kernel supports UDP GRO");
    assert!(tx.stats().tx_gso_sends.load(Relaxed) > 0, "GSO was used");
    assert_eq!(tx.stats().gso_fallbacks.load(Relaxed), 0);
    assert!(
        rx.stats().rx_gro_splits.load(Relaxed) > 0,
        "GRO super-datagrams were split"
    );
    println!(
        "GRO super-datagrams: {}, received straight into slots: {}",
        rx.stats().rx_gro_splits.load(Relaxed),
        rx.stats().rx_gro_direct.load(Relaxed)
    );
    assert!(
        rx.stats().rx_gro_direct.load(Relaxed) > 0,
        "super-datagrams of the learnt segment size went straight into slots"
    );
}

#[test]
fn udp_forced_plain_path_round_trip() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let plain = UdpConfig::new(any).without_offloads();
    let (tx, rx) = round_trip(plain.clone(), plain, 2000);
    assert!(!tx.gso_enabled() && !rx.gro_enabled());
    assert_eq!(tx.stats().tx_gso_sends.load(Relaxed), 0);
    assert_eq!(rx.stats().rx_gro_splits.load(Relaxed), 0);
}

#[test]
fn udp_gso_sender_to_plain_receiver_and_back() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    round_trip(
        UdpConfig::new(any),
        UdpConfig::new(any).without_offloads(),
        700,
    );
    round_trip(
        UdpConfig::new(any).without_offloads(),
        UdpConfig::new(any),
        700,
    );
    // GSO runs copied into one contiguous buffer instead of gathered.
    let mut copy = UdpConfig::new(any);
    copy.gso_copy = true;
    let (tx, _) = round_trip(copy, UdpConfig::new(any), 700);
    assert!(tx.stats().tx_gso_sends.load(Relaxed) > 0);
}

#[test]
fn udp_dual_stack_reports_ipv4_sources() {
    let v6any = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
    let mut rx = match BatchUdp::bind(&UdpConfig::new(v6any)) {
        Ok(s) => s,
        Err(e) => {
            println!("skipping udp_dual_stack_reports_ipv4_sources: no IPv6 ({e})");
            return;
        }
    };
    let mut tx = bind(&UdpConfig::new(v6any));
    let port = rx
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let dest = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let sent = send_all(&mut tx, &[dest], 100);
    let got = recv_all(&mut rx, 100);
    assert_eq!(got.len(), 100);
    let txport = tx
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    for ((m, from), w) in got.iter().zip(&sent[0]) {
        assert_eq!(m, w);
        assert_eq!(*from, SocketAddr::from((Ipv4Addr::LOCALHOST, txport)));
    }
}

#[test]
fn udp_send_rejects_bad_arguments() {
    let mut tx = bind(&UdpConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))));
    let mut arena = Arena::new(4, 2048);
    let d = SocketAddr::from(([127, 0, 0, 1], 9));
    assert!(
        tx.send_batch(&arena, &[0, 1], &[d]).is_err(),
        "length mismatch"
    );
    arena.set_len(0, 5000);
    assert!(
        tx.send_batch(&arena, &[0], &[d]).is_err(),
        "length beyond the slot"
    );
    assert!(
        tx.send_batch(&arena, &[9], &[d]).is_err(),
        "slot out of range"
    );
}

#[test]
fn udp_gso_refused_by_kernel_falls_back_and_delivers() {
    if !root_or_skip("udp_gso_refused_by_kernel_falls_back_and_delivers") {
        return;
    }
    // Two namespaces joined by a veth pair whose sending side has MTU 1400:
    // a UDP_SEGMENT send of 1472-byte datagrams exceeds it, the kernel
    // answers EMSGSIZE, and the plain sendmmsg path (fragmenting) must still
    // deliver every datagram intact and in order.
    let a = Netns::new("udp");
    let b = Netns::new("udp");
    ip(&[
        "link", "add", "vxa", "netns", &a.name, "type", "veth", "peer", "name", "vxb", "netns",
        &b.name,
    ]);
    ip(&["-n", &a.name, "addr", "add", "10.95.0.1/24", "dev", "vxa"]);
    ip(&["-n", &b.name, "addr", "add", "10.95.0.2/24", "dev", "vxb"]);
    ip(&["-n", &a.name, "link", "set", "vxa", "mtu", "1400", "up"]);
    ip(&["-n", &b.name, "link", "set", "vxb", "up"]);
    let mut rx = b.run(|| bind(&UdpConfig::new(SocketAddr::from(([10, 95, 0, 2], 4789)))));
    let (sent, tx) = a.run(|| {
        let mut tx = bind(&UdpConfig::new(SocketAddr::from(([10, 95, 0, 1], 0))));
        assert!(tx.gso_enabled());
        let sent = send_all(&mut tx, &[SocketAddr::from(([10, 95, 0, 2], 4789))], 300);
        (sent, tx)
    });
    assert!(
        tx.stats().gso_fallbacks.load(Relaxed) > 0,
        "GSO refused and resent without it"
    );
    assert_eq!(tx.stats().tx_errors.load(Relaxed), 0);
    let got = recv_all(&mut rx, 300);
    let got: Vec<Vec<u8>> = got.into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, sent[0], "every datagram arrived intact, in order");
}

#[test]
fn udp_gso_disabled_after_einval_and_resent() {
    // SO_NO_CHECK (no UDP checksums) makes the kernel refuse every GSO send
    // with EINVAL while plain sends work: GSO must be turned off for good
    // and the batch resent without it.
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut tx = bind(&UdpConfig::new(any));
    let mut rx = bind(&UdpConfig::new(any));
    if let Err(e) = sys::setsockopt_int(
        std::os::fd::AsFd::as_fd(&tx),
        libc::SOL_SOCKET,
        libc::SO_NO_CHECK,
        1,
    ) {
        panic!("SO_NO_CHECK: {e}");
    }
    assert!(tx.gso_enabled());
    let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let sent = send_all(&mut tx, &[dest], 500);
    assert!(!tx.gso_enabled(), "GSO off after EINVAL");
    assert_eq!(tx.stats().gso_fallbacks.load(Relaxed), 1);
    assert_eq!(tx.stats().tx_gso_sends.load(Relaxed), 0);
    let got: Vec<Vec<u8>> = recv_all(&mut rx, 500).into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, sent[0]);
}

#[test]
fn udp_reuse_port_lets_workers_share_a_port() {
    let mut cfg = UdpConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.reuse_port = true;
    let a = bind(&cfg);
    cfg.bind = a.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let b = BatchUdp::bind(&cfg);
    assert!(b.is_ok(), "second socket on the same port: {b:?}");
    cfg.reuse_port = false;
    assert!(
        BatchUdp::bind(&cfg).is_err(),
        "without SO_REUSEPORT the port is taken"
    );
}

/// Receives until `want` datagrams arrived (or 5 s passed), at most `max`
/// per `recv_batch`; returns them with their sources.
fn recv_max(rx: &mut BatchUdp, want: usize, max: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut arena = Arena::new(64, 2048);
    let mut from = vec![SocketAddr::from(([0, 0, 0, 0], 0)); 64];
    let mut got = Vec::new();
    for _ in 0..500 {
        if got.len() >= want {
            break;
        }
        match rx.wait_readable(None, Some(Duration::from_millis(10))) {
            Ok(Readiness::Ready) => {}
            Ok(_) => continue,
            Err(e) => panic!("wait: {e}"),
        }
        let n = rx
            .recv_batch(&mut arena, max, &mut from)
            .unwrap_or_else(|e| panic!("recv_batch: {e}"));
        for (i, src) in from.iter().enumerate().take(n) {
            let m =
                arena.slot(i)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + arena.len(i)].to_vec();
            got.push((m, *src));
        }
    }
    got
}

/// Once a GRO super-datagram has shown the segment size, the next ones go
/// straight into slots; a different segment size, a single datagram longer
/// than the learnt size and a batch with too few slots all still arrive
/// intact and in order.
#[test]
fn udp_gro_scattered_receive_handles_every_layout() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut tx = bind(&UdpConfig::new(any));
    let mut rx = bind(&UdpConfig::new(any));
    if !tx.gso_enabled() || !rx.gro_enabled() {
        println!("skipping: no UDP GSO/GRO on this kernel");
        return;
    }
    let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
    // (datagram sizes of one GSO send, datagrams per recv_batch)
    let steps: [(Vec<usize>, usize); 7] = [
        (vec![1472; 20], 64),                     // learns 1472
        (vec![1472; 30], 64),                     // straight into slots
        (vec![1000; 25], 64),                     // another size: copied
        ([vec![1000; 40], vec![10]].concat(), 8), // 8 slots: the rest copied
        (vec![1400], 64),                         // single, longer than 1000
        (vec![1000; 33], 64),                     // after a single one: copied
        (vec![1000; 33], 64),                     // straight in again
    ];
    let mut k = 0;
    for (sizes, max) in &steps {
        let mut arena = Arena::new(64, 2048);
        let mut sent = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let s = &mut arena.slot_mut(i)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + len];
            fill(s, k);
            k += 1;
            sent.push(s.to_vec());
            arena.set_len(i, len);
        }
        let slots: Vec<usize> = (0..sizes.len()).collect();
        let out = tx
            .send_batch(&arena, &slots, &vec![dest; sizes.len()])
            .unwrap_or_else(|e| panic!("send_batch: {e}"));
        assert_eq!(out.sent, sizes.len());
        let got = recv_max(&mut rx, sizes.len(), *max);
        assert_eq!(got.len(), sent.len(), "{sizes:?}: datagram count");
        for (j, ((g, _), w)) in got.iter().zip(&sent).enumerate() {
            assert!(g == w, "{sizes:?}: datagram {j} intact and in order");
        }
    }
    let direct = rx.stats().rx_gro_direct.load(Relaxed);
    println!("GRO super-datagrams received straight into slots: {direct}");
    assert_eq!(
        direct, 3,
        "the three sends of the learnt size went straight in"
    );
}

/// Empty datagrams (what `nc -u` or a port scanner sends) are dropped and
/// counted (`rx_empty`), on the plain path, the GRO path and the GRO path
/// that receives straight into slots; the datagrams around them arrive
/// intact and in order, and none is handed up as an empty message.
#[test]
fn udp_empty_datagrams_are_dropped_and_counted() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    for (name, cfg, learn) in [
        ("plain", UdpConfig::new(any).without_offloads(), false),
        ("gro", UdpConfig::new(any), false),
        ("gro, scattered", UdpConfig::new(any), true),
    ] {
        let mut rx = bind(&cfg);
        let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut expect = Vec::new();
        if learn {
            // One GSO super-datagram teaches the receiver a segment size.
            let mut tx = bind(&UdpConfig::new(any));
            if !tx.gso_enabled() || !rx.gro_enabled() {
                println!("skipping {name}: no UDP GSO/GRO on this kernel");
                continue;
            }
            expect = send_all(&mut tx, &[dest], 20).remove(0);
        }
        let plain = std::net::UdpSocket::bind(any).unwrap_or_else(|e| panic!("{e}"));
        for k in 0..100 {
            plain.send_to(&[], dest).unwrap_or_else(|e| panic!("{e}"));
            if k % 10 == 9 {
                let msg = vec![k as u8; 100 + k];
                plain.send_to(&msg, dest).unwrap_or_else(|e| panic!("{e}"));
                expect.push(msg);
            }
        }
        let got: Vec<Vec<u8>> = recv_all(&mut rx, expect.len())
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        // Whatever was queued behind the last message: nothing may remain.
        let mut arena = Arena::new(64, 2048);
        let mut from = vec![SocketAddr::from(([0, 0, 0, 0], 0)); 64];
        for _ in 0..10 {
            let _ = rx.wait_readable(None, Some(Duration::from_millis(10)));
            let n = rx
                .recv_batch(&mut arena, 64, &mut from)
                .unwrap_or_else(|e| panic!("recv_batch: {e}"));
            assert_eq!(n, 0, "{name}: {n} more messages");
        }
        assert_eq!(got.len(), expect.len(), "{name}");
        assert!(got == expect, "{name}: messages intact and in order");
        assert_eq!(rx.stats().rx_empty.load(Relaxed), 100, "{name}");
        assert_eq!(
            rx.stats().rx_datagrams.load(Relaxed),
            expect.len() as u64,
            "{name}: empties are not received datagrams"
        );
    }
}
