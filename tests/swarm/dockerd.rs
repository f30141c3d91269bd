//! One real `dockerd` per node namespace, isolated from the host and from
//! the other daemons: its own data root, exec root, pid file, API socket,
//! cgroup parent, UTS name (`unshare --uts`) and mount namespace, in which
//! the cgroup hierarchies are mounted again (`ip netns exec` gives a fresh
//! `/sys` without them) and `/run` is a private tmpfs (so the daemon starts
//! its own containerd even where a system one runs, and leaves nothing in
//! the host's `/run`). Dropping a `Dockerd` kills its containers (by cgroup),
//! the daemon, containerd and the shims (by pid) and removes its files; the
//! mounts go with its mount namespace. It does not form swarms (see `mod`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vxsec_lab::{Cmd, Proc};

/// The `dockerd` on `PATH`, or `None` when Docker is not installed.
pub fn dockerd_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("dockerd"))
        .find(|p| p.is_file())
}

/// The `docker` CLI shipped beside `dockerd` (Debian's `docker.io`), else
/// the first one on `PATH`: a newer CLI elsewhere on `PATH` would work but
/// is not what the package under test ships.
pub fn docker_cli(dockerd: &Path) -> PathBuf {
    let sibling = dockerd.with_file_name("docker");
    if sibling.is_file() {
        sibling
    } else {
        PathBuf::from("docker")
    }
}

/// A cgroup mount of the host: (mount point, fs type, options).
fn host_cgroup_mounts() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [_, mnt, ty @ ("cgroup" | "cgroup2"), opts, ..]
                    if mnt.starts_with("/sys/fs/cgroup") =>
                {
                    Some(((*mnt).to_owned(), (*ty).to_owned(), (*opts).to_owned()))
                }
                _ => None,
            }
        })
        .collect()
}

/// Shell lines that recreate the host's cgroup mounts under a fresh `/sys`.
pub fn cgroup_mount_script() -> String {
    let mounts = host_cgroup_mounts();
    let mut s = String::new();
    if let Some((_, ty, opts)) = mounts.iter().find(|(m, _, _)| m == "/sys/fs/cgroup") {
        // Unified hierarchy only (cgroup v2 hosts).
        s.push_str(&format!("mount -t {ty} -o {opts} {ty} /sys/fs/cgroup\n"));
        return s;
    }
    s.push_str("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup\n");
    for (mnt, ty, opts) in &mounts {
        s.push_str(&format!(
            "mkdir -p {mnt}\nmount -t {ty} -o {opts} {ty} {mnt}\n"
        ));
    }
    s
}

/// A running `dockerd` in a node namespace.
pub struct Dockerd {
    pub node: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub cli: PathBuf,
    /// Unique cgroup parent of this daemon's containers.
    pub cgroup_parent: String,
    log: PathBuf,
    ns: String,
    proc: Option<Proc>,
}

impl Dockerd {
    /// Starts `dockerd` in `ns` with hostname `node`, its files in `dir`
    /// (created; removed on drop). Returns once the process runs; call
    /// `wait_ready` before using the API.
    pub fn start(ns: &str, node: &str, dir: &Path, dockerd: &Path) -> Dockerd {
        std::fs::create_dir_all(dir).expect("dockerd dir");
        let socket = dir.join("docker.sock");
        let cgroup_parent = format!("{ns}-docker");
        let exec = format!(
            "exec {dockerd} --data-root {d}/data --exec-root {d}/exec \
             --pidfile {d}/dockerd.pid -H unix://{sock} --cgroup-parent {cgroup_parent} \
             --log-level info",
            dockerd = dockerd.display(),
            d = dir.display(),
            sock = socket.display(),
        );
        let script = format!(
            "set -e\nhostname {node}\nmount -t tmpfs -o mode=755 tmpfs /run\n{}{exec}\n",
            cgroup_mount_script()
        );
        let log = dir.join("dockerd.log");
        let proc = Cmd::in_netns(ns, "unshare")
            .args(["--uts", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(script)
            // No registry is reachable: without this, every task start
            // first waits ~20 s for a pull of the local image to time out.
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .spawn_logged(&log)
            .expect("start dockerd");
        Dockerd {
            node: node.to_owned(),
            cli: docker_cli(dockerd),
            dir: dir.to_owned(),
            socket,
            cgroup_parent,
            log,
            ns: ns.to_owned(),
            proc: Some(proc),
        }
    }

    /// A `docker` command against this daemon (run through `timeout`, so a
    /// wedged daemon fails the test instead of hanging it).
    pub fn docker(&self, secs: u32) -> Cmd {
        Cmd::new("timeout")
            .arg(secs.to_string())
            .arg(self.cli.to_string_lossy())
            .args(["-H".to_owned(), format!("unix://{}", self.socket.display())])
            .env("DOCKER_CONFIG", &self.dir.join("cli").to_string_lossy())
    }

    /// Runs `docker ARGS` (60 s at most) and returns stdout, trimmed.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        self.docker(60)
            .args(args.iter().copied())
            .run()
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("{}: {e}", self.node))
    }

    /// Runs `docker ARGS` answering `y` to its confirmation prompt, as an
    /// operator does.
    pub fn answer_yes(&self, args: &[&str]) -> Result<String, String> {
        Cmd::new("sh")
            .args(["-c", "printf 'y\\n' | exec \"$@\"", "sh", "timeout", "60"])
            .arg(self.cli.to_string_lossy())
            .args(["-H".to_owned(), format!("unix://{}", self.socket.display())])
            .args(args.iter().copied())
            .env("DOCKER_CONFIG", &self.dir.join("cli").to_string_lossy())
            .run()
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("{}: {e}", self.node))
    }

    /// Waits until the API answers `docker info`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.run(&["info", "--format", "{{.ID}}"]).is_ok() {
                return;
            }
            let running = self.proc.as_mut().is_some_and(Proc::is_running);
            assert!(
                running && Instant::now() < deadline,
                "dockerd on {} not ready (running: {running}); log:\n{}",
                self.node,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last `n` lines of the daemon's log (dockerd and containerd).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Pids of every process in this daemon's container cgroups.
    fn container_pids(&self) -> Vec<String> {
        let mut pids = Vec::new();
        for (mnt, _, _) in host_cgroup_mounts() {
            collect_procs(&Path::new(&mnt).join(&self.cgroup_parent), &mut pids);
        }
        pids.sort();
        pids.dedup();
        pids
    }

    /// Removes this daemon's (now empty) cgroup directories, deepest first.
    fn remove_cgroups(&self) {
        for (mnt, _, _) in host_cgroup_mounts() {
            remove_tree(&Path::new(&mnt).join(&self.cgroup_parent));
        }
    }

    /// Starts the teardown without waiting: kills the containers (busybox
    /// as pid 1 ignores SIGTERM: no grace period to wait out) and asks the
    /// daemon to exit cleanly, so it unmounts and removes its network
    /// sandboxes itself. Lets several daemons shut down at once.
    pub fn begin_stop(&mut self) {
        if self.proc.is_some() {
            kill_all(&self.container_pids());
        }
        if let Some(p) = &self.proc {
            let _ = p.signal("TERM");
        }
    }

    /// Tears everything down (idempotent): containers, daemon, containerd,
    /// shims, cgroups, files.
    pub fn stop(&mut self) {
        self.begin_stop();
        let Some(mut proc) = self.proc.take() else {
            return;
        };
        let _ = proc.wait_timeout(Duration::from_secs(10));
        // Whatever is left in the node namespace that belongs to this
        // daemon: containerd and shims (they reparent away from dockerd).
        kill_all(&self.daemon_children());
        for _ in 0..50 {
            if self.container_pids().is_empty() {
                break;
            }
            kill_all(&self.container_pids());
            std::thread::sleep(Duration::from_millis(100));
        }
        self.remove_cgroups();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// containerd and shim processes started for this daemon: in its node
    /// namespace, with this daemon's exec root on their command line.
    fn daemon_children(&self) -> Vec<String> {
        let Ok(out) = Cmd::new("ip").args(["netns", "pids", &self.ns]).run() else {
            return Vec::new();
        };
        let marker = self.dir.to_string_lossy().into_owned();
        out.split_whitespace()
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains(&marker)
                    || exe.to_string_lossy().contains("containerd")
            })
            .map(str::to_owned)
            .collect()
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.split_whitespace().map(str::to_owned));
    }
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&e.path(), out);
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    // cgroup directories are removed with rmdir (their files are virtual).
    let _ = std::fs::remove_dir(dir);
}

fn kill_all(pids: &[String]) {
    if pids.is_empty() {
        return;
    }
    let _ = Cmd::new("kill")
        .arg("-KILL")
        .args(pids.iter().cloned())
        .output();
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- dockerd on {} (last lines) ---\n{}",
                self.node,
                self.log_tail(30)
            );
        }
        self.stop();
    }
}
