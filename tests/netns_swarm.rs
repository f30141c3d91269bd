//! A real Docker Swarm (Debian's docker.io: three `dockerd`, one manager
//! and two workers, each in its own node namespace) whose overlays run
//! over vxsec in route mode, exactly as README tells operators: the swarm
//! formed with `--data-path-addr <tunnel address>`, overlays created with
//! `com.docker.network.driver.mtu = <tunnel MTU>`. Proven here: DNS by
//! service name and ping across nodes on the seeds' `public-facing` /
//! `internal-backend` split, a 30 MiB transfer with matching SHA-256 across
//! forced rekeys, not one UDP/4789 datagram on the underlay, and vxsec's
//! per-VNI policy with the VNIs Swarm itself assigned. And transparent
//! mode on a running Swarm formed on underlay addresses: cleartext VXLAN
//! before the agents start, none after (also with one agent SIGKILLed),
//! connections kept across the switch. Root and Docker needed (skipped
//! otherwise, failed under CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Waits on real daemons need the wall clock (the rule is for the core).
#![allow(clippy::disallowed_methods)]

mod common;
mod swarm;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::capture::Capture;
use common::*;
use swarm::{tools_or_skip, wait_for, SwarmLab};
use vxsec::wire::outer::{parse_message, Message};

/// Each test runs a whole swarm (three daemons, three agents): one at a
/// time keeps them inside the CI time budget on small machines.
static ONE_SWARM_AT_A_TIME: Mutex<()> = Mutex::new(());

const PUBLIC: &str = "public-facing";
const INTERNAL: &str = "internal-backend";
const BLOB_BYTES: u64 = 30 * 1024 * 1024;

/// Web front on node2 (both networks, like the seeds' front-website).
const WEB_CMD: &str = "mkdir -p /srv && echo front-website > /srv/index.html && \
                       exec httpd -f -p 80 -h /srv";
/// Backend on node3 (internal only): 30 MiB of random bytes and their hash.
const API_CMD: &str = "mkdir -p /srv && \
                       dd if=/dev/urandom of=/srv/blob bs=1048576 count=30 2>/dev/null && \
                       sha256sum /srv/blob > /srv/blob.sha256 && \
                       exec httpd -f -p 8080 -h /srv";

/// The number of records in a pcap file (any link type).
fn pcap_records(raw: &[u8]) -> usize {
    let le = raw.get(..4) == Some(&[0xd4, 0xc3, 0xb2, 0xa1]);
    let mut off = 24;
    let mut n = 0;
    while let Some(h) = raw.get(off + 8..off + 12) {
        let b: [u8; 4] = h.try_into().unwrap();
        let incl = if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as usize;
        off += 16 + incl;
        n += 1;
    }
    n
}

/// Swarm with vxsec tunnel addresses as data path, both overlays, the
/// `web` and `api` services and a `client` container on node1.
struct Deployed {
    lab: SwarmLab,
    ingress_vni: u32,
    public_vni: u32,
    internal_vni: u32,
    web: String,
    api: String,
    client: String,
}

fn deploy(lab: SwarmLab) -> Deployed {
    lab.form_swarm(|i| Some(lab.topo.node(i).unwrap().tunnel_ip.to_string()));
    lab.phase("swarm formed");
    // The value `vxsec status` tells operators to give Docker.
    let docker_mtu = lab.docker_mtu(1);
    let ingress_vni = lab.recreate_ingress(docker_mtu);
    lab.phase("ingress recreated with Docker's MTU option");
    let public_vni = lab.create_overlay(PUBLIC, docker_mtu);
    let internal_vni = lab.create_overlay(INTERNAL, docker_mtu);
    lab.phase("overlays created");
    let web = lab.create_service("web", 2, &[PUBLIC, INTERNAL], WEB_CMD);
    lab.phase("web up");
    let api = lab.create_service("api", 3, &[INTERNAL], API_CMD);
    lab.phase("api up");
    let client = lab.run_container(1, "client", PUBLIC);
    lab.phase("overlays, services and client up");
    Deployed {
        lab,
        ingress_vni,
        public_vni,
        internal_vni,
        web,
        api,
        client,
    }
}

impl Deployed {
    fn resolve(&self, node: u8, id: &str, name: &str) -> String {
        resolve(&self.lab, node, id, name)
    }

    fn ping(&self, node: u8, id: &str, dst: &str, count: u32) -> Result<String, String> {
        ping(&self.lab, node, id, dst, count)
    }
}

/// Waits until `name` resolves from container `id` on `node`.
fn resolve(lab: &SwarmLab, node: u8, id: &str, name: &str) -> String {
    wait_for(
        &format!("{name} resolves on node{node}"),
        Duration::from_secs(30),
        || {
            let out = lab.exec(node, id, &format!("nslookup {name}"))?;
            out.lines()
                .skip_while(|l| !l.starts_with("Name:"))
                .find_map(|l| l.strip_prefix("Address:"))
                .map(|a| a.trim().to_owned())
                .ok_or(out)
        },
    )
}

fn ping(lab: &SwarmLab, node: u8, id: &str, dst: &str, count: u32) -> Result<String, String> {
    lab.exec(
        node,
        id,
        &format!("ping -c {count} -W 2 {dst} && echo PING-OK"),
    )
}

#[test]
fn swarm_overlays_run_over_vxsec_without_cleartext() {
    let Some(tools) = tools_or_skip("swarm_overlays_run_over_vxsec_without_cleartext") else {
        return;
    };
    let _one = ONE_SWARM_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let lab = SwarmLab::new(&tools);
    let dir = lab.scratch().to_owned();
    // Every datagram on the underlay from before the swarm exists.
    let wire = Capture::start(&lab.topo.underlay_ns, "ubr", "", &dir);
    let vxlan_on_wire = Capture::start(&lab.topo.underlay_ns, "ubr", "udp port 4789", &dir);
    let n3 = lab.topo.node(3).unwrap().ns.clone();
    let vxlan_in_tun = Capture::start(&n3, "vxsec0", "udp port 4789", &dir);
    let s = deploy(lab);
    let lab = &s.lab;
    let vnis = [s.ingress_vni, s.public_vni, s.internal_vni];
    eprintln!("Swarm's VNIs: ingress, {PUBLIC}, {INTERNAL} = {vnis:?}");
    assert!(
        vnis.iter().all(|&v| v >= 4096) && vnis[0] != vnis[1] && vnis[1] != vnis[2],
        "Swarm VNIs {vnis:?}"
    );

    // The overlay MTU containers get is the VXLAN MTU vxsec prescribes.
    let vxlan_mtu = lab.cluster.vxlan_mtu(1).unwrap();
    let mtu = lab
        .exec(1, &s.client, "cat /sys/class/net/eth0/mtu")
        .unwrap();
    assert_eq!(mtu, vxlan_mtu.to_string(), "client's overlay MTU");

    // public-facing: client (node1) -> web (node2), by name.
    let web_ip = s.resolve(1, &s.client, "web");
    let out = s.ping(1, &s.client, "web", 3).unwrap();
    assert!(out.contains("PING-OK") && out.contains(&web_ip), "{out}");
    // A full-size packet (busybox ping sets no DF, so nothing but the MTU
    // keeps it whole) crosses in one piece: VXLAN fills the tunnel exactly.
    let full = vxlan_mtu - 28;
    s.ping(1, &s.client, &format!("-s {full} web"), 2)
        .unwrap_or_else(|e| panic!("{full}-byte ping: {e}"));
    let st = lab.cluster.status_json(1).unwrap();
    assert_eq!(drops(&st, "fragment", "fragment"), (0, 0), "node1: {st}");
    let page = lab.exec(1, &s.client, "wget -q -O - http://web/").unwrap();
    assert_eq!(page, "front-website");
    // internal-backend: web (node2) -> api (node3), by name.
    s.resolve(2, &s.web, "api");
    s.ping(2, &s.web, "api", 3).unwrap();
    // The hash as computed where the blob lives (node3), fetched by name
    // across the overlay once httpd serves it.
    let at_source = wait_for("api's blob ready", Duration::from_secs(60), || {
        lab.exec(3, &s.api, "cat /srv/blob.sha256")
    });
    let served = wait_for("api serves", Duration::from_secs(30), || {
        lab.exec(2, &s.web, "wget -q -O - http://api:8080/blob.sha256")
    });
    assert_eq!(served, at_source);
    let expected = at_source;
    let expected = expected.split_whitespace().next().unwrap().to_owned();

    // 30 MiB node3 -> node2 while both agents are forced to rekey. A 100
    // Mbit/s uplink on node3 keeps the transfer longer than the rekeys.
    Cmd::in_netns(&n3, "tc")
        .args(["qdisc", "add", "dev", "eth0", "root", "tbf"])
        .args(["rate", "100mbit", "burst", "256kb", "latency", "100ms"])
        .run()
        .unwrap();
    let rekeys = |node: u8, peer: u8| num(&lab.cluster.peer_status(node, peer).unwrap(), "rekeys");
    let t0 = Instant::now();
    let mut transfer = lab.exec_spawn(
        2,
        &s.web,
        "wget -q -O /tmp/blob http://api:8080/blob && \
         echo RESULT $(wc -c < /tmp/blob) $(sha256sum /tmp/blob)",
    );
    let mut during = 0;
    for round in 0..20u32 {
        if !transfer.is_running() {
            break;
        }
        let (node, peer) = if round % 2 == 0 { (3, 2) } else { (2, 3) };
        let before = rekeys(node, peer);
        lab.cluster.ctl(node, &["rekey"]).unwrap();
        wait_for("forced rekey completes", Duration::from_secs(5), || {
            let now = rekeys(node, peer);
            (now > before).then_some(()).ok_or(format!("rekeys {now}"))
        });
        if transfer.is_running() {
            during += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = transfer
        .wait_for_line("RESULT", Duration::from_secs(240))
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let f: Vec<&str> = line.split_whitespace().collect();
    eprintln!(
        "30 MiB node3 -> node2 over Swarm over vxsec: {secs:.1} s, {during} rekeys during it"
    );
    assert_eq!(f.get(1), Some(&BLOB_BYTES.to_string().as_str()), "{line}");
    assert_eq!(
        f.get(2),
        Some(&expected.as_str()),
        "SHA-256 differs: {line}"
    );
    assert!(during >= 3, "only {during} rekeys during the transfer");

    // After it all: Swarm's VXLAN went through vxsec0 and never on the wire.
    s.ping(1, &s.client, "web", 1).unwrap();
    let (raw_tun, _) = vxlan_in_tun.stop();
    let (raw_vx, _) = vxlan_on_wire.stop();
    let (_, datagrams) = wire.stop();
    assert!(
        pcap_records(&raw_tun) > 1000,
        "Swarm's VXLAN did not go through vxsec0"
    );
    assert_eq!(pcap_records(&raw_vx), 0, "UDP/4789 on the underlay");
    let mut sealed = 0u64;
    for d in &datagrams {
        assert!(
            d.src.port() != VXLAN_PORT && d.dst.port() != VXLAN_PORT,
            "cleartext VXLAN on the underlay: {d:?}"
        );
        if d.src.port() == LISTEN_PORT && d.dst.port() == LISTEN_PORT {
            if let Ok(Message::Data(_)) = parse_message(&d.payload) {
                sealed += d.payload.len() as u64;
            }
        }
    }
    assert!(
        sealed > BLOB_BYTES,
        "only {sealed} bytes of vxsec data messages on the underlay"
    );
}

#[test]
fn swarm_vnis_drive_vxsec_per_vni_policy() {
    let Some(tools) = tools_or_skip("swarm_vnis_drive_vxsec_per_vni_policy") else {
        return;
    };
    let _one = ONE_SWARM_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut s = deploy(SwarmLab::new(&tools));
    s.resolve(1, &s.client, "web");
    s.resolve(2, &s.web, "api");
    s.ping(1, &s.client, "web", 2)
        .expect("public-facing before policy");
    s.ping(2, &s.web, "api", 2)
        .expect("internal-backend before policy");

    // Every agent lets only public-facing's VNI through to and from every
    // peer; internal-backend's VNI is refused on both sides.
    let allow = vec![s.public_vni];
    for i in 1..=3u8 {
        let peers = (1..=3u8)
            .filter(|&j| j != i)
            .map(|j| (j, Some(allow.clone())))
            .collect();
        s.lab.cluster.set_peers(i, peers).unwrap();
        s.lab.cluster.signal(i, "HUP").unwrap();
    }
    for i in 1..=3u8 {
        for j in (1..=3u8).filter(|&j| j != i) {
            let cluster = &s.lab.cluster;
            wait_for("reloaded allowed_vnis", Duration::from_secs(10), || {
                let p = cluster.peer_status(i, j).map_err(|e| e.to_string())?;
                let vnis = p.get("allowed_vnis").cloned().unwrap_or_default();
                (vnis == serde_json::json!(allow))
                    .then_some(())
                    .ok_or(p.to_string())
            });
        }
    }
    let before: Vec<_> = [2u8, 3]
        .iter()
        .map(|&i| s.lab.cluster.status_json(i).unwrap())
        .collect();
    s.ping(1, &s.client, "web", 2)
        .expect("public-facing (allowed VNI) still works");
    let blocked = s.ping(2, &s.web, "api", 3);
    assert!(blocked.is_err(), "internal-backend crossed: {blocked:?}");
    let after: Vec<_> = [2u8, 3]
        .iter()
        .map(|&i| s.lab.cluster.status_json(i).unwrap())
        .collect();
    let counted: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            let (g0, p0) = drops(b, "vni_not_allowed", "policy");
            let (g1, p1) = drops(a, "vni_not_allowed", "policy");
            g1.saturating_sub(g0).max(p1.saturating_sub(p0))
        })
        .sum();
    assert!(
        counted >= 3,
        "internal-backend VNI {} drops not counted (node2, node3):\n{after:?}",
        s.internal_vni
    );

    // Allowing the VNI again restores it: the drop was the policy's doing.
    for i in 1..=3u8 {
        let peers = (1..=3u8).filter(|&j| j != i).map(|j| (j, None)).collect();
        s.lab.cluster.set_peers(i, peers).unwrap();
        s.lab.cluster.signal(i, "HUP").unwrap();
    }
    wait_for(
        "internal-backend after re-allowing",
        Duration::from_secs(20),
        || s.ping(2, &s.web, "api", 1).map(|_| ()),
    );
}

/// `vxsec mtu --transparent` as an operator runs it on node `i`: (VXLAN
/// device MTU, the value for Docker's `com.docker.network.driver.mtu`).
fn transparent_mtu_advice(lab: &SwarmLab, i: u8) -> (u32, u32) {
    let ns = &lab.topo.node(i).unwrap().ns;
    let out = Cmd::in_netns(ns, vxsec_bin().to_string_lossy())
        .args(["mtu", "--transparent"])
        .run()
        .unwrap();
    let field = |prefix: &str, after: &str| -> u32 {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|l| l.split_once(after).map(|(_, v)| v))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in `vxsec mtu --transparent`:\n{out}"))
    };
    (
        field("VXLAN device MTU:", ""),
        field("Docker overlay:", "mtu="),
    )
}

/// UDP/4789 datagrams in a capture, by source address.
fn vxlan_sources(datagrams: &[common::capture::Datagram]) -> Vec<std::net::IpAddr> {
    datagrams
        .iter()
        .filter(|d| d.src.port() == VXLAN_PORT || d.dst.port() == VXLAN_PORT)
        .map(|d| d.src.ip())
        .collect()
}

/// Transparent mode on a running Swarm: formed on the underlay addresses
/// (no `--data-path-addr`), overlay and containers up and talking in
/// cleartext VXLAN, then vxsec started on every node without touching the
/// daemons: from then on not one UDP/4789 datagram on the underlay, also
/// while one agent is SIGKILLed, and the containers keep talking.
#[test]
fn swarm_running_cluster_encrypted_by_transparent_mode() {
    let Some(tools) = tools_or_skip("swarm_running_cluster_encrypted_by_transparent_mode") else {
        return;
    };
    let _one = ONE_SWARM_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let opts = ClusterOptions {
        transparent: true,
        ..ClusterOptions::default()
    };
    let mut lab = SwarmLab::with_agents(&tools, opts, false);
    let dir = lab.scratch().to_owned();
    let before = Capture::start(&lab.topo.underlay_ns, "ubr", "udp port 4789", &dir);

    // The operator's steps from README's "Transparent mode" section: the
    // overlay (and `ingress`) with the Docker value `vxsec mtu
    // --transparent` prints, so nothing changes size when vxsec starts.
    let (vxlan_mtu, docker_mtu) = transparent_mtu_advice(&lab, 1);
    lab.form_swarm(|_| None);
    lab.phase("swarm formed on underlay addresses, no vxsec running");
    lab.recreate_ingress(docker_mtu);
    let vni = lab.create_overlay(PUBLIC, docker_mtu);
    assert!(vni >= 4096, "Swarm VNI {vni}");
    let srv = lab.create_service("srv", 3, &[PUBLIC], TRANSP_SRV_CMD);
    let client = lab.run_container(1, "client", PUBLIC);
    lab.phase("overlay, srv (node3) and client (node1) up");
    let (srv, client) = (&srv, &client);
    let mtu = lab.exec(1, client, "cat /sys/class/net/eth0/mtu").unwrap();
    assert_eq!(mtu, vxlan_mtu.to_string(), "client's overlay MTU");
    resolve(&lab, 1, client, "srv");
    ping(&lab, 1, client, "srv", 2).expect("ping before vxsec");
    let expected = wait_for("srv's blob ready", Duration::from_secs(60), || {
        lab.exec(3, srv, "cat /srv/blob.sha256")
    });
    let expected = expected.split_whitespace().next().unwrap().to_owned();

    // A transfer started before vxsec, slowed (node3's uplink) so that it
    // runs across the switch.
    let n3 = lab.topo.node(3).unwrap().ns.clone();
    Cmd::in_netns(&n3, "tc")
        .args(["qdisc", "add", "dev", "eth0", "root", "tbf"])
        .args(["rate", "24mbit", "burst", "64kb", "latency", "100ms"])
        .run()
        .unwrap();
    let fetch = "wget -q -O /tmp/blob http://srv:8080/blob && \
                 echo RESULT $(wc -c < /tmp/blob) $(sha256sum /tmp/blob)";
    let t0 = Instant::now();
    let mut early = lab.exec_spawn(1, client, fetch);
    std::thread::sleep(Duration::from_secs(2));
    let (_, cleartext) = before.stop();
    let seen = vxlan_sources(&cleartext);
    eprintln!(
        "before vxsec: {} cleartext UDP/4789 datagrams on the underlay",
        seen.len()
    );
    assert!(
        seen.len() > 100,
        "no cleartext VXLAN before vxsec: {}",
        seen.len()
    );
    assert!(
        early.is_running(),
        "the early transfer ended before the switch"
    );

    // vxsec on every node, the daemons untouched.
    lab.start_agents();
    let after = Capture::start(&lab.topo.underlay_ns, "ubr", "", &dir);
    let switch = Capture::start(&lab.topo.underlay_ns, "ubr", "udp port 4789", &dir);
    let switched = t0.elapsed().as_secs_f64();
    let early_done = early.wait_for_line("RESULT", Duration::from_secs(60));
    let took = t0.elapsed().as_secs_f64();
    eprintln!(
        "transfer started before vxsec: vxsec on at {switched:.1} s, result at {took:.1} s: {early_done:?}"
    );
    let (raw, _) = switch.stop();
    assert_eq!(
        pcap_records(&raw),
        0,
        "cleartext UDP/4789 on the underlay while the transfer crossed the switch"
    );
    // Handshakes are made on demand: the transfer made node1's and node3's.
    for (i, j) in [(1, 3), (3, 1)] {
        lab.cluster
            .wait_established(i, j, Duration::from_secs(10))
            .unwrap();
    }
    lab.phase("agents up in transparent mode, node1 <-> node3 established");
    let line = early_done.expect("the transfer started before vxsec stalled");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        f.get(1),
        Some(&TRANSP_BLOB_BYTES.to_string().as_str()),
        "{line}"
    );
    assert_eq!(
        f.get(2),
        Some(&expected.as_str()),
        "SHA-256 differs: {line}"
    );
    Cmd::in_netns(&n3, "tc")
        .args(["qdisc", "del", "dev", "eth0", "root"])
        .run()
        .unwrap();

    // After the switch: DNS, ping, a fresh transfer, all through vxsec.
    resolve(&lab, 1, client, "srv");
    ping(&lab, 1, client, "srv", 3).expect("ping over vxsec");
    let line = lab.exec(1, client, fetch).expect("transfer over vxsec");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        f.get(2),
        Some(&expected.as_str()),
        "SHA-256 differs: {line}"
    );

    // node3's agent SIGKILLed: its steering routes go with vxsec0, its
    // rules and guard sets stay; the containers try both ways.
    lab.cluster.kill(3).unwrap();
    let client_ip = resolve(&lab, 1, client, "client");
    assert!(
        ping(&lab, 3, srv, &client_ip, 3).is_err(),
        "node3 -> node1 without its agent"
    );
    assert!(
        ping(&lab, 1, client, "srv", 2).is_err(),
        "node1 -> node3 without node3's agent"
    );
    lab.phase("node3's agent killed: overlay to and from node3 stopped");
    lab.cluster.start(3).unwrap();
    wait_for(
        "node1 <-> node3 after the restart",
        Duration::from_secs(20),
        || ping(&lab, 1, client, "srv", 1).map(|_| ()),
    );
    ping(&lab, 3, srv, &client_ip, 2).expect("node3 -> node1 after the restart");
    lab.phase("node3's agent restarted: traffic resumed");

    let (_, datagrams) = after.stop();
    let vx = vxlan_sources(&datagrams);
    assert!(
        vx.is_empty(),
        "{} cleartext UDP/4789 datagrams after vxsec started, from {:?}",
        vx.len(),
        vx.first()
    );
    let sealed = datagrams
        .iter()
        .filter(|d| d.src.port() == LISTEN_PORT && d.dst.port() == LISTEN_PORT)
        .count();
    assert!(
        sealed > 1000,
        "only {sealed} vxsec datagrams on the underlay"
    );
}

const TRANSP_BLOB_BYTES: u64 = 16 * 1024 * 1024;
/// Transparent-mode server on node3: 16 MiB of random bytes and their hash.
const TRANSP_SRV_CMD: &str = "mkdir -p /srv && \
                              dd if=/dev/urandom of=/srv/blob bs=1048576 count=16 2>/dev/null && \
                              sha256sum /srv/blob > /srv/blob.sha256 && \
                              exec httpd -f -p 8080 -h /srv";
