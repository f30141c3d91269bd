//! Micro-measurements of the I/O layer (ignored by default; run with
//! `cargo test --test udp_measure -- --ignored --nocapture --test-threads 1`,
//! ideally with `--config 'profile.dev.package.vxsec.opt-level=3'`):
//! loopback UDP per-packet vs sendmmsg/recvmmsg vs GSO/GRO, and (root) TUN
//! reads and writes with and without vnet_hdr offloads. Prints figures;
//! asserts only that every packet arrived.
#![allow(clippy::disallowed_methods)] // wall-clock timing is the point here

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use vxsec::io::udp::MSG_OFFSET;
use vxsec::io::{sys, Arena, BatchUdp, Tun, TunConfig, UdpConfig};

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
            arena.slot_mut(i)[MSG_OFFSET..MSG_OFFSET + SIZE].fill(7);
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
    let mut gather_cfg = UdpConfig::new(lo);
    gather_cfg.gso_gather = true;
    let mut tx_gather = BatchUdp::bind(&gather_cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut tx_copy = BatchUdp::bind(&UdpConfig::new(lo)).unwrap_or_else(|e| panic!("{e}"));
    let mut rx = BatchUdp::bind(&UdpConfig::new(lo)).unwrap_or_else(|e| panic!("{e}"));
    let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let mut arena = Arena::new(BATCH, 2048);
    for i in 0..BATCH {
        arena.slot_mut(i)[MSG_OFFSET..MSG_OFFSET + SIZE].fill(7);
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
                chunk.copy_from_slice(&arena.slot(i)[MSG_OFFSET..MSG_OFFSET + SIZE]);
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

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
#[ignore]
fn measure_tun_read_and_write() {
    if !sys::is_root() {
        println!("skipping measure_tun_read_and_write: needs root");
        return;
    }
    let ns = Netns(format!("vxsec-udpm-{}", std::process::id()));
    let st = Command::new("ip").args(["netns", "add", &ns.0]).status();
    assert!(matches!(st, Ok(s) if s.success()));
    let path = std::path::PathBuf::from(format!("/run/netns/{}", ns.0));
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            if let Err(e) = sys::enter_netns(&path) {
                panic!("{e}");
            }
            for offloads in [false, true] {
                let mut cfg = TunConfig::new("vxm0");
                if offloads {
                    cfg = cfg.with_offloads();
                }
                cfg.mtu_bytes = 1500;
                cfg.ipv4 = Some((Ipv4Addr::new(10, 92, 0, 1), 24));
                let tun = Tun::create(&cfg).unwrap_or_else(|e| panic!("{e}"));
                let stats = std::sync::Arc::clone(tun.stats());
                let Some(mut q) = tun.into_queues().pop() else {
                    panic!("no queue")
                };
                // Read path: an application sending with UDP GSO into the TUN.
                let mut app =
                    BatchUdp::bind(&UdpConfig::new(SocketAddr::from(([10, 92, 0, 1], 0))))
                        .unwrap_or_else(|e| panic!("{e}"));
                let app_addr = app.local_addr().unwrap_or_else(|e| panic!("{e}"));
                let mut arena = Arena::new(BATCH, 2048);
                for i in 0..BATCH {
                    arena.slot_mut(i)[MSG_OFFSET..MSG_OFFSET + SIZE].fill(9);
                    arena.set_len(i, SIZE);
                }
                let slots: Vec<usize> = (0..BATCH).collect();
                let dests = vec![SocketAddr::from(([10, 92, 0, 2], 4789)); BATCH];
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
                let el = t.elapsed();
                report(
                    &format!("tun read (app GSO send + read_batch), vnet={offloads}"),
                    got,
                    el,
                );
                println!(
                    "    super-packets read: {}",
                    stats
                        .rx_super_packets
                        .load(std::sync::atomic::Ordering::Relaxed)
                );
                // Write path: 64 same-flow packets per write_batch to the app.
                let last = tarena.len(0);
                for i in 0..BATCH {
                    let p = &mut tarena.slot_mut(i)[Arena::HEADROOM..Arena::HEADROOM + SIZE + 28];
                    p[2..4].copy_from_slice(&((SIZE + 28) as u16).to_be_bytes());
                    p[12..16].copy_from_slice(&[10, 92, 0, 2]);
                    p[16..20].copy_from_slice(&[10, 92, 0, 1]);
                    p[10..12].fill(0);
                    let c = vxsec::wire::checksum::checksum(&p[..20]);
                    p[10..12].copy_from_slice(&c.to_be_bytes());
                    p[20..22].copy_from_slice(&4789u16.to_be_bytes());
                    p[22..24].copy_from_slice(&app_addr.port().to_be_bytes());
                    p[24..26].copy_from_slice(&((SIZE + 8) as u16).to_be_bytes());
                    p[26..28].fill(0); // no UDP checksum (IPv4)
                    tarena.set_len(i, SIZE + 28);
                }
                let _ = last;
                let mut rarena = Arena::new(BATCH, 2048);
                let mut from = vec![app_addr; BATCH];
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
                    stats
                        .tx_super_packets
                        .load(std::sync::atomic::Ordering::Relaxed)
                );
                assert_eq!(got, TOTAL);
            }
        });
        if let Err(p) = h.join() {
            std::panic::resume_unwind(p);
        }
    });
}

#[test]
#[ignore]
fn measure_tun_read_of_kernel_vxlan() {
    if !sys::is_root() {
        println!("skipping measure_tun_read_of_kernel_vxlan: needs root");
        return;
    }
    for offloads in [false, true] {
        let ns = Netns(format!("vxsec-udpv-{}-{offloads}", std::process::id()));
        let ip = |args: &[&str]| {
            let st = Command::new("ip").arg("-n").arg(&ns.0).args(args).status();
            assert!(matches!(st, Ok(s) if s.success()), "ip {args:?}");
        };
        let st = Command::new("ip").args(["netns", "add", &ns.0]).status();
        assert!(matches!(st, Ok(s) if s.success()));
        let path = std::path::PathBuf::from(format!("/run/netns/{}", ns.0));
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                if let Err(e) = sys::enter_netns(&path) {
                    panic!("{e}");
                }
                let mut cfg = TunConfig::new("vxm1");
                if offloads {
                    cfg = cfg.with_offloads();
                }
                cfg.mtu_bytes = 1500;
                cfg.ipv4 = Some((Ipv4Addr::new(10, 89, 0, 1), 24));
                let tun = Tun::create(&cfg).unwrap_or_else(|e| panic!("{e}"));
                let stats = std::sync::Arc::clone(tun.stats());
                let flags = tun.offloads().flags;
                let Some(mut q) = tun.into_queues().pop() else {
                    panic!("no queue")
                };
                ip(&[
                    "link",
                    "add",
                    "vx9",
                    "type",
                    "vxlan",
                    "id",
                    "9",
                    "local",
                    "10.89.0.1",
                    "remote",
                    "10.89.0.2",
                    "dstport",
                    "4789",
                ]);
                ip(&["addr", "add", "192.168.89.1/24", "dev", "vx9"]);
                ip(&["link", "set", "vx9", "mtu", "1390", "up"]);
                ip(&[
                    "neigh",
                    "add",
                    "192.168.89.2",
                    "lladdr",
                    "02:00:00:00:00:02",
                    "dev",
                    "vx9",
                ]);
                let mut app =
                    BatchUdp::bind(&UdpConfig::new(SocketAddr::from(([192, 168, 89, 1], 0))))
                        .unwrap_or_else(|e| panic!("{e}"));
                let seg = 1300;
                let mut arena = Arena::new(BATCH, 2048);
                for i in 0..BATCH {
                    arena.slot_mut(i)[MSG_OFFSET..MSG_OFFSET + seg].fill(3);
                    arena.set_len(i, seg);
                }
                let slots: Vec<usize> = (0..BATCH).collect();
                let dests = vec![SocketAddr::from(([192, 168, 89, 2], 5000)); BATCH];
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
                report(
                    &format!("tun read of kernel VXLAN, offloads {flags:#x}"),
                    got,
                    t.elapsed(),
                );
                println!(
                    "    super-packets read: {}",
                    stats
                        .rx_super_packets
                        .load(std::sync::atomic::Ordering::Relaxed)
                );
            });
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        });
    }
}
