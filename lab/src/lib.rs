//! `vxsec-lab`: a three-node encrypted VXLAN lab in network namespaces, and
//! the building blocks the netns tests and the end-to-end bench share with it
//! (topology, agents, traffic, guards, handshake flood). Needs root. It does
//! not implement the agent and does not ship in it: it is its own crate and
//! runs the real `vxsec` binary in each node namespace.

pub mod agents;
pub mod cmd;
pub mod flood;
pub mod guards;
pub mod topology;
pub mod traffic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

pub use cmd::{Cmd, LabError, Proc};
use vxsec::io::sys::is_root;

use agents::{Cluster, ClusterOptions};
use topology::{Topology, LAB_VNI};

/// What `vxsec-lab` was asked to do.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Leave namespaces and agents running and print how to poke around.
    pub keep: bool,
    /// `aes-256-gcm` (default) or `chacha20-poly1305`.
    pub suite: Option<String>,
    /// The `vxsec` binary to run in each node (normally the current exe).
    pub vxsec_binary: PathBuf,
}

const TRANSFER_BYTES: u64 = 50_000_000;

/// Watches SIGINT/SIGTERM on a side thread; on either, cancels all waits so
/// `run` unwinds through the Drop guards.
fn watch_signals() {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            let _ = ready_tx.send(());
            return;
        };
        rt.block_on(async move {
            let int = signal(SignalKind::interrupt());
            let term = signal(SignalKind::terminate());
            let _ = ready_tx.send(());
            let (Ok(mut int), Ok(mut term)) = (int, term) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("\nvxsec-lab: interrupted, tearing down…");
            cmd::cancel();
        });
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(2));
}

fn step(n: u32, title: &str) {
    println!("\n[{n}/6] {title}");
}

fn indent(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// Runs the lab (see the module doc); returns when done, or at once on Ctrl-C
/// after tearing down.
pub fn run(opts: LabOptions) -> Result<(), LabError> {
    if !is_root() {
        return Err(LabError::NotRoot);
    }
    let helper = traffic::locate_helper(&opts.vxsec_binary)?;
    watch_signals();
    let suite = opts
        .suite
        .clone()
        .unwrap_or_else(|| "aes-256-gcm".to_owned());
    println!("vxsec-lab: 3 nodes, kernel VXLAN (VNI {LAB_VNI}) over vxsec ({suite})");

    step(1, "topology");
    let mut topo = Topology::new("vxl", 3, 1500)?;
    println!(
        "    underlay bridge: namespace {} (192.168.77.0/24)",
        topo.underlay_ns
    );
    for n in &topo.nodes {
        println!(
            "    {}: namespace {:<12} underlay {:<14} tunnel {:<12} container {} ({})",
            n.name(),
            n.ns,
            n.underlay_ip,
            n.tunnel_ip,
            n.container_ns,
            n.container_ip
        );
    }

    step(2, "agents");
    let options = ClusterOptions {
        suite: suite.clone(),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::new(&topo, &opts.vxsec_binary, options)?;
    cluster.start_all()?;
    let vxlan_mtu = cluster.attach_vxlan(&topo, LAB_VNI, true)?;
    for a in &cluster.agents {
        println!(
            "    {} up: public key {}, control socket {}",
            a.node.name(),
            a.public_key,
            a.socket.display()
        );
    }
    println!("    vxlan{LAB_VNI} local <tunnel address>, MTU {vxlan_mtu} (from `vxsec status`)");
    // Each agent installed its fail-closed guards before its TUN existed:
    // VXLAN to tunnel addresses leaves only through vxsec0, and VXLAN is
    // accepted only from it, whether the agent runs or not.
    if let Some(a) = cluster.agents.first() {
        match guards::describe(&a.node.ns) {
            Ok(text) => {
                println!("    {}'s fail-closed guards (left in place when the agent stops; `vxsec down` removes them):", a.node.name());
                indent(&text);
            }
            Err(e) => println!("    warning: cannot list {}'s guards: {e}", a.node.name()),
        }
    }

    let result = demo(&topo, &cluster, &helper);
    if let Err(e) = &result {
        if !matches!(e, LabError::Interrupted) {
            for a in &cluster.agents {
                eprintln!(
                    "--- {} log (last lines) ---\n{}",
                    a.node.name(),
                    a.log_tail()
                );
            }
        }
    }
    result?;

    if opts.keep {
        topo.keep();
        cluster.keep();
        print_keep_hints(&topo, &cluster);
    } else {
        println!("\nTearing down (use --keep to leave the lab running).");
    }
    Ok(())
}

fn demo(topo: &Topology, cluster: &Cluster, helper: &std::path::Path) -> Result<(), LabError> {
    step(3, "ping across nodes (container1 → container2, container3)");
    for to in [2, 3] {
        cmd::check_cancelled()?;
        indent(&topo.ping_containers(1, to, 3)?);
    }

    step(
        4,
        "50 MB TCP transfer container1 → container3, SHA-256 checked",
    );
    let c1 = topo.node(1)?;
    let c3 = topo.node(3)?;
    let to = SocketAddr::from((c3.container_ip, 5001));
    let t = traffic::start_tcp(
        helper,
        &c1.container_ns,
        &c3.container_ns,
        to,
        TRANSFER_BYTES,
        None,
    )?;
    let r = t.finish(Duration::from_secs(180))?;
    println!(
        "    sent     {} bytes, sha256 {}",
        r.bytes_sent, r.sha256_sent
    );
    println!(
        "    received {} bytes, sha256 {}",
        r.bytes_received, r.sha256_received
    );
    if !r.intact() {
        return Err(LabError::Check(
            "transfer corrupted or truncated".to_owned(),
        ));
    }
    println!("    checksums match");

    step(5, "`vxsec status` on node1");
    indent(&cluster.ctl(1, &["status"])?);

    step(
        6,
        "forced rotation under traffic (sequenced UDP container2 → container1)",
    );
    let before = cluster.peer_status(1, 2)?;
    let c2 = topo.node(2)?;
    let to = SocketAddr::from((c1.container_ip, 5002));
    let stream = traffic::start_udp(helper, &c2.container_ns, &c1.container_ns, to, 1000, 256)?;
    for (node, label) in [(1u8, "node1"), (2, "node2"), (1, "node1")] {
        thread::sleep(Duration::from_millis(1000));
        cmd::check_cancelled()?;
        cluster.ctl(node, &["rekey"])?;
        println!("    vxsec rekey on {label}");
    }
    thread::sleep(Duration::from_millis(1000));
    let rep = stream.stop()?;
    let after = cluster.peer_status(1, 2)?;
    let field =
        |v: &serde_json::Value, k: &str| v.get(k).map(ToString::to_string).unwrap_or_default();
    println!(
        "    node1 ↔ node2 SPI (local) {} → {}, rekeys {} → {}",
        field(&before, "current_spi_local"),
        field(&after, "current_spi_local"),
        field(&before, "rekeys"),
        field(&after, "rekeys")
    );
    println!(
        "    packets sent {}, received {}, lost {}, duplicated {}, reordered {}",
        rep.sent, rep.received, rep.lost, rep.duplicated, rep.reordered
    );
    if rep.lost != 0 || rep.duplicated != 0 {
        return Err(LabError::Check(format!(
            "rotation was not loss-free: {} lost, {} duplicated",
            rep.lost, rep.duplicated
        )));
    }
    println!("    rotation was loss-free");
    Ok(())
}

fn print_keep_hints(topo: &Topology, cluster: &Cluster) {
    let n1 = cluster.agents.first();
    println!("\nThe lab stays up (--keep). Poke around:");
    if let (Some(a), Ok(c2)) = (n1, topo.node(2)) {
        println!(
            "    ip netns exec {} ping {}",
            a.node.container_ns, c2.container_ip
        );
        println!(
            "    {} status --socket {}",
            cluster.vxsec.display(),
            a.socket.display()
        );
        println!("    ip netns exec {} tcpdump -ni eth0 udp", a.node.ns);
        println!("    ip -n {} -d link show vxlan{LAB_VNI}", a.node.ns);
    }
    println!(
        "    configs, keys and agent logs: {}",
        cluster.dir.display()
    );
    println!("Tear down:");
    println!(
        "    for ns in $(ip netns list | awk '/^{}-/ {{print $1}}'); do ip netns pids $ns | xargs -r kill; ip netns del $ns; done; rm -rf {}",
        topo.id,
        cluster.dir.display()
    );
}
