//! Fleet mode against a real 3-member etcd cluster on the lab underlay:
//! nodes join with one signed certificate and no other node's files change;
//! unsigned, forged, altered and expired records are rejected and counted;
//! an agent cut off from etcd keeps its peers and restarts from its cache;
//! the etcd leader is killed and agents carry on; a node that stops is
//! removed at once, one that crashes when its lease expires; a node rolls
//! its static key under traffic (`vxsec fleet rotate`) with no packet lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fleet_lab::{can_run, vxsec, wait_for, FleetLab, TTL};
use common::*;

#[test]
fn fleet_over_etcd_with_client_tls() {
    if !can_run("fleet_over_etcd_with_client_tls") {
        return;
    }
    let mut lab = FleetLab::new(1, true);
    assert!(lab.etcd.client_urls()[0].starts_with("https://"));
    // node3 is not in the fleet: a static [[peer]] of node1, and pushed
    // over node2's control socket; fleet peers work beside both.
    lab.cluster.set_peers(1, vec![(3, None)]).unwrap();
    lab.cluster.set_extra_config(3, String::new()).unwrap();
    lab.cluster.set_peers(3, vec![(1, None)]).unwrap();
    for i in 1..=3 {
        lab.start(i);
    }
    assert!(
        lab.ping_ok(1, 2, 20),
        "node1 -> node2, peers from etcd over TLS"
    );
    let f = lab.fleet(2);
    assert_eq!(f["connected"], true, "{f}");
    assert_eq!(f["peers"], 1, "{f}");
    assert!(
        lab.ping_ok(1, 3, 10),
        "node1 -> node3, a static peer beside fleet peers"
    );
    for (on, other) in [(2u8, 3u8), (3, 2)] {
        let o = lab.cluster.agent(other).unwrap();
        let (pk, tun) = (o.public_key.clone(), o.node.tunnel_ip.to_string());
        let ep = format!("{}:{LISTEN_PORT}", o.node.underlay_ip);
        lab.cluster
            .ctl(
                on,
                &[
                    "peer",
                    "add",
                    "--public-key",
                    &pk,
                    "--endpoint",
                    &ep,
                    "--tunnel-address",
                    &tun,
                ],
            )
            .unwrap();
    }
    assert!(
        lab.ping_ok(2, 3, 10),
        "node2 -> node3 over a control-socket peer"
    );
    assert_eq!(
        lab.peer_addrs(2).len(),
        2,
        "node2: one fleet peer, one pushed"
    );
}

fn sign_extra(lab: &FleetLab, authority: &Path, addr: &str, valid: Option<&str>) -> Vec<u8> {
    let key = lab.path(&format!("k-{addr}.key"));
    let pk = vxsec(&["keygen", "--out", &key.to_string_lossy()]);
    let crt = lab.path(&format!("x-{addr}-{}.crt", rand::random::<u32>()));
    let mut args = vec![
        "fleet".to_string(),
        "sign".into(),
        "--authority".into(),
        authority.to_string_lossy().into_owned(),
        "--public-key".into(),
        pk.trim().to_string(),
        "--tunnel-address".into(),
        addr.into(),
        "--network-id".into(),
        lab.cluster.network_id().into(),
        "--out".into(),
        crt.to_string_lossy().into_owned(),
    ];
    if let Some(v) = valid {
        args.extend(["--valid-seconds".into(), v.into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vxsec(&args);
    vxsec::fleet::files::load_certificate(&crt).unwrap()
}

#[test]
fn fleet_over_real_etcd_join_reject_cutoff_leader_loss_and_leave() {
    if !can_run("fleet_over_real_etcd") {
        return;
    }
    let mut lab = FleetLab::new(3, false);

    // 1. Two nodes join; traffic flows with no static peer anywhere.
    lab.start(1);
    lab.start(2);
    assert!(lab.ping_ok(1, 2, 20), "node1 -> node2 over fleet peers");
    let f1 = lab.fleet(1);
    assert_eq!(f1["connected"], true, "{f1}");
    assert_eq!(f1["peers"], 1, "{f1}");

    // 2. A third node joins: nobody else's files change.
    let files = |lab: &FleetLab| -> Vec<Vec<u8>> {
        (1..=2)
            .flat_map(|i| {
                let a = lab.cluster.agent(i).unwrap();
                [std::fs::read(&a.config_file).unwrap()]
            })
            .collect()
    };
    let before = files(&lab);
    lab.start(3);
    assert!(lab.ping_ok(1, 3, 20), "node1 -> new node3");
    assert!(lab.ping_ok(3, 2, 20), "new node3 -> node2");
    assert_eq!(files(&lab), before, "joining changed another node's config");
    // SIGHUP re-reads the (peerless) file; fleet peers come back.
    lab.cluster.signal(1, "HUP").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    wait_for(5, "fleet peers back after SIGHUP", || {
        lab.peer_addrs(1).len() == 2
    });
    assert!(lab.ping_ok(1, 3, 10), "after SIGHUP: node1 -> node3");

    // 3. Records nobody valid signed never become peers, and are counted.
    let prefix = lab.records_prefix();
    lab.etcd
        .put(&format!("{prefix}10.200.0.9"), b"not a certificate");
    let rogue = lab.path("rogue.key");
    vxsec(&["fleet", "init", "--out", &rogue.to_string_lossy()]);
    let forged = sign_extra(&lab, &rogue, "10.200.0.8", None);
    lab.etcd.put(&format!("{prefix}10.200.0.8"), &forged);
    let authority = lab.path("authority.key");
    let expired = sign_extra(&lab, &authority, "10.200.0.7", Some("1"));
    std::thread::sleep(Duration::from_secs(2));
    lab.etcd.put(&format!("{prefix}10.200.0.7"), &expired);
    // An altered copy of node2's genuine record, over node2's own key.
    let mut altered = vxsec::fleet::files::load_certificate(&lab.path("node2.crt")).unwrap();
    let n = altered.len();
    altered[n - 70] ^= 0x01;
    lab.etcd.put(&format!("{prefix}10.200.0.2"), &altered);
    wait_for(10, "node1 counts every rejection", || {
        let r = &lab.fleet(1)["rejected"];
        ["malformed", "wrong_authority", "expired", "bad_signature"]
            .iter()
            .all(|k| r[k].as_u64().unwrap_or(0) >= 1)
    });
    let addrs = lab.peer_addrs(1);
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    for bad in ["10.200.0.7", "10.200.0.8", "10.200.0.9"] {
        assert!(!addrs.iter().any(|a| a == bad), "{bad} became a peer");
    }
    // node2 saw its own record altered and published it again.
    wait_for(10, "node2 republished its record", || {
        lab.fleet(2)["reconnects"].as_u64() >= Some(1)
    });
    assert!(
        lab.ping_ok(1, 2, 5),
        "node2 still a peer after the altered write"
    );

    // 4. Cut off from etcd: node1 keeps its peers, traffic flows, and a
    //    restart while etcd is unreachable starts from the cache.
    let n1 = lab.topo.node(1).unwrap().ns.clone();
    Cmd::in_netns(&n1, "nft")
        .args(["add table inet vxfcut"])
        .run()
        .unwrap();
    Cmd::in_netns(&n1, "nft")
        .args(["add chain inet vxfcut out { type filter hook output priority 0 ; tcp dport 2379 drop ; }"])
        .run()
        .unwrap();
    wait_for(15, "node1 notices etcd is gone", || {
        lab.fleet(1)["connected"] == false
    });
    assert!(lab.ping_ok(1, 2, 3), "cut off: node1 -> node2");
    assert!(lab.ping_ok(1, 3, 3), "cut off: node1 -> node3");
    lab.cluster.stop(1, Duration::from_secs(10)).unwrap();
    lab.cluster.start(1).unwrap();
    let f1 = lab.fleet(1);
    assert_eq!(f1["loaded_from_cache"], 2, "{f1}");
    assert!(
        lab.ping_ok(1, 2, 10),
        "restarted from cache: node1 -> node2"
    );
    Cmd::in_netns(&n1, "nft")
        .args(["delete table inet vxfcut"])
        .run()
        .unwrap();
    wait_for(25, "node1 reconnects", || lab.fleet(1)["connected"] == true);

    // 5. The etcd leader dies: agents carry on, and a clean stop still
    //    withdraws node3's record at once (two members keep quorum).
    let leader = lab.etcd.leader();
    lab.etcd.kill(leader);
    assert!(lab.ping_ok(1, 2, 3), "leader killed: node1 -> node2");
    wait_for(25, "agents reconnect to the surviving members", || {
        [1, 3].iter().all(|&i| lab.fleet(i)["connected"] == true)
    });
    lab.cluster.stop(3, Duration::from_secs(10)).unwrap();
    wait_for(10, "node1 removes the stopped node3", || {
        !lab.peer_addrs(1).iter().any(|a| a == "10.200.0.3")
    });
    assert!(lab.ping_ok(2, 1, 3), "after node3 left: node2 -> node1");

    // 6. A crashed node goes when its lease expires.
    lab.cluster.kill(2).unwrap();
    wait_for(TTL + 15, "node1 removes crashed node2", || {
        !lab.peer_addrs(1).iter().any(|a| a == "10.200.0.2")
    });
    let keys = lab.etcd.keys(&prefix);
    assert!(keys.iter().any(|k| k.ends_with("10.200.0.1")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.ends_with("10.200.0.2")), "{keys:?}");
    let f1 = lab.fleet(1);
    assert!(f1["removed"].as_u64() >= Some(2), "{f1}");
}

/// The grace period of the rotation test: long enough for peers to learn
/// the new key and handshake with it, short enough to watch it end.
const GRACE_SECONDS: u64 = 8;

#[test]
fn fleet_identity_rotation_under_traffic_loses_nothing() {
    if !can_run("fleet_identity_rotation_under_traffic_loses_nothing") {
        return;
    }
    let mut lab = FleetLab::new(3, false);
    lab.fleet_extra = format!("rotation_grace_seconds = {GRACE_SECONDS}\n");
    for i in 1..=3 {
        lab.write_fleet_config(i);
        lab.start(i);
    }
    assert!(lab.ping_ok(1, 2, 20), "node1 -> node2 over fleet peers");
    assert!(lab.ping_ok(3, 1, 20), "node3 -> node1 over fleet peers");
    let old_pk = lab.cluster.status_json(1).unwrap()["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(old_pk, lab.cluster.agent(1).unwrap().public_key);
    let before: Vec<serde_json::Value> = [2u8, 3]
        .iter()
        .map(|&i| lab.cluster.peer_status(i, 1).unwrap())
        .collect();

    // The operator's steps: a new key on the node, a certificate for it
    // signed with the authority (off-node in real life), `fleet rotate`.
    let new_key = lab.path("node1.key.new");
    let new_pk = vxsec(&["keygen", "--out", &new_key.to_string_lossy()])
        .trim()
        .to_string();
    let new_crt = lab.path("node1.crt.new");
    lab.sign_node(1, &new_pk, &new_crt);
    // A certificate for another key is refused, and nothing changes.
    let e = lab
        .cluster
        .ctl(
            1,
            &[
                "fleet",
                "rotate",
                "--key",
                &lab.cluster.agent(2).unwrap().key_file.to_string_lossy(),
                "--cert",
                &new_crt.to_string_lossy(),
            ],
        )
        .unwrap_err();
    assert!(e.to_string().contains("certifies key"), "{e}");
    // So is one that moves the node (node2's name and address).
    let moved = lab.path("node1-as-node2.crt");
    lab.sign_node(2, &new_pk, &moved);
    let key_file = lab.cluster.agent(1).unwrap().key_file.clone();
    let key_before = std::fs::read(&key_file).unwrap();
    let e = lab
        .cluster
        .ctl(
            1,
            &[
                "fleet",
                "rotate",
                "--key",
                &new_key.to_string_lossy(),
                "--cert",
                &moved.to_string_lossy(),
            ],
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("keeps everything but the key"),
        "{e}"
    );
    assert_eq!(lab.cluster.status_json(1).unwrap()["public_key"], old_pk);
    assert_eq!(
        std::fs::read(&key_file).unwrap(),
        key_before,
        "key file touched"
    );
    let dir = key_file.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".rotate-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Sequenced streams across the rotation: into, out of and beside node1.
    let stream = |from: u8, to: u8, port: u16| {
        let ip = lab.topo.node(to).unwrap().container_ip;
        let dst = std::net::SocketAddr::new(ip.into(), port);
        traffic::start_udp(
            &helper_bin(),
            &lab.topo.node(from).unwrap().container_ns,
            &lab.topo.node(to).unwrap().container_ns,
            dst,
            1000,
            200,
        )
        .expect("udp stream")
    };
    let streams = [
        ("2->1", stream(2, 1, 5030)),
        ("1->2", stream(1, 2, 5031)),
        ("3->1", stream(3, 1, 5032)),
    ];
    std::thread::sleep(Duration::from_secs(2));
    let rotated_at = Instant::now();
    let out = lab
        .cluster
        .ctl(
            1,
            &[
                "fleet",
                "rotate",
                "--key",
                &new_key.to_string_lossy(),
                "--cert",
                &new_crt.to_string_lossy(),
            ],
        )
        .expect("fleet rotate");
    assert!(out.contains("rotated"), "{out}");
    let st = lab.cluster.status_json(1).unwrap();
    assert_eq!(st["public_key"], new_pk.as_str(), "{st}");
    let r = &st["fleet"]["rotation"];
    assert_eq!(r["previous_public_key"], old_pk.as_str(), "{r}");
    assert_eq!(r["previous_active"], true, "{r}");

    // Peers learn the new key from etcd and handshake with it; the same
    // peer entry (its counters go on), not a new one.
    for (n, &i) in [2u8, 3].iter().enumerate() {
        wait_for(GRACE_SECONDS, "peer handshakes with the new key", || {
            let p = lab.cluster.peer_status(i, 1).unwrap();
            let since = rotated_at.elapsed().as_secs_f64();
            p["public_key"] == new_pk.as_str()
                && p["last_handshake_seconds"]
                    .as_f64()
                    .is_some_and(|s| s < since)
        });
        let p = lab.cluster.peer_status(i, 1).unwrap();
        assert!(num(&p, "handshakes") > num(&before[n], "handshakes"), "{p}");
        let packets = |v: &serde_json::Value| num(v, "rx_packets") + num(v, "tx_packets");
        assert!(packets(&p) > packets(&before[n]), "counters kept: {p}");
        let log = std::fs::read_to_string(&lab.cluster.agent(i).unwrap().log_file).unwrap();
        assert!(
            log.contains("static key changed; SAs kept") && !log.contains("re-creating it"),
            "node{i} did not change node1's key in place"
        );
    }
    wait_for(5, "node1 published the new certificate", || {
        lab.fleet(1)["rotation"]["published"] == true
    });
    let keys = lab.etcd.keys(&lab.records_prefix());
    assert_eq!(
        keys.len(),
        3,
        "one record per node, replaced in place: {keys:?}"
    );

    // The grace ends: the old key is retired.
    wait_for(GRACE_SECONDS + 5, "the previous key retires", || {
        lab.fleet(1)["rotation"]["previous_active"] == false
    });
    assert!(lab.fleet(1)["rotation"]["retires_in_seconds"].is_null());
    std::thread::sleep(Duration::from_secs(3));
    for (name, s) in streams {
        let r = s.stop().unwrap();
        eprintln!("stream {name}: {r:?}");
        assert!(r.sent > 5_000, "stream {name} too slow: {r:?}");
        assert_eq!((r.lost, r.duplicated), (0, 0), "stream {name}: {r:?}");
    }
    for i in 1..=3 {
        let st = lab.cluster.status_json(i).unwrap();
        assert_eq!(
            st["drops"]["replay"], 0,
            "node{i} out-of-window drops: {st}"
        );
        assert_eq!(lab.fleet(i)["rejected"], serde_json::json!({}), "node{i}");
    }
    assert!(lab.ping_ok(1, 2, 3), "after the grace: node1 -> node2");
    assert!(lab.ping_ok(2, 1, 3), "after the grace: node2 -> node1");
    assert!(lab.ping_ok(3, 1, 3), "after the grace: node3 -> node1");

    // The configured files were replaced: a restart comes back with the
    // new identity, and peers reach it.
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key_text, std::fs::read_to_string(&new_key).unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    lab.cluster.stop(1, Duration::from_secs(10)).unwrap();
    lab.cluster.start(1).unwrap();
    assert_eq!(
        lab.cluster.status_json(1).unwrap()["public_key"],
        new_pk.as_str()
    );
    assert!(lab.ping_ok(2, 1, 20), "after restart: node2 -> node1");
    assert!(lab.ping_ok(1, 3, 20), "after restart: node1 -> node3");
    assert_eq!(
        lab.cluster.peer_status(3, 1).unwrap()["public_key"],
        new_pk.as_str()
    );
}
