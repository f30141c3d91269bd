//! MTU over vxsec (the seeds' pitfall #1: "connection hangs"): at the VXLAN
//! MTU vxsec documents, the largest DF ping passes and bulk TCP works; one
//! byte more with DF gets ICMP fragmentation-needed back instead of silence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn df_ping(lab: &Lab, from: u8, to: u8, payload: u32) -> (bool, String) {
    let dst = lab.topo.node(to).unwrap().container_ip.to_string();
    let out = Cmd::new("timeout")
        .args(["10", "ip", "netns", "exec", &lab.container_ns(from), "ping"])
        .args([
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

fn documented_mtu_works(underlay_mtu: u32) {
    let lab = Lab::new(LabSpec {
        underlay_mtu,
        ..LabSpec::default()
    });
    // vxsec's own arithmetic (DESIGN §6), as printed by `vxsec mtu`.
    let expect_tunnel = underlay_mtu - 20 - 8 - 32;
    let mtu_out = Cmd::new(vxsec_bin().to_string_lossy())
        .args(["mtu", "--underlay", &underlay_mtu.to_string()])
        .run()
        .expect("vxsec mtu");
    assert!(mtu_out.contains(&lab.vxlan_mtu.to_string()), "{mtu_out}");
    assert!(
        lab.vxlan_mtu <= expect_tunnel - 50,
        "vxlan mtu {} at underlay {underlay_mtu}",
        lab.vxlan_mtu
    );

    let largest = lab.vxlan_mtu - 28;
    let (ok, out) = df_ping(&lab, 1, 2, largest);
    assert!(ok, "largest DF ping ({largest} bytes) must pass:\n{out}");
    let r = lab.tcp(2, 3, 5003, 30_000_000, None);
    assert!(r.intact(), "bulk TCP at MTU {}: {r:?}", lab.vxlan_mtu);
}

#[test]
fn largest_df_ping_and_bulk_tcp_at_documented_mtu_1500_underlay() {
    if !root_or_skip("largest_df_ping_and_bulk_tcp_at_documented_mtu_1500_underlay") {
        return;
    }
    documented_mtu_works(1500);
}

#[test]
fn largest_df_ping_and_bulk_tcp_at_documented_mtu_9000_underlay() {
    if !root_or_skip("largest_df_ping_and_bulk_tcp_at_documented_mtu_9000_underlay") {
        return;
    }
    documented_mtu_works(9000);
}

#[test]
fn one_byte_over_gets_fragmentation_needed_not_a_hang() {
    if !root_or_skip("one_byte_over_gets_fragmentation_needed_not_a_hang") {
        return;
    }
    let lab = Lab::three();
    let mtu = lab.vxlan_mtu;
    // The pitfall: the container side left at 1500 while the path carries
    // only the documented VXLAN MTU.
    set_node1_overlay_mtu(&lab, 1500);
    let (ok, out) = df_ping(&lab, 1, 2, mtu - 28);
    assert!(ok, "DF ping at exactly the VXLAN MTU must pass:\n{out}");
    let (ok, out) = df_ping(&lab, 1, 2, mtu - 28 + 1);
    assert!(!ok, "one byte over the VXLAN MTU cannot pass:\n{out}");
    let lower = out.to_lowercase();
    assert!(
        lower.contains("frag needed") || lower.contains("message too long"),
        "expected ICMP fragmentation-needed, got:\n{out}"
    );
    assert!(
        out.contains(&format!("mtu = {mtu}")) || out.contains(&format!("mtu={mtu}")),
        "{out}"
    );
    // With path MTU discovery working, bulk TCP from the 1500-byte side completes.
    let r = lab.tcp(1, 2, 5004, 10_000_000, None);
    assert!(r.intact(), "{r:?}");
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
