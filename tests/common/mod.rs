//! Shared harness of the netns integration tests: root check, binary paths,
//! a three-node lab fixture (topology + real agents + kernel VXLAN over
//! vxsec), underlay capture and packet injection. Everything cleans up
//! through `Drop` guards (also on panic); names are unique per test.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub mod capture;
pub mod etcd;
pub mod fleet_lab;
pub mod packets;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use vxsec::io::sys::is_root;
pub use vxsec_lab::agents::{Cluster, ClusterOptions, PeerList, LISTEN_PORT};
pub use vxsec_lab::topology::{Topology, VxlanOver, VxlanSpec, LAB_VNI, VXLAN_PORT};
pub use vxsec_lab::Cmd;
pub use vxsec_lab::{guards, traffic};

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in &self.cluster.agents {
                eprintln!(
                    "--- {} agent log (last lines) ---\n{}",
                    a.node.name(),
                    a.log_tail()
                );
            }
        }
    }
}

/// True when the test may run; otherwise prints why it skips.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: netns tests must run as root in CI");
    }
    eprintln!("SKIP {test}: needs root (network namespaces); run the netns tests as root");
    false
}

/// The vxsec binary under test: `$VXSEC_TEST_BIN` (e.g. a release build),
/// else the one cargo built for this test run.
pub fn vxsec_bin() -> PathBuf {
    std::env::var_os("VXSEC_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vxsec")))
}

/// The traffic helper (`vxsec-lab-helper`, of the lab crate).
pub fn helper_bin() -> PathBuf {
    lab_crate_bin("vxsec-lab-helper")
}

/// The lab program (`vxsec-lab`, of the lab crate).
pub fn lab_bin() -> PathBuf {
    lab_crate_bin("vxsec-lab")
}

/// A binary of the lab crate. Cargo names only this package's binaries in
/// `CARGO_BIN_EXE_*`, so the lab's are looked for beside the vxsec binary
/// cargo built for this run (same target directory and profile). When one is
/// missing or older than the sources, `$CARGO build -p vxsec-lab --bins` in
/// that profile builds them, once per test process, so that
/// `cargo test --test netns_x` alone works.
fn lab_crate_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let vxsec = PathBuf::from(env!("CARGO_BIN_EXE_vxsec"));
    let profile_dir = vxsec.parent().expect("vxsec binary has a directory");
    let path = profile_dir.join(name);
    if is_fresh(&path) {
        return path;
    }
    BUILT.call_once(|| build_lab_bins(profile_dir));
    assert!(
        path.exists(),
        "{} missing after building the lab crate",
        path.display()
    );
    path
}

/// True when `bin` exists and is newer than every source it is built from
/// (the lab crate's and the agent library's `.rs` files and manifests).
fn is_fresh(bin: &std::path::Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = [
        root.join("Cargo.toml"),
        root.join("src"),
        root.join("lab/Cargo.toml"),
        root.join("lab/src"),
        root.join("crypto/Cargo.toml"),
        root.join("crypto/src"),
    ];
    sources
        .iter()
        .all(|s| newest_mtime(s).is_none_or(|t| t <= built))
}

fn newest_mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// Builds the lab crate's binaries into `profile_dir` (`<target>/debug`,
/// `<target>/release`, `<target>/<profile>`, or the same under a target triple).
fn build_lab_bins(profile_dir: &std::path::Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let target_dir = profile_dir
        .parent()
        .expect("profile directory has a parent");
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "-p",
            "vxsec-lab",
            "--bins",
            "--target-dir",
        ])
        .arg(target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    eprintln!("building the lab crate's binaries: {cmd:?}");
    let status = cmd.status().expect("run cargo to build the lab binaries");
    assert!(
        status.success(),
        "building the lab binaries failed: {cmd:?}"
    );
}

/// Topology + running agents + VXLAN VNI 42 over vxsec on every node.
/// Field order matters: agents stop before the namespaces go.
pub struct Lab {
    pub cluster: Cluster,
    pub topo: Topology,
    pub vxlan_mtu: u32,
}

pub struct LabSpec {
    pub nodes: u8,
    pub underlay_mtu: u32,
    pub options: ClusterOptions,
    /// Per-node peer lists overriding the full mesh.
    pub peers: Vec<(u8, PeerList)>,
    /// VXLAN devices with `local <tunnel address>` (README's recipe); false
    /// makes them as Docker's overlay driver does, without a local address.
    pub vxlan_local: bool,
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            nodes: 3,
            underlay_mtu: 1500,
            options: ClusterOptions::default(),
            peers: Vec::new(),
            vxlan_local: true,
        }
    }
}

impl Lab {
    pub fn new(spec: LabSpec) -> Lab {
        let topo = Topology::new("vxt", spec.nodes, spec.underlay_mtu).expect("topology");
        let options = ClusterOptions {
            underlay_mtu: spec.underlay_mtu,
            ..spec.options
        };
        let mut cluster = Cluster::new(&topo, &vxsec_bin(), options).expect("keys and configs");
        for (i, peers) in spec.peers {
            cluster.set_peers(i, peers).expect("peer override");
        }
        cluster.start_all().expect("agents start");
        let vxlan_mtu = cluster
            .attach_vxlan(&topo, LAB_VNI, spec.vxlan_local)
            .expect("vxlan over vxsec");
        Lab {
            cluster,
            topo,
            vxlan_mtu,
        }
    }

    pub fn three() -> Lab {
        Lab::new(LabSpec::default())
    }

    pub fn container_ns(&self, i: u8) -> String {
        self.topo.node(i).unwrap().container_ns.clone()
    }

    pub fn node_ns(&self, i: u8) -> String {
        self.topo.node(i).unwrap().ns.clone()
    }

    pub fn container_addr(&self, i: u8, port: u16) -> SocketAddr {
        SocketAddr::from((self.topo.node(i).unwrap().container_ip, port))
    }

    /// `ping -c count` between containers; Ok(output) when all replies came.
    pub fn ping(&self, from: u8, to: u8, count: u32) -> Result<String, String> {
        self.topo
            .ping_containers(from, to, count)
            .map_err(|e| e.to_string())
    }

    /// Waits until a ping from container `from` to `to` gets a reply
    /// (ping sends one probe per second, up to `secs`).
    #[allow(clippy::disallowed_methods)]
    /// One probe per second; a local error (e.g. a neighbour entry left
    /// FAILED while the peer was unknown) does not end the wait early.
    pub fn ping_within(&self, from: u8, to: u8, secs: u32) -> bool {
        let dst = self.topo.node(to).unwrap().container_ip.to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(u64::from(secs));
        loop {
            let start = std::time::Instant::now();
            if Cmd::in_netns(&self.container_ns(from), "ping")
                .args(["-n", "-c", "1", "-W", "1", &dst])
                .run()
                .is_ok()
            {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_secs(1).saturating_sub(start.elapsed()));
        }
    }

    pub fn tcp(
        &self,
        from: u8,
        to: u8,
        port: u16,
        bytes: u64,
        marker: Option<&str>,
    ) -> traffic::TcpReport {
        traffic::start_tcp(
            &helper_bin(),
            &self.container_ns(from),
            &self.container_ns(to),
            self.container_addr(to, port),
            bytes,
            marker,
        )
        .expect("start tcp")
        .finish(Duration::from_secs(240))
        .expect("tcp transfer")
    }

    pub fn udp_stream(&self, from: u8, to: u8, port: u16, interval_us: u64) -> traffic::UdpStream {
        traffic::start_udp(
            &helper_bin(),
            &self.container_ns(from),
            &self.container_ns(to),
            self.container_addr(to, port),
            interval_us,
            200,
        )
        .expect("start udp stream")
    }

    /// VXLAN VNI 100 between nodes 1 and 2 over vxsec, addresses
    /// 10.100.0.<i>/24 straight on the VXLAN devices.
    pub fn add_vni_100(&self) {
        for (i, peer) in [(1u8, 2u8), (2, 1)] {
            let ns = self.node_ns(i);
            let local = self.topo.node(i).unwrap().tunnel_ip.to_string();
            let remote = self.topo.node(peer).unwrap().tunnel_ip;
            let mtu = self.vxlan_mtu.to_string();
            Cmd::new("ip")
                .args(["-n", &ns, "link", "add", "vxlan100", "mtu", &mtu])
                .args(["type", "vxlan", "id", "100", "local", &local])
                .args(["dstport", "4789", "nolearning"])
                .run()
                .unwrap();
            let addr = format!("10.100.0.{i}/24");
            Cmd::new("ip")
                .args(["-n", &ns, "addr", "add", &addr, "dev", "vxlan100"])
                .run()
                .unwrap();
            Cmd::new("ip")
                .args(["-n", &ns, "link", "set", "vxlan100", "up"])
                .run()
                .unwrap();
            self.topo.fdb_flood(i, 100, remote, true).unwrap();
        }
    }

    /// Injects cleartext VXLAN (VNI 42, to container1's address, payload
    /// "rogue", three copies) from the `rogue` underlay host to `dst` (one
    /// of node1's underlay addresses), and, when `control`, the same inner
    /// packet legitimately over the overlay from container2. Returns
    /// (rogue packets seen in container1, control packets seen).
    pub fn injection_probe(&self, rogue: &str, dst: IpAddr, control: bool) -> (usize, usize) {
        let c1 = self.topo.node(1).unwrap().container_ip;
        let cap = capture::Capture::start(
            &self.container_ns(1),
            "eth0",
            "udp port 7777",
            &self.cluster.dir,
        );
        let frame = packets::eth_ipv4_udp(Ipv4Addr::new(10, 42, 0, 66), c1, 6666, 7777, b"rogue");
        let vx = packets::vxlan(LAB_VNI, &frame);
        let dst = SocketAddr::new(dst, VXLAN_PORT);
        let sent = self.inject(rogue, None, dst, &[vx.clone(), vx.clone(), vx]);
        assert_eq!(sent, 3, "the rogue host could not send");
        if control {
            self.inject(
                &self.container_ns(2),
                None,
                SocketAddr::from((c1, 7777)),
                &[b"legit".to_vec()],
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        let (_, got) = cap.stop();
        let rogue_seen = got.iter().filter(|d| d.payload == b"rogue").count();
        let legit_seen = got.iter().filter(|d| d.payload == b"legit").count();
        (rogue_seen, legit_seen)
    }

    /// Sends raw UDP datagrams from namespace `ns` to `dst`, from `src`
    /// (spoofed with IP_TRANSPARENT) when given.
    pub fn inject(
        &self,
        ns: &str,
        src: Option<SocketAddr>,
        dst: SocketAddr,
        datagrams: &[Vec<u8>],
    ) -> u64 {
        let path = self
            .cluster
            .dir
            .join(format!("inject-{}.bin", rand::random::<u32>()));
        std::fs::write(&path, traffic::encode_datagrams(datagrams)).unwrap();
        let mut cmd = Cmd::in_netns(ns, helper_bin().to_string_lossy())
            .args(["udp-inject".to_owned(), dst.to_string()])
            .arg(path.to_string_lossy());
        if let Some(src) = src {
            cmd = cmd.arg(src.to_string());
        }
        let out = cmd.run().expect("udp-inject");
        let map = traffic::parse_result(out.lines().last().unwrap_or(""));
        map.get("sent").and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The agent endpoint of node `i` on the underlay.
    pub fn endpoint(&self, i: u8) -> SocketAddr {
        SocketAddr::from((self.topo.node(i).unwrap().underlay_ip, LISTEN_PORT))
    }

    pub fn status(&self, i: u8) -> serde_json::Value {
        self.cluster.status_json(i).expect("status --json")
    }
}

/// A numeric field of a JSON object (0 when missing, so deltas still work
/// and the schema test reports missing fields separately).
pub fn num(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// Global drop counter `key` plus the same per-peer counter summed over peers.
pub fn drops(status: &serde_json::Value, global_key: &str, peer_key: &str) -> (u64, u64) {
    let global = status.get("drops").map_or(0, |d| num(d, global_key));
    let peers = status
        .get("peers")
        .and_then(|p| p.as_array())
        .map_or(0, |arr| {
            arr.iter()
                .map(|p| p.get("drops").map_or(0, |d| num(d, peer_key)))
                .sum()
        });
    (global, peers)
}

/// Sum of every drop counter, global and per peer.
pub fn all_drops(status: &serde_json::Value) -> u64 {
    let sum_obj = |v: Option<&serde_json::Value>| -> u64 {
        v.and_then(|d| d.as_object()).map_or(0, |o| {
            o.values().filter_map(serde_json::Value::as_u64).sum()
        })
    };
    let peers: u64 = status
        .get("peers")
        .and_then(|p| p.as_array())
        .map_or(0, |arr| arr.iter().map(|p| sum_obj(p.get("drops"))).sum());
    sum_obj(status.get("drops")) + peers
}
