//! Key rotation under load: `vxsec rekey` every 2 s for 30 s (alternating
//! the initiating node) while a sequenced UDP stream crosses the overlay in
//! both directions: 0 lost, 0 duplicated, and every rekey shows in status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn rekey_every_2s_for_30s_under_load_loses_nothing() {
    if !root_or_skip("rekey_every_2s_for_30s_under_load_loses_nothing") {
        return;
    }
    let lab = Lab::three();
    lab.ping(1, 2, 1).expect("warm-up");
    let before = lab.cluster.peer_status(1, 2).unwrap();
    // ~1000 packets/s each way (sleep-paced).
    let fwd = lab.udp_stream(1, 2, 5020, 1000);
    let back = lab.udp_stream(2, 1, 5021, 1000);
    let mut spis = vec![before["current_spi_local"].clone()];
    for round in 0..15 {
        std::thread::sleep(Duration::from_secs(2));
        let node = if round % 2 == 0 { 1 } else { 2 };
        lab.cluster.ctl(node, &["rekey"]).expect("vxsec rekey");
        spis.push(lab.cluster.peer_status(1, 2).unwrap()["current_spi_local"].clone());
    }
    std::thread::sleep(Duration::from_secs(1));
    let f = fwd.stop().unwrap();
    let b = back.stop().unwrap();
    let after = lab.cluster.peer_status(1, 2).unwrap();
    eprintln!("forward {f:?}\nbackward {b:?}\nnode1 view of node2: {after}");
    assert!(
        f.sent > 5_000 && b.sent > 5_000,
        "stream too slow: {f:?} {b:?}"
    );
    assert_eq!((f.lost, f.duplicated), (0, 0), "forward stream: {f:?}");
    assert_eq!((b.lost, b.duplicated), (0, 0), "backward stream: {b:?}");
    assert!(
        num(&after, "rekeys") >= num(&before, "rekeys") + 14,
        "rekeys {} -> {}",
        num(&before, "rekeys"),
        num(&after, "rekeys")
    );
    spis.dedup();
    assert!(
        spis.len() >= 10,
        "SPI changed only {} times: {spis:?}",
        spis.len() - 1
    );
    // `rekey` without a key rotates every peer: node3 must still work.
    lab.ping(1, 3, 1).expect("node3 reachable after rotations");
}
