//! The `vxsec` command line: thin wrappers over `vxsec::agent`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vxsec::agent::{self, control, keys};

mod fleet_cli;

/// Encrypts VXLAN overlay traffic between hosts.
#[derive(Parser)]
#[command(name = "vxsec", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a private key into a new file (mode 0600) and print its public key.
    Keygen {
        /// Where to write the key; refuses to overwrite.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print the public key of a private key file.
    Pubkey {
        #[arg(long, short)]
        key: PathBuf,
    },
    /// Run the agent in the foreground (SIGTERM stops it, SIGHUP reloads peers).
    Up {
        /// Configuration file (TOML).
        #[arg(long, short, default_value = "/etc/vxsec/vxsec.toml")]
        config: PathBuf,
    },
    /// Remove what `up` leaves on the host: the fail-closed guards (blackhole
    /// route, `table inet vxsec`) and the TUN device. Refuses while the agent runs.
    Down {
        /// Configuration file (TOML) the agent ran with.
        #[arg(long, short, default_value = "/etc/vxsec/vxsec.toml")]
        config: PathBuf,
    },
    /// Show the running agent's peers, SAs, counters and drops.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: SocketArg,
    },
    /// Add, remove or list peers of the running agent.
    Peer {
        #[command(subcommand)]
        cmd: PeerCmd,
    },
    /// Start a key rotation now, for one peer or all.
    Rekey {
        /// Public key of the peer; all peers when omitted.
        peer: Option<String>,
        #[command(flatten)]
        sock: SocketArg,
    },
    /// Print the tunnel MTU, the MTU to give VXLAN devices and the value for
    /// Docker's `com.docker.network.driver.mtu`.
    Mtu {
        /// Underlay MTU; default: the MTU of the default route's interface
        /// (1500 when the node has no default route).
        #[arg(long)]
        underlay: Option<u32>,
        /// The underlay is IPv6 (40-byte outer header); default: the family
        /// of the default route.
        #[arg(long)]
        ipv6: bool,
        /// This node's tunnel address (the VTEP): the report is then for
        /// its family, with commands that run as printed.
        #[arg(long)]
        tunnel_address: Option<std::net::IpAddr>,
        /// Advice for transparent mode (`interface.mode = "transparent"`):
        /// the overlay's VTEPs are underlay addresses.
        #[arg(long)]
        transparent: bool,
    },
    /// Fleet authority: make its key, sign node certificates, show one.
    Fleet {
        #[command(subcommand)]
        cmd: FleetCmd,
    },
}

#[derive(clap::Args)]
struct SocketArg {
    /// Control socket of the agent.
    #[arg(
        long,
        short,
        default_value = "/run/vxsec/vxsec0.sock",
        env = "VXSEC_SOCKET"
    )]
    socket: PathBuf,
}

#[derive(Subcommand)]
enum FleetCmd {
    /// Make an authority key pair (key file 0600; keep it off the nodes)
    /// and print the public key for the nodes' `[fleet] authority_public_key`.
    Init {
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Issue a node certificate.
    Sign(fleet_cli::SignArgs),
    /// Print a certificate; with --authority-public-key, verify it too.
    Show {
        certificate: PathBuf,
        #[arg(long)]
        authority_public_key: Option<String>,
    },
    /// Roll this node's static key while traffic flows, with no packet lost.
    #[command(long_about = fleet_cli::ROTATE_HELP)]
    Rotate(fleet_cli::RotateArgs),
    /// End a rotation's grace period now: the previous key is refused.
    Retire {
        #[command(flatten)]
        sock: SocketArg,
    },
}

#[derive(Subcommand)]
enum PeerCmd {
    /// Add (or replace) a peer.
    Add {
        #[arg(long)]
        public_key: String,
        /// host:port of the peer's vxsec socket.
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        tunnel_address: String,
        /// A VNI the peer may use; repeat for more; none = any.
        #[arg(long = "allowed-vni")]
        allowed_vnis: Vec<u32>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        psk_file: Option<PathBuf>,
        #[arg(long)]
        persistent_keepalive: Option<u16>,
        #[command(flatten)]
        sock: SocketArg,
    },
    /// Remove a peer (its SAs are dropped at once).
    Remove {
        public_key: String,
        #[command(flatten)]
        sock: SocketArg,
    },
    /// List peers.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: SocketArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vxsec: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Keygen { out } => {
            let key = keys::write_new_private_key(&out)?;
            println!("{}", key.public_key());
        }
        Cmd::Pubkey { key } => {
            let key = keys::load_private_key(&key)?;
            println!("{}", key.public_key());
        }
        Cmd::Up { config } => return Ok(agent::run::up(&config)),
        Cmd::Down { config } => {
            let removed = agent::guard::down(&config)?;
            for r in &removed.routes {
                println!("removed route {r} (proto {})", agent::guard::ROUTE_PROTOCOL);
            }
            if removed.table {
                println!("removed nftables table inet {}", agent::guard::TABLE);
            }
            for r in &removed.steer_rules {
                println!("removed ip {r} (transparent mode)");
            }
            if removed.link {
                println!("removed link {}", removed.link_name);
            }
            if removed.routes.is_empty()
                && !removed.table
                && !removed.link
                && removed.steer_rules.is_empty()
            {
                println!("nothing to remove: no vxsec guards or TUN device on this host");
            }
        }
        Cmd::Status { json, sock } => {
            let resp = control::request(&sock.socket, &control::Request::Status)?;
            let status = resp.status.context("agent sent no status")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
        }
        Cmd::Peer { cmd } => peer(cmd)?,
        Cmd::Rekey { peer, sock } => {
            let resp =
                control::request(&sock.socket, &control::Request::Rekey { public_key: peer })?;
            println!("{}", resp.message.unwrap_or_else(|| "rekey started".into()));
        }
        Cmd::Mtu {
            underlay,
            ipv6,
            tunnel_address,
            transparent,
        } => {
            let (underlay, ipv6) = match (underlay, agent::netinfo::default_route()) {
                (Some(m), _) => (m, ipv6),
                (None, Some(r)) => (r.mtu, ipv6 || r.ipv6),
                (None, None) => {
                    eprintln!(
                        "vxsec: this node has no default route to read the underlay MTU \
                         from; assuming 1500 bytes (pass --underlay N for another)"
                    );
                    (1500, ipv6)
                }
            };
            let mut r = agent::netinfo::MtuReport::new(underlay, ipv6, tunnel_address)?;
            r.transparent = transparent;
            print!("{r}");
        }
        Cmd::Fleet { cmd } => match cmd {
            FleetCmd::Init { out } => fleet_cli::init(&out)?,
            FleetCmd::Sign(args) => fleet_cli::sign(&args)?,
            FleetCmd::Show {
                certificate,
                authority_public_key,
            } => fleet_cli::show(&certificate, authority_public_key.as_deref())?,
            FleetCmd::Rotate(args) => fleet_cli::rotate(&args)?,
            FleetCmd::Retire { sock } => {
                let r = control::request(&sock.socket, &control::Request::RetirePreviousIdentity)?;
                println!("{}", r.message.unwrap_or_default());
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn peer(cmd: PeerCmd) -> anyhow::Result<()> {
    match cmd {
        PeerCmd::Add {
            public_key,
            endpoint,
            tunnel_address,
            allowed_vnis,
            name,
            psk_file,
            persistent_keepalive,
            sock,
        } => {
            let spec = control::PeerSpec {
                name,
                public_key,
                endpoint,
                tunnel_address,
                allowed_vnis: (!allowed_vnis.is_empty()).then_some(allowed_vnis),
                psk_file,
                persistent_keepalive_seconds: persistent_keepalive,
            };
            let resp = control::request(&sock.socket, &control::Request::PeerAdd { peer: spec })?;
            println!("{}", resp.message.unwrap_or_else(|| "peer added".into()));
        }
        PeerCmd::Remove { public_key, sock } => {
            let resp =
                control::request(&sock.socket, &control::Request::PeerRemove { public_key })?;
            println!("{}", resp.message.unwrap_or_else(|| "peer removed".into()));
        }
        PeerCmd::List { json, sock } => {
            let resp = control::request(&sock.socket, &control::Request::PeerList)?;
            let peers = resp.peers.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&peers)?);
            } else {
                for p in peers {
                    let vnis = p.allowed_vnis.map_or_else(
                        || "any".to_string(),
                        |v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
                    );
                    println!(
                        "{}\t{}\t{}\t{}\tvni={}\t{}",
                        p.name,
                        p.public_key,
                        p.tunnel_address,
                        p.endpoint.unwrap_or_else(|| "-".into()),
                        vnis,
                        if p.established {
                            "established"
                        } else {
                            "handshaking"
                        }
                    );
                }
            }
        }
    }
    Ok(())
}
