//! The fleet-mode lab shared by the etcd tests (`netns_fleet`,
//! `netns_fleet_auth`): three agents on a lab underlay whose peers come
//! from a real etcd (`super::etcd`), each enrolled with a certificate signed
//! by a throw-away fleet authority, plus the polling and skip helpers.
//! Moved unchanged from `tests/netns_fleet.rs` (fields and methods made
//! public); `fleet_section` split out of `enrol` so a test can add lines,
//! `sign_node` so a test can certify a new key for a node (rotation).

#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::etcd::{etcd_installed, EtcdCluster, TlsFiles};
use super::*;
use vxsec_lab::topology::Topology;

/// Seconds the agents' records live without renewal in this test.
pub const TTL: u64 = 30;

/// Field order = drop order: agents stop before etcd, etcd before the
/// namespaces go, the files last.
pub struct FleetLab {
    pub cluster: Cluster,
    pub etcd: EtcdCluster,
    pub topo: Topology,
    pub dir: tempfile::TempDir,
    pub authority_pub: String,
    pub mtu: u32,
    pub tls: Option<TlsFiles>,
    /// TOML appended to every node's `[fleet]` section.
    pub fleet_extra: String,
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in &self.cluster.agents {
                eprintln!("--- {} log ---\n{}", a.node.name(), a.log_tail());
            }
        }
    }
}

pub fn vxsec(args: &[&str]) -> String {
    Cmd::new(vxsec_bin().to_string_lossy())
        .args(args.iter().copied())
        .run()
        .expect("vxsec command")
}

impl FleetLab {
    /// Three nodes; `members` etcd members, with client TLS when `tls`.
    pub fn new(members: u8, tls: bool) -> FleetLab {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut topo = Topology::new("vxf", 3, 1500).expect("topology");
        let tls = tls.then(|| {
            let ips: Vec<_> = (1..=members)
                .map(|k| std::net::Ipv4Addr::new(192, 168, 77, 100 + k))
                .collect();
            TlsFiles::generate(dir.path(), &ips)
        });
        let etcd = EtcdCluster::start_with(&mut topo, members, dir.path(), tls.clone());
        let cluster =
            Cluster::new(&topo, &vxsec_bin(), ClusterOptions::default()).expect("cluster");
        let key = dir.path().join("authority.key");
        let authority_pub = vxsec(&["fleet", "init", "--out", &key.to_string_lossy()])
            .trim()
            .to_string();
        let mut lab = FleetLab {
            cluster,
            etcd,
            topo,
            dir,
            authority_pub,
            mtu: 0,
            tls,
            fleet_extra: String::new(),
        };
        for i in 1..=3 {
            lab.enrol(i);
        }
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Signs node `i`'s certificate and writes its `[fleet]` section; no
    /// static peers.
    pub fn enrol(&mut self, i: u8) {
        let public_key = self.cluster.agent(i).unwrap().public_key.clone();
        let crt = self.path(&format!("node{i}.crt"));
        self.sign_node(i, &public_key, &crt);
        self.write_fleet_config(i);
    }

    /// Signs a certificate for node `i` (its name, tunnel address, VNI and
    /// endpoint) binding `public_key`, into `crt`.
    pub fn sign_node(&self, i: u8, public_key: &str, crt: &Path) {
        let a = self.cluster.agent(i).unwrap();
        let ep = format!("{}:{LISTEN_PORT}", a.node.underlay_ip);
        vxsec(&[
            "fleet",
            "sign",
            "--authority",
            &self.path("authority.key").to_string_lossy(),
            "--public-key",
            public_key,
            "--tunnel-address",
            &a.node.tunnel_ip.to_string(),
            "--network-id",
            self.cluster.network_id(),
            "--name",
            &a.node.name(),
            "--allowed-vni",
            &LAB_VNI.to_string(),
            "--endpoint",
            &ep,
            "--out",
            &crt.to_string_lossy(),
        ]);
    }

    /// Writes node `i`'s `[fleet]` section (with `fleet_extra`) as its
    /// config's extra lines and clears its static peers.
    pub fn write_fleet_config(&mut self, i: u8) {
        let fleet = self.fleet_section(i);
        self.cluster.set_peers(i, Vec::new()).unwrap();
        self.cluster.set_extra_config(i, fleet).unwrap();
    }

    /// Node `i`'s `[fleet]` section: the etcd endpoints, the authority,
    /// its certificate and cache, the client TLS files when on.
    pub fn fleet_section(&self, i: u8) -> String {
        let crt = self.path(&format!("node{i}.crt"));
        let urls: Vec<String> = self
            .etcd
            .client_urls()
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect();
        let mut fleet = format!(
            "[fleet]\nendpoints = [{}]\nauthority_public_key = \"{}\"\ncertificate_file = \"{}\"\ncache_file = \"{}\"\nlease_ttl_seconds = {TTL}\n",
            urls.join(", "),
            self.authority_pub,
            crt.display(),
            self.path(&format!("node{i}.cache")).display(),
        );
        fleet.push_str(&self.fleet_extra);
        if let Some(t) = &self.tls {
            fleet.push_str(&format!(
                "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                t.ca.display(),
                t.client_cert.display(),
                t.client_key.display()
            ));
        }
        fleet
    }

    pub fn start(&mut self, i: u8) {
        self.cluster.start(i).expect("agent starts");
        if self.mtu == 0 {
            self.mtu = self.cluster.vxlan_mtu(i).unwrap();
            for n in 1..=3 {
                self.topo
                    .attach_vxlan(n, LAB_VNI, VxlanSpec::vxsec(), self.mtu)
                    .unwrap();
            }
        }
    }

    pub fn fleet(&self, i: u8) -> serde_json::Value {
        self.cluster.status_json(i).unwrap()["fleet"].clone()
    }

    pub fn peer_addrs(&self, i: u8) -> Vec<String> {
        let st = self.cluster.status_json(i).unwrap();
        st["peers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["tunnel_address"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn ping_ok(&self, from: u8, to: u8, secs: u32) -> bool {
        let dst = self.topo.node(to).unwrap().container_ip.to_string();
        let ns = self.topo.node(from).unwrap().container_ns.clone();
        let deadline = Instant::now() + Duration::from_secs(u64::from(secs));
        loop {
            if Cmd::in_netns(&ns, "ping")
                .args(["-n", "-c", "1", "-W", "1", &dst])
                .run()
                .is_ok()
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn records_prefix(&self) -> String {
        format!("/vxsec/{}/nodes/", self.cluster.network_id())
    }
}

/// Polls `f` every 200 ms until it holds or `secs` pass.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Returns false (after saying why) when the test cannot run here.
pub fn can_run(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    if !etcd_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install etcd-server"
        );
        eprintln!("SKIP {test}: no etcd (apt-get install etcd-server)");
        return false;
    }
    true
}
