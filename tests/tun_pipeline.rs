//! The I/O layer end to end, as the agent's pipeline uses it, inside a
//! fresh network namespace: application UDP → TUN `read_batch` → 16-byte
//! header prepended (stand-in for sealing) → `BatchUdp::send_batch` →
//! `recv_batch` → header stripped → TUN `write_batch` → application socket.
//! Run twice: with every offload on (vnet_hdr, USO/TSO, UDP GSO/GRO) and
//! with every offload forced off (issue 6's fallback path). Root only.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use vxsec::io::{sys, Arena, BatchUdp, Tun, TunConfig, UdpConfig};

mod tun_common;
use tun_common::{root_or_skip, Netns};

/// Swaps IPv4 source/destination addresses and UDP ports in place (the
/// checksums stay valid), so a packet read from the TUN can be written
/// back as the reply from its destination.
fn reflect(p: &mut [u8]) {
    for (a, b, n) in [(12, 16, 4), (20, 22, 2)] {
        for k in 0..n {
            p.swap(a + k, b + k);
        }
    }
}

fn pipeline(offloads: bool) {
    let ns = Netns::new("tunp");
    ns.run(|| {
        let mut cfg = TunConfig::new("vxp0");
        if offloads {
            cfg = cfg.with_offloads();
        }
        cfg.mtu_bytes = 1440;
        cfg.ipv4 = Some((Ipv4Addr::new(10, 94, 0, 1), 24));
        let tun = Tun::create(&cfg).unwrap_or_else(|e| panic!("tun: {e}"));
        assert_eq!(tun.offloads().vnet_hdr, offloads);
        let stats = std::sync::Arc::clone(tun.stats());
        let Some(mut q) = tun.into_queues().pop() else {
            panic!("no queue")
        };
        let ucfg = |port| {
            let c = UdpConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
            if offloads {
                c
            } else {
                c.without_offloads()
            }
        };
        let mut tx = BatchUdp::bind(&ucfg(0)).unwrap_or_else(|e| panic!("{e}"));
        let mut rx = BatchUdp::bind(&ucfg(0)).unwrap_or_else(|e| panic!("{e}"));
        let peer = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let app = UdpSocket::bind("10.94.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        // Enough buffer for every reply (the test reads them at the end).
        if let Err(e) = sys::setsockopt_int(
            std::os::fd::AsFd::as_fd(&app),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            16 << 20,
        ) {
            panic!("SO_RCVBUFFORCE: {e}");
        }
        app.set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap_or_else(|e| panic!("{e}"));
        // 1000 datagrams of varying size.
        let mut want: Vec<Vec<u8>> = (0..1000usize)
            .map(|k| (0..(k * 37) % 1400 + 1).map(|j| (j + k) as u8).collect())
            .collect();
        let mut arena = Arena::new(64, 2048);
        let mut from = vec![peer; 64];
        let mut dests = vec![peer; 64];
        let slots: Vec<usize> = (0..64).collect();
        let mut moved = 0;
        let mut idle = 0;
        let mut queued = 0;
        while moved < want.len() && idle < 300 {
            // Stay below the TUN's queue length (500) between reads.
            while queued < want.len() && queued < moved + 200 {
                app.send_to(&want[queued], "10.94.0.2:4789")
                    .unwrap_or_else(|e| panic!("send: {e}"));
                queued += 1;
            }
            let _ = q.wait_readable(None, Some(Duration::from_millis(10)));
            let n = q
                .read_batch(&mut arena, 64)
                .unwrap_or_else(|e| panic!("tun read: {e}"));
            if n == 0 {
                idle += 1;
                continue;
            }
            // Policy stand-in: only IPv4 UDP to 4789 (the kernel also
            // sends IPv6 link-local chatter into the TUN).
            let keep: Vec<usize> = (0..n)
                .filter(|&i| {
                    let p = &arena.slot(i)[Arena::HEADROOM..];
                    p[0] >> 4 == 4 && p[9] == 17 && p[22..24] == 4789u16.to_be_bytes()
                })
                .collect();
            let n = keep.len();
            // "Seal": prepend a 16-byte header in the headroom.
            for &i in &keep {
                let len = arena.len(i);
                arena.slot_mut(i)[Arena::MESSAGE_OFFSET..Arena::HEADROOM].fill(0xee);
                arena.set_len(i, len + 16);
            }
            dests[..n].fill(peer);
            let out = tx
                .send_batch(&arena, &keep, &dests[..n])
                .unwrap_or_else(|e| panic!("udp send: {e}"));
            assert_eq!(out.sent, n);
            let mut got = 0;
            while got < n {
                let _ = rx.wait_readable(None, Some(Duration::from_millis(100)));
                let m = rx
                    .recv_batch(&mut arena, n - got, &mut from)
                    .unwrap_or_else(|e| panic!("udp recv: {e}"));
                if m == 0 {
                    break;
                }
                // "Open": strip the header, reflect, write back to the TUN.
                for i in 0..m {
                    let len = arena.len(i) - 16;
                    assert!(arena.slot(i)[Arena::MESSAGE_OFFSET..Arena::HEADROOM]
                        .iter()
                        .all(|&b| b == 0xee));
                    reflect(&mut arena.slot_mut(i)[Arena::HEADROOM..Arena::HEADROOM + len]);
                    arena.set_len(i, len);
                }
                let w = q
                    .write_batch(&arena, &slots[..m])
                    .unwrap_or_else(|e| panic!("tun write: {e}"));
                assert_eq!(w, m);
                got += m;
            }
            assert_eq!(got, n, "every datagram crossed the UDP hop");
            moved += n;
            idle = 0;
        }
        assert_eq!(moved, want.len());
        let mut buf = [0u8; 2048];
        for (k, w) in want.drain(..).enumerate() {
            let (n, src) = app
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("app recv {k}: {e}"));
            assert_eq!(src, SocketAddr::from(([10, 94, 0, 2], 4789)));
            assert_eq!(&buf[..n], &w[..], "datagram {k}");
        }
        println!(
            "offloads={offloads}: tun rx {} (super-packets {}), udp gso sends {}, gro splits {}",
            stats.rx_packets.load(Relaxed),
            stats.rx_super_packets.load(Relaxed),
            tx.stats().tx_gso_sends.load(Relaxed),
            rx.stats().rx_gro_splits.load(Relaxed)
        );
    });
}

#[test]
fn tun_udp_pipeline_with_offloads() {
    if !root_or_skip("tun_udp_pipeline_with_offloads") {
        return;
    }
    pipeline(true);
}

#[test]
fn tun_udp_pipeline_all_offloads_off() {
    if !root_or_skip("tun_udp_pipeline_all_offloads_off") {
        return;
    }
    pipeline(false);
}
