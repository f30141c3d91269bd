//! TUN I/O against the real kernel, inside a fresh network namespace per
//! test: packets routed into the TUN come back from `read_batch`, packets
//! written with `write_batch` reach a local socket, multi-queue and
//! IPv6 work, and with vnet_hdr + USO a UDP_SEGMENT send arrives as one
//! super-packet that is segmented correctly. Skips (printing why) unless root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use vxsec::io::sys;
use vxsec::io::tun::offload::tun_flags;
use vxsec::io::{Arena, BatchUdp, Readiness, Tun, TunConfig, TunQueue, UdpConfig};

mod tun_common;
use tun_common::{ipv4_udp_checksums_ok, reference_sum, root_or_skip, Netns};

fn tun(cfg: &TunConfig) -> Tun {
    match Tun::create(cfg) {
        Ok(t) => t,
        Err(e) => panic!("create TUN: {e}"),
    }
}

/// Reads until `want` packets arrived (or 5 s passed) into fresh arenas;
/// returns the packets.
fn read_packets(q: &mut TunQueue, want: usize) -> Vec<Vec<u8>> {
    read_packets_max(q, want, 64)
}

/// UDP datagrams (IPv4 or IPv6, no extension headers) to `port` only, as
/// (payload) — other traffic (router solicitations, MLD) is ignored.
fn udp_payloads(pkts: &[Vec<u8>], port: u16) -> Vec<Vec<u8>> {
    pkts.iter()
        .filter_map(|p| {
            let (l4, proto) = match p.first()? >> 4 {
                4 => (usize::from(p[0] & 15) * 4, p[9]),
                6 => (40, p[6]),
                _ => return None,
            };
            let dport = u16::from_be_bytes([*p.get(l4 + 2)?, *p.get(l4 + 3)?]);
            (proto == 17 && dport == port).then(|| p[l4 + 8..].to_vec())
        })
        .collect()
}

#[test]
fn tun_reads_routed_packets_and_writes_to_local_socket() {
    if !root_or_skip("tun_reads_routed_packets_and_writes_to_local_socket") {
        return;
    }
    let ns = Netns::new("tun");
    ns.run(|| {
        let mut cfg = TunConfig::new("vxt0");
        cfg.mtu_bytes = 1400;
        cfg.ipv4 = Some((Ipv4Addr::new(10, 99, 0, 1), 24));
        let mut t = tun(&cfg);
        assert_eq!(sys::mtu("vxt0").ok(), Some(1400));
        let Some(q) = t.queue(0) else {
            panic!("no queue")
        };
        let sock = UdpSocket::bind("10.99.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let local = sock.local_addr().unwrap_or_else(|e| panic!("{e}"));
        for k in 0..100u32 {
            let msg = format!("packet {k}");
            sock.send_to(msg.as_bytes(), "10.99.0.2:9999")
                .unwrap_or_else(|e| panic!("send: {e}"));
        }
        let pkts = read_packets(q, 100);
        let payloads = udp_payloads(&pkts, 9999);
        assert_eq!(payloads.len(), 100);
        for (k, p) in payloads.iter().enumerate() {
            assert_eq!(p, format!("packet {k}").as_bytes());
        }
        // Write path: swap addresses and ports (checksums stay valid) so
        // each packet comes back from 10.99.0.2:9999 to the socket.
        let mut arena = Arena::new(64, 2048);
        let udp: Vec<&Vec<u8>> = pkts
            .iter()
            .filter(|p| p[0] >> 4 == 4 && p[9] == 17)
            .take(64)
            .collect();
        let mut slots = Vec::new();
        for (i, p) in udp.iter().enumerate() {
            let s = &mut arena.slot_mut(i)[Arena::HEADROOM..];
            s[..p.len()].copy_from_slice(p);
            let (a, b) = (p[12..16].to_vec(), p[16..20].to_vec());
            s[12..16].copy_from_slice(&b);
            s[16..20].copy_from_slice(&a);
            let (sp, dp) = (p[20..22].to_vec(), p[22..24].to_vec());
            s[20..22].copy_from_slice(&dp);
            s[22..24].copy_from_slice(&sp);
            arena.set_len(i, p.len());
            slots.push(i);
        }
        assert_eq!(
            t.queue(0).map(|q| q.write_batch(&arena, &slots).ok()),
            Some(Some(64))
        );
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 2048];
        for k in 0..64 {
            let (n, from) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("recv {k}: {e}"));
            assert_eq!(from, SocketAddr::from(([10, 99, 0, 2], 9999)));
            assert_eq!(&buf[..n], format!("packet {k}").as_bytes());
        }
        let _ = local;
    });
}

#[test]
fn tun_ipv6_and_multi_queue() {
    if !root_or_skip("tun_ipv6_and_multi_queue") {
        return;
    }
    let ns = Netns::new("tun");
    ns.run(|| {
        let mut cfg = TunConfig::new("vxt1");
        cfg.queues = 2;
        cfg.ipv4 = Some((Ipv4Addr::new(10, 98, 0, 1), 24));
        cfg.ipv6 = Some((Ipv6Addr::new(0xfd00, 0x98, 0, 0, 0, 0, 0, 1), 64));
        let t = tun(&cfg);
        let mut queues = t.into_queues();
        assert_eq!(queues.len(), 2);
        // Many flows (source ports) so both queues are likely used; count all.
        let socks: Vec<UdpSocket> = (0..16)
            .map(|_| UdpSocket::bind("[fd00:98::1]:0").unwrap_or_else(|e| panic!("bind v6: {e}")))
            .collect();
        for s in &socks {
            s.send_to(b"v6 hello", "[fd00:98::2]:7777")
                .unwrap_or_else(|e| panic!("send v6: {e}"));
        }
        let mut total = 0;
        for _ in 0..50 {
            for q in queues.iter_mut() {
                let mut arena = Arena::new(64, 2048);
                let n = q
                    .read_batch(&mut arena, 64)
                    .unwrap_or_else(|e| panic!("read: {e}"));
                let pkts: Vec<Vec<u8>> = (0..n)
                    .map(|i| {
                        arena.slot(i)[Arena::HEADROOM..Arena::HEADROOM + arena.len(i)].to_vec()
                    })
                    .collect();
                for p in udp_payloads(&pkts, 7777) {
                    assert_eq!(p, b"v6 hello");
                    total += 1;
                }
            }
            if total == 16 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(total, 16);
    });
}

#[test]
fn tun_vnet_hdr_uso_super_packet_is_segmented() {
    if !root_or_skip("tun_vnet_hdr_uso_super_packet_is_segmented") {
        return;
    }
    let ns = Netns::new("tun");
    ns.run(|| {
        let mut cfg = TunConfig::new("vxt2").with_offloads();
        cfg.mtu_bytes = 1440;
        cfg.ipv4 = Some((Ipv4Addr::new(10, 97, 0, 1), 24));
        let mut t = tun(&cfg);
        let off = t.offloads();
        println!(
            "kernel accepted: vnet_hdr={} flags={:#x}",
            off.vnet_hdr, off.flags
        );
        assert!(off.vnet_hdr);
        if off.flags & tun_flags::USO4 == 0 {
            println!("skipping the USO part: the kernel refused TUN_F_USO4");
            return;
        }
        // One GSO send of 20 x 1000 bytes + a 333-byte tail via BatchUdp.
        let mut udp = BatchUdp::bind(&UdpConfig::new(SocketAddr::from(([10, 97, 0, 1], 0))))
            .unwrap_or_else(|e| panic!("udp: {e}"));
        assert!(udp.gso_enabled(), "GSO expected on this kernel");
        let mut arena = Arena::new(64, 2048);
        let off16 = Arena::HEADROOM - 16;
        let mut sent = Vec::new();
        let dest = SocketAddr::from((IpAddr::V4(Ipv4Addr::new(10, 97, 0, 2)), 4789));
        for i in 0..21usize {
            let len = if i == 20 { 333 } else { 1000 };
            let s = &mut arena.slot_mut(i)[off16..off16 + len];
            for (j, b) in s.iter_mut().enumerate() {
                *b = (i * 31 + j) as u8;
            }
            sent.extend_from_slice(s);
            arena.set_len(i, len);
        }
        let slots: Vec<usize> = (0..21).collect();
        let dests = vec![dest; 21];
        let out = udp
            .send_batch(&arena, &slots, &dests)
            .unwrap_or_else(|e| panic!("send: {e}"));
        assert_eq!(out.sent, 21);
        let Some(q) = t.queue(0) else {
            panic!("no queue")
        };
        let pkts = read_packets(q, 21);
        let seen = q_stats(&t);
        assert!(seen >= 1, "expected a GSO super-packet from the kernel");
        let udp_pkts: Vec<&Vec<u8>> = pkts
            .iter()
            .filter(|p| p[0] >> 4 == 4 && p[9] == 17)
            .collect();
        assert_eq!(udp_pkts.len(), 21);
        let mut got = Vec::new();
        for p in &udp_pkts {
            assert!(p.len() <= 1440);
            assert!(ipv4_udp_checksums_ok(p), "segment checksums");
            got.extend_from_slice(&p[28..]);
        }
        assert_eq!(got, sent);
    });
}

fn q_stats(t: &Tun) -> u64 {
    t.stats().rx_super_packets.load(Ordering::Relaxed)
}

#[test]
fn tun_vnet_hdr_coalesced_udp_writes_arrive_intact() {
    if !root_or_skip("tun_vnet_hdr_coalesced_udp_writes_arrive_intact") {
        return;
    }
    let ns = Netns::new("tun");
    ns.run(|| {
        let mut cfg = TunConfig::new("vxt3").with_offloads();
        cfg.ipv4 = Some((Ipv4Addr::new(10, 93, 0, 1), 24));
        let mut t = tun(&cfg);
        if t.offloads().flags & tun_flags::USO4 == 0 {
            println!("skipping: the kernel refused TUN_F_USO4 (no write coalescing)");
            return;
        }
        let app = UdpSocket::bind("10.93.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        app.set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        // 50 x 1000 bytes and a 200-byte tail: one flow, one run.
        let msgs: Vec<Vec<u8>> = (0..51usize)
            .map(|k| {
                (0..if k == 50 { 200 } else { 1000 })
                    .map(|j| (k * 3 + j) as u8)
                    .collect()
            })
            .collect();
        for m in &msgs {
            app.send_to(m, "10.93.0.2:4789")
                .unwrap_or_else(|e| panic!("send: {e}"));
        }
        let Some(q) = t.queue(0) else {
            panic!("no queue")
        };
        let pkts: Vec<Vec<u8>> = read_packets(q, 51)
            .into_iter()
            .filter(|p| p[0] >> 4 == 4 && p[9] == 17)
            .collect();
        assert_eq!(pkts.len(), 51);
        let mut arena = Arena::new(64, 2048);
        for (i, p) in pkts.iter().enumerate() {
            let s = &mut arena.slot_mut(i)[Arena::HEADROOM..Arena::HEADROOM + p.len()];
            s.copy_from_slice(p);
            // Reflect: the reply comes from 10.93.0.2:4789.
            for (a, b, n) in [(12, 16, 4), (20, 22, 2)] {
                for k in 0..n {
                    s.swap(a + k, b + k);
                }
            }
            arena.set_len(i, p.len());
        }
        let slots: Vec<usize> = (0..51).collect();
        let Some(q) = t.queue(0) else {
            panic!("no queue")
        };
        assert_eq!(q.write_batch(&arena, &slots).ok(), Some(51));
        let supers = t.stats().tx_super_packets.load(Ordering::Relaxed);
        assert_eq!(supers, 1, "one USO super-packet for the whole run");
        let mut buf = [0u8; 2048];
        for (k, m) in msgs.iter().enumerate() {
            let (n, from) = app
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("recv {k}: {e}"));
            assert_eq!(from, SocketAddr::from(([10, 93, 0, 2], 4789)));
            assert_eq!(&buf[..n], &m[..], "datagram {k}");
        }
    });
}

#[test]
fn tun_udp_tunnel_gso_vxlan_super_packet_is_segmented() {
    if !root_or_skip("tun_udp_tunnel_gso_vxlan_super_packet_is_segmented") {
        return;
    }
    let ns = Netns::new("tun");
    ns.run(|| {
        let mut cfg = TunConfig::new("vxt4").with_offloads();
        cfg.mtu_bytes = 1500;
        cfg.ipv4 = Some((Ipv4Addr::new(10, 90, 0, 1), 24));
        let mut t = tun(&cfg);
        let off = t.offloads();
        println!(
            "kernel accepted: flags={:#x} vnet_hdr_len={}",
            off.flags, off.vnet_hdr_len
        );
        // Kernel VXLAN whose underlay route is the TUN, as in vxsec's route mode.
        ns.add_vxlan("vx42", "42", "10.90.0.1", "10.90.0.2", "192.168.42", "1400");
        let mut app = BatchUdp::bind(&UdpConfig::new(SocketAddr::from(([192, 168, 42, 1], 0))))
            .unwrap_or_else(|e| panic!("udp: {e}"));
        let mut arena = Arena::new(64, 2048);
        let off16 = Arena::HEADROOM - 16;
        let mut sent = Vec::new();
        for i in 0..30usize {
            let len = if i == 29 { 77 } else { 1000 };
            let s = &mut arena.slot_mut(i)[off16..off16 + len];
            for (j, b) in s.iter_mut().enumerate() {
                *b = (i * 17 + j) as u8;
            }
            sent.extend_from_slice(s);
            arena.set_len(i, len);
        }
        let slots: Vec<usize> = (0..30).collect();
        let dests = vec![SocketAddr::from(([192, 168, 42, 2], 5000)); 30];
        let out = app
            .send_batch(&arena, &slots, &dests)
            .unwrap_or_else(|e| panic!("send: {e}"));
        assert_eq!(out.sent, 30);
        let Some(q) = t.queue(0) else {
            panic!("no queue")
        };
        // Outer IPv4/UDP to 4789 carrying inner IPv4/UDP to port 5000 only
        // (the VXLAN device also tunnels its own IPv6 chatter).
        let pkts: Vec<Vec<u8>> = read_packets(q, 30)
            .into_iter()
            .filter(|p| {
                p.len() > 78
                    && p[0] == 0x45
                    && p[9] == 17
                    && p[22..24] == 4789u16.to_be_bytes()
                    && p[48..50] == [0x08, 0x00]
                    && p[50 + 9] == 17
                    && p[50 + 22..50 + 24] == 5000u16.to_be_bytes()
            })
            .collect();
        let supers = q_stats(&t);
        println!(
            "VXLAN packets read: {}, tunnel super-packets: {supers}",
            pkts.len()
        );
        if off.flags & tun_flags::UDP_TUNNEL_GSO != 0 {
            assert!(supers >= 1, "the kernel handed over a VXLAN super-packet");
        }
        assert_eq!(pkts.len(), 30);
        let mut got = Vec::new();
        for p in &pkts {
            assert!(p.len() <= 1500);
            // Outer header checksum and length; inner IPv4/UDP checksums.
            let outer_ok = reference_sum(&[&p[..20]]) == 0xffff;
            assert!(outer_ok, "outer IPv4 header checksum");
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            assert_eq!(
                usize::from(u16::from_be_bytes([p[24], p[25]])),
                p.len() - 20
            );
            let inner = &p[20 + 8 + 8 + 14..];
            assert!(ipv4_udp_checksums_ok(inner), "inner checksums");
            got.extend_from_slice(&inner[28..]);
        }
        assert_eq!(got, sent, "inner payloads reassemble");
    });
}

#[test]
fn tun_vxlan_round_trip_through_read_and_coalesced_write() {
    if !root_or_skip("tun_vxlan_round_trip_through_read_and_coalesced_write") {
        return;
    }
    let ns = Netns::new("tun");
    ns.run(|| {
        let mut cfg = TunConfig::new("vxt5").with_offloads();
        cfg.mtu_bytes = 1500;
        cfg.ipv4 = Some((Ipv4Addr::new(10, 88, 0, 1), 24));
        let mut t = tun(&cfg);
        ns.add_vxlan("vx43", "43", "10.88.0.1", "10.88.0.2", "192.168.88", "1400");
        let app = UdpSocket::bind("192.168.88.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        app.set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        let msgs: Vec<Vec<u8>> = (0..40usize)
            .map(|k| {
                (0..if k == 39 { 99 } else { 1200 })
                    .map(|j| (k + 5 * j) as u8)
                    .collect()
            })
            .collect();
        for m in &msgs {
            app.send_to(m, "192.168.88.2:5000")
                .unwrap_or_else(|e| panic!("send: {e}"));
        }
        let Some(q) = t.queue(0) else {
            panic!("no queue")
        };
        let inner_udp = |p: &Vec<u8>| {
            p.len() > 78
                && p[0] == 0x45
                && p[9] == 17
                && p[48..50] == [0x08, 0x00]
                && p[59] == 17
                && p[72..74] == 5000u16.to_be_bytes()
        };
        let pkts: Vec<Vec<u8>> = read_packets(q, 40).into_iter().filter(inner_udp).collect();
        assert_eq!(pkts.len(), 40);
        // Reflect each VXLAN packet: outer IPs swapped (dst port stays
        // 4789), inner Ethernet, IPv4 and UDP ports swapped.
        let mut arena = Arena::new(64, 2048);
        for (i, p) in pkts.iter().enumerate() {
            let s = &mut arena.slot_mut(i)[Arena::HEADROOM..Arena::HEADROOM + p.len()];
            s.copy_from_slice(p);
            for (a, b, len) in [(12, 16, 4), (36, 42, 6), (62, 66, 4), (70, 72, 2)] {
                for k in 0..len {
                    s.swap(a + k, b + k);
                }
            }
            arena.set_len(i, p.len());
        }
        let slots: Vec<usize> = (0..40).collect();
        let Some(q) = t.queue(0) else {
            panic!("no queue")
        };
        assert_eq!(q.write_batch(&arena, &slots).ok(), Some(40));
        let supers = t.stats().tx_super_packets.load(Ordering::Relaxed);
        println!("VXLAN writes coalesced into {supers} super-packet(s)");
        let mut buf = [0u8; 2048];
        for (k, m) in msgs.iter().enumerate() {
            let (len, from) = app
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("recv {k}: {e}"));
            assert_eq!(from, SocketAddr::from(([192, 168, 88, 2], 5000)));
            assert_eq!(&buf[..len], &m[..], "datagram {k}");
        }
        assert!(supers >= 1, "same-flow VXLAN packets were coalesced");
    });
}

/// Reads until `want` packets arrived (or 5 s passed), at most `max` per
/// `read_batch`; returns them.
fn read_packets_max(q: &mut TunQueue, want: usize, max: usize) -> Vec<Vec<u8>> {
    let mut arena = Arena::new(64, 2048);
    let mut got = Vec::new();
    for _ in 0..500 {
        if got.len() >= want {
            break;
        }
        match q.wait_readable(None, Some(Duration::from_millis(10))) {
            Ok(Readiness::Ready) => {}
            Ok(_) => continue,
            Err(e) => panic!("wait: {e}"),
        }
        let n = match q.read_batch(&mut arena, max) {
            Ok(n) => n,
            Err(e) => panic!("read_batch: {e}"),
        };
        for i in 0..n {
            let len = arena.len(i);
            got.push(arena.slot(i)[Arena::HEADROOM..Arena::HEADROOM + len].to_vec());
        }
    }
    got
}

/// Super-packets after the first are read straight into their slots when
/// they have the layout of the one before; a different segment size, a
/// plain packet longer than one expected segment, and a batch with too
/// few slots for the whole super-packet all still arrive intact.
#[test]
fn tun_scattered_super_packet_reads_arrive_intact() {
    if !root_or_skip("tun_scattered_super_packet_reads_arrive_intact") {
        return;
    }
    let ns = Netns::new("tun");
    ns.run(|| {
        let mut cfg = TunConfig::new("vxt6").with_offloads();
        cfg.mtu_bytes = 1440;
        cfg.ipv4 = Some((Ipv4Addr::new(10, 95, 0, 1), 24));
        let mut t = tun(&cfg);
        if t.offloads().flags & tun_flags::USO4 == 0 {
            println!("skipping: the kernel refused TUN_F_USO4");
            return;
        }
        let mut udp = BatchUdp::bind(&UdpConfig::new(SocketAddr::from(([10, 95, 0, 1], 0))))
            .unwrap_or_else(|e| panic!("udp: {e}"));
        assert!(udp.gso_enabled(), "GSO expected on this kernel");
        let Some(q) = t.queue(0) else {
            panic!("no queue")
        };
        // Which path a read takes depends on the packet before it: keep the
        // kernel's IPv6 chatter (MLD, router solicitations) off this device
        // and drain what it already queued.
        std::fs::write("/proc/sys/net/ipv6/conf/vxt6/disable_ipv6", "1")
            .unwrap_or_else(|e| panic!("disable IPv6 on vxt6: {e}"));
        std::thread::sleep(Duration::from_millis(50));
        let mut drain = Arena::new(64, 2048);
        while q.read_batch(&mut drain, 64).is_ok_and(|n| n > 0) {}
        let mut tag = 0u8;
        // (datagram sizes of one GSO send, packets read per read_batch)
        let steps: [(Vec<usize>, usize); 10] = [
            (vec![1000; 21], 64),                    // learns the layout (copied)
            (vec![1000; 20], 64),                    // straight into slots
            (vec![500; 10], 64),                     // another size: copied, relearned
            ([vec![500; 29], vec![77]].concat(), 8), // 8 slots: the rest copied
            (vec![1200], 64),                        // plain, spills into next slots
            (vec![500; 12], 64),                     // after a plain one: copied
            (vec![1200], 1),                         // plain, spills into scratch
            (vec![1200], 64),                        // plain after plain: one slot
            (vec![500; 12], 64),                     // after a plain one: copied
            (vec![500; 12], 64),                     // straight into slots again
        ];
        for (step, (sizes, max)) in steps.iter().enumerate() {
            // A port per step: headers left over from an earlier read show.
            let port = 4789 + step as u16;
            let dest = SocketAddr::from(([10, 95, 0, 2], port));
            let mut arena = Arena::new(64, 2048);
            let off16 = Arena::HEADROOM - 16;
            let mut sent = Vec::new();
            for (i, &len) in sizes.iter().enumerate() {
                tag = tag.wrapping_add(1);
                let s = &mut arena.slot_mut(i)[off16..off16 + len];
                for (j, b) in s.iter_mut().enumerate() {
                    *b = tag ^ (j as u8).wrapping_mul(7);
                }
                sent.push(s.to_vec());
                arena.set_len(i, len);
            }
            let slots: Vec<usize> = (0..sizes.len()).collect();
            let out = udp
                .send_batch(&arena, &slots, &vec![dest; sizes.len()])
                .unwrap_or_else(|e| panic!("send: {e}"));
            assert_eq!(out.sent, sizes.len());
            let got: Vec<Vec<u8>> = read_packets_max(q, sizes.len(), *max)
                .into_iter()
                .filter(|p| p[0] >> 4 == 4 && p[9] == 17)
                .collect();
            assert_eq!(got.len(), sizes.len(), "{sizes:?}: every datagram read");
            for (k, (p, want)) in got.iter().zip(&sent).enumerate() {
                assert!(
                    ipv4_udp_checksums_ok(p),
                    "{sizes:?}: datagram {k} checksums"
                );
                assert_eq!(
                    p[22..24],
                    port.to_be_bytes(),
                    "{sizes:?}: datagram {k} port"
                );
                assert!(p[28..] == want[..], "{sizes:?}: datagram {k} payload");
            }
        }
        let st = t.stats();
        let supers = st.rx_super_packets.load(Ordering::Relaxed);
        let direct = st.rx_direct_super_packets.load(Ordering::Relaxed);
        println!("super-packets read: {supers}, straight into slots: {direct}");
        assert_eq!(supers, 7, "seven GSO sends arrived as super-packets");
        assert_eq!(
            direct, 3,
            "the three with the previous layout went straight in"
        );
    });
}
