//! The topology library on its own: kernel VXLAN directly over the underlay
//! (the "no encryption" baseline the benchmark compares against), no vxsec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

#[test]
fn plain_vxlan_ping_and_tcp_across_containers() {
    if !root_or_skip("plain_vxlan_ping_and_tcp_across_containers") {
        return;
    }
    let topo = Topology::new("vxt", 3, 1500).expect("topology");
    for n in 1..=3 {
        topo.attach_vxlan(n, LAB_VNI, VxlanSpec::underlay(), 1450)
            .expect("vxlan");
    }
    let out = topo.ping_containers(1, 3, 3).expect("ping c1 -> c3");
    assert!(out.contains(" 0% packet loss"), "{out}");
    topo.ping_containers(2, 1, 2).expect("ping c2 -> c1");

    let dst = topo.node(2).unwrap();
    let to: SocketAddr = format!("{}:5001", dst.container_ip).parse().unwrap();
    let t = traffic::start_tcp(
        &helper_bin(),
        &topo.node(1).unwrap().container_ns,
        &dst.container_ns,
        to,
        20_000_000,
        None,
    )
    .expect("start tcp");
    let report = t.finish(Duration::from_secs(60)).expect("tcp transfer");
    assert_eq!(report.bytes_received, 20_000_000);
    assert!(report.intact(), "{report:?}");
}

#[test]
fn teardown_removes_every_namespace() {
    if !root_or_skip("teardown_removes_every_namespace") {
        return;
    }
    let topo = Topology::new("vxt", 2, 1500).expect("topology");
    let names: Vec<String> = topo.namespaces().to_vec();
    assert_eq!(names.len(), 5, "{names:?}");
    // a process left running inside a namespace must not keep it alive
    let _sleeper = Cmd::in_netns(&topo.node(1).unwrap().ns, "sleep")
        .arg("60")
        .spawn(None)
        .expect("spawn");
    drop(topo);
    let list = Cmd::new("ip").args(["netns", "list"]).run().unwrap();
    for n in &names {
        assert!(
            !list.lines().any(|l| l.split_whitespace().next() == Some(n)),
            "{n} left behind"
        );
    }
}

#[test]
fn teardown_happens_on_panic() {
    if !root_or_skip("teardown_happens_on_panic") {
        return;
    }
    let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let n2 = names.clone();
    let r = std::thread::spawn(move || {
        let topo = Topology::new("vxt", 1, 1500).expect("topology");
        *n2.lock().unwrap() = topo.namespaces().to_vec();
        panic!("deliberate panic with a live topology");
    })
    .join();
    assert!(r.is_err());
    let list = Cmd::new("ip").args(["netns", "list"]).run().unwrap();
    let names = names.lock().unwrap();
    assert!(!names.is_empty());
    for n in names.iter() {
        assert!(!list.contains(n.as_str()), "{n} left behind after panic");
    }
}

#[test]
fn pcap_reader_extracts_udp_datagrams() {
    // No root needed: a hand-made pcap with one UDP frame, one ARP frame and
    // one non-first IPv4 fragment; only the UDP datagram comes out.
    let udp = common::packets::eth_ipv4_udp(
        "192.168.77.2".parse().unwrap(),
        "192.168.77.1".parse().unwrap(),
        51830,
        51830,
        b"payload",
    );
    let mut arp = udp.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut frag = udp.clone();
    frag[14 + 6..14 + 8].copy_from_slice(&[0x00, 0x10]);
    let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    pcap.extend_from_slice(&[0; 8]);
    pcap.extend_from_slice(&65535u32.to_le_bytes());
    pcap.extend_from_slice(&1u32.to_le_bytes());
    for f in [&udp, &arp, &frag] {
        pcap.extend_from_slice(&[0; 8]);
        pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
        pcap.extend_from_slice(f);
    }
    let got = common::capture::parse_pcap(&pcap);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].payload, b"payload");
    assert_eq!(got[0].src, "192.168.77.2:51830".parse().unwrap());
    // Truncated file: no panic, nothing invented.
    assert!(common::capture::parse_pcap(&pcap[..30]).is_empty());
}

#[test]
fn gso_super_packets_split_into_messages() {
    let msg = |ctr: u64, len: usize| common::packets::data_message(7, ctr, &vec![0xAB; len]);
    let mut sp = Vec::new();
    for c in 10..13 {
        sp.extend(msg(c, 100));
    }
    sp.extend(msg(13, 40)); // shorter last segment
    let parts = common::capture::split_gso(&sp);
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[3], msg(13, 40));
    // A single message, or a handshake, comes back whole.
    assert_eq!(common::capture::split_gso(&msg(1, 100)).len(), 1);
    assert_eq!(common::capture::split_gso(&[1, 0, 0, 0, 9]).len(), 1);
}
