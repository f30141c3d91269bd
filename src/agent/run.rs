//! `vxsec up`: validates everything first (config, key files), installs the
//! fail-closed guards (`agent::guard`), then creates the TUN device, the
//! UDP sockets and the control socket, runs the data plane on worker
//! threads (each with its own TUN queue and UDP socket, both directions
//! plus timers) around one shared [`Pipeline`], and serves control,
//! metrics and signals on tokio.
//!
//! Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration (nothing
//! was started).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use vxsec_crypto::batch::Arena;
use vxsec_crypto::key::PublicKey;
use vxsec_crypto::suite::Suite;

use super::config::{Config, LogFormat, Mode, PeerEntry};
use super::control::{self, PeerSpec, Request, Response};
use super::status::{GlobalDrops, HandshakeView, PeerDrops, PeerView, Status};
use super::{clock, fleet, keys, metrics, netinfo, notify};
use crate::dataplane::mtu;
use crate::dataplane::pipeline::{Inbound, InnerAddr, Outbound, Pipeline, Route, Router};
use crate::dataplane::policy::{Policy, VniSet};
use crate::io::sys::{self, Waker};
use crate::io::tun::{Tun, TunConfig, TunQueue, TunStats};
use crate::io::udp::{BatchUdp, UdpConfig};
use crate::proto::{Endpoint, EndpointConfig, Event, PeerConfig, PeerId};

mod handshake;

/// Packets per batch, end to end.
const BATCH: usize = 64;
/// Longest a worker sleeps before looking at timers and the stop flag.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How often a busy worker looks at the protocol timers.
const TIMER_CHECK: Duration = Duration::from_millis(10);

/// Runs the agent until SIGTERM/SIGINT.
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
    peers: Vec<(PeerConfig, Route0)>,
    /// `[fleet]`: certificate checked, TLS and password files read.
    fleet: Option<fleet::FleetSetup>,
}

/// The data-plane part of a peer, before it has a `PeerId`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route0 {
    tunnel_addr: IpAddr,
    vnis: VniSet,
    endpoint: Option<SocketAddr>,
}

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
                peer_from_entry(p).map_err(|e| format!("{}: peer[{n}]: {e}", path.display()))
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

fn peer_from_entry(p: &PeerEntry) -> Result<(PeerConfig, Route0), String> {
    build_peer(
        *p.public_key.get_ref(),
        p.endpoint,
        p.label(),
        *p.tunnel_address.get_ref(),
        PeerExtras {
            allowed_vnis: p.allowed_vnis.as_ref().map(|v| v.get_ref().as_slice()),
            psk_file: p.psk_file.as_deref(),
            keepalive_seconds: p.persistent_keepalive_seconds,
        },
    )
}

fn peer_from_spec(s: &PeerSpec) -> Result<(PeerConfig, Route0), String> {
    let key: PublicKey = s
        .public_key
        .parse()
        .map_err(|_| "public_key: not a base64 X25519 public key".to_string())?;
    let endpoint = s
        .endpoint
        .as_deref()
        .map(super::config::resolve_endpoint)
        .transpose()
        .map_err(|e| format!("endpoint: {e}"))?;
    let tunnel_addr: IpAddr = s.tunnel_address.parse().map_err(|_| {
        format!(
            "tunnel_address: `{}` is not an IP address",
            s.tunnel_address
        )
    })?;
    let name = s.name.clone().unwrap_or_else(|| key.fingerprint());
    build_peer(
        key,
        endpoint,
        name,
        tunnel_addr,
        PeerExtras {
            allowed_vnis: s.allowed_vnis.as_deref(),
            psk_file: s.psk_file.as_deref(),
            keepalive_seconds: s.persistent_keepalive_seconds,
        },
    )
}

/// The optional parts of a peer, from the config file or the control socket.
struct PeerExtras<'a> {
    allowed_vnis: Option<&'a [u32]>,
    psk_file: Option<&'a Path>,
    keepalive_seconds: Option<u16>,
}

/// One peer's core config and route, however it was given.
fn build_peer(
    key: PublicKey,
    endpoint: Option<SocketAddr>,
    name: String,
    tunnel_addr: IpAddr,
    x: PeerExtras<'_>,
) -> Result<(PeerConfig, Route0), String> {
    let mut pc = PeerConfig::new(key, endpoint);
    pc.name = Some(name);
    pc.persistent_keepalive = x
        .keepalive_seconds
        .filter(|&s| s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    if let Some(f) = x.psk_file {
        pc.psk = Some(keys::load_psk(f).map_err(|e| e.to_string())?);
    }
    let vnis = VniSet::from_config(x.allowed_vnis).map_err(|e| format!("allowed_vnis: {e}"))?;
    Ok((
        pc,
        Route0 {
            tunnel_addr,
            vnis,
            endpoint,
        },
    ))
}

/// State shared by the workers, the control socket and the signal loop.
struct Shared {
    pipeline: Mutex<Pipeline>,
    stop: AtomicBool,
    /// For control-plane sends from outside the workers.
    udp: Mutex<BatchUdp>,
    started: Instant,
    info: StaticInfo,
    /// Peers as configured (for SIGHUP diffs and status).
    configured: Mutex<Vec<ConfiguredPeer>>,
    /// The configuration the agent started with: SIGHUP applies peer
    /// changes only and names the other settings that changed.
    running: Config,
    workers: usize,
    /// For the I/O counters in `status` and metrics.
    tun_stats: Arc<TunStats>,
    io_sockets: Mutex<Vec<BatchUdp>>,
    /// Fleet mode's state for `status` and metrics.
    fleet: Option<Arc<fleet::FleetState>>,
    /// Handshake messages from the workers to the handshake thread.
    hs: handshake::HandshakeQueue,
}

impl Shared {
    /// The TUN device's and the UDP sockets' counters, by name.
    fn io_counters(&self) -> BTreeMap<String, u64> {
        let t = &self.tun_stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut m: BTreeMap<String, u64> = [
            ("tun_rx_packets", get(&t.rx_packets)),
            ("tun_rx_super_packets", get(&t.rx_super_packets)),
            (
                "tun_rx_super_packets_direct",
                get(&t.rx_direct_super_packets),
            ),
            ("tun_rx_oversize", get(&t.rx_oversize)),
            ("tun_rx_bad_offload", get(&t.rx_bad_offload)),
            ("tun_tx_packets", get(&t.tx_packets)),
            ("tun_tx_errors", get(&t.tx_errors)),
            ("tun_tx_uso_super_packets", get(&t.tx_super_packets)),
            ("tun_tx_uso_fallbacks", get(&t.tx_coalesce_fallbacks)),
            ("tun_tx_tunnel_super_packets", get(&t.tx_tnl_super_packets)),
            ("tun_tx_tunnel_coalesced", get(&t.tx_tnl_coalesced)),
            ("tun_tx_tunnel_fallbacks", get(&t.tx_tnl_fallbacks)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let sockets = self.io_sockets.lock().unwrap_or_else(|e| e.into_inner());
        for u in sockets.iter() {
            let s = u.stats();
            for (k, v) in [
                ("udp_tx_datagrams", get(&s.tx_datagrams)),
                ("udp_tx_gso_sends", get(&s.tx_gso_sends)),
                ("udp_tx_gso_fallbacks", get(&s.gso_fallbacks)),
                ("udp_tx_dropped_full", get(&s.tx_dropped_full)),
                ("udp_tx_dropped_nowait", get(&s.tx_dropped_nowait)),
                ("udp_tx_errors", get(&s.tx_errors)),
                ("udp_rx_datagrams", get(&s.rx_datagrams)),
                ("udp_rx_gro_splits", get(&s.rx_gro_splits)),
                ("udp_rx_gro_direct", get(&s.rx_gro_direct)),
                ("udp_rx_oversize", get(&s.rx_oversize)),
                ("udp_rx_empty", get(&s.rx_empty)),
            ] {
                *m.entry(k.to_string()).or_default() += v;
            }
        }
        m
    }
}

#[derive(Clone)]
struct ConfiguredPeer {
    key: PublicKey,
    /// What, besides the route, would need a new SA if it changed.
    identity: String,
}

struct StaticInfo {
    interface: String,
    public_key: PublicKey,
    listen_port: u16,
    tunnel_address: String,
    suite: Suite,
    tunnel_mtu: u32,
    offloads: Vec<String>,
    /// `interface.mode`, as status shows it.
    mode: &'static str,
    /// Whether the overlay's VTEPs are IPv6 (the tunnel address's family
    /// in route mode, the underlay's in transparent mode): the VXLAN MTU.
    vtep_v6: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pipeline> {
        self.pipeline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends whatever the core has queued (handshakes, keepalives, data
    /// that waited for a handshake).
    fn flush(&self, arena: &mut Arena, out: &mut Outbound, udp: &mut BatchUdp) {
        loop {
            let now = clock::now();
            {
                let mut p = self.lock();
                p.drain_transmits(now, arena, out);
                while let Some(ev) = p.endpoint.poll_event() {
                    log_event(&p, &ev);
                }
            }
            if out.send_slots.is_empty() {
                return;
            }
            if let Err(e) = udp.send_batch(arena, &out.send_slots, &out.send_dests) {
                debug!("control send failed: {e}");
            }
            if out.send_slots.len() < arena.slot_count() {
                return;
            }
        }
    }
}

fn log_event(p: &Pipeline, ev: &Event) {
    let name = |id| {
        p.endpoint
            .peer_status(id)
            .and_then(|s| s.name)
            .unwrap_or_else(|| "?".into())
    };
    match ev {
        Event::HandshakeComplete {
            peer,
            role,
            local_spi,
            remote_spi,
        }
        | Event::Rekeyed {
            peer,
            role,
            local_spi,
            remote_spi,
        } => info!(
            peer = %name(*peer),
            ?role,
            local_spi = format_args!("{local_spi:#010x}"),
            remote_spi = format_args!("{remote_spi:#010x}"),
            "{}",
            if matches!(ev, Event::Rekeyed { .. }) { "keys rotated" } else { "tunnel established" }
        ),
        Event::SuiteMismatch { peer, ours, theirs } => warn!(
            peer = %name(*peer), ours = %ours,
            theirs = %theirs.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
            "suite mismatch: configure the same `suite` on both nodes"
        ),
        Event::PeerUnreachable { peer } => {
            warn!(peer = %name(*peer), "peer unreachable: no handshake answer")
        }
        Event::Roamed { peer, from, to } => {
            info!(peer = %name(*peer), ?from, %to, "peer endpoint changed")
        }
        Event::LoadProtection { engaged: true } => warn!(
            "handshake load protection engaged: cookies (mac2) required, \
             proven sources rate-limited"
        ),
        Event::LoadProtection { engaged: false } => {
            info!("handshake load protection disengaged")
        }
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
        let mut pipeline = Pipeline::new(endpoint, policy, cidr.addr, tunnel_mtu);
        pipeline.enforce_policy = c.policy.vxlan_only;
        let transparent = i.mode == Mode::Transparent;
        let vtep_v6 = if transparent {
            outer_v6
        } else {
            cidr.addr.is_ipv6()
        };
        if transparent {
            pipeline.router = Router::new(InnerAddr::Underlay);
        }
        let mut configured = Vec::new();
        for (pc, r) in p.peers {
            configured.push(add_peer(&mut pipeline, now, pc, r)?);
        }
        // The TUN exists: steer the peers' VXLAN into it (or, in route
        // mode, clear an earlier transparent run's steering).
        super::transparent::apply(c, pipeline.router.vteps(), true)?;
        let suite = pipeline.endpoint.suite();
        let interface = i.name.get_ref().clone();
        let listen_port = i.listen_port;
        let busy = i.busy_poll();
        let metrics_address = c.interface.metrics_address;
        let fleet_state = p
            .fleet
            .as_ref()
            .map(|f| Arc::new(fleet::FleetState::new(f)));
        let hs = handshake::HandshakeQueue::new();
        let hs_udp = udp.try_clone();
        let shared = Arc::new(Shared {
            pipeline: Mutex::new(pipeline),
            stop: AtomicBool::new(false),
            udp: Mutex::new(udp.try_clone()),
            started: now,
            info: StaticInfo {
                interface,
                public_key,
                listen_port,
                tunnel_address: cidr.to_string(),
                suite,
                tunnel_mtu,
                offloads,
                mode: if transparent { "transparent" } else { "route" },
                vtep_v6,
            },
            configured: Mutex::new(configured),
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
                worker_loop(&s, &w, k, q, &sides, stride, busy)
            })?);
        }
        let handshaker = {
            let s = Arc::clone(&shared);
            spawn_worker("vxsec-hs", move || {
                handshake::handshake_loop(&s, hs_udp, stride)
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
                Arc::new(move |req: Request| handle_request(&s, req))
            };
            if let (Some(setup), Some(state)) = (fleet, shared.fleet.clone()) {
                let apply: fleet::Apply = handler.clone();
                tokio::spawn(fleet::run(setup, state, apply));
            }
            tokio::spawn(control::serve(listener, handler));
            if let Some(addr) = metrics_address {
                let s = Arc::clone(&shared);
                let snap = Arc::new(move || snapshot(&s));
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
                        let r = tokio::task::spawn_blocking(move || reload(&s, &path)).await;
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

fn add_peer(
    p: &mut Pipeline,
    now: Instant,
    pc: PeerConfig,
    r: Route0,
) -> Result<ConfiguredPeer, String> {
    let route = Route {
        peer: PeerId(0),
        tunnel_addr: r.tunnel_addr,
        vnis: r.vnis.clone(),
        endpoint: r.endpoint,
    };
    let Some(vtep) = route.inner_addr(p.router.mode()) else {
        return Err("transparent mode needs the peer's endpoint (its underlay address)".into());
    };
    if let Some(other) = p.router.lookup(vtep) {
        let other_key = p.endpoint.peer_status(other.peer).map(|s| s.public_key);
        if other_key != Some(pc.public_key) {
            let what = match p.router.mode() {
                InnerAddr::Tunnel => "tunnel",
                InnerAddr::Underlay => "underlay",
            };
            return Err(format!("{what} address {vtep} belongs to another peer"));
        }
    }
    let key = pc.public_key;
    let identity = format!(
        "{:?}|{}|{:?}",
        pc.endpoint,
        pc.psk.is_some(),
        pc.persistent_keepalive
    );
    let id = p.endpoint.add_peer(now, pc).map_err(|e| e.to_string())?;
    p.router.insert(Route {
        peer: id,
        tunnel_addr: r.tunnel_addr,
        vnis: r.vnis.clone(),
        endpoint: r.endpoint,
    });
    Ok(ConfiguredPeer { key, identity })
}

fn remove_peer(p: &mut Pipeline, key: &PublicKey) -> bool {
    if let Some(id) = p.endpoint.peer_id(key) {
        p.router.remove(id);
    }
    p.endpoint.remove_peer(key)
}

/// One data-plane worker: its own TUN queue and UDP socket, both
/// directions (TUN → policy → seal → UDP and UDP → open → policy → TUN),
/// the protocol timers, and a busy-poll window before it sleeps. A reply
/// the kernel queues on the TUN while this worker writes a packet is read
/// on the next turn, without a wake-up; while busy-polling, the worker
/// also serves other workers' sockets that are free, so the answer to
/// what it just sent is picked up whichever socket the kernel chose.
fn worker_loop(
    s: &Shared,
    waker: &Waker,
    me: usize,
    mut tun: TunQueue,
    rx_sides: &[Mutex<RxSide>],
    stride: usize,
    busy: Duration,
) {
    let Some(own) = rx_sides.get(me) else {
        return;
    };
    let mut udp = own
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .udp
        .try_clone();
    let mut tx = TxBufs::new(stride);
    let mut ctl = Arena::new(BATCH, stride);
    let mut ctl_out = Outbound::with_capacity(BATCH);
    let mut last_work = clock::now();
    let mut next_timer_check = last_work;
    while !s.stop.load(Ordering::Relaxed) {
        let mut moved = tx.turn(s, &mut tun, &mut udp);
        // The lock spans receive → TUN write, so a socket's datagrams reach
        // the TUN in order whichever worker serves it.
        moved += own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .turn(s, &mut tun);
        let now = clock::now();
        let timers_due = now >= next_timer_check;
        if timers_due {
            let p = s.lock();
            if p.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                p.endpoint.handle_timeout(now);
            }
            next_timer_check = p
                .endpoint
                .poll_timeout()
                .map_or(now + IDLE_WAIT, |t| t.max(now))
                .min(now + TIMER_CHECK);
        }
        if moved > 0 || timers_due {
            s.flush(&mut ctl, &mut ctl_out, &mut udp);
        }
        if moved > 0 {
            last_work = now;
            continue;
        }
        if now.saturating_duration_since(last_work) < busy {
            for (k, side) in rx_sides.iter().enumerate() {
                if k != me {
                    if let Ok(mut side) = side.try_lock() {
                        if side.turn(s, &mut tun) > 0 {
                            last_work = now;
                        }
                    }
                }
            }
            // Polling, but any runnable thread on this CPU goes first.
            std::thread::yield_now();
            continue;
        }
        // Sleep until the next protocol timer (not the busy-time check).
        next_timer_check = s
            .lock()
            .endpoint
            .poll_timeout()
            .map_or(now + IDLE_WAIT, |t| t.max(now));
        let timeout = next_timer_check
            .saturating_duration_since(now)
            .min(IDLE_WAIT);
        match sys::wait_readable2(tun.as_fd(), udp.as_fd(), waker, Some(timeout)) {
            // Traffic woke us: a new busy-poll window starts.
            Ok((true, _) | (_, true)) => last_work = clock::now(),
            Ok(_) => {}
            Err(e) => {
                warn!("worker wait failed: {e}");
                std::thread::sleep(IDLE_WAIT);
            }
        }
    }
}

/// A worker's buffers for the TUN → UDP direction.
struct TxBufs {
    arena: Arena,
    out: Outbound,
}

impl TxBufs {
    fn new(stride: usize) -> Self {
        Self {
            arena: Arena::new(BATCH, stride),
            out: Outbound::with_capacity(BATCH),
        }
    }

    /// Reads one batch from the TUN (never blocks), seals it and sends it;
    /// returns the packets read.
    fn turn(&mut self, s: &Shared, tun: &mut TunQueue, udp: &mut BatchUdp) -> usize {
        let n = match tun.read_batch(&mut self.arena, BATCH) {
            Ok(n) => n,
            Err(e) => {
                debug!("TUN read failed: {e}");
                0
            }
        };
        if n == 0 {
            return 0;
        }
        // Only the plan (classify, route, police, reserve counters) holds
        // the pipeline's lock; the AEAD runs without it.
        s.lock()
            .plan_outbound(clock::now(), &mut self.arena, n, &mut self.out);
        self.out.seal(&mut self.arena);
        if !self.out.send_slots.is_empty() {
            if let Err(e) = udp.send_batch(&self.arena, &self.out.send_slots, &self.out.send_dests)
            {
                debug!("UDP send failed: {e}");
            }
        }
        if !self.out.to_tun.is_empty() {
            let _ = tun.write_batch(&self.arena, &self.out.to_tun);
        }
        n
    }
}

/// One UDP socket and the buffers for its UDP → TUN direction; owned by
/// one worker, served by any worker that is busy-polling.
struct RxSide {
    udp: BatchUdp,
    arena: Arena,
    from: Vec<SocketAddr>,
    inb: Inbound,
}

impl RxSide {
    fn new(udp: BatchUdp, stride: usize) -> Self {
        let mut inb = Inbound::with_capacity(BATCH);
        inb.divert_handshakes = true;
        Self {
            udp,
            arena: Arena::new(BATCH, stride),
            from: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)); BATCH],
            inb,
        }
    }

    /// Receives one batch (never blocks), opens it and writes what passes
    /// to `tun`; returns the datagrams received.
    fn turn(&mut self, s: &Shared, tun: &mut TunQueue) -> usize {
        let n = match self.udp.recv_batch(&mut self.arena, BATCH, &mut self.from) {
            Ok(n) => n,
            Err(e) => {
                debug!("UDP receive failed: {e}");
                0
            }
        };
        if n == 0 {
            return 0;
        }
        // The pipeline's lock is held to prepare (replay precheck) and to
        // commit (window re-check, peer bookkeeping, policy), not for the
        // AEAD. This side's own lock, held by the caller, still spans
        // receive → TUN write, so the socket's datagrams stay in order.
        self.inb.start(n);
        while !self.inb.done() {
            s.lock()
                .prepare_inbound(clock::now(), &mut self.arena, &self.from, &mut self.inb);
            self.inb.open(&mut self.arena);
            s.lock()
                .commit_inbound(clock::now(), &mut self.arena, &mut self.inb);
        }
        // Handshake messages go to the handshake thread; a full queue drops
        // (and counts) them. The worker never waits on handshake work.
        if !self.inb.handshakes.is_empty() {
            let (arena, from) = (&self.arena, &self.from);
            s.hs.push_batch(
                self.inb
                    .handshakes
                    .iter()
                    .filter_map(|&(i, peer)| Some((*from.get(i)?, arena.message(i)?, peer))),
            );
        }
        if !self.inb.to_tun.is_empty() {
            let _ = tun.write_batch(&self.arena, &self.inb.to_tun);
        }
        n
    }
}

fn handle_request(s: &Shared, req: Request) -> Response {
    let resp = match req {
        Request::Status => Response {
            ok: true,
            status: Some(snapshot(s)),
            ..Response::default()
        },
        Request::PeerList => Response {
            ok: true,
            peers: Some(snapshot(s).peers),
            ..Response::default()
        },
        Request::PeerAdd { peer } => match peer_from_spec(&peer) {
            Err(e) => Response::error(e),
            Ok((pc, r)) => {
                let key = pc.public_key;
                let mut p = s.lock();
                remove_peer(&mut p, &key);
                match add_peer(&mut p, clock::now(), pc, r) {
                    Ok(cp) => {
                        drop(p);
                        let mut conf = s.configured.lock().unwrap_or_else(|e| e.into_inner());
                        conf.retain(|c| c.key != key);
                        conf.push(cp);
                        drop(conf);
                        super::transparent::apply_logged(&s.running, s.lock().router.vteps());
                        info!(peer = %key.fingerprint(), "peer added over the control socket");
                        Response::ok_message(format!("peer {key} added"))
                    }
                    Err(e) => Response::error(e),
                }
            }
        },
        Request::PeerRemove { public_key } => match public_key.parse::<PublicKey>() {
            Err(_) => Response::error("public_key: not a base64 X25519 public key"),
            Ok(key) => {
                let removed = remove_peer(&mut s.lock(), &key);
                s.configured
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|c| c.key != key);
                if removed {
                    super::transparent::apply_logged(&s.running, s.lock().router.vteps());
                }
                if removed {
                    info!(peer = %key.fingerprint(), "peer removed over the control socket");
                    Response::ok_message(format!("peer {key} removed"))
                } else {
                    Response::error(format!("no peer {key}"))
                }
            }
        },
        Request::Rekey { public_key } => {
            let p = s.lock();
            let id = match public_key.as_deref().map(str::parse::<PublicKey>) {
                None => None,
                Some(Ok(k)) => match p.endpoint.peer_id(&k) {
                    Some(id) => Some(id),
                    None => return Response::error(format!("no peer {k}")),
                },
                Some(Err(_)) => return Response::error("not a base64 X25519 public key"),
            };
            p.endpoint.rekey(clock::now(), id);
            Response::ok_message(match public_key {
                Some(k) => format!("rekey started for {k}"),
                None => "rekey started for all peers".to_string(),
            })
        }
    };
    // Send what the request produced (handshake initiations) right away.
    let mut udp = s.udp.lock().unwrap_or_else(|e| e.into_inner());
    let stride = slot_stride(s.info.tunnel_mtu);
    let mut arena = Arena::new(8, stride);
    let mut out = Outbound::with_capacity(8);
    s.flush(&mut arena, &mut out, &mut udp);
    resp
}

/// SIGHUP: re-read the peers. Unchanged peers keep their SAs; changed
/// routes are updated in place; changed identities are re-created.
fn reload(s: &Shared, path: &Path) -> Result<String, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let mut fresh = Vec::new();
    for (n, e) in config.peers.iter().enumerate() {
        fresh.push(peer_from_entry(e).map_err(|m| format!("peer[{n}]: {m}"))?);
    }
    let mut conf = s.configured.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = s.lock();
    let now = clock::now();
    let (mut added, mut removed, mut kept) = (0, 0, 0);
    let mut updated: Vec<String> = Vec::new();
    for old in conf.iter() {
        if !fresh.iter().any(|(pc, _)| pc.public_key == old.key) {
            remove_peer(&mut p, &old.key);
            removed += 1;
        }
    }
    let mut next = Vec::new();
    for (pc, r) in fresh {
        let key = pc.public_key;
        let identity = format!(
            "{:?}|{}|{:?}",
            pc.endpoint,
            pc.psk.is_some(),
            pc.persistent_keepalive
        );
        match conf.iter().find(|c| c.key == key) {
            Some(old) if old.identity == identity => {
                let mut changes = Vec::new();
                if let Some(id) = p.endpoint.peer_id(&key) {
                    changes = p
                        .router
                        .route(id)
                        .map_or_else(Vec::new, |o| route_changes(o, &r));
                    p.router.insert(Route {
                        peer: id,
                        tunnel_addr: r.tunnel_addr,
                        vnis: r.vnis.clone(),
                        endpoint: r.endpoint,
                    });
                }
                next.push(ConfiguredPeer { key, identity });
                if changes.is_empty() {
                    kept += 1;
                } else {
                    let name = pc.name.clone().unwrap_or_else(|| key.fingerprint());
                    updated.push(format!("{name}: {}", changes.join(", ")));
                }
            }
            _ => {
                remove_peer(&mut p, &key);
                match add_peer(&mut p, now, pc, r) {
                    Ok(cp) => {
                        next.push(cp);
                        added += 1;
                    }
                    Err(e) => warn!(peer = %key.fingerprint(), "not added: {e}"),
                }
            }
        }
    }
    *conf = next;
    let vteps = p.router.vteps();
    drop(p);
    drop(conf);
    super::transparent::apply_logged(&s.running, vteps);
    let ignored = s.running.restart_only_changes(&config);
    let mut msg = format!(
        "{added} peers added or re-created, {} updated in place{}, {removed} removed, \
         {kept} unchanged (SAs kept)",
        updated.len(),
        if updated.is_empty() {
            String::new()
        } else {
            format!(" ({}; SAs kept)", updated.join("; "))
        }
    );
    if !ignored.is_empty() {
        warn!(
            "SIGHUP: changed settings take effect only at restart: {}",
            ignored.join(", ")
        );
        msg.push_str(&format!("; restart to apply: {}", ignored.join(", ")));
    }
    Ok(msg)
}

/// The settings of a peer's route that a reload changes in place (an
/// endpoint change re-creates the peer).
fn route_changes(old: &Route, new: &Route0) -> Vec<&'static str> {
    let mut c = Vec::new();
    if old.tunnel_addr != new.tunnel_addr {
        c.push("tunnel_address");
    }
    if old.vnis != new.vnis {
        c.push("allowed_vnis");
    }
    c
}

/// The status document, from the live state.
fn snapshot(s: &Shared) -> Status {
    let p = s.lock();
    let now = clock::now();
    let secs = |t: Instant| now.saturating_duration_since(t).as_secs_f64();
    let peers = p
        .endpoint
        .peers()
        .map(|ps| {
            let route = p.router.route(ps.id);
            let cur = ps.current.as_ref();
            PeerView {
                name: ps
                    .name
                    .clone()
                    .unwrap_or_else(|| ps.public_key.fingerprint()),
                public_key: ps.public_key.to_string(),
                endpoint: ps.endpoint.map(|e| e.to_string()),
                tunnel_address: route.map_or_else(String::new, |r| r.tunnel_addr.to_string()),
                allowed_vnis: route.and_then(|r| r.vnis.as_slice().map(<[u32]>::to_vec)),
                established: ps.established,
                current_spi_local: cur.map(|c| c.local_spi),
                current_spi_remote: cur.map(|c| c.remote_spi),
                previous_spi_local: ps.previous.as_ref().map(|c| c.local_spi),
                next_spi_local: ps.next.as_ref().map(|c| c.local_spi),
                sa_age_seconds: cur.map(|c| secs(c.created)),
                next_rekey_seconds: ps
                    .next_rekey
                    .map(|t| t.saturating_duration_since(now).as_secs_f64()),
                last_handshake_seconds: cur.map(|c| secs(c.created)),
                handshakes: ps.stats.handshakes,
                rekeys: ps.stats.rekeys,
                collisions: ps.stats.collisions,
                tx_packets: ps.stats.traffic.tx_packets,
                tx_bytes: ps.stats.traffic.tx_bytes,
                rx_packets: ps.stats.traffic.rx_packets,
                rx_bytes: ps.stats.traffic.rx_bytes,
                drops: PeerDrops {
                    replay: ps.stats.drops.replay,
                    auth: ps.stats.drops.auth,
                    unknown_spi: ps.stats.drops.unknown_spi,
                    expired: ps.stats.drops.expired,
                    rate_limited: ps.stats.drops.rate_limited,
                    policy: ps.stats.drops.policy + p.router.policy_drops(ps.id),
                },
            }
        })
        .collect();
    let es = p.endpoint.stats();
    let core = es.drops;
    let d = p.drops;
    let vxlan_mtu = mtu::vxlan_mtu(s.info.tunnel_mtu, s.info.vtep_v6).unwrap_or(0);
    let io = s.io_counters();
    let empty = io.get("udp_rx_empty").copied().unwrap_or(0);
    let handshake = HandshakeView {
        under_load: p.endpoint.under_load(now),
        load_engaged: es.load_engaged,
        queue_depth: s.hs.depth() as u64,
        queued: s.hs.queued.load(Ordering::Relaxed),
        queue_drops: s.hs.dropped.load(Ordering::Relaxed),
        initiations_processed: es.initiations_processed,
        initiations_sent: es.initiations_sent,
        completed: es.handshakes,
        cookie_replies_sent: es.cookie_replies_sent,
        cookie_replies_dropped: es.cookie_replies_dropped,
        cookies_received: es.cookies_received,
        replies_dropped_send_buffer_full: io.get("udp_tx_dropped_nowait").copied().unwrap_or(0),
    };
    Status {
        interface: s.info.interface.clone(),
        public_key: s.info.public_key.to_string(),
        listen_port: s.info.listen_port,
        tunnel_address: s.info.tunnel_address.clone(),
        suite: s.info.suite.to_string(),
        tunnel_mtu: u16::try_from(s.info.tunnel_mtu).unwrap_or(u16::MAX),
        vxlan_mtu: u16::try_from(vxlan_mtu).unwrap_or(u16::MAX),
        docker_mtu: u16::try_from(mtu::docker_mtu(vxlan_mtu)).unwrap_or(u16::MAX),
        mode: s.info.mode.to_owned(),
        uptime_seconds: now.saturating_duration_since(s.started).as_secs(),
        offloads: s.info.offloads.clone(),
        workers: u16::try_from(s.workers).unwrap_or(u16::MAX),
        io,
        peers,
        drops: GlobalDrops {
            empty,
            malformed: core.malformed,
            unknown_spi: core.unknown_spi,
            replay: core.replay,
            auth: core.auth,
            expired: core.expired,
            rate_limited: core.rate_limited,
            handshake: es.handshake_drops,
            not_vxlan: d.not_vxlan,
            fragment: d.fragment,
            vni_not_allowed: d.vni_not_allowed,
            no_route: d.no_route,
            too_big: d.too_big,
            malformed_inner: d.malformed_inner,
            spoofed_source: d.spoofed_source,
            no_session: d.no_session,
        },
        fleet: s.fleet.as_ref().map(|f| f.snapshot()),
        handshake,
    }
}
