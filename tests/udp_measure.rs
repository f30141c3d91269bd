//! Micro-measurements of the I/O layer (ignored by default; run with
//! `cargo test --test udp_measure -- --ignored --nocapture --test-threads 1`,
//! ideally with `--config 'profile.dev.package.vxsec.opt-level=3'`):
//! loopback UDP per-packet vs sendmmsg/recvmmsg vs GSO/GRO, and (root) TUN
//! reads and writes with and without vnet_hdr offloads. Prints figures;
//! asserts only that every packet arrived.
#![allow(clippy::disallowed_methods)] // wall-clock timing is the point here

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use vxsec::io::{sys, Arena, BatchUdp, Tun, TunConfig, TunQueue, UdpConfig};

mod tun_common;
use tun_common::{root_or_skip, Netns};

const SIZE: usize = 1400;
const BATCH: usize = 64;
const TOTAL: usize = 512 * BATCH;

fn report(what: &str, packets: usize, t: Duration) {
    let pps = packets as f64 / t.as_secs_f64();
    println!(
        "{what:<48} {:>9.0} packets/s  {:>6.2} Gbit/s",
        pps,
        pps * (SIZE * 8) as f64 / 1e9
    );
}

fn recv_n(rx: &mut BatchUdp, arena: &mut Arena, from: &mut [SocketAddr], n: usize) -> usize {
    let mut got = 0;
    while got < n {
        if rx
            .wait_readable(None, Some(Duration::from_secs(1)))
            .is_err()
        {
            break;
        }
        match rx.recv_batch(arena, BATCH, from) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    got
}

#[test]
#[ignore]
fn measure_udp_loopback() {
    let lo = SocketAddr::from(([127, 0, 0, 1], 0));
    // Per-packet send_to / recv_from.
    let a = UdpSocket::bind(lo).unwrap_or_else(|e| panic!("{e}"));
    let b = UdpSocket::bind(lo).unwrap_or_else(|e| panic!("{e}"));
    let to = b.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let buf = vec![7u8; SIZE];
    let mut rbuf = vec![0u8; 2048];
    let t = Instant::now();
    for _ in 0..TOTAL / BATCH {
        for _ in 0..BATCH {
            a.send_to(&buf, to).unwrap_or_else(|e| panic!("{e}"));
        }
        for _ in 0..BATCH {
            b.recv_from(&mut rbuf).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    report("loopback: send_to/recv_from per packet", TOTAL, t.elapsed());
    for (name, cfg) in [
        (
            "loopback: sendmmsg/recvmmsg, no GSO/GRO",
            UdpConfig::new(lo).without_offloads(),
        ),
        ("loopback: sendmmsg+GSO / recvmmsg+GRO", UdpConfig::new(lo)),
    ] {
        let mut tx = BatchUdp::bind(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let mut rx = BatchUdp::bind(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut arena = Arena::new(BATCH, 2048);
        let mut rarena = Arena::new(BATCH, 2048);
        for i in 0..BATCH {
            arena.slot_mut(i)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + SIZE].fill(7);
            arena.set_len(i, SIZE);
        }
        let slots: Vec<usize> = (0..BATCH).collect();
        let dests = vec![dest; BATCH];
        let mut from = vec![dest; BATCH];
        let t = Instant::now();
        let mut got = 0;
        for _ in 0..TOTAL / BATCH {
            let out = tx
                .send_batch(&arena, &slots, &dests)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(out.sent, BATCH);
            got += recv_n(&mut rx, &mut rarena, &mut from, BATCH);
        }
        report(name, got, t.elapsed());
        assert_eq!(got, TOTAL);
    }
    // GSO from the slots with one iovec per datagram, against BatchUdp's
    // copy into one contiguous buffer, against a plain copy sent with the
    // socket-level UDP_SEGMENT; alternated so all see the same load.
    let a = UdpSocket::bind(lo).unwrap_or_else(|e| panic!("{e}"));
    let fd = std::os::fd::AsFd::as_fd(&a);
    if let Err(e) = sys::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT, SIZE as libc::c_int) {
        panic!("UDP_SEGMENT: {e}");
    }
    let mut copy_cfg = UdpConfig::new(lo);
    copy_cfg.gso_copy = true;
    let mut tx_gather = BatchUdp::bind(&UdpConfig::new(lo)).unwrap_or_else(|e| panic!("{e}"));
    let mut tx_copy = BatchUdp::bind(&copy_cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut rx = BatchUdp::bind(&UdpConfig::new(lo)).unwrap_or_else(|e| panic!("{e}"));
    let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let mut arena = Arena::new(BATCH, 2048);
    for i in 0..BATCH {
        arena.slot_mut(i)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + SIZE].fill(7);
        arena.set_len(i, SIZE);
    }
    let slots: Vec<usize> = (0..BATCH).collect();
    let dests = vec![dest; BATCH];
    let mut rarena = Arena::new(BATCH, 2048);
    let mut from = vec![dest; BATCH];
    let mut contiguous = vec![0u8; BATCH * SIZE];
    let per_send = 65_000 / SIZE;
    for round in 0..3 {
        for (what, tx) in [
            ("iovec per datagram", &mut tx_gather),
            ("BatchUdp copy", &mut tx_copy),
        ] {
            let t = Instant::now();
            let mut got = 0;
            for _ in 0..TOTAL / BATCH {
                let out = tx
                    .send_batch(&arena, &slots, &dests)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(out.sent, BATCH);
                got += recv_n(&mut rx, &mut rarena, &mut from, BATCH);
            }
            report(
                &format!("loopback GSO, {what} (round {round})"),
                got,
                t.elapsed(),
            );
            assert_eq!(got, TOTAL);
        }
        let t = Instant::now();
        let mut got = 0;
        for _ in 0..TOTAL / BATCH {
            for (i, chunk) in contiguous.chunks_exact_mut(SIZE).enumerate() {
                chunk.copy_from_slice(
                    &arena.slot(i)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + SIZE],
                );
            }
            for part in contiguous.chunks(per_send * SIZE) {
                a.send_to(part, dest).unwrap_or_else(|e| panic!("{e}"));
            }
            got += recv_n(&mut rx, &mut rarena, &mut from, BATCH);
        }
        report(
            &format!("loopback GSO, std copy + send_to (round {round})"),
            got,
            t.elapsed(),
        );
        assert_eq!(got, TOTAL);
    }
}

/// An arena whose first BATCH slots each hold a `len`-byte message.
fn filled_arena(len: usize, byte: u8) -> Arena {
    let mut arena = Arena::new(BATCH, 2048);
    for i in 0..BATCH {
        arena.slot_mut(i)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + len].fill(byte);
        arena.set_len(i, len);
    }
    arena
}

/// TOTAL datagrams sent by `app` (GSO batches of BATCH) into the TUN
/// towards `dest`, each batch read back with `read_batch`; returns
/// (packets read, elapsed).
fn send_through_tun(
    app: &mut BatchUdp,
    q: &mut TunQueue,
    dest: SocketAddr,
    len: usize,
) -> (usize, Duration) {
    let arena = filled_arena(len, 9);
    let slots: Vec<usize> = (0..BATCH).collect();
    let dests = vec![dest; BATCH];
    let mut tarena = Arena::new(BATCH, 2048);
    let t = Instant::now();
    let mut got = 0;
    for _ in 0..TOTAL / BATCH {
        let out = app
            .send_batch(&arena, &slots, &dests)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.sent, BATCH);
        let mut n = 0;
        while n < BATCH {
            let _ = q.wait_readable(None, Some(Duration::from_secs(1)));
            let k = q
                .read_batch(&mut tarena, BATCH)
                .unwrap_or_else(|e| panic!("{e}"));
            if k == 0 {
                break;
            }
            n += k;
        }
        got += n;
    }
    (got, t.elapsed())
}

fn tun(name: &str, offloads: bool, addr: [u8; 4]) -> Tun {
    let mut cfg = TunConfig::new(name);
    if offloads {
        cfg = cfg.with_offloads();
    }
    cfg.mtu_bytes = 1500;
    cfg.ipv4 = Some((Ipv4Addr::from(addr), 24));
    Tun::create(&cfg).unwrap_or_else(|e| panic!("{e}"))
}

fn bind(addr: [u8; 4]) -> BatchUdp {
    BatchUdp::bind(&UdpConfig::new(SocketAddr::from((addr, 0)))).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
#[ignore]
fn measure_tun_read_and_write() {
    if !root_or_skip("measure_tun_read_and_write") {
        return;
    }
    for offloads in [false, true] {
        let ns = Netns::new("udpm");
        ns.run(|| {
            let tun = tun("vxm0", offloads, [10, 92, 0, 1]);
            let stats = std::sync::Arc::clone(tun.stats());
            let Some(mut q) = tun.into_queues().pop() else {
                panic!("no queue")
            };
            // Read path: an application sending with UDP GSO into the TUN.
            let mut app = bind([10, 92, 0, 1]);
            let app_port = app
                .local_addr()
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("{e}"));
            let dest = SocketAddr::from(([10, 92, 0, 2], 4789));
            let (got, el) = send_through_tun(&mut app, &mut q, dest, SIZE);
            report(
                &format!("tun read (app GSO send + read_batch), vnet={offloads}"),
                got,
                el,
            );
            println!(
                "    super-packets read: {}",
                stats.rx_super_packets.load(Relaxed)
            );
            // Write path: 64 same-flow IPv4/UDP packets per write_batch to the app.
            let mut tarena = Arena::new(BATCH, 2048);
            for i in 0..BATCH {
                let p = &mut tarena.slot_mut(i)[Arena::HEADROOM..Arena::HEADROOM + SIZE + 28];
                p[..20].copy_from_slice(&[
                    0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 92, 0, 2, 10, 92, 0, 1,
                ]);
                p[2..4].copy_from_slice(&((SIZE + 28) as u16).to_be_bytes());
                let c = vxsec::wire::checksum::checksum(&p[..20]);
                p[10..12].copy_from_slice(&c.to_be_bytes());
                p[20..22].copy_from_slice(&4789u16.to_be_bytes());
                p[22..24].copy_from_slice(&app_port.to_be_bytes());
                p[24..26].copy_from_slice(&((SIZE + 8) as u16).to_be_bytes());
                p[26..28].fill(0); // no UDP checksum (IPv4)
                tarena.set_len(i, SIZE + 28);
            }
            let slots: Vec<usize> = (0..BATCH).collect();
            let mut rarena = Arena::new(BATCH, 2048);
            let mut from = vec![dest; BATCH];
            let t = Instant::now();
            let mut got = 0;
            for _ in 0..TOTAL / BATCH {
                let w = q
                    .write_batch(&tarena, &slots)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(w, BATCH);
                got += recv_n(&mut app, &mut rarena, &mut from, BATCH);
            }
            report(
                &format!("tun write (write_batch + app recv), vnet={offloads}"),
                got,
                t.elapsed(),
            );
            println!(
                "    super-packets written: {}",
                stats.tx_super_packets.load(Relaxed)
            );
            assert_eq!(got, TOTAL);
        });
    }
}

#[test]
#[ignore]
fn measure_tun_read_of_kernel_vxlan() {
    if !root_or_skip("measure_tun_read_of_kernel_vxlan") {
        return;
    }
    for offloads in [false, true] {
        let ns = Netns::new("udpv");
        ns.run(|| {
            let tun = tun("vxm1", offloads, [10, 89, 0, 1]);
            let stats = std::sync::Arc::clone(tun.stats());
            let flags = tun.offloads().flags;
            let Some(mut q) = tun.into_queues().pop() else {
                panic!("no queue")
            };
            ns.add_vxlan("vx9", "9", "10.89.0.1", "10.89.0.2", "192.168.89", "1390");
            let mut app = bind([192, 168, 89, 1]);
            let dest = SocketAddr::from(([192, 168, 89, 2], 5000));
            let (got, el) = send_through_tun(&mut app, &mut q, dest, 1300);
            report(
                &format!("tun read of kernel VXLAN, offloads {flags:#x}"),
                got,
                el,
            );
            println!(
                "    super-packets read: {}",
                stats.rx_super_packets.load(Relaxed)
            );
        });
    }
}
