//! A real etcd cluster (Debian's `etcd-server`) on a lab underlay: one
//! member per bare underlay host namespace, started by the test and killed
//! by `Drop` (also on panic); its data lives in the caller's temp dir.
//! Records are read and written with curl through etcd's JSON gateway,
//! from inside the members' namespaces (the host cannot reach them).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use vxsec::agent::lab::topology::Topology;
use vxsec::agent::lab::Cmd;
use vxsec::agent::lab::Proc;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub struct Member {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub log: PathBuf,
    proc: Option<Proc>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
}

/// Whether an etcd binary is installed (`apt-get install etcd-server`).
pub fn etcd_installed() -> bool {
    Cmd::new("etcd").arg("--version").run().is_ok()
}

impl EtcdCluster {
    /// Starts `n` members on underlay hosts 192.168.77.101.. and waits
    /// until every member reports healthy.
    pub fn start(topo: &mut Topology, n: u8, dir: &Path) -> EtcdCluster {
        let mut members = Vec::new();
        for k in 1..=n {
            let ip = Ipv4Addr::new(192, 168, 77, 100 + k);
            let ns = topo.add_underlay_host(100 + k).expect("etcd host");
            members.push(Member {
                name: format!("e{k}"),
                ns,
                ip,
                log: dir.join(format!("etcd-e{k}.log")),
                proc: None,
            });
        }
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://{}:2380", m.name, m.ip))
            .collect();
        let initial = initial.join(",");
        for m in &mut members {
            let data = dir.join(format!("etcd-{}", m.name));
            let proc = Cmd::in_netns(&m.ns, "etcd")
                .args(["--name", m.name.as_str(), "--data-dir"])
                .arg(data.to_string_lossy())
                .arg("--listen-client-urls")
                .arg(format!("http://{}:2379", m.ip))
                .arg("--advertise-client-urls")
                .arg(format!("http://{}:2379", m.ip))
                .arg("--listen-peer-urls")
                .arg(format!("http://{}:2380", m.ip))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://{}:2380", m.ip))
                .args(["--initial-cluster", initial.as_str()])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", topo.id.as_str()])
                .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
                .spawn_logged(&m.log)
                .expect("spawn etcd");
            m.proc = Some(proc);
        }
        let c = EtcdCluster { members };
        for k in 0..c.members.len() {
            c.wait_healthy(k, Duration::from_secs(30));
        }
        c
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}:2379", m.ip))
            .collect()
    }

    fn curl(&self, k: usize, path: &str, body: &str) -> Result<serde_json::Value, String> {
        let m = &self.members[k];
        let out = Cmd::in_netns(&m.ns, "curl")
            .args(["-sS", "--max-time", "3", "-X", "POST", "-d", body])
            .arg(format!("http://{}:2379{path}", m.ip))
            .run()
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
    }

    pub fn wait_healthy(&self, k: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let m = &self.members[k];
            let out = Cmd::in_netns(&m.ns, "curl")
                .args(["-sS", "--max-time", "2"])
                .arg(format!("http://{}:2379/health", m.ip))
                .run()
                .unwrap_or_default();
            if out.contains("\"health\":\"true\"") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd {} not healthy: {out}\n{}",
                m.name,
                std::fs::read_to_string(&m.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&k| self.members[k].proc.is_some())
    }

    /// Writes `key` = `value` through a live member.
    pub fn put(&self, key: &str, value: &[u8]) {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            B64.encode(key),
            B64.encode(value)
        );
        let k = self.alive().next().expect("a live member");
        let r = self.curl(k, "/v3/kv/put", &body).expect("put");
        assert!(r.get("header").is_some(), "put failed: {r}");
    }

    /// Keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = format!(
            "{{\"key\":\"{}\",\"range_end\":\"{}\",\"keys_only\":true}}",
            B64.encode(prefix),
            B64.encode(&end)
        );
        let k = self.alive().next().expect("a live member");
        let r = self.curl(k, "/v3/kv/range", &body).expect("range");
        r.get("kvs")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|kv| kv.get("key")?.as_str())
                    .filter_map(|k| String::from_utf8(B64.decode(k).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The index of the current leader.
    pub fn leader(&self) -> usize {
        for k in self.alive() {
            if let Ok(r) = self.curl(k, "/v3/maintenance/status", "{}") {
                let me = r.pointer("/header/member_id").and_then(|v| v.as_str());
                let leader = r.get("leader").and_then(|v| v.as_str());
                if me.is_some() && me == leader {
                    return k;
                }
            }
        }
        panic!("no etcd member is leader");
    }

    /// SIGKILLs member `k`.
    pub fn kill(&mut self, k: usize) {
        if let Some(mut p) = self.members[k].proc.take() {
            p.kill();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                p.kill();
            }
        }
    }
}
