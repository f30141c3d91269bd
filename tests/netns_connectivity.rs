//! Kernel VXLAN over vxsec across three node namespaces: ping between every
//! pair of containers and a 100 MB TCP transfer with a SHA-256 check; the
//! control socket is 0600 and `status --json` follows the documented schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use common::*;

#[test]
fn three_nodes_ping_and_100mb_tcp_with_matching_sha256() {
    if !root_or_skip("three_nodes_ping_and_100mb_tcp_with_matching_sha256") {
        return;
    }
    let lab = Lab::three();
    for (a, b) in [(1, 2), (1, 3), (2, 3), (3, 1)] {
        let out = lab
            .ping(a, b, 3)
            .unwrap_or_else(|e| panic!("ping c{a} -> c{b}: {e}"));
        assert!(out.contains(" 0% packet loss"), "{out}");
    }
    let r = lab.tcp(1, 3, 5001, 100_000_000, None);
    assert_eq!(r.bytes_received, 100_000_000, "{r:?}");
    assert_eq!(r.sha256_sent, r.sha256_received, "{r:?}");
    assert_eq!(r.sha256_sent.len(), 64);
    // The bytes really went through the agents, encrypted.
    let p = lab.cluster.peer_status(1, 3).unwrap();
    assert_eq!(
        p.get("established").and_then(|v| v.as_bool()),
        Some(true),
        "{p}"
    );
    assert!(num(&p, "tx_bytes") > 100_000_000, "{p}");
}

#[test]
fn control_socket_is_0600_and_status_json_follows_schema() {
    if !root_or_skip("control_socket_is_0600_and_status_json_follows_schema") {
        return;
    }
    let lab = Lab::three();
    lab.ping(1, 2, 1).expect("ping establishes node1 <-> node2");
    let sock = &lab.cluster.agent(1).unwrap().socket;
    let meta = std::fs::metadata(sock).expect("control socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");

    let st = lab.status(1);
    let str_fields = ["interface", "public_key", "tunnel_address", "suite"];
    for k in str_fields {
        assert!(
            st.get(k).is_some_and(|v| v.is_string()),
            "top-level {k} missing or not a string: {st}"
        );
    }
    for k in ["listen_port", "tunnel_mtu", "vxlan_mtu", "docker_mtu"] {
        assert!(
            st.get(k).is_some_and(|v| v.is_u64()),
            "top-level {k} missing or not a number: {st}"
        );
    }
    assert_eq!(st["interface"], "vxsec0");
    assert_eq!(st["listen_port"], u64::from(LISTEN_PORT));
    assert_eq!(
        st["tunnel_address"]
            .as_str()
            .map(|s| s.starts_with("10.200.0.1")),
        Some(true)
    );
    assert_eq!(st["suite"], "aes-256-gcm");
    assert_eq!(
        st["public_key"].as_str(),
        Some(lab.cluster.agent(1).unwrap().public_key.as_str())
    );
    // MTU arithmetic of DESIGN §6 at a 1500-byte underlay.
    assert_eq!(st["tunnel_mtu"], 1500 - 20 - 8 - 32);
    assert_eq!(st["vxlan_mtu"], 1500 - 20 - 8 - 32 - 50);
    // Docker subtracts VXLAN's 50 itself: it is given the tunnel MTU.
    assert_eq!(st["docker_mtu"], 1500 - 20 - 8 - 32);
    let drops = st
        .get("drops")
        .and_then(|d| d.as_object())
        .expect("drops object");
    for k in [
        "empty",
        "malformed",
        "unknown_spi",
        "not_vxlan",
        "vni_not_allowed",
        "no_route",
        "too_big",
        "replay",
        "auth",
    ] {
        assert!(
            drops.get(k).is_some_and(|v| v.is_u64()),
            "drops.{k} missing: {st}"
        );
    }
    let peers = st
        .get("peers")
        .and_then(|p| p.as_array())
        .expect("peers array");
    assert_eq!(peers.len(), 2, "{st}");
    for p in peers {
        for k in ["name", "public_key", "endpoint", "tunnel_address"] {
            assert!(p.get(k).is_some_and(|v| v.is_string()), "peer {k}: {p}");
        }
        assert!(
            p.get("established").is_some_and(|v| v.is_boolean()),
            "peer established: {p}"
        );
        assert!(p.get("allowed_vnis").is_some(), "peer allowed_vnis: {p}");
        for k in [
            "handshakes",
            "rekeys",
            "tx_packets",
            "tx_bytes",
            "rx_packets",
            "rx_bytes",
        ] {
            assert!(p.get(k).is_some_and(|v| v.is_u64()), "peer {k}: {p}");
        }
        for k in [
            "current_spi_local",
            "current_spi_remote",
            "sa_age_seconds",
            "next_rekey_seconds",
        ] {
            assert!(p.get(k).is_some(), "peer {k}: {p}");
        }
        let d = p
            .get("drops")
            .and_then(|d| d.as_object())
            .expect("peer drops");
        for k in [
            "replay",
            "auth",
            "unknown_spi",
            "expired",
            "rate_limited",
            "policy",
        ] {
            assert!(d.get(k).is_some_and(|v| v.is_u64()), "peer drops.{k}: {p}");
        }
    }
    let n2 = lab.cluster.peer_status(1, 2).unwrap();
    assert_eq!(n2["established"], true, "{n2}");
    assert_eq!(n2["endpoint"], format!("192.168.77.2:{LISTEN_PORT}"));
    assert!(num(&n2, "handshakes") >= 1, "{n2}");
    assert!(
        num(&n2, "rx_packets") >= 1 && num(&n2, "tx_packets") >= 1,
        "{n2}"
    );
    // The human form answers too.
    let human = lab.cluster.ctl(1, &["status"]).expect("status");
    assert!(human.contains("node2"), "{human}");
}

#[test]
fn chacha20_poly1305_suite_carries_traffic() {
    if !root_or_skip("chacha20_poly1305_suite_carries_traffic") {
        return;
    }
    let lab = Lab::new(LabSpec {
        options: ClusterOptions {
            suite: "chacha20-poly1305".to_owned(),
            ..ClusterOptions::default()
        },
        ..LabSpec::default()
    });
    lab.ping(2, 3, 2).expect("ping over ChaCha20-Poly1305");
    let r = lab.tcp(3, 2, 5002, 20_000_000, None);
    assert!(r.intact(), "{r:?}");
    assert_eq!(lab.status(3)["suite"], "chacha20-poly1305");
}
