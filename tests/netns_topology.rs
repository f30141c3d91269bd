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
        topo.attach_vxlan(n, LAB_VNI, VxlanOver::Underlay, 1450)
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
