//! Agent lifecycle with traffic running: SIGKILL and restart mid-transfer
//! (traffic resumes within 5 s, peers re-handshake), SIGHUP reload adding a
//! peer (existing flows undisturbed, SAs kept) and removing one (its traffic
//! stops), SIGTERM exits cleanly and removes the TUN.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn sigkill_and_restart_mid_transfer_resumes_within_5s() {
    if !root_or_skip("sigkill_and_restart_mid_transfer_resumes_within_5s") {
        return;
    }
    let mut lab = Lab::three();
    lab.ping(1, 3, 1).expect("warm-up");
    let hs_before = num(&lab.cluster.peer_status(1, 3).unwrap(), "handshakes");
    let t = traffic::start_tcp(
        &helper_bin(),
        &lab.container_ns(1),
        &lab.container_ns(3),
        lab.container_addr(3, 5030),
        40_000_000,
        None,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    lab.cluster.kill(3).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    lab.cluster.start(3).expect("restart node3");
    assert!(
        lab.ping_within(1, 3, 5),
        "no overlay traffic within 5 s of the restart"
    );
    let r = t
        .finish(Duration::from_secs(120))
        .expect("transfer finishes");
    assert!(r.intact(), "{r:?}");
    let p = lab.cluster.peer_status(1, 3).unwrap();
    assert!(
        num(&p, "handshakes") > hs_before,
        "node1 did not re-handshake with node3: {p}"
    );
    lab.cluster
        .wait_established(3, 1, Duration::from_secs(5))
        .unwrap();
}

#[test]
fn sighup_adding_a_peer_keeps_flows_removing_one_stops_it() {
    if !root_or_skip("sighup_adding_a_peer_keeps_flows_removing_one_stops_it") {
        return;
    }
    // node1 and node3 start as strangers.
    let mut lab = Lab::new(LabSpec {
        peers: vec![(1, vec![(2, None)]), (3, vec![(2, None)])],
        ..LabSpec::default()
    });
    lab.ping(1, 2, 1).expect("node1 <-> node2");
    assert!(
        lab.ping(1, 3, 1).is_err(),
        "node1 reached node3 before they were peers"
    );
    let spi_before = lab.cluster.peer_status(1, 2).unwrap()["current_spi_local"].clone();
    let stream = lab.udp_stream(2, 1, 5031, 1000);
    std::thread::sleep(Duration::from_millis(500));

    lab.cluster
        .set_peers(1, vec![(2, None), (3, None)])
        .unwrap();
    lab.cluster
        .set_peers(3, vec![(2, None), (1, None)])
        .unwrap();
    lab.cluster.signal(1, "HUP").unwrap();
    lab.cluster.signal(3, "HUP").unwrap();
    assert!(
        lab.ping_within(1, 3, 5),
        "added peer not reachable after SIGHUP; node1 status:\n{}\nnode3 status:\n{}",
        lab.status(1),
        lab.status(3)
    );
    std::thread::sleep(Duration::from_millis(500));
    let rep = stream.stop().unwrap();
    assert_eq!(
        (rep.lost, rep.duplicated),
        (0, 0),
        "reload disturbed node2's flow: {rep:?}"
    );
    let spi_after = lab.cluster.peer_status(1, 2).unwrap()["current_spi_local"].clone();
    assert_eq!(
        spi_before, spi_after,
        "reload replaced the SA of an unchanged peer"
    );

    lab.cluster.set_peers(1, vec![(2, None)]).unwrap();
    lab.cluster.signal(1, "HUP").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let st = lab.status(1);
    let names: Vec<&str> = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["node2"], "{st}");
    assert!(lab.ping(1, 3, 2).is_err(), "removed peer still reachable");
    assert!(lab.ping(3, 1, 2).is_err(), "removed peer still delivers");
    lab.ping(1, 2, 1).expect("remaining peer unaffected");
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_tun() {
    if !root_or_skip("sigterm_exits_cleanly_and_removes_the_tun") {
        return;
    }
    let mut lab = Lab::three();
    let ns = lab.node_ns(2);
    assert!(Cmd::new("ip")
        .args(["-n", &ns, "link", "show", "vxsec0"])
        .run()
        .is_ok());
    let code = lab
        .cluster
        .stop(2, Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    assert!(
        Cmd::new("ip")
            .args(["-n", &ns, "link", "show", "vxsec0"])
            .run()
            .is_err(),
        "vxsec0 left behind"
    );
}

/// Under systemd (`Type=notify`), `READY=1` is what lets Docker start: it
/// must come only once the guards and `vxsec0` exist, and say so.
#[test]
fn ready_is_reported_to_systemd_only_after_guards_and_tun() {
    use std::os::unix::net::UnixDatagram;
    if !root_or_skip("ready_is_reported_to_systemd_only_after_guards_and_tun") {
        return;
    }
    let topo = Topology::new("ntf", 2, 1500).expect("topology");
    let cluster = Cluster::new(&topo, &vxsec_bin(), ClusterOptions::default()).expect("configs");
    let a = cluster.agent(1).expect("node1");
    let sock_path = cluster.dir.join("notify.sock");
    let rx = UnixDatagram::bind(&sock_path).expect("notify socket");
    rx.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let ns = a.node.ns.clone();
    assert!(
        Cmd::in_netns(&ns, "nft")
            .args(["list", "table", "inet", "vxsec"])
            .run()
            .is_err(),
        "guards before the agent ever ran"
    );
    let _agent = Cmd::in_netns(&ns, vxsec_bin().to_string_lossy())
        .args(["up", "-c"])
        .arg(a.config_file.to_string_lossy())
        .env("NOTIFY_SOCKET", &sock_path.to_string_lossy())
        .spawn_logged(&a.log_file)
        .expect("agent");
    let mut buf = [0u8; 256];
    let n = rx.recv(&mut buf).expect("READY=1 within 15 s");
    // Checked at once, before anything else could install them.
    let table = Cmd::in_netns(&ns, "nft")
        .args(["list", "table", "inet", "vxsec"])
        .run();
    let tun = Cmd::in_netns(&ns, "ip")
        .args(["link", "show", "vxsec0"])
        .run();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("READY=1\n"), "{msg:?}");
    assert!(msg.contains("STATUS="), "{msg:?}");
    let table = table.expect("guard table at READY");
    assert!(table.contains("vxsec0"), "{table}");
    tun.expect("vxsec0 at READY");
}
