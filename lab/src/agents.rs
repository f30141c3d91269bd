//! Runs real `vxsec` agents inside the node namespaces of a `Topology`:
//! generates keys (`vxsec keygen`) and TOML configs in a private temp dir,
//! starts `vxsec up -c`, talks to each agent over its own control socket
//! (`status --json`, `rekey`, signals). It does not implement the agent and
//! does not build namespaces.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::cmd::{Cmd, LabError, Proc};
use crate::topology::{Node, Topology, VxlanOver, VxlanSpec};

/// The UDP port every lab agent listens on (the default in DESIGN §7).
pub const LISTEN_PORT: u16 = 51830;

/// A node's peer list: (peer node index, allowed VNIs or `None` = any).
pub type PeerList = Vec<(u8, Option<Vec<u32>>)>;

/// How the agents are configured.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `aes-256-gcm` or `chacha20-poly1305`.
    pub suite: String,
    /// `[rotation] rekey_after_seconds`, if set.
    pub rekey_after_seconds: Option<u64>,
    /// Underlay MTU written into each config.
    pub underlay_mtu: u32,
    /// Peers' endpoints are their IPv6 underlay addresses (vxsec over IPv6).
    pub ipv6_underlay: bool,
    /// Tunnel addresses (the VTEPs) are IPv6: fd00:200::<index>/64.
    pub ipv6_tunnel: bool,
    /// `[policy] fail_closed`, written only when set (default: on).
    pub fail_closed: Option<bool>,
    /// `[interface] mode = "transparent"`: the overlay's VTEPs are the
    /// underlay addresses (the peers' endpoints).
    pub transparent: bool,
    /// `[policy] transparent_unknown`, written only when set.
    pub transparent_unknown: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            suite: "aes-256-gcm".to_owned(),
            rekey_after_seconds: None,
            underlay_mtu: 1500,
            ipv6_underlay: false,
            ipv6_tunnel: false,
            fail_closed: None,
            transparent: false,
            transparent_unknown: None,
        }
    }
}

/// One agent's files and process.
pub struct Agent {
    pub node: Node,
    pub key_file: PathBuf,
    pub config_file: PathBuf,
    pub socket: PathBuf,
    pub log_file: PathBuf,
    pub public_key: String,
    proc: Option<Proc>,
}

/// The agents of a topology plus the directory holding their files.
pub struct Cluster {
    pub dir: PathBuf,
    pub vxsec: PathBuf,
    pub options: ClusterOptions,
    pub agents: Vec<Agent>,
    network_id: String,
    /// peers[i] = (peer index, allowed VNIs or None = any), per node index.
    peers: BTreeMap<u8, PeerList>,
    /// TOML appended to node i's config (e.g. a `[fleet]` section).
    extra_config: BTreeMap<u8, String>,
    keep: bool,
}

/// Extracts the public key (44-char base64 token) from keygen/pubkey output.
pub fn find_public_key(output: &str) -> Option<String> {
    output
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
        .rev()
        .find(|t| t.len() == 44 && t.ends_with('='))
        .map(str::to_owned)
}

impl Cluster {
    /// Generates a key and a full-mesh config for every node (nothing runs yet).
    pub fn new(
        topo: &Topology,
        vxsec: &Path,
        options: ClusterOptions,
    ) -> Result<Cluster, LabError> {
        let dir = std::env::temp_dir().join(format!("vxsec-{}", topo.id));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
        let mut cluster = Cluster {
            dir,
            vxsec: vxsec.to_owned(),
            options,
            agents: Vec::new(),
            network_id: format!("lab-{}", topo.id),
            peers: BTreeMap::new(),
            extra_config: BTreeMap::new(),
            keep: false,
        };
        for node in &topo.nodes {
            let name = node.name();
            let key_file = cluster.dir.join(format!("{name}.key"));
            let out = Cmd::new(vxsec.to_string_lossy())
                .args(["keygen", "--out"])
                .arg(key_file.to_string_lossy())
                .run()?;
            let public_key = match find_public_key(&out) {
                Some(k) => k,
                None => find_public_key(
                    &Cmd::new(vxsec.to_string_lossy())
                        .args(["pubkey", "--key"])
                        .arg(key_file.to_string_lossy())
                        .run()?,
                )
                .ok_or_else(|| LabError::Check(format!("no public key in {out:?}")))?,
            };
            cluster.agents.push(Agent {
                node: node.clone(),
                config_file: cluster.dir.join(format!("{name}.toml")),
                socket: cluster.dir.join(format!("{name}.sock")),
                log_file: cluster.dir.join(format!("{name}.log")),
                key_file,
                public_key,
                proc: None,
            });
        }
        let all: Vec<u8> = topo.nodes.iter().map(|n| n.index).collect();
        for &i in &all {
            let peers = all
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| (j, None))
                .collect();
            cluster.peers.insert(i, peers);
            cluster.write_config(i)?;
        }
        Ok(cluster)
    }

    pub fn agent(&self, index: u8) -> Result<&Agent, LabError> {
        self.agents
            .iter()
            .find(|a| a.node.index == index)
            .ok_or_else(|| LabError::Check(format!("no agent {index}")))
    }

    fn agent_mut(&mut self, index: u8) -> Result<&mut Agent, LabError> {
        self.agents
            .iter_mut()
            .find(|a| a.node.index == index)
            .ok_or_else(|| LabError::Check(format!("no agent {index}")))
    }

    /// Replaces node `index`'s peer list (peer index, allowed VNIs) and
    /// rewrites its config (a running agent picks it up on `reload`).
    pub fn set_peers(
        &mut self,
        index: u8,
        peers: Vec<(u8, Option<Vec<u32>>)>,
    ) -> Result<(), LabError> {
        self.peers.insert(index, peers);
        self.write_config(index)
    }

    /// Appends `toml` to node `index`'s config and rewrites it.
    pub fn set_extra_config(&mut self, index: u8, toml: String) -> Result<(), LabError> {
        self.extra_config.insert(index, toml);
        self.write_config(index)
    }

    /// The network id written into every config.
    pub fn network_id(&self) -> &str {
        &self.network_id
    }

    /// The TOML config of node `index` (THE AGENT CONTRACT).
    pub fn render_config(&self, index: u8) -> Result<String, LabError> {
        let a = self.agent(index)?;
        let o = &self.options;
        let mut s = String::new();
        let _ = writeln!(s, "[interface]\nname = \"vxsec0\"");
        let _ = writeln!(s, "address = \"{}\"", self.tunnel_cidr(&a.node));
        let _ = writeln!(s, "listen_port = {LISTEN_PORT}");
        let _ = writeln!(s, "private_key_file = \"{}\"", a.key_file.display());
        let _ = writeln!(s, "suite = \"{}\"", o.suite);
        let _ = writeln!(s, "network_id = \"{}\"", self.network_id);
        let _ = writeln!(s, "underlay_mtu = {}", o.underlay_mtu);
        let _ = writeln!(s, "control_socket = \"{}\"", a.socket.display());
        if o.transparent {
            let _ = writeln!(s, "mode = \"transparent\"");
        }
        if let Some(secs) = o.rekey_after_seconds {
            let _ = writeln!(s, "\n[rotation]\nrekey_after_seconds = {secs}");
        }
        let _ = writeln!(
            s,
            "\n[policy]\nvxlan_port = {}",
            crate::topology::VXLAN_PORT
        );
        if let Some(on) = o.fail_closed {
            let _ = writeln!(s, "fail_closed = {on}");
        }
        if let Some(u) = &o.transparent_unknown {
            let _ = writeln!(s, "transparent_unknown = \"{u}\"");
        }
        for (j, vnis) in self.peers.get(&index).map(Vec::as_slice).unwrap_or(&[]) {
            let p = self.agent(*j)?;
            let _ = writeln!(s, "\n[[peer]]\nname = \"{}\"", p.node.name());
            let _ = writeln!(s, "public_key = \"{}\"", p.public_key);
            let endpoint = if o.ipv6_underlay {
                format!("[{}]", p.node.underlay_ip6())
            } else {
                p.node.underlay_ip.to_string()
            };
            let _ = writeln!(s, "endpoint = \"{endpoint}:{LISTEN_PORT}\"");
            let _ = writeln!(s, "tunnel_address = \"{}\"", self.tunnel_addr(&p.node));
            if let Some(v) = vnis {
                let list: Vec<String> = v.iter().map(u32::to_string).collect();
                let _ = writeln!(s, "allowed_vnis = [{}]", list.join(", "));
            }
        }
        if let Some(extra) = self.extra_config.get(&index) {
            let _ = writeln!(s, "\n{extra}");
        }
        Ok(s)
    }

    /// The tunnel address (VTEP) of `node` in this cluster's family.
    pub fn tunnel_addr(&self, node: &Node) -> std::net::IpAddr {
        if self.options.ipv6_tunnel {
            node.tunnel_ip6().into()
        } else {
            node.tunnel_ip.into()
        }
    }

    /// `interface.address` of `node`: its tunnel address and prefix.
    fn tunnel_cidr(&self, node: &Node) -> String {
        let prefix = if self.options.ipv6_tunnel { 64 } else { 16 };
        format!("{}/{prefix}", self.tunnel_addr(node))
    }

    fn write_config(&self, index: u8) -> Result<(), LabError> {
        let a = self.agent(index)?;
        let text = self.render_config(index)?;
        fs::write(&a.config_file, text)
            .and_then(|()| fs::set_permissions(&a.config_file, fs::Permissions::from_mode(0o600)))
            .map_err(|e| LabError::io(format!("write {}", a.config_file.display()), e))
    }

    /// Starts node `index`'s agent and waits until its control socket answers.
    pub fn start(&mut self, index: u8) -> Result<(), LabError> {
        let vxsec = self.vxsec.to_string_lossy().into_owned();
        let a = self.agent_mut(index)?;
        let _ = fs::remove_file(&a.socket);
        let proc = Cmd::in_netns(&a.node.ns, vxsec)
            .args(["up", "-c"])
            .arg(a.config_file.to_string_lossy())
            .env("VXSEC_LOG", "info")
            .spawn_logged(&a.log_file)?;
        a.proc = Some(proc);
        self.wait_ready(index, Duration::from_secs(15))
    }

    /// Starts every agent.
    pub fn start_all(&mut self) -> Result<(), LabError> {
        let all: Vec<u8> = self.agents.iter().map(|a| a.node.index).collect();
        for i in all {
            self.start(i)?;
        }
        Ok(())
    }

    fn wait_ready(&mut self, index: u8, timeout: Duration) -> Result<(), LabError> {
        let steps = timeout.as_millis() / 100;
        for _ in 0..steps {
            if self.status_json(index).is_ok() {
                return Ok(());
            }
            let a = self.agent_mut(index)?;
            if let Some(p) = a.proc.as_mut() {
                if !p.is_running() {
                    return Err(LabError::Check(format!(
                        "agent {} exited at start; log:\n{}",
                        a.node.name(),
                        a.log_tail()
                    )));
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        let a = self.agent(index)?;
        Err(LabError::Timeout(format!(
            "agent {} control socket {} not answering; log:\n{}",
            a.node.name(),
            a.socket.display(),
            a.log_tail()
        )))
    }

    /// Sends a signal (`TERM`, `HUP`, `KILL`…) to node `index`'s agent.
    pub fn signal(&self, index: u8, sig: &str) -> Result<(), LabError> {
        match &self.agent(index)?.proc {
            Some(p) => p.signal(sig),
            None => Err(LabError::Check(format!("agent {index} is not running"))),
        }
    }

    /// SIGKILLs node `index`'s agent (no clean shutdown).
    pub fn kill(&mut self, index: u8) -> Result<(), LabError> {
        if let Some(mut p) = self.agent_mut(index)?.proc.take() {
            p.kill();
        }
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn stop(&mut self, index: u8, timeout: Duration) -> Result<Option<i32>, LabError> {
        self.signal(index, "TERM")?;
        match self.agent_mut(index)?.proc.as_mut() {
            Some(p) => p.wait_timeout(timeout),
            None => Ok(None),
        }
    }

    /// Is node `index`'s agent process alive?
    pub fn is_running(&mut self, index: u8) -> Result<bool, LabError> {
        Ok(self
            .agent_mut(index)?
            .proc
            .as_mut()
            .is_some_and(Proc::is_running))
    }

    /// Runs `vxsec <args…> --socket <node's socket>` and returns stdout.
    pub fn ctl(&self, index: u8, args: &[&str]) -> Result<String, LabError> {
        let a = self.agent(index)?;
        Cmd::new(self.vxsec.to_string_lossy())
            .args(args.iter().copied())
            .arg("--socket")
            .arg(a.socket.to_string_lossy())
            .run()
    }

    /// `vxsec status --json` of node `index`.
    pub fn status_json(&self, index: u8) -> Result<serde_json::Value, LabError> {
        let out = self.ctl(index, &["status", "--json"])?;
        serde_json::from_str(&out)
            .map_err(|e| LabError::Check(format!("status --json is not JSON ({e}): {out}")))
    }

    /// The status entry of `peer` (by node index) as seen by `index`.
    pub fn peer_status(&self, index: u8, peer: u8) -> Result<serde_json::Value, LabError> {
        let name = self.agent(peer)?.node.name();
        let st = self.status_json(index)?;
        st.get("peers")
            .and_then(|p| p.as_array())
            .and_then(|arr| {
                arr.iter()
                    .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(&name))
            })
            .cloned()
            .ok_or_else(|| LabError::Check(format!("node{index} status has no peer {name}: {st}")))
    }

    /// Waits until node `index` reports `peer` established.
    pub fn wait_established(&self, index: u8, peer: u8, timeout: Duration) -> Result<(), LabError> {
        for _ in 0..(timeout.as_millis() / 100) {
            if let Ok(p) = self.peer_status(index, peer) {
                if p.get("established").and_then(serde_json::Value::as_bool) == Some(true) {
                    return Ok(());
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(LabError::Timeout(format!(
            "node{index} never established with node{peer}"
        )))
    }

    /// The VXLAN MTU the agent of node `index` tells operators to use.
    pub fn vxlan_mtu(&self, index: u8) -> Result<u32, LabError> {
        let st = self.status_json(index)?;
        st.get("vxlan_mtu")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| LabError::Check(format!("status has no vxlan_mtu: {st}")))
    }

    /// Creates VXLAN VNI `vni` over vxsec on every node, between tunnel
    /// addresses of the cluster's family, with (`local`, README's recipe)
    /// or without a local address (as Docker's overlay driver makes them),
    /// at the MTU the agents advise for that family. Returns the MTU.
    pub fn attach_vxlan(&self, topo: &Topology, vni: u32, local: bool) -> Result<u32, LabError> {
        let first = self.agents.first().map(|a| a.node.index).unwrap_or(1);
        let mtu = self.vxlan_mtu(first)?;
        let spec = VxlanSpec {
            over: VxlanOver::Vxsec,
            local,
            ipv6: self.options.ipv6_tunnel,
        };
        for a in &self.agents {
            topo.attach_vxlan(a.node.index, vni, spec, mtu)?;
        }
        Ok(mtu)
    }

    /// Rewrites node `index`'s config from the cluster's settings (e.g.
    /// after a test broke it on purpose).
    pub fn rewrite_config(&self, index: u8) -> Result<(), LabError> {
        self.write_config(index)
    }

    /// `vxsec down -c <config>` inside node `index`'s namespace; its output.
    pub fn down(&self, index: u8) -> Result<String, LabError> {
        let a = self.agent(index)?;
        Cmd::in_netns(&a.node.ns, self.vxsec.to_string_lossy())
            .args(["down", "-c"])
            .arg(a.config_file.to_string_lossy())
            .run()
    }

    /// Leaves agents and files in place on drop (for `vxsec-lab --keep`).
    pub fn keep(&mut self) {
        self.keep = true;
        for a in &mut self.agents {
            if let Some(p) = a.proc.as_mut() {
                p.detach();
            }
        }
    }
}

impl Agent {
    /// The last lines of the agent's log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(20);
        lines.get(from..).unwrap_or(&[]).join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for a in &mut self.agents {
            if let Some(mut p) = a.proc.take() {
                // Clean shutdown first (removes the TUN), then make sure.
                let _ = p.signal("TERM");
                let _ = p.wait_timeout(Duration::from_secs(3));
                p.kill();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_public_key_in_keygen_output() {
        let k = "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=";
        assert_eq!(k.len(), 44);
        assert_eq!(
            find_public_key(&format!("public key: {k}\n")),
            Some(k.to_owned())
        );
        assert_eq!(find_public_key(k), Some(k.to_owned()));
        assert_eq!(find_public_key("wrote /tmp/x.key"), None);
    }
}
