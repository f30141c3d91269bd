//! Fleet scale bench (ignored by default; a measurement, not a check of
//! this machine's speed): 1,000 signed node records in a real etcd, one
//! agent. Reports the time until all peers are known (through the watch,
//! and through the listing at start), resident memory with 0 and 1,000
//! peers, CPU while idle for 60 s, and that no handshake happened.
//!
//! `sudo -E cargo test --release --test netns_fleet_scale -- --ignored --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::*;
use vxsec::fleet::cert::CertBody;
use vxsec::fleet::files;
use vxsec::fleet::view::record_key;
use vxsec_crypto::key::{PrivateKey, PublicKey};
use vxsec_lab::topology::Topology;

const RECORDS: usize = 1000;

fn agent_pid(ns: &str) -> u32 {
    let out = Cmd::new("ip").args(["netns", "pids", ns]).run().unwrap();
    out.split_whitespace().next().unwrap().parse().unwrap()
}

/// (VmRSS, VmHWM) in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn wait_peers(cluster: &Cluster, n: u64, secs: u64) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(st) = cluster.status_json(1) {
            if st["fleet"]["peers"].as_u64() == Some(n) {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "peers never reached {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "bench: run with --ignored --nocapture"]
fn fleet_scale_1000_records_one_agent() {
    if !root_or_skip("fleet_scale") || !common::etcd::etcd_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut topo = Topology::new("vxs", 1, 1500).unwrap();
    let etcd = EtcdCluster::start(&mut topo, 1, dir.path());
    let mut cluster = Cluster::new(&topo, &vxsec_bin(), ClusterOptions::default()).unwrap();
    let net = cluster.network_id().to_string();

    let authority = files::write_new_authority(&dir.path().join("authority.key")).unwrap();
    let sign = |key: PublicKey, addr: std::net::IpAddr, name: &str| {
        authority
            .sign(CertBody {
                issuer: [0; 8],
                network_id: net.clone(),
                name: name.into(),
                public_key: key,
                tunnel_address: addr,
                not_before_unix: 0,
                not_after_unix: u64::from(u32::MAX),
                allowed_vnis: vec![42],
                endpoints: vec![format!("192.168.78.{}:51830", 1 + name.len() % 200)
                    .parse()
                    .unwrap()],
            })
            .unwrap()
    };
    let own: PublicKey = cluster.agent(1).unwrap().public_key.parse().unwrap();
    let crt = dir.path().join("node1.crt");
    files::write_certificate(&crt, &sign(own, "10.200.0.1".parse().unwrap(), "node1")).unwrap();
    let cache = dir.path().join("node1.cache");
    let fleet = format!(
        "[fleet]\nendpoints = [\"{}\"]\nauthority_public_key = \"{}\"\ncertificate_file = \"{}\"\ncache_file = \"{}\"\n",
        etcd.client_urls()[0],
        authority.public_key(),
        crt.display(),
        cache.display()
    );
    cluster.set_peers(1, Vec::new()).unwrap();
    cluster.set_extra_config(1, fleet).unwrap();
    let records: Vec<(String, Vec<u8>)> = (0..RECORDS)
        .map(|n| {
            let addr = std::net::IpAddr::from([10, 200, 1 + (n / 250) as u8, 1 + (n % 250) as u8]);
            let key = PrivateKey::generate().public_key();
            (
                record_key("/vxsec", &net, addr),
                sign(key, addr, &format!("n{n}")),
            )
        })
        .collect();

    // Empty fleet: baseline memory.
    cluster.start(1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let pid = agent_pid(&topo.node(1).unwrap().ns);
    let (rss0, _) = rss_kib(pid);
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(30));
    let idle0_ticks_per_60s = (cpu_ticks(pid) - c0) * 2;

    // 1,000 records appear through the watch.
    let t = Instant::now();
    etcd.put_many(&records);
    let put_time = t.elapsed();
    let t_put_done = Instant::now();
    // Memory before any status request lists 1,000 peers (the status
    // document itself is ~1 MB of JSON and the allocator keeps what it
    // freed), then the time until status shows them all.
    // The agent rewrites its cache after every watch response: count the
    // cached records instead of asking the agent.
    let via_watch = loop {
        let n = std::fs::read_to_string(&cache)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n == RECORDS {
            break t_put_done.elapsed();
        }
        assert!(
            t_put_done.elapsed() < Duration::from_secs(120),
            "cache at {n}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_secs(2));
    let (rss_quiet, _) = rss_kib(pid);
    wait_peers(&cluster, RECORDS as u64, 10);
    std::thread::sleep(Duration::from_secs(2));
    let (rss1, hwm1) = rss_kib(pid);

    // Idle: no status polling, no traffic.
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(60));
    let idle_ticks = cpu_ticks(pid) - c0;
    let st = cluster.status_json(1).unwrap();
    let handshakes: u64 = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["handshakes"].as_u64().unwrap_or(0))
        .sum();
    let udp_tx = st["io"]["udp_tx_datagrams"].as_u64().unwrap_or(0);

    // Restart without the cache: every record through the listing.
    cluster.stop(1, Duration::from_secs(10)).unwrap();
    std::fs::remove_file(&cache).unwrap();
    let t = Instant::now();
    cluster.start(1).unwrap();
    wait_peers(&cluster, RECORDS as u64, 120);
    let via_listing = t.elapsed();
    // Restart from the cache with etcd gone.
    cluster.stop(1, Duration::from_secs(10)).unwrap();
    drop(etcd);
    let t = Instant::now();
    cluster.start(1).unwrap();
    wait_peers(&cluster, RECORDS as u64, 120);
    let via_cache = t.elapsed();

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fleet_scale records={RECORDS} put_s={:.2} known_via_watch_s={:.2} known_at_start_via_listing_s={:.2} known_at_start_via_cache_s={:.2} rss_0_peers_kib={rss0} rss_1000_peers_before_status_kib={rss_quiet} rss_1000_peers_kib={rss1} hwm_kib={hwm1} idle_cpu_60s_ticks_0_peers={idle0_ticks_per_60s} idle_cpu_60s_ticks={idle_ticks} handshakes={handshakes} udp_tx_datagrams={udp_tx} binary={} loadavg={}",
        put_time.as_secs_f64(),
        via_watch.as_secs_f64(),
        via_listing.as_secs_f64(),
        via_cache.as_secs_f64(),
        vxsec_bin().display(),
        load.trim()
    );
    assert_eq!(handshakes, 0, "a handshake happened with no traffic");
}
