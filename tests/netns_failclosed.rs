//! Fail closed at every moment of the agent's life (issue 11): with the
//! agent running, after a failed SIGHUP reload, after SIGTERM (which is also
//! "not yet started, guards of a previous run in place"), after a restart,
//! after SIGKILL and during restarts, a node sends no cleartext VXLAN to
//! the underlay while its container pings across the overlay, and cleartext
//! VXLAN injected from the underlay never reaches its container. For IPv4
//! and IPv6 tunnel prefixes and underlays, and for VXLAN devices with
//! `local <tunnel address>` and without one (Docker's overlay driver). Every
//! node has a default route, which is what the leak needs. `vxsec down`
//! leaves the node clean (and, being the operator's opt-out, leaky again),
//! `fail_closed = false` installs nothing, and installing the guards 100
//! times leaves exactly one route and two rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::capture::{pcap_frames, Capture};
use common::*;
use vxsec::agent::guard::GuardState;

/// The guards in node `i`'s namespace, from the kernel.
fn guard_state(lab: &Lab, i: u8) -> GuardState {
    guards::state(&helper_bin(), &lab.node_ns(i)).expect("guard-state")
}

fn assert_guards_in_place(lab: &Lab, i: u8, when: &str) {
    let s = guard_state(lab, i);
    assert_eq!(s.routes.len(), 1, "{when}: want one blackhole route: {s:?}");
    assert!(s.table, "{when}: table inet vxsec missing: {s:?}");
    assert_eq!(s.rules.len(), 2, "{when}: want two rules: {s:?}");
}

/// Installs node `i`'s guards from its config, as `vxsec up` does.
fn reinstall_guards(lab: &Lab, i: u8) {
    let cfg = lab.cluster.agent(i).unwrap().config_file.clone();
    Cmd::in_netns(&lab.node_ns(i), helper_bin().to_string_lossy())
        .arg("guard-install")
        .arg(cfg.to_string_lossy())
        .arg("1")
        .run()
        .expect("guard-install");
    assert_guards_in_place(lab, i, "reinstalled");
}

fn tun_exists(lab: &Lab, i: u8) -> bool {
    Cmd::new("ip")
        .args(["-n", &lab.node_ns(i), "link", "show", "vxsec0"])
        .run()
        .is_ok()
}

/// Container 1 pings container 2 three times while tcpdump watches node1's
/// underlay interface for UDP to the VXLAN port (vxsec itself uses 51830);
/// returns (cleartext VXLAN frames seen, whether the ping got replies).
fn leak_probe(lab: &Lab) -> (usize, bool) {
    let cap = Capture::start(
        &lab.node_ns(1),
        "eth0",
        &format!("udp port {VXLAN_PORT}"),
        &lab.cluster.dir,
    );
    let ok = lab.ping(1, 2, 3).is_ok();
    let (raw, _) = cap.stop();
    (pcap_frames(&raw), ok)
}

/// Node 1's underlay address in the lab's family.
fn underlay_addr(lab: &Lab, i: u8, ipv6: bool) -> IpAddr {
    let n = lab.topo.node(i).unwrap();
    if ipv6 {
        IpAddr::V6(n.underlay_ip6())
    } else {
        IpAddr::V4(n.underlay_ip)
    }
}

/// The two checks of a state in which node1's agent is not serving.
fn assert_closed_while_down(lab: &Lab, rogue: &str, ipv6: bool, when: &str) {
    assert!(!tun_exists(lab, 1), "{when}: vxsec0 still exists");
    assert_guards_in_place(lab, 1, when);
    let (leaked, ping_ok) = leak_probe(lab);
    assert_eq!(leaked, 0, "{when}: cleartext VXLAN left node1");
    assert!(
        !ping_ok,
        "{when}: the overlay answered with node1's agent down"
    );
    let (rogue_seen, _) = lab.injection_probe(rogue, underlay_addr(lab, 1, ipv6), false);
    assert_eq!(
        rogue_seen, 0,
        "{when}: injected cleartext VXLAN reached container1"
    );
}

/// The checks of a state in which node1's agent serves.
fn assert_closed_while_running(lab: &Lab, rogue: &str, ipv6: bool, when: &str) {
    assert!(lab.ping_within(1, 2, 10), "{when}: overlay does not work");
    assert_guards_in_place(lab, 1, when);
    let (leaked, ping_ok) = leak_probe(lab);
    assert_eq!(leaked, 0, "{when}: cleartext VXLAN left node1");
    assert!(ping_ok, "{when}: overlay ping failed");
    let (rogue_seen, legit_seen) = lab.injection_probe(rogue, underlay_addr(lab, 1, ipv6), true);
    assert_eq!(
        legit_seen, 1,
        "{when}: the overlay's own packet did not arrive"
    );
    assert_eq!(
        rogue_seen, 0,
        "{when}: injected cleartext VXLAN reached container1"
    );
}

/// Every state of node1's agent, in order, with both checks in each.
fn every_state(ipv6: bool, vxlan_local: bool) {
    let mut lab = Lab::new(LabSpec {
        nodes: 2,
        options: ClusterOptions {
            ipv6_underlay: ipv6,
            ipv6_tunnel: ipv6,
            ..ClusterOptions::default()
        },
        vxlan_local,
        ..LabSpec::default()
    });
    let rogue = lab.topo.add_underlay_host(66).unwrap();
    let family = if ipv6 { "-6" } else { "-4" };
    assert!(
        Cmd::new("ip")
            .args(["-n", &lab.node_ns(1), family, "route", "show", "default"])
            .run()
            .unwrap()
            .contains("default via"),
        "node1 needs a default route for this test to mean anything"
    );

    assert_closed_while_running(&lab, &rogue, ipv6, "running");

    // A broken config and SIGHUP: the reload fails, the agent and its
    // guards stay.
    let cfg = lab.cluster.agent(1).unwrap().config_file.clone();
    std::fs::write(&cfg, "[interface\nthis is not toml").unwrap();
    lab.cluster.signal(1, "HUP").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        lab.cluster.is_running(1).unwrap(),
        "a failed reload stopped the agent"
    );
    assert_closed_while_running(&lab, &rogue, ipv6, "after a failed SIGHUP reload");
    lab.cluster.rewrite_config(1).unwrap();

    // SIGTERM: the agent removes its TUN, the guards stay. This is also
    // "not yet started, with guards from a previous run".
    assert_eq!(
        lab.cluster.stop(1, Duration::from_secs(5)).unwrap(),
        Some(0)
    );
    assert_closed_while_down(&lab, &rogue, ipv6, "after SIGTERM (not yet started)");

    lab.cluster.start(1).unwrap();
    assert_closed_while_running(&lab, &rogue, ipv6, "restarted after SIGTERM");

    lab.cluster.kill(1).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_closed_while_down(&lab, &rogue, ipv6, "after SIGKILL");

    // Each layer alone keeps VXLAN in: the route without the table, the
    // table without the route (then both are put back as `up` would).
    let ns1 = lab.node_ns(1);
    let nft = |args: &[&str]| Cmd::in_netns(&ns1, "nft").args(args.iter().copied()).run();
    nft(&["delete", "table", "inet", "vxsec"]).unwrap();
    assert_eq!(
        leak_probe(&lab).0,
        0,
        "the blackhole route alone let VXLAN out"
    );
    reinstall_guards(&lab, 1);
    let prefix = if ipv6 {
        "fd00:200::/64"
    } else {
        "10.200.0.0/16"
    };
    Cmd::new("ip")
        .args([
            "-n",
            &ns1,
            "route",
            "del",
            "blackhole",
            prefix,
            "metric",
            "10000",
        ])
        .run()
        .unwrap();
    assert_eq!(guard_state(&lab, 1).routes.len(), 0);
    assert_eq!(
        leak_probe(&lab).0,
        0,
        "the nft output rule alone let VXLAN out"
    );
    reinstall_guards(&lab, 1);
    assert_closed_while_down(&lab, &rogue, ipv6, "after SIGKILL, guards reinstalled");

    // During restarts: a ping every 50 ms across two stop/start cycles, one
    // clean, one killed, the underlay captured throughout.
    lab.cluster.start(1).unwrap();
    assert!(lab.ping_within(1, 2, 10));
    let cap = Capture::start(
        &lab.node_ns(1),
        "eth0",
        &format!("udp port {VXLAN_PORT}"),
        &lab.cluster.dir,
    );
    let dst = lab.topo.node(2).unwrap().container_ip.to_string();
    let pinger = Cmd::in_netns(&lab.container_ns(1), "ping")
        .args(["-n", "-q", "-i", "0.05", "-c", "80", "-W", "1", &dst])
        .spawn(None)
        .unwrap();
    lab.cluster.stop(1, Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    lab.cluster.start(1).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    lab.cluster.kill(1).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    lab.cluster.start(1).unwrap();
    let mut pinger = pinger;
    let _ = pinger.wait_timeout(Duration::from_secs(10));
    let (raw, _) = cap.stop();
    assert_eq!(
        pcap_frames(&raw),
        0,
        "cleartext VXLAN left node1 during restarts"
    );
    assert_closed_while_running(&lab, &rogue, ipv6, "after restarts");
    // Four starts so far: still exactly one route and two rules.
    assert_guards_in_place(&lab, 1, "after four starts");
    let log = std::fs::read_to_string(&lab.cluster.agent(1).unwrap().log_file).unwrap_or_default();
    assert!(
        log.contains("adopted"),
        "a restart did not adopt the guards:\n{log}"
    );

    // `vxsec down` refuses while the agent runs, then removes everything.
    let refused = lab.cluster.down(1);
    assert!(
        refused.is_err(),
        "down ran under a running agent: {refused:?}"
    );
    assert_guards_in_place(&lab, 1, "after a refused down");
    lab.cluster.stop(1, Duration::from_secs(5)).unwrap();
    let out = lab.cluster.down(1).expect("vxsec down");
    assert!(out.contains("removed nftables table inet vxsec"), "{out}");
    let s = guard_state(&lab, 1);
    assert_eq!(s, GuardState::default(), "down left guards: {s:?}");
    assert!(!tun_exists(&lab, 1));
    let again = lab.cluster.down(1).expect("a second down");
    assert!(again.contains("nothing to remove"), "{again}");
    // The operator opted out: a device without `local` now leaks through
    // the default route, which proves the capture above could see a leak.
    let (leaked, _) = leak_probe(&lab);
    if !vxlan_local {
        assert!(
            leaked > 0,
            "no leak after `vxsec down`: the capture cannot see leaks"
        );
    }
    eprintln!(
        "after vxsec down (ipv6={ipv6}, local={vxlan_local}): {leaked} cleartext VXLAN frames"
    );
}

#[test]
fn ipv4_vxlan_without_local_every_state() {
    if root_or_skip("ipv4_vxlan_without_local_every_state") {
        every_state(false, false);
    }
}

#[test]
fn ipv4_vxlan_with_local_every_state() {
    if root_or_skip("ipv4_vxlan_with_local_every_state") {
        every_state(false, true);
    }
}

#[test]
fn ipv6_vxlan_without_local_every_state() {
    if root_or_skip("ipv6_vxlan_without_local_every_state") {
        every_state(true, false);
    }
}

#[test]
fn ipv6_vxlan_with_local_every_state() {
    if root_or_skip("ipv6_vxlan_with_local_every_state") {
        every_state(true, true);
    }
}

/// Without guards the same checks fail: cleartext VXLAN injected from the
/// underlay reaches the container while the agent runs, and a killed agent
/// leaks the container's ping to the underlay in cleartext.
fn without_guards_both_probes_fail(ipv6: bool) {
    let mut lab = Lab::new(LabSpec {
        nodes: 2,
        vxlan_local: false,
        options: ClusterOptions {
            ipv6_underlay: ipv6,
            ipv6_tunnel: ipv6,
            fail_closed: Some(false),
            ..ClusterOptions::default()
        },
        ..LabSpec::default()
    });
    let rogue = lab.topo.add_underlay_host(66).unwrap();
    assert!(lab.ping_within(1, 2, 10));
    assert_eq!(
        guard_state(&lab, 1),
        GuardState::default(),
        "guards installed"
    );
    let (rogue_seen, legit_seen) = lab.injection_probe(&rogue, underlay_addr(&lab, 1, ipv6), true);
    assert_eq!(legit_seen, 1);
    assert!(
        rogue_seen > 0,
        "injected cleartext VXLAN did not arrive even without guards"
    );
    lab.cluster.kill(1).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (leaked, _) = leak_probe(&lab);
    assert!(
        leaked > 0,
        "a killed agent without guards did not leak: the probe is blind"
    );
}

#[test]
fn ipv4_fail_closed_false_installs_nothing_and_the_probes_see_both_failures() {
    if root_or_skip("ipv4_fail_closed_false_installs_nothing_and_the_probes_see_both_failures") {
        without_guards_both_probes_fail(false);
    }
}

#[test]
fn ipv6_fail_closed_false_installs_nothing_and_the_probes_see_both_failures() {
    if root_or_skip("ipv6_fail_closed_false_installs_nothing_and_the_probes_see_both_failures") {
        without_guards_both_probes_fail(true);
    }
}

/// 100 installs through the real code path leave one route and two rules;
/// a changed prefix (IPv4 to IPv6) replaces both, stale route included.
#[test]
fn a_hundred_installs_leave_one_route_and_two_rules() {
    if !root_or_skip("a_hundred_installs_leave_one_route_and_two_rules") {
        return;
    }
    let topo = Topology::new("vxg", 1, 1500).unwrap();
    let ns = topo.node(1).unwrap().ns.clone();
    let dir = tempfile::tempdir().unwrap();
    let install = |address: &str, times: &str, force: bool| -> (String, GuardState) {
        let cfg = dir.path().join("g.toml");
        std::fs::write(
            &cfg,
            format!("[interface]\naddress = \"{address}\"\nprivate_key_file = \"/nonexistent\"\n"),
        )
        .unwrap();
        let mut cmd = Cmd::in_netns(&ns, helper_bin().to_string_lossy())
            .arg("guard-install")
            .arg(cfg.to_string_lossy())
            .arg(times);
        if force {
            cmd = cmd.arg("force");
        }
        let out = cmd.run().expect("guard-install");
        let mut lines = out.lines();
        let counts = lines.next().unwrap_or("").to_owned();
        let state = serde_json::from_str(lines.last().unwrap_or("")).expect("state JSON");
        (counts, state)
    };
    let (counts, s) = install("10.200.0.1/16", "100", false);
    assert_eq!(counts, "installed=2 adopted=198", "{s:?}");
    assert_eq!(s.routes, ["blackhole 10.200.0.0/16 metric 10000"], "{s:?}");
    assert_eq!(s.rules.len(), 2, "{s:?}");
    // The write path every time (route replace, table replace): still one.
    let (_, s) = install("10.200.0.1/16", "100", true);
    assert_eq!(s.routes.len(), 1, "{s:?}");
    assert_eq!(s.rules.len(), 2, "{s:?}");
    assert_eq!(s.chains.len(), 2, "{s:?}");
    let (counts, s) = install("fd00:200::1/64", "100", false);
    assert_eq!(counts, "installed=2 adopted=198", "{s:?}");
    assert_eq!(s.routes, ["blackhole fd00:200::/64 metric 10000"], "{s:?}");
    assert_eq!(s.rules.len(), 2, "{s:?}");
    assert!(
        s.rules.iter().any(|r| r.comment.contains("fd00:200::/64")),
        "{s:?}"
    );
}
