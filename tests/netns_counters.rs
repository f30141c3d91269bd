//! Counters and log lines README promises, against real agents in network
//! namespaces: empty datagrams to the listen port are dropped and counted;
//! a packet the sending side refuses by VNI policy counts for that peer;
//! packets for a tunnel address no peer has are counted and named in the
//! log at most once a minute; a SIGHUP that changes only `allowed_vnis`
//! says so; and agent logs written to a file carry no colour escapes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

fn global(st: &serde_json::Value, key: &str) -> u64 {
    st.get("drops").map_or(0, |d| num(d, key))
}

/// Drop counter `key` of peer `node<peer>` in status document `st`.
fn peer_drop(st: &serde_json::Value, peer: u8, key: &str) -> u64 {
    let name = format!("node{peer}");
    st["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name.as_str()))
        .and_then(|p| p.get("drops"))
        .map_or(0, |d| num(d, key))
}

/// Lines of node `i`'s agent log that contain `needle`.
fn log_lines(lab: &Lab, i: u8, needle: &str) -> Vec<String> {
    let path = &lab.cluster.agent(i).unwrap().log_file;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn empty_datagrams_and_unknown_tunnel_addresses_are_counted_and_logs_are_plain() {
    if !root_or_skip("empty_datagrams_and_unknown_tunnel_addresses_are_counted_and_logs_are_plain")
    {
        return;
    }
    let mut lab = Lab::three();
    lab.ping(1, 2, 1).expect("overlay up");

    // 100 empty datagrams to node1's listen port, from a host on the underlay.
    let rogue = lab.topo.add_underlay_host(66).unwrap();
    let before = lab.status(1);
    let sent = lab.inject(&rogue, None, lab.endpoint(1), &vec![Vec::new(); 100]);
    assert_eq!(sent, 100);
    std::thread::sleep(Duration::from_millis(500));
    let after = lab.status(1);
    assert_eq!(
        global(&after, "empty") - global(&before, "empty"),
        100,
        "100 empty datagrams counted as `empty`:\n{after}"
    );
    lab.ping(1, 2, 1).expect("the agent still works");

    // IPv6 is on in every namespace: the kernel's own router solicitations
    // and MLD reports must not go into the tunnel (no link-local on vxsec0).
    // Read before the mistake below: once the ghost is in the flood list,
    // every multicast the containers send (their own IPv6 router
    // solicitations, MLD reports) rightly counts as `no_route` too.
    let before = global(&lab.status(1), "no_route");
    assert_eq!(before, 0, "no_route before any mistake:\n{}", lab.status(1));

    // A VTEP address that is on no node (a mistyped --data-path-addr):
    // node1's overlay floods to it, node1's agent has no peer for it.
    let ghost = "10.200.0.11";
    lab.topo
        .fdb_flood(1, LAB_VNI, ghost.parse::<std::net::IpAddr>().unwrap(), true)
        .unwrap();
    for _ in 0..3 {
        // Each ping starts with a flooded ARP request (neighbour flushed).
        Cmd::new("ip")
            .args(["-n", &lab.container_ns(1), "neigh", "flush", "all"])
            .run()
            .unwrap();
        lab.ping(1, 2, 1).expect("the real peers still work");
    }
    let st = lab.status(1);
    assert!(
        global(&st, "no_route") >= before + 3,
        "packets to {ghost} counted as no_route:\n{st}"
    );
    let warned = log_lines(&lab, 1, &format!("dropping packets to {ghost}"));
    assert_eq!(
        warned.len(),
        1,
        "one warning naming {ghost} (at most once a minute), got:\n{}",
        lab.cluster.agent(1).unwrap().log_tail()
    );

    // Every agent logged to a file: no colour escapes in it.
    for a in &lab.cluster.agents {
        let bytes = std::fs::read(&a.log_file).unwrap();
        assert!(!bytes.is_empty(), "{} logged nothing", a.node.name());
        assert!(
            !bytes.contains(&0x1b),
            "{} wrote ANSI escapes into a file:\n{}",
            a.node.name(),
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn send_side_vni_refusal_counts_for_the_peer_and_reload_reports_vni_changes() {
    if !root_or_skip("send_side_vni_refusal_counts_for_the_peer_and_reload_reports_vni_changes") {
        return;
    }
    // Node1 lets node2 use VNI 42 only.
    let mut lab = Lab::new(LabSpec {
        peers: vec![(1, vec![(2, Some(vec![42])), (3, None)])],
        ..LabSpec::default()
    });
    lab.add_vni_100();
    lab.ping(1, 2, 1).expect("VNI 42 works");
    let st0 = lab.status(1);
    let (p2, p3) = (peer_drop(&st0, 2, "policy"), peer_drop(&st0, 3, "policy"));
    // Node1 itself tries VNI 100 towards node2: refused on the way out.
    let out = Cmd::in_netns(&lab.node_ns(1), "ping")
        .args(["-n", "-c", "3", "-i", "0.3", "-W", "1", "10.100.0.2"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "VNI 100 must not pass");
    let st1 = lab.status(1);
    let global_delta = global(&st1, "vni_not_allowed") - global(&st0, "vni_not_allowed");
    let peer_delta = peer_drop(&st1, 2, "policy") - p2;
    assert!(global_delta >= 1, "refused sends counted:\n{st1}");
    assert_eq!(
        peer_delta, global_delta,
        "every refused send counted for node2 too:\n{st1}"
    );
    assert_eq!(peer_drop(&st1, 3, "policy"), p3, "node3 not blamed");

    // SIGHUP that changes only node2's allowed_vnis: applied in place,
    // reported as such, SA kept.
    let spi = lab.cluster.peer_status(1, 2).unwrap()["current_spi_local"].clone();
    lab.cluster
        .set_peers(1, vec![(2, Some(vec![42, 100])), (3, None)])
        .unwrap();
    lab.cluster.signal(1, "HUP").unwrap();
    let mut line = Vec::new();
    for _ in 0..50 {
        line = log_lines(&lab, 1, "SIGHUP:");
        if !line.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = line.join("\n");
    assert!(
        line.contains("0 peers added or re-created")
            && line.contains("1 updated in place (node2: allowed_vnis; SAs kept)")
            && line.contains("1 unchanged"),
        "reload message: {line}"
    );
    assert_eq!(
        lab.cluster.peer_status(1, 2).unwrap()["allowed_vnis"],
        serde_json::json!([42, 100])
    );
    assert_eq!(
        lab.cluster.peer_status(1, 2).unwrap()["current_spi_local"],
        spi,
        "SA kept"
    );
    let st2 = lab.status(1);
    assert!(
        peer_drop(&st2, 2, "policy") >= p2 + peer_delta,
        "per-peer drops survive the reload:\n{st2}"
    );
    let ok = Cmd::in_netns(&lab.node_ns(1), "ping")
        .args(["-n", "-c", "2", "-i", "0.3", "-W", "2", "10.100.0.2"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "VNI 100 allowed after the reload");
}
