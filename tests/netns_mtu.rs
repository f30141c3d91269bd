//! MTU over vxsec (the seeds' pitfall #1: "connection hangs"): at the VXLAN
//! MTU vxsec documents, for IPv4 and IPv6 VTEPs over IPv4 and IPv6
//! underlays, the largest DF ping (IPv4 and IPv6 inside) passes and bulk
//! TCP works; one byte more with DF gets ICMP fragmentation-needed /
//! packet-too-big back instead of silence. The commands `vxsec mtu`,
//! `vxsec status` and README print run as printed, with the real `ip`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;

use common::*;

/// Inner packet family of a DF ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    V4,
    V6,
}

impl Inner {
    /// IP + ICMP header bytes: the ping payload that fills `mtu`.
    fn payload_for(self, mtu: u32) -> u32 {
        match self {
            Inner::V4 => mtu - 28,
            Inner::V6 => mtu - 48,
        }
    }
}

fn df_ping(lab: &Lab, from: u8, to: u8, payload: u32) -> (bool, String) {
    df_ping_inner(lab, from, to, payload, Inner::V4)
}

fn df_ping_inner(lab: &Lab, from: u8, to: u8, payload: u32, inner: Inner) -> (bool, String) {
    let node = lab.topo.node(to).unwrap();
    let (family, dst) = match inner {
        Inner::V4 => ("-4", node.container_ip.to_string()),
        Inner::V6 => ("-6", node.container_ip6().to_string()),
    };
    let out = Cmd::new("timeout")
        .args(["10", "ip", "netns", "exec", &lab.container_ns(from), "ping"])
        .args([
            family,
            "-n",
            "-M",
            "do",
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "2",
            "-s",
            &payload.to_string(),
            &dst,
        ])
        .output()
        .expect("ping");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Sets node 1's VXLAN device, its bridge port to the container and the
/// container's interface to `mtu`, as an operator who left the overlay's
/// own MTU in place would.
fn set_node1_overlay_mtu(lab: &Lab, mtu: u32) {
    let (n1, c1) = (lab.node_ns(1), lab.container_ns(1));
    for (ns, dev) in [(&n1, "vxlan42"), (&n1, "c0"), (&c1, "eth0")] {
        Cmd::new("ip")
            .args([
                "-n",
                ns.as_str(),
                "link",
                "set",
                dev,
                "mtu",
                &mtu.to_string(),
            ])
            .run()
            .unwrap();
    }
}

/// Address families of a lab: the underlay (vxsec's outer header) and the
/// tunnel addresses (the VTEPs, VXLAN's outer header).
#[derive(Clone, Copy, Debug)]
struct Families {
    underlay_v6: bool,
    vtep_v6: bool,
}

const V4_V4: Families = Families {
    underlay_v6: false,
    vtep_v6: false,
};

fn lab_for(underlay_mtu: u32, f: Families) -> Lab {
    Lab::new(LabSpec {
        underlay_mtu,
        options: ClusterOptions {
            ipv6_underlay: f.underlay_v6,
            ipv6_tunnel: f.vtep_v6,
            ..ClusterOptions::default()
        },
        ..LabSpec::default()
    })
}

/// What `vxsec mtu` prints for this underlay and node 1's tunnel address.
fn vxsec_mtu(underlay_mtu: u32, f: Families, local: IpAddr) -> String {
    let mut cmd = Cmd::new(vxsec_bin().to_string_lossy()).args([
        "mtu",
        "--underlay",
        &underlay_mtu.to_string(),
        "--tunnel-address",
        &local.to_string(),
    ]);
    if f.underlay_v6 {
        cmd = cmd.arg("--ipv6");
    }
    cmd.run().expect("vxsec mtu")
}

fn documented_mtu_works(underlay_mtu: u32, f: Families) {
    let lab = lab_for(underlay_mtu, f);
    // vxsec's own arithmetic (DESIGN §6): the outer header of vxsec's UDP
    // follows the underlay, VXLAN's outer header the VTEPs.
    let expect_tunnel = underlay_mtu - if f.underlay_v6 { 40 } else { 20 } - 8 - 32;
    let expect_vxlan = expect_tunnel - if f.vtep_v6 { 70 } else { 50 };
    let st = lab.status(1);
    assert_eq!(st["tunnel_mtu"], expect_tunnel, "{st}");
    assert_eq!(lab.vxlan_mtu, expect_vxlan, "{f:?}");
    assert_eq!(
        st["docker_mtu"],
        expect_vxlan + 50,
        "Docker subtracts 50: {st}"
    );
    let local = lab.cluster.tunnel_addr(lab.topo.node(1).unwrap());
    let mtu_out = vxsec_mtu(underlay_mtu, f, local);
    assert!(
        mtu_out.contains(&format!("VXLAN device MTU:  {expect_vxlan} ")),
        "{mtu_out}"
    );
    assert!(
        mtu_out.contains(&format!("driver.mtu={} ", expect_vxlan + 50)),
        "{mtu_out}"
    );

    for inner in [Inner::V4, Inner::V6] {
        let largest = inner.payload_for(lab.vxlan_mtu);
        let (ok, out) = df_ping_inner(&lab, 1, 2, largest, inner);
        assert!(
            ok,
            "largest DF ping ({inner:?} inside, {largest} bytes) must pass:\n{out}"
        );
    }
    let r = lab.tcp(2, 3, 5003, 30_000_000, None);
    assert!(r.intact(), "bulk TCP at MTU {}: {r:?}", lab.vxlan_mtu);

    // The command `vxsec status` prints runs as printed (here in container
    // 1's namespace, which has no vxlan42 yet) and makes that device.
    let human = lab.cluster.ctl(1, &["status"]).expect("status");
    assert!(
        human.contains(&format!(
            "Docker overlay networks: --opt com.docker.network.driver.mtu={} ",
            expect_vxlan + 50
        )),
        "{human}"
    );
    let lines = ip_link_lines(&human);
    assert_eq!(lines.len(), 1, "{human}");
    run_as_printed(&lab.container_ns(1), &lines[0]);
    let (mtu, id, got_local, port, learning, _) = vxlan_link(&lab.container_ns(1), "vxlan42");
    assert_eq!(
        (mtu, id, got_local, port, learning),
        (u64::from(expect_vxlan), 42, local.to_string(), 4789, false),
        "{}",
        lines[0]
    );
}

#[test]
fn largest_df_ping_and_bulk_tcp_at_documented_mtu_1500_underlay() {
    if !root_or_skip("largest_df_ping_and_bulk_tcp_at_documented_mtu_1500_underlay") {
        return;
    }
    documented_mtu_works(1500, V4_V4);
}

#[test]
fn largest_df_pings_and_bulk_tcp_ipv6_underlay_ipv6_vteps() {
    if !root_or_skip("largest_df_pings_and_bulk_tcp_ipv6_underlay_ipv6_vteps") {
        return;
    }
    documented_mtu_works(
        1500,
        Families {
            underlay_v6: true,
            vtep_v6: true,
        },
    );
}

#[test]
fn largest_df_pings_and_bulk_tcp_ipv4_underlay_ipv6_vteps() {
    if !root_or_skip("largest_df_pings_and_bulk_tcp_ipv4_underlay_ipv6_vteps") {
        return;
    }
    documented_mtu_works(
        1500,
        Families {
            underlay_v6: false,
            vtep_v6: true,
        },
    );
}

#[test]
fn largest_df_pings_and_bulk_tcp_ipv6_underlay_ipv4_vteps() {
    if !root_or_skip("largest_df_pings_and_bulk_tcp_ipv6_underlay_ipv4_vteps") {
        return;
    }
    documented_mtu_works(
        1500,
        Families {
            underlay_v6: true,
            vtep_v6: false,
        },
    );
}

#[test]
fn largest_df_ping_and_bulk_tcp_at_documented_mtu_9000_underlay() {
    if !root_or_skip("largest_df_ping_and_bulk_tcp_at_documented_mtu_9000_underlay") {
        return;
    }
    documented_mtu_works(9000, V4_V4);
}

fn one_byte_over_is_answered(f: Families) {
    let lab = lab_for(1500, f);
    let mtu = lab.vxlan_mtu;
    // The pitfall: the container side left at 1500 while the path carries
    // only the documented VXLAN MTU.
    set_node1_overlay_mtu(&lab, 1500);
    for inner in [Inner::V4, Inner::V6] {
        let at = inner.payload_for(mtu);
        let (ok, out) = df_ping_inner(&lab, 1, 2, at, inner);
        assert!(
            ok,
            "{f:?}: DF ping ({inner:?} inside) at exactly the VXLAN MTU must pass:\n{out}"
        );
        let (ok, out) = df_ping_inner(&lab, 1, 2, at + 1, inner);
        assert!(
            !ok,
            "{f:?}: one byte over the VXLAN MTU cannot pass:\n{out}"
        );
        let lower = out.to_lowercase();
        assert!(
            lower.contains("frag needed")
                || lower.contains("message too long")
                || lower.contains("packet too big"),
            "{f:?}: expected ICMP fragmentation-needed / packet too big, got:\n{out}"
        );
        assert!(
            out.contains(&format!("mtu = {mtu}")) || out.contains(&format!("mtu={mtu}")),
            "{f:?}: the answer names MTU {mtu}:\n{out}"
        );
    }
    // With path MTU discovery working, bulk TCP from the 1500-byte side completes.
    let r = lab.tcp(1, 2, 5004, 10_000_000, None);
    assert!(r.intact(), "{r:?}");
}

#[test]
fn one_byte_over_gets_fragmentation_needed_not_a_hang() {
    if !root_or_skip("one_byte_over_gets_fragmentation_needed_not_a_hang") {
        return;
    }
    one_byte_over_is_answered(V4_V4);
}

#[test]
fn one_byte_over_ipv6_vteps_gets_packet_too_big_not_a_hang() {
    if !root_or_skip("one_byte_over_ipv6_vteps_gets_packet_too_big_not_a_hang") {
        return;
    }
    one_byte_over_is_answered(Families {
        underlay_v6: true,
        vtep_v6: true,
    });
}

/// The pitfall the other way round: Docker's default overlay MTU (1450)
/// left on the VXLAN device over vxsec. For packets with DF the kernel's
/// VXLAN answers with fragmentation-needed itself; packets without DF it
/// encapsulates and then fragments on their way into vxsec0. vxsec drops
/// those fragments (a non-first fragment carries no VNI to check) and
/// says so: a `fragment` drop counter, and a warning naming the VXLAN MTU
/// to set.
#[test]
fn vxlan_mtu_above_the_tunnel_is_counted_and_explained() {
    if !root_or_skip("vxlan_mtu_above_the_tunnel_is_counted_and_explained") {
        return;
    }
    let lab = Lab::three();
    let mtu = lab.vxlan_mtu;
    let c1 = lab.container_ns(1);
    set_node1_overlay_mtu(&lab, 1450);
    let frags = |st: &serde_json::Value| st.get("drops").map_or(0, |d| num(d, "fragment"));
    let before = frags(&lab.status(1));
    // Small packets still pass; a 1428-byte one without DF (fits 1450, not
    // the tunnel once VXLAN-encapsulated) is fragmented and lost.
    let (ok, out) = df_ping(&lab, 1, 2, 100);
    assert!(ok, "small packets pass:\n{out}");
    let dst = lab.topo.node(2).unwrap().container_ip.to_string();
    let lost = Cmd::new("timeout")
        .args(["10", "ip", "netns", "exec", &c1, "ping", "-n", "-c", "3"])
        .args(["-M", "dont", "-i", "0.3", "-W", "1", "-s", "1400", &dst])
        .output()
        .expect("ping");
    assert!(!lost.status.success(), "fragmented VXLAN cannot pass");
    let st = lab.status(1);
    assert!(frags(&st) >= before + 3, "fragments counted: {st}");
    assert_eq!(
        st.get("drops").map_or(0, |d| num(d, "not_vxlan")),
        0,
        "not lumped in with non-VXLAN traffic: {st}"
    );
    let log = lab.cluster.agent(1).unwrap().log_tail();
    assert!(
        log.contains("fragmented VXLAN") && log.contains(&mtu.to_string()),
        "a warning naming the VXLAN MTU {mtu}:\n{log}"
    );
}

/// `ip -d -j link show DEV` in `ns`: (mtu, VNI, local address, port,
/// learning, master).
fn vxlan_link(ns: &str, dev: &str) -> (u64, u64, String, u64, bool, String) {
    let out = Cmd::new("ip")
        .args(["-n", ns, "-d", "-j", "link", "show", dev])
        .run()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let l = &v[0];
    let d = &l["linkinfo"]["info_data"];
    let local = d["local"]
        .as_str()
        .or_else(|| d["local6"].as_str())
        .unwrap_or("")
        .to_owned();
    (
        l["mtu"].as_u64().unwrap_or(0),
        d["id"].as_u64().unwrap_or(0),
        local,
        d["port"].as_u64().unwrap_or(0),
        d["learning"].as_bool().unwrap_or(true),
        l["master"].as_str().unwrap_or("").to_owned(),
    )
}

/// Runs `line` exactly as printed, through a shell, in namespace `ns`.
fn run_as_printed(ns: &str, line: &str) {
    Cmd::in_netns(ns, "sh")
        .args(["-c", line])
        .run()
        .unwrap_or_else(|e| panic!("`{line}` as printed failed: {e}"));
}

/// The `ip link add` lines of a printed report.
fn ip_link_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ip link add "))
        .map(str::to_owned)
        .collect()
}

/// README's plain-Linux block and the command `vxsec mtu` prints, for IPv4
/// and IPv6 tunnel addresses over IPv4 and IPv6 underlays, run as printed
/// with the real `ip` (Debian's iproute2 refuses `mtu` after `type vxlan`)
/// and give exactly the device they describe.
#[test]
fn printed_commands_run_as_printed() {
    if !root_or_skip("printed_commands_run_as_printed") {
        return;
    }
    let topo = Topology::new("vxp", 1, 1500).unwrap();
    let ns = topo.node(1).unwrap().ns.clone();

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### With plain Linux VXLAN")
        .nth(1)
        .expect("README has the plain Linux section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        run_as_printed(&ns, line);
    }
    let (mtu, id, local, port, learning, master) = vxlan_link(&ns, "vxlan42");
    assert_eq!(
        (mtu, id, local.as_str(), port, learning, master.as_str()),
        (1390, 42, "10.200.0.1", 4789, false, "br0"),
        "README's device"
    );
    let fdb = Cmd::in_netns(&ns, "bridge")
        .args(["fdb", "show", "dev", "vxlan42"])
        .run()
        .unwrap();
    for dst in ["10.200.0.2", "10.200.0.3"] {
        assert!(fdb.contains(&format!("dst {dst}")), "{fdb}");
    }
    Cmd::new("ip")
        .args(["-n", &ns, "link", "del", "vxlan42"])
        .run()
        .unwrap();

    for (underlay_v6, local, expect) in [
        (false, "10.200.0.1", 1390),
        (false, "fd00:200::1", 1370),
        (true, "10.200.0.1", 1370),
        (true, "fd00:200::1", 1350),
    ] {
        let f = Families {
            underlay_v6,
            vtep_v6: local.contains(':'),
        };
        let out = vxsec_mtu(1500, f, local.parse().unwrap());
        let lines = ip_link_lines(&out);
        assert_eq!(lines.len(), 1, "{out}");
        run_as_printed(&ns, &lines[0]);
        let (mtu, id, got_local, port, learning, _) = vxlan_link(&ns, "vxlan42");
        assert_eq!(
            (mtu, id, got_local.as_str(), port, learning),
            (expect, 42, local, 4789, false),
            "{f:?}: {}",
            lines[0]
        );
        assert!(
            out.contains(&format!(
                "com.docker.network.driver.mtu={} backend",
                expect + 50
            )),
            "{out}"
        );
        Cmd::new("ip")
            .args(["-n", &ns, "link", "del", "vxlan42"])
            .run()
            .unwrap();
    }
}

/// `vxsec mtu` on a node without a default route answers for a 1500-byte
/// underlay and says so (it used to exit 1); with default routes it reads
/// their interface's MTU, IPv4's first, else IPv6's.
#[test]
fn vxsec_mtu_without_a_default_route_assumes_1500_and_says_so() {
    if !root_or_skip("vxsec_mtu_without_a_default_route_assumes_1500_and_says_so") {
        return;
    }
    let topo = Topology::new("vxr", 1, 9000).unwrap();
    let ns = topo.node(1).unwrap().ns.clone();
    let mtu_in_ns = || {
        Cmd::in_netns(&ns, vxsec_bin().to_string_lossy())
            .arg("mtu")
            .output()
            .unwrap()
    };
    // The lab gives every node default routes via eth0 (MTU 9000).
    let out = mtu_in_ns();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("underlay MTU:      9000"), "{text}");
    assert!(text.contains("tunnel MTU:        8940"), "{text}");
    // Only the IPv6 default route: its interface, and a 40-byte outer header.
    Cmd::new("ip")
        .args(["-n", &ns, "route", "del", "default"])
        .run()
        .unwrap();
    let out = mtu_in_ns();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("tunnel MTU:        8920"), "{text}");
    // No default route at all.
    Cmd::new("ip")
        .args(["-n", &ns, "-6", "route", "del", "default"])
        .run()
        .unwrap();
    let out = mtu_in_ns();
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "exit status {:?}: {err}", out.status);
    assert!(
        err.contains("no default route") && err.contains("1500"),
        "{err}"
    );
    assert!(text.contains("tunnel MTU:        1440"), "{text}");
    assert!(text.contains("driver.mtu=1440"), "{text}");
}
