//! A real three-node Docker Swarm over vxsec for the integration tests:
//! the lab topology (three node namespaces on an underlay bridge, each with
//! a default route and IPv6 on), a real `vxsec` agent per node, a real
//! `dockerd` per node (see `dockerd`), the busybox image imported on each,
//! and helpers to form the swarm, create overlays and services, and run
//! commands in containers. Teardown order is daemons, agents, namespaces,
//! files, on every exit path. It asserts nothing about vxsec itself: the
//! tests do (`tests/netns_swarm.rs`).

pub mod dockerd;
pub mod image;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{vxsec_bin, Cluster, ClusterOptions, Cmd, Topology};
use dockerd::Dockerd;
use image::IMAGE;

/// What a Swarm test needs that a plain netns test does not.
pub struct Tools {
    pub dockerd: PathBuf,
    pub busybox: PathBuf,
}

/// `Some(tools)` when the Swarm tests can run; otherwise says why they skip
/// (and fails instead under CI, where Docker must be installed).
pub fn tools_or_skip(test: &str) -> Option<Tools> {
    if !crate::common::root_or_skip(test) {
        return None;
    }
    let missing = match (dockerd::dockerd_path(), image::static_busybox()) {
        (Some(dockerd), Some(busybox)) => return Some(Tools { dockerd, busybox }),
        (None, _) => "dockerd (apt-get install docker.io containerd runc iptables)",
        (_, None) => "a static /bin/busybox (apt-get install busybox-static)",
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI must run the Swarm tests, but {missing} is not installed"
    );
    eprintln!("SKIP {test}: needs {missing}");
    None
}

/// Removes a directory tree on drop (last, after the daemons are gone).
pub struct DirGuard(pub PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Three nodes, three agents, three daemons. Field order is teardown order.
pub struct SwarmLab {
    pub daemons: Vec<Dockerd>,
    pub cluster: Cluster,
    pub topo: Topology,
    pub dir: DirGuard,
    pub started: Instant,
}

/// Polls `f` every 200 ms until it returns `Some`, or panics with `what`
/// and the last error after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("timed out: {what}; last: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

impl SwarmLab {
    /// Builds the topology, starts the agents and the daemons, imports the
    /// image everywhere. No swarm yet.
    pub fn new(tools: &Tools) -> SwarmLab {
        SwarmLab::with_agents(tools, ClusterOptions::default(), true)
    }

    /// The same with the agents configured by `opts`, started only when
    /// `start_agents` (otherwise their configs are written and
    /// `start_agents` starts them later, on a running swarm).
    pub fn with_agents(tools: &Tools, opts: ClusterOptions, start_agents: bool) -> SwarmLab {
        let started = Instant::now();
        let topo = Topology::new("swm", 3, 1500).expect("topology");
        let dir = DirGuard(std::env::temp_dir().join(format!("vxsec-{}-docker", topo.id)));
        std::fs::create_dir_all(&dir.0).expect("docker dir");
        let cluster = Cluster::new(&topo, &vxsec_bin(), opts).expect("agents' configs");
        let mut lab = SwarmLab {
            daemons: Vec::new(),
            cluster,
            topo,
            dir,
            started,
        };
        if start_agents {
            lab.start_agents();
        }
        // In the lab from here on, so a failure below tears them down too.
        lab.daemons = lab
            .topo
            .nodes
            .iter()
            .map(|n| Dockerd::start(&n.ns, &n.name(), &lab.dir.0.join(n.name()), &tools.dockerd))
            .collect();
        let tar = image::build_tarball(&lab.dir.0, &tools.busybox);
        for d in &mut lab.daemons {
            d.wait_ready(Duration::from_secs(60));
            d.run(&["import", &tar.to_string_lossy(), IMAGE])
                .expect("docker import");
        }
        lab.phase("daemons ready, image imported");
        lab
    }

    /// Starts every node's agent and checks it installed its own
    /// fail-closed guards (table inet vxsec: VXLAN only through vxsec0);
    /// Docker's own iptables rules stay beside them.
    pub fn start_agents(&mut self) {
        self.cluster.start_all().expect("agents start");
        for n in &self.topo.nodes {
            let t = Cmd::in_netns(&n.ns, "nft")
                .args(["list", "table", "inet", "vxsec"])
                .run()
                .expect("the agent's guard table");
            assert!(
                t.contains("vxsec0"),
                "{}: guard table without vxsec0: {t}",
                n.name()
            );
        }
        self.phase("agents up");
    }

    /// The daemon of node `i` (1-based).
    pub fn d(&self, i: u8) -> &Dockerd {
        &self.daemons[usize::from(i) - 1]
    }

    /// `docker swarm init` on node1 and `join` on nodes 2 and 3, advertising
    /// the underlay address; Swarm's VXLAN uses `data_path(i)` when given.
    pub fn form_swarm(&self, data_path: impl Fn(u8) -> Option<String>) {
        let underlay = |i: u8| self.topo.node(i).unwrap().underlay_ip.to_string();
        let mut init = vec!["swarm", "init", "--advertise-addr"];
        let u1 = underlay(1);
        init.push(&u1);
        let dp1 = data_path(1);
        if let Some(dp) = &dp1 {
            init.extend(["--data-path-addr", dp]);
        }
        self.d(1).run(&init).expect("swarm init");
        let token = self
            .d(1)
            .run(&["swarm", "join-token", "-q", "worker"])
            .expect("join token");
        let manager = format!("{u1}:2377");
        for i in [2u8, 3] {
            let ui = underlay(i);
            let dpi = data_path(i);
            let mut join = vec!["swarm", "join", "--token", &token, "--advertise-addr", &ui];
            if let Some(dp) = &dpi {
                join.extend(["--data-path-addr", dp]);
            }
            join.push(&manager);
            self.d(i).run(&join).expect("swarm join");
        }
        wait_for("3 nodes Ready", Duration::from_secs(60), || {
            let out = self
                .d(1)
                .run(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])?;
            let ready = out.lines().filter(|l| l.ends_with(" Ready")).count();
            (ready == 3).then_some(()).ok_or(out)
        });
    }

    /// Recreates `ingress` with Docker's MTU option, as README's Swarm guide
    /// says (answering `docker network rm`'s confirmation prompt); returns
    /// its VNI.
    pub fn recreate_ingress(&self, docker_mtu: u32) -> u32 {
        let d = self.d(1);
        d.answer_yes(&["network", "rm", "ingress"])
            .expect("network rm ingress");
        wait_for("ingress gone", Duration::from_secs(30), || {
            match d.run(&["network", "inspect", "ingress"]) {
                Ok(_) => Err("still there".to_owned()),
                Err(_) => Ok(()),
            }
        });
        let mtu = format!("com.docker.network.driver.mtu={docker_mtu}");
        d.run(&[
            "network",
            "create",
            "--driver",
            "overlay",
            "--ingress",
            "--opt",
            &mtu,
            "ingress",
        ])
        .expect("network create --ingress");
        let opt = d
            .run(&[
                "network",
                "inspect",
                "-f",
                r#"{{index .Options "com.docker.network.driver.mtu"}}"#,
                "ingress",
            ])
            .expect("inspect ingress");
        assert_eq!(opt, docker_mtu.to_string(), "ingress MTU option");
        self.vni("ingress")
    }

    /// Creates an attachable overlay with Docker's MTU option; returns the
    /// VNI Swarm gave it.
    pub fn create_overlay(&self, name: &str, docker_mtu: u32) -> u32 {
        let mtu = format!("com.docker.network.driver.mtu={docker_mtu}");
        self.d(1)
            .run(&[
                "network",
                "create",
                "-d",
                "overlay",
                "--attachable",
                "--opt",
                &mtu,
                name,
            ])
            .expect("network create");
        self.vni(name)
    }

    /// The VNI of overlay `name`, read the way README tells operators to.
    pub fn vni(&self, name: &str) -> u32 {
        let out = self
            .d(1)
            .run(&[
                "network",
                "inspect",
                "-f",
                r#"{{index .Options "com.docker.network.driver.overlay.vxlanid_list"}}"#,
                name,
            ])
            .expect("network inspect");
        out.parse()
            .unwrap_or_else(|_| panic!("no VNI for {name}: {out:?}"))
    }

    /// A one-replica service pinned to node `node`, on `networks`, DNS
    /// round robin (no IPVS here), image used as imported; waits until its
    /// container runs there and returns the container id.
    pub fn create_service(&self, name: &str, node: u8, networks: &[&str], cmd: &str) -> String {
        let constraint = format!("node.hostname==node{node}");
        let mut args = vec![
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--endpoint-mode",
            "dnsrr",
            "--no-resolve-image",
            "--constraint",
            &constraint,
        ];
        for n in networks {
            args.extend(["--network", n]);
        }
        args.extend([IMAGE, "sh", "-c", cmd]);
        self.d(1).run(&args).expect("service create");
        let label = format!("label=com.docker.swarm.service.name={name}");
        wait_for(
            &format!("service {name} running on node{node}"),
            Duration::from_secs(60),
            || {
                let id = self.d(node).run(&["ps", "-q", "--filter", &label])?;
                (!id.is_empty()).then_some(id).ok_or_else(|| {
                    self.d(1)
                        .run(&["service", "ps", "--no-trunc", name])
                        .unwrap_or_default()
                })
            },
        )
    }

    /// A standalone container on node `node` attached to `network`.
    pub fn run_container(&self, node: u8, name: &str, network: &str) -> String {
        self.d(node)
            .run(&[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                network,
                IMAGE,
                "sleep",
                "3600",
            ])
            .expect("docker run")
    }

    /// `sh -c script` in container `id` on node `node`.
    pub fn exec(&self, node: u8, id: &str, script: &str) -> Result<String, String> {
        self.d(node).run(&["exec", id, "sh", "-c", script])
    }

    /// The same, as a running process (for long transfers).
    pub fn exec_spawn(&self, node: u8, id: &str, script: &str) -> vxsec_lab::Proc {
        self.d(node)
            .docker(300)
            .args(["exec", id, "sh", "-c", script])
            .spawn(Some(
                &self
                    .dir
                    .0
                    .join(format!("exec-{}.err", rand::random::<u32>())),
            ))
            .expect("docker exec")
    }

    /// The value for Docker's `com.docker.network.driver.mtu` that node
    /// `i`'s agent gives (`vxsec status`): its `docker_mtu`, or for an
    /// agent that does not print one yet, the tunnel MTU (DESIGN §7: Docker
    /// subtracts VXLAN's 50 bytes itself).
    pub fn docker_mtu(&self, i: u8) -> u32 {
        let st = self.cluster.status_json(i).expect("status");
        st.get("docker_mtu")
            .or_else(|| st.get("tunnel_mtu"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or_else(|| panic!("status has no docker_mtu or tunnel_mtu: {st}"))
    }

    /// Logs how long the lab has been up at `what` (the CI budget is 5 min).
    pub fn phase(&self, what: &str) {
        eprintln!("{:6.1} s  {what}", self.started.elapsed().as_secs_f64());
    }

    /// Directory for captures and scratch files (removed at the end).
    pub fn scratch(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for SwarmLab {
    fn drop(&mut self) {
        self.phase("teardown");
        // Daemons first (their containers use the overlays over vxsec0);
        // agents and namespaces follow as the fields drop.
        for d in &mut self.daemons {
            d.begin_stop();
        }
        self.daemons.clear();
        self.phase("daemons, containerd, shims and containers gone");
    }
}
