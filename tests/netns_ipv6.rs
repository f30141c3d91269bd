//! IPv6 end to end: kernel VXLAN between IPv6 tunnel addresses over vxsec,
//! whose peers talk over an IPv6 underlay. Containers reach each other over
//! IPv4 and IPv6, a TCP transfer arrives intact, and the underlay carries
//! only vxsec's UDP over IPv6: no VXLAN, no marker in cleartext. (Full-size
//! DF packets for IPv6 VTEPs: tests/netns_mtu.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::capture::Capture;
use common::*;

const MARKER: &str = "vxsec-ipv6-marker-5b1e0c2f-never-on-the-wire";

/// UDP datagrams in an Ethernet pcap, by IP version: (version, src port,
/// dst port) for each frame that carries UDP.
fn udp_ports(pcap: &[u8]) -> Vec<(u8, u16, u16)> {
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(h) = pcap.get(at..at + 16) {
        let incl = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let Some(frame) = pcap.get(at + 16..at + 16 + incl) else {
            break;
        };
        at += 16 + incl;
        let ethertype = frame.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]]));
        let (version, udp) = match ethertype {
            Some(0x0800) => {
                let ihl = usize::from(frame.get(14).copied().unwrap_or(0) & 0x0f) * 4;
                if frame.get(23) != Some(&17) {
                    continue;
                }
                (4, frame.get(14 + ihl..))
            }
            Some(0x86dd) => {
                if frame.get(20) != Some(&17) {
                    continue;
                }
                (6, frame.get(54..))
            }
            _ => continue,
        };
        if let Some(u) = udp.and_then(|u| u.get(..4)) {
            out.push((
                version,
                u16::from_be_bytes([u[0], u[1]]),
                u16::from_be_bytes([u[2], u[3]]),
            ));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn ipv6_underlay_and_ipv6_vteps_end_to_end() {
    if !root_or_skip("ipv6_underlay_and_ipv6_vteps_end_to_end") {
        return;
    }
    let lab = Lab::new(LabSpec {
        options: ClusterOptions {
            ipv6_underlay: true,
            ipv6_tunnel: true,
            ..ClusterOptions::default()
        },
        ..LabSpec::default()
    });
    lab.ping(1, 2, 1).expect("IPv4 containers over IPv6 VTEPs");
    let c2 = lab.topo.node(2).unwrap().container_ip6().to_string();
    Cmd::in_netns(&lab.container_ns(1), "ping")
        .args(["-6", "-n", "-c", "2", "-i", "0.3", "-W", "2", &c2])
        .run()
        .expect("IPv6 containers over IPv6 VTEPs");

    let st = lab.status(1);
    assert_eq!(st["tunnel_address"], "fd00:200::1/64", "{st}");
    assert_eq!(st["tunnel_mtu"], 1500 - 40 - 8 - 32, "{st}");
    let n2 = lab.cluster.peer_status(1, 2).unwrap();
    assert_eq!(
        n2["endpoint"],
        format!("[fd00:77::2]:{LISTEN_PORT}"),
        "{n2}"
    );
    assert_eq!(n2["tunnel_address"], "fd00:200::2", "{n2}");
    assert_eq!(n2["established"], true, "{n2}");

    let cap = Capture::start(&lab.topo.underlay_ns, "ubr", "", &lab.cluster.dir);
    let r = lab.tcp(1, 3, 5061, 20_000_000, Some(MARKER));
    lab.ping(3, 2, 2).expect("ping during capture");
    let (raw, _) = cap.stop();
    assert!(r.intact(), "{r:?}");
    let udp = udp_ports(&raw);
    let vxsec6 = udp
        .iter()
        .filter(|&&(v, s, d)| v == 6 && (s == LISTEN_PORT || d == LISTEN_PORT))
        .count();
    assert!(
        vxsec6 > 100,
        "vxsec over IPv6 carried the transfer (GSO: several messages a frame): {vxsec6}"
    );
    let vxlan = udp
        .iter()
        .filter(|&&(_, s, d)| s == VXLAN_PORT || d == VXLAN_PORT)
        .count();
    assert_eq!(vxlan, 0, "cleartext VXLAN on the underlay");
    let other: Vec<_> = udp
        .iter()
        .filter(|&&(_, s, d)| s != LISTEN_PORT && d != LISTEN_PORT)
        .collect();
    assert!(other.is_empty(), "UDP outside vxsec's port: {other:?}");
    assert!(
        !contains(&raw, MARKER.as_bytes()),
        "marker seen in cleartext on the underlay"
    );
}
