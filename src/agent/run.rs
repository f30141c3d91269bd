//! `vxsec up`, the agent's lifecycle: validates everything first (config,
//! key files), installs the fail-closed guards (`agent::guard`), creates
//! the TUN device, the UDP sockets and the control socket, builds the
//! [`Node`] (the one owner of peer state), starts the data-plane workers
//! (`agent::worker`) and the control thread (`agent::handshake`), serves
//! control, metrics and signals on tokio, orchestrates SIGHUP reloads
//! (`agent::peers`) and stops everything in order.
//!
//! It moves no packets and touches no peer state itself.
//!
//! Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration (nothing
//! was started).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::{error, info, warn};

use crate::io::Arena;
use vxsec_crypto::suite::Suite;

use super::config::{Config, LogFormat, Mode};
use super::control::{self, Request};
use super::handshake;
use super::handshake_queue::HandshakeQueue;
use super::peers;
use super::shared::{Shared, StaticInfo};
use super::worker::{self, RxSide};
use super::{clock, fleet, keys, metrics, netinfo, notify, snapshot};
use crate::dataplane::policy::Policy;
use crate::dataplane::{mtu, InnerAddr, Node, PeerRoute};
use crate::io::sys::Waker;
use crate::io::tun::{Tun, TunConfig};
use crate::io::udp::{BatchUdp, UdpConfig};
use crate::proto::{Endpoint, EndpointConfig, PeerConfig};

pub fn up(config_path: &Path) -> ExitCode {
    let prepared = match Prepared::load(config_path) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("vxsec: {msg}");
            return ExitCode::from(2);
        }
    };
    init_tracing(prepared.config.interface.log_format);
    match Agent::start(prepared) {
        Ok(agent) => {
            // Guards, TUN and workers are in place: units ordered after
            // ours (the overlay daemon) may start now.
            match notify::ready("guards installed, tunnel up") {
                Ok(true) => info!("told the service manager we are ready"),
                Ok(false) => {}
                Err(e) => warn!("cannot tell the service manager we are ready: {e}"),
            }
            agent.run()
        }
        Err(msg) => {
            error!("{msg}");
            eprintln!("vxsec: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VXSEC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: not in files, pipes or the
    // journal, and not when NO_COLOR (https://no-color.org) is set.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Everything checked and loaded before anything is created.
struct Prepared {
    path: PathBuf,
    config: Config,
    endpoint: EndpointConfig,
    peers: Vec<(PeerConfig, PeerRoute)>,
    /// `[fleet]`: certificate checked, TLS and password files read.
    fleet: Option<fleet::FleetSetup>,
}

/// The data-plane part of a peer, before it has a `PeerId`.
impl Prepared {
    fn load(path: &Path) -> Result<Self, String> {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let i = &config.interface;
        let private_key =
            keys::load_private_key(i.private_key_file.get_ref()).map_err(|e| e.to_string())?;
        let mut endpoint = EndpointConfig::new(private_key, i.network_id.clone());
        endpoint.suite = i.suite.unwrap_or_else(Suite::preferred);
        endpoint.rotation = config.rotation;
        endpoint.timers = config.timers;
        endpoint
            .validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let fleet = config
            .fleet
            .as_ref()
            .map(|f| {
                fleet::prepare(
                    f,
                    i.name.get_ref(),
                    &i.network_id,
                    endpoint.private_key.public_key(),
                    *i.address.get_ref(),
                )
            })
            .transpose()
            .map_err(|e| format!("{}: fleet: {e}", path.display()))?;
        let peers = config
            .peers
            .iter()
            .enumerate()
            .map(|(n, p)| {
                peers::peer_from_entry(p).map_err(|e| format!("{}: peer[{n}]: {e}", path.display()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
            endpoint,
            peers,
            fleet,
        })
    }
}

/// A running agent.
struct Agent {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    handshaker: JoinHandle<()>,
    /// One per worker: a wake-up is consumed by the thread that sees it.
    wakers: Vec<Arc<Waker>>,
    control_path: PathBuf,
    listener: tokio::net::UnixListener,
    runtime: tokio::runtime::Runtime,
    config_path: PathBuf,
    metrics_address: Option<SocketAddr>,
    fleet: Option<fleet::FleetSetup>,
}

impl Agent {
    fn start(p: Prepared) -> Result<Self, String> {
        let c = &p.config;
        let i = &c.interface;
        let cidr = *i.address.get_ref();
        let outer_v6 = p
            .peers
            .iter()
            .find_map(|(pc, _)| pc.endpoint)
            .is_some_and(|e| e.is_ipv6());
        let underlay = i
            .underlay_mtu
            .as_ref()
            .map(|m| u32::from(*m.get_ref()))
            .or_else(netinfo::default_route_mtu)
            .unwrap_or(1500);
        let tunnel_mtu = match &i.mtu {
            Some(m) => u32::from(*m.get_ref()),
            None => mtu::tunnel_mtu(underlay, outer_v6)
                .ok_or_else(|| format!("underlay MTU {underlay} is too small for vxsec"))?,
        };

        let n_workers = i.worker_count();
        let mut tun_cfg = TunConfig::new(i.name.get_ref()).with_offloads();
        tun_cfg.mtu_bytes = tunnel_mtu;
        tun_cfg.queues = n_workers;
        match cidr.addr {
            IpAddr::V4(a) => tun_cfg.ipv4 = Some((a, cidr.prefix)),
            IpAddr::V6(a) => tun_cfg.ipv6 = Some((a, cidr.prefix)),
        }
        // Fail closed before the TUN can carry anything, and for good: the
        // guards outlive this process; only `vxsec down` removes them.
        super::guard::at_start(c)?;
        let tun = Tun::create(&tun_cfg).map_err(|e| {
            format!(
                "cannot create TUN device `{}`: {e} (vxsec needs CAP_NET_ADMIN)",
                i.name.get_ref()
            )
        })?;
        let off = tun.offloads();
        let tun_stats = Arc::clone(tun.stats());
        let queues = tun.into_queues();
        if queues.len() != n_workers {
            return Err(format!(
                "TUN device has {} queues, wanted {n_workers}",
                queues.len()
            ));
        }
        // One socket per worker on the same port (SO_REUSEPORT): the kernel
        // spreads peers over them by address, so one peer's datagrams stay
        // in order on one worker.
        let udp = bind_udp(i.listen_port, n_workers > 1)?;
        let port = udp
            .local_addr()
            .map_err(|e| format!("cannot read the UDP socket's address: {e}"))?
            .port();
        let mut sockets = vec![udp.try_clone()];
        for _ in 1..n_workers {
            sockets.push(bind_udp(port, true)?);
        }
        let io_sockets = sockets.iter().map(BatchUdp::try_clone).collect();
        let mut offloads = Vec::new();
        if off.vnet_hdr {
            offloads.push(format!("tun_vnet_hdr(flags={:#x})", off.flags));
        }
        if udp.gso_enabled() {
            offloads.push("udp_gso".to_string());
        }
        if udp.gro_enabled() {
            offloads.push("udp_gro".to_string());
        }

        let control_path = c.control_socket();
        // The listener must be created inside a runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        let listener = runtime
            .block_on(async { control::bind(&control_path) })
            .map_err(|e| e.to_string())?;

        let now = clock::now();
        let public_key = p.endpoint.private_key.public_key();
        let endpoint = Endpoint::new(p.endpoint, now, clock::unix_time());
        let policy = Policy {
            vxlan_port: c.policy.vxlan_port,
            allow_icmp: c.policy.allow_icmp,
        };
        let transparent = i.mode == Mode::Transparent;
        let vtep_v6 = if transparent {
            outer_v6
        } else {
            cidr.addr.is_ipv6()
        };
        let node = Node::new(
            endpoint,
            policy,
            c.policy.vxlan_only,
            cidr.addr,
            tunnel_mtu,
            if transparent {
                InnerAddr::Underlay
            } else {
                InnerAddr::Tunnel
            },
        );
        let configured = peers::add_initial(&node, now, p.peers)?;
        // The TUN exists: steer the peers' VXLAN into it (or, in route
        // mode, clear an earlier transparent run's steering).
        super::transparent::apply(c, node.vteps(), true)?;
        let suite = node.suite();
        let interface = i.name.get_ref().clone();
        let listen_port = i.listen_port;
        let busy = i.busy_poll();
        let metrics_address = c.interface.metrics_address;
        let fleet_state = p
            .fleet
            .as_ref()
            .map(|f| Arc::new(fleet::FleetState::new(f)));
        let hs = HandshakeQueue::new();
        let hs_udp = udp.try_clone();
        let shared = Arc::new(Shared {
            node,
            stop: AtomicBool::new(false),
            started: now,
            info: StaticInfo {
                interface,
                listen_port,
                tunnel_address: cidr.to_string(),
                suite,
                tunnel_mtu,
                offloads,
                mode: if transparent { "transparent" } else { "route" },
                vtep_v6,
            },
            peers: configured,
            running: p.config,
            workers: n_workers,
            tun_stats,
            io_sockets: Mutex::new(io_sockets),
            fleet: fleet_state,
            hs,
        });
        let new_waker = || {
            Waker::new()
                .map(Arc::new)
                .map_err(|e| format!("cannot create eventfd: {e}"))
        };
        let stride = slot_stride(tunnel_mtu);
        let rx_sides: Arc<[Mutex<RxSide>]> = sockets
            .into_iter()
            .map(|u| Mutex::new(RxSide::new(u, stride)))
            .collect();
        let mut wakers = Vec::with_capacity(n_workers);
        let mut workers = Vec::with_capacity(n_workers);
        for (k, q) in queues.into_iter().enumerate() {
            let w = new_waker()?;
            wakers.push(Arc::clone(&w));
            let (s, sides) = (Arc::clone(&shared), Arc::clone(&rx_sides));
            workers.push(spawn_worker(&format!("vxsec-w{k}"), move || {
                worker::worker_loop(&s, &w, k, q, &sides, stride, busy)
            })?);
        }
        let handshaker = {
            let s = Arc::clone(&shared);
            spawn_worker("vxsec-hs", move || {
                handshake::control_loop(&s, hs_udp, stride)
            })?
        };
        info!(
            interface = %shared.info.interface,
            public_key = %public_key,
            port = shared.info.listen_port,
            tunnel = %shared.info.tunnel_address,
            suite = %suite,
            tunnel_mtu,
            vxlan_mtu = mtu::vxlan_mtu(tunnel_mtu, vtep_v6).unwrap_or(0),
            docker_mtu = mtu::docker_mtu(mtu::vxlan_mtu(tunnel_mtu, vtep_v6).unwrap_or(0)),
            mode = shared.info.mode,
            workers = n_workers,
            busy_poll_us = busy.as_micros(),
            offloads = %shared.info.offloads.join(","),
            control = %control_path.display(),
            "vxsec up"
        );
        Ok(Self {
            shared,
            workers,
            handshaker,
            wakers,
            control_path,
            listener,
            runtime,
            config_path: p.path,
            metrics_address,
            fleet: p.fleet,
        })
    }

    fn run(self) -> ExitCode {
        let Agent {
            shared,
            workers,
            handshaker,
            wakers,
            control_path,
            listener,
            runtime,
            config_path,
            metrics_address,
            fleet,
        } = self;
        let result = runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let handler = {
                let s = Arc::clone(&shared);
                Arc::new(move |req: Request| control::handler::handle_request(&s, req))
            };
            if let (Some(setup), Some(state)) = (fleet, shared.fleet.clone()) {
                let apply: fleet::Apply = handler.clone();
                tokio::spawn(fleet::run(setup, state, apply));
            }
            tokio::spawn(control::serve(listener, handler));
            if let Some(addr) = metrics_address {
                let s = Arc::clone(&shared);
                let snap = Arc::new(move || snapshot::snapshot(&s));
                tokio::spawn(async move {
                    if let Err(e) = metrics::serve(addr, snap).await {
                        warn!(%addr, "metrics listener failed: {e}");
                    }
                });
            }
            let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
            let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
            let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
            loop {
                tokio::select! {
                    _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
                    _ = int.recv() => { info!("SIGINT: shutting down"); break; }
                    _ = hup.recv() => {
                        let s = Arc::clone(&shared);
                        let path = config_path.clone();
                        let r = tokio::task::spawn_blocking(move || {
                            peers::reload(&s, &path, clock::now())
                        })
                        .await;
                        match r {
                            Ok(Ok(msg)) => {
                                info!("SIGHUP: {msg}");
                                if let Some(f) = &shared.fleet {
                                    f.after_reload();
                                }
                            }
                            Ok(Err(msg)) => warn!("SIGHUP: config not reloaded: {msg}"),
                            Err(e) => warn!("SIGHUP: reload failed: {e}"),
                        }
                    }
                }
            }
            if let Some(f) = &shared.fleet {
                f.leave().await;
            }
            Ok::<(), String>(())
        });
        shared.stop.store(true, Ordering::SeqCst);
        for w in &wakers {
            w.wake();
        }
        shared.hs.wake();
        for w in workers {
            let _ = w.join();
        }
        let _ = handshaker.join();
        let _ = std::fs::remove_file(&control_path);
        drop(runtime);
        match result {
            Ok(()) => {
                info!("stopped; TUN device removed, fail-closed guards left in place (`vxsec down` removes them)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        }
    }
}

fn spawn_worker(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| format!("cannot start {name}: {e}"))
}

/// Slot size for a tunnel MTU: headroom, the packet, the tag, rounded to 64.
fn slot_stride(tunnel_mtu: u32) -> usize {
    let need = Arena::HEADROOM + tunnel_mtu as usize + vxsec_crypto::sa::TAG_LEN;
    need.div_ceil(64) * 64
}

fn bind_udp(port: u16, reuse_port: bool) -> Result<BatchUdp, String> {
    let config = |addr: SocketAddr| {
        let mut c = UdpConfig::new(addr);
        c.reuse_port = reuse_port;
        c
    };
    BatchUdp::bind(&config(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))))
        .or_else(|_| BatchUdp::bind(&config(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))))
        .map_err(|e| format!("cannot bind UDP port {port}: {e}"))
}
