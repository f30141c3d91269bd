//! Transparent mode (issue 12.3/12.5) with plain kernel VXLAN whose `local`
//! and remotes are the nodes' *underlay* addresses, as a Swarm formed
//! without `--data-path-addr` or a CNI with node-IP VTEPs makes them. The
//! overlay runs in cleartext first (the capture sees UDP/4789); the
//! operator lowers its MTU to what vxsec advises and starts vxsec in
//! transparent mode on nodes 1 and 2, changing nothing in the overlay:
//! afterwards no UDP/4789 passes between them, only vxsec's UDP/51830,
//! while pings, full-size DF pings and a checksummed transfer work. Node 3
//! runs no vxsec: VXLAN to it stays cleartext by default
//! (`transparent_unknown = "cleartext"`) and is dropped with `"drop"`.
//! Killing node 1's agent lets no cleartext out (the guards' peer set);
//! restarting it resumes the overlay. Every node has a default route, IPv6
//! on, and strict `rp_filter` in `all`, as many distributions ship.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::capture::{pcap_frames, Capture};
use common::*;
use vxsec::agent::netinfo::MtuReport;

/// A topology of three nodes with agents configured (not started) for
/// transparent mode on nodes 1 and 2, peers of each other only. Field
/// order: the agents stop before the namespaces go.
struct Transparent {
    cluster: Cluster,
    topo: Topology,
    ipv6: bool,
    /// The overlay MTU vxsec advises in transparent mode.
    vxlan_mtu: u32,
}

impl Drop for Transparent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in &self.cluster.agents {
                eprintln!("--- {} agent log ---\n{}", a.node.name(), a.log_tail());
            }
        }
    }
}

impl Transparent {
    /// `local`: VXLAN devices with `local <underlay address>`; without it
    /// as Docker's overlay driver makes them (source chosen by route).
    fn new(ipv6: bool, local: bool, unknown: Option<&str>) -> Transparent {
        let topo = Topology::new("vtp", 3, 1500).expect("topology");
        let options = ClusterOptions {
            ipv6_underlay: ipv6,
            transparent: true,
            transparent_unknown: unknown.map(str::to_owned),
            ..ClusterOptions::default()
        };
        let mut cluster = Cluster::new(&topo, &vxsec_bin(), options).expect("cluster");
        cluster
            .set_peers(1, vec![(2, Some(vec![LAB_VNI]))])
            .unwrap();
        cluster
            .set_peers(2, vec![(1, Some(vec![LAB_VNI]))])
            .unwrap();
        let spec = VxlanSpec {
            over: VxlanOver::Underlay,
            local,
            ipv6,
        };
        for i in 1..=3 {
            let ns = topo.node(i).unwrap().ns.clone();
            Cmd::in_netns(&ns, "sysctl")
                .args(["-qw", "net.ipv4.conf.all.rp_filter=1"])
                .run()
                .unwrap();
            // The usual overlay MTU before vxsec: 1500 - 50 (IPv4 VTEPs).
            topo.attach_vxlan(i, LAB_VNI, spec, 1450).expect("vxlan");
        }
        let vxlan_mtu = MtuReport::new(1500, ipv6, None)
            .expect("mtu")
            .vxlan_mtu(ipv6);
        Transparent {
            cluster,
            topo,
            ipv6,
            vxlan_mtu,
        }
    }

    fn underlay(&self, i: u8) -> IpAddr {
        let n = self.topo.node(i).unwrap();
        if self.ipv6 {
            IpAddr::V6(n.underlay_ip6())
        } else {
            IpAddr::V4(n.underlay_ip)
        }
    }

    /// Lowers the overlay MTU on every node: the VXLAN device, its bridge
    /// port and the container's interface.
    fn set_overlay_mtu(&self, mtu: u32) {
        let m = mtu.to_string();
        for i in 1..=3 {
            let n = self.topo.node(i).unwrap();
            for (ns, dev) in [(&n.ns, "vxlan42"), (&n.ns, "c0"), (&n.container_ns, "eth0")] {
                Cmd::new("ip")
                    .args(["-n", ns, "link", "set", dev, "mtu", &m])
                    .run()
                    .unwrap();
            }
        }
    }

    /// Runs `f` while tcpdump watches node 1's underlay interface; returns
    /// (UDP/4789 frames from node 1 to node `to`, and back unless
    /// `outbound_only`; UDP/51830 frames; f's result).
    fn captured<T>(&self, to: u8, outbound_only: bool, f: impl FnOnce() -> T) -> (usize, usize, T) {
        let ns = self.topo.node(1).unwrap().ns.clone();
        let host = self.underlay(to).to_string();
        let dir = &self.cluster.dir;
        let which = if outbound_only { "dst host" } else { "host" };
        let vx = Capture::start(
            &ns,
            "eth0",
            &format!("udp port {VXLAN_PORT} and {which} {host}"),
            dir,
        );
        let enc = Capture::start(&ns, "eth0", &format!("udp port {LISTEN_PORT}"), dir);
        let r = f();
        let (vx_raw, _) = vx.stop();
        let (enc_raw, _) = enc.stop();
        (pcap_frames(&vx_raw), pcap_frames(&enc_raw), r)
    }

    fn ping(&self, from: u8, to: u8, count: u32) -> bool {
        self.topo.ping_containers(from, to, count).is_ok()
    }

    /// A DF ping whose packet is exactly the overlay MTU.
    fn full_size_ping(&self, from: u8, to: u8) -> bool {
        let dst = self.topo.node(to).unwrap().container_ip.to_string();
        let payload = (self.vxlan_mtu - 28).to_string();
        Cmd::in_netns(&self.topo.node(from).unwrap().container_ns, "ping")
            .args(["-n", "-c", "2", "-W", "2", "-M", "do", "-s", &payload, &dst])
            .run()
            .is_ok()
    }

    fn ping_within(&self, from: u8, to: u8, secs: u32) -> bool {
        (0..secs).any(|_| {
            let ok = self.ping(from, to, 1);
            if !ok {
                std::thread::sleep(Duration::from_millis(500));
            }
            ok
        })
    }

    fn transfer(&self, from: u8, to: u8, bytes: u64) -> traffic::TcpReport {
        let n = |i: u8| self.topo.node(i).unwrap().clone();
        traffic::start_tcp(
            &helper_bin(),
            &n(from).container_ns,
            &n(to).container_ns,
            std::net::SocketAddr::from((n(to).container_ip, 5201)),
            bytes,
            None,
        )
        .expect("start tcp")
        .finish(Duration::from_secs(120))
        .expect("tcp transfer")
    }

    /// A rogue underlay host injects cleartext VXLAN (VNI 42, to container
    /// 1's address, payload "rogue") to node 1's VXLAN port, from its own
    /// address or spoofing `spoof`'s; returns how many reached container 1.
    fn inject(&self, rogue: &str, spoof: Option<u8>) -> usize {
        let c1 = self.topo.node(1).unwrap().container_ip;
        let cap = Capture::start(
            &self.topo.node(1).unwrap().container_ns,
            "eth0",
            "udp port 7777",
            &self.cluster.dir,
        );
        let frame = packets::eth_ipv4_udp(
            std::net::Ipv4Addr::new(10, 42, 0, 66),
            c1,
            6666,
            7777,
            b"rogue",
        );
        let vx = packets::vxlan(LAB_VNI, &frame);
        let path = self
            .cluster
            .dir
            .join(format!("inject-{}.bin", rand::random::<u32>()));
        std::fs::write(
            &path,
            traffic::encode_datagrams(&[vx.clone(), vx.clone(), vx]),
        )
        .unwrap();
        let dst = std::net::SocketAddr::new(self.underlay(1), VXLAN_PORT);
        let mut cmd = Cmd::in_netns(rogue, helper_bin().to_string_lossy())
            .args(["udp-inject".to_owned(), dst.to_string()])
            .arg(path.to_string_lossy());
        if let Some(j) = spoof {
            cmd = cmd.arg(std::net::SocketAddr::new(self.underlay(j), 40000).to_string());
        }
        let out = cmd.run().expect("udp-inject");
        assert!(
            out.contains("sent=3"),
            "the rogue host could not send: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
        let (_, got) = cap.stop();
        got.iter().filter(|d| d.payload == b"rogue").count()
    }

    fn start(&mut self, i: u8) {
        self.cluster.start(i).expect("agent starts");
    }
}

fn encrypts_a_running_overlay(ipv6: bool, local: bool) {
    let mut t = Transparent::new(ipv6, local, None);
    let family = if ipv6 { "-6" } else { "-4" };
    let ns1 = t.topo.node(1).unwrap().ns.clone();
    assert!(
        Cmd::new("ip")
            .args(["-n", &ns1, family, "route", "show", "default"])
            .run()
            .unwrap()
            .contains("default via"),
        "node1 needs a default route for this test to mean anything"
    );

    // Before vxsec: the overlay works, in cleartext.
    let (clear, _, ok) = t.captured(2, false, || t.ping(1, 2, 3));
    assert!(ok, "the plain overlay does not work");
    assert!(clear >= 6, "no cleartext VXLAN seen before vxsec: {clear}");

    // The operator lowers the overlay MTU to what vxsec advises, then
    // starts vxsec in transparent mode; the overlay is not touched.
    t.set_overlay_mtu(t.vxlan_mtu);
    t.start(1);
    t.start(2);
    t.cluster
        .wait_established(1, 2, Duration::from_secs(15))
        .expect("established");
    assert_eq!(
        t.cluster.vxlan_mtu(1).unwrap(),
        t.vxlan_mtu,
        "status advises another overlay MTU than `vxsec mtu`"
    );
    let (clear, enc, (pings, full, report)) = t.captured(2, false, || {
        (
            t.ping_within(1, 2, 10) && t.ping(1, 2, 3),
            t.full_size_ping(1, 2),
            t.transfer(1, 2, 8 << 20),
        )
    });
    assert!(pings, "overlay ping failed in transparent mode");
    assert!(full, "full-size DF ping at MTU {} failed", t.vxlan_mtu);
    assert!(report.intact(), "transfer damaged: {report:?}");
    assert_eq!(clear, 0, "cleartext VXLAN between the vxsec nodes");
    assert!(
        enc > 100,
        "the traffic did not go through vxsec: {enc} frames"
    );

    // Node 3 runs no vxsec: by default its VXLAN leaves as before.
    let (clear3, _, ok3) = t.captured(3, false, || t.ping(1, 3, 3));
    assert!(
        ok3,
        "transparent_unknown = cleartext cut off a node without vxsec"
    );
    assert!(clear3 >= 6, "VXLAN to node 3 not seen: {clear3}");

    // Cleartext VXLAN from the underlay: spoofing a peer's address it is
    // dropped (a peer's VXLAN only comes out of vxsec0); from another
    // address it gets in, as it would without vxsec (documented price of
    // transparent_unknown = "cleartext").
    if !ipv6 {
        let rogue = t.topo.add_underlay_host(66).unwrap();
        assert_eq!(
            t.inject(&rogue, Some(2)),
            0,
            "VXLAN spoofing peer node 2 got in"
        );
        assert_eq!(
            t.inject(&rogue, None),
            3,
            "VXLAN from a non-peer did not get in"
        );
    }

    // Agent 1 killed: nothing leaves in cleartext, the overlay is down.
    t.cluster.kill(1).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (clear, _, ok) = t.captured(2, false, || t.ping(1, 2, 3));
    assert!(!ok, "the overlay answered with node 1's agent down");
    assert_eq!(
        clear, 0,
        "cleartext VXLAN left node 1 while its agent was down"
    );
    let state = guards::state(&helper_bin(), &ns1).expect("guard state");
    let dropped: u64 = state
        .rules
        .iter()
        .filter(|r| r.comment.contains("@peers"))
        .map(|r| r.packets)
        .sum();
    assert!(dropped > 0, "the peer-set rule dropped nothing: {state:?}");

    // Restarted: the overlay resumes by itself, still encrypted.
    t.start(1);
    let (clear, _, ok) = t.captured(2, false, || t.ping_within(1, 2, 30) && t.ping(1, 2, 3));
    if !ok {
        let show = |args: &[&str]| {
            Cmd::new("ip")
                .args(["-n", &ns1])
                .args(args.iter().copied())
                .run()
        };
        panic!(
            "the overlay did not resume after the restart:\nrules {:?}\ntable 120 {:?}\nstatus {}",
            show(&[family, "rule"]),
            show(&[family, "route", "show", "table", "120"]),
            t.cluster
                .status_json(1)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
    }
    assert_eq!(clear, 0, "cleartext VXLAN after the restart");

    // Peers change at run time (control socket, as a fleet daemon does;
    // SIGHUP): the steering route and the guard's set follow.
    let u2 = t.underlay(2).to_string();
    let key2 = t.cluster.agent(2).unwrap().public_key.clone();
    let table = || {
        Cmd::new("ip")
            .args(["-n", &ns1, family, "route", "show", "table", "120"])
            .run()
            .unwrap()
    };
    let set = || {
        let name = if ipv6 { "peers6" } else { "peers4" };
        Cmd::in_netns(&ns1, "nft")
            .args(["list", "set", "inet", "vxsec", name])
            .run()
            .unwrap()
    };
    assert!(table().contains(&format!("{u2} dev vxsec0")), "{}", table());
    t.cluster
        .ctl(1, &["peer", "remove", &key2])
        .expect("peer remove");
    assert!(
        !table().contains(&u2),
        "route to a removed peer: {}",
        table()
    );
    assert!(
        !set().contains(&u2),
        "removed peer still in the set: {}",
        set()
    );
    // Overlay traffic meanwhile: node 1's VXLAN device caches the route it
    // now gets (main table, eth0; dropped by node 2's guard).
    assert!(!t.ping(1, 2, 2), "node 2 answered a node that is no peer");
    let endpoint = if ipv6 {
        format!("[{u2}]:{LISTEN_PORT}")
    } else {
        format!("{u2}:{LISTEN_PORT}")
    };
    let tunnel = t.topo.node(2).unwrap().tunnel_ip.to_string();
    t.cluster
        .ctl(
            1,
            &[
                "peer",
                "add",
                "--public-key",
                &key2,
                "--endpoint",
                &endpoint,
                "--tunnel-address",
                &tunnel,
                "--allowed-vni",
                "42",
            ],
        )
        .expect("peer add");
    assert!(table().contains(&format!("{u2} dev vxsec0")), "{}", table());
    assert!(set().contains(&u2), "added peer not in the set: {}", set());
    let (clear, _, ok) = t.captured(2, false, || t.ping_within(1, 2, 15) && t.ping(1, 2, 3));
    assert!(ok, "the overlay did not work after the peer was added back");
    assert_eq!(clear, 0, "cleartext VXLAN after the peer was added back");
    t.cluster.signal(1, "HUP").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        table().contains(&format!("{u2} dev vxsec0")),
        "after SIGHUP: {}",
        table()
    );

    // A peer added over the control socket (node 3, which runs no vxsec)
    // stays in the guard's set across a restart of the agent, so VXLAN to
    // it is dropped, not sent in cleartext as to a stranger, until it is
    // added again or the peers change; then node 3 is a stranger again.
    let u3 = t.underlay(3).to_string();
    let key3 = t.cluster.agent(3).unwrap().public_key.clone();
    let ep3 = if ipv6 {
        format!("[{u3}]:{LISTEN_PORT}")
    } else {
        format!("{u3}:{LISTEN_PORT}")
    };
    let tunnel3 = t.topo.node(3).unwrap().tunnel_ip.to_string();
    let add3 = [
        "peer",
        "add",
        "--public-key",
        &key3,
        "--endpoint",
        &ep3,
        "--tunnel-address",
        &tunnel3,
    ];
    t.cluster.ctl(1, &add3).expect("peer add node3");
    assert!(set().contains(&u3), "{}", set());
    t.cluster.kill(1).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    t.start(1);
    assert!(
        set().contains(&u3),
        "a restart dropped a runtime peer from the set: {}",
        set()
    );
    let (clear3, _, ok3) = t.captured(3, true, || t.ping(1, 3, 2));
    assert!(
        !ok3 && clear3 == 0,
        "VXLAN to a known peer left in cleartext after a restart"
    );
    // The agent does not know it any more; the next peer change (here a
    // SIGHUP) makes the set exactly the agent's peers.
    t.cluster.signal(1, "HUP").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!set().contains(&u3), "{}", set());
    assert!(
        t.ping_within(1, 3, 10),
        "node 3 is a stranger again: cleartext by default"
    );
}

#[test]
fn transparent_mode_encrypts_a_running_ipv4_overlay() {
    if !root_or_skip("transparent_mode_encrypts_a_running_ipv4_overlay") {
        return;
    }
    encrypts_a_running_overlay(false, true);
}

/// VXLAN devices without `local`, as Docker's overlay driver makes them:
/// the steering route's `src` keeps the underlay address as their source.
#[test]
fn transparent_mode_encrypts_an_overlay_without_local_addresses() {
    if !root_or_skip("transparent_mode_encrypts_an_overlay_without_local_addresses") {
        return;
    }
    encrypts_a_running_overlay(false, false);
}

#[test]
fn transparent_mode_encrypts_a_running_ipv6_overlay() {
    if !root_or_skip("transparent_mode_encrypts_a_running_ipv6_overlay") {
        return;
    }
    encrypts_a_running_overlay(true, true);
}

/// With `transparent_unknown = "drop"` VXLAN to a node without vxsec is
/// dropped (and counted), while the peers' overlay works.
#[test]
fn transparent_unknown_drop_keeps_vxlan_to_other_nodes_in() {
    if !root_or_skip("transparent_unknown_drop_keeps_vxlan_to_other_nodes_in") {
        return;
    }
    let mut t = Transparent::new(false, true, Some("drop"));
    t.set_overlay_mtu(t.vxlan_mtu);
    t.start(1);
    t.start(2);
    assert!(t.ping_within(1, 2, 15), "the peers' overlay does not work");
    let (clear3, _, ok3) = t.captured(3, true, || t.ping(1, 3, 2));
    assert!(!ok3, "node 3 answered although VXLAN to it is dropped");
    assert_eq!(clear3, 0, "cleartext VXLAN to node 3");
    let rogue = t.topo.add_underlay_host(66).unwrap();
    assert_eq!(
        t.inject(&rogue, None),
        0,
        "cleartext VXLAN from the underlay got in"
    );
    assert_eq!(
        t.inject(&rogue, Some(2)),
        0,
        "VXLAN spoofing peer node 2 got in"
    );

    // The rules outlive the agent; `vxsec down` removes them with the rest.
    let ns1 = t.topo.node(1).unwrap().ns.clone();
    let rules = || Cmd::new("ip").args(["-n", &ns1, "rule"]).run().unwrap();
    t.cluster.stop(1, Duration::from_secs(5)).unwrap();
    assert!(rules().contains("lookup 120 proto 120"), "{}", rules());
    let out = t.cluster.down(1).expect("vxsec down");
    assert!(out.contains("(transparent mode)"), "{out}");
    assert!(!rules().contains("lookup 120"), "{}", rules());
}
