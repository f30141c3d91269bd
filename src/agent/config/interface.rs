//! `[interface]`: this node's name, address, port, key file, suite, MTUs,
//! mode and worker settings, and the tunnel prefix type. Cross-field checks
//! live in `validate`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer};
use toml::Spanned;
use vxsec_crypto::suite::Suite;

use super::DEFAULT_LISTEN_PORT;

/// `[interface]`: this node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    #[serde(default = "default_interface_name")]
    pub name: Spanned<String>,
    /// Tunnel address and prefix, e.g. `10.200.0.1/16`.
    pub address: Spanned<TunnelCidr>,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    pub private_key_file: Spanned<PathBuf>,
    /// Defaults to the fastest suite on this CPU.
    #[serde(default, deserialize_with = "de_suite")]
    pub suite: Option<Suite>,
    #[serde(default = "default_network_id")]
    pub network_id: String,
    /// Underlay MTU; default: the MTU of the interface that routes to the
    /// first peer, or 1500.
    pub underlay_mtu: Option<Spanned<u16>>,
    /// Tunnel MTU override (normally computed from the underlay MTU).
    pub mtu: Option<Spanned<u16>>,
    pub control_socket: Option<PathBuf>,
    pub metrics_address: Option<SocketAddr>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// `route` (the overlay's VTEPs are tunnel addresses) or `transparent`
    /// (they are underlay addresses; the agent steers VXLAN to its peers'
    /// endpoints into the TUN). DESIGN §1.
    #[serde(default)]
    pub mode: Mode,
    /// Data-plane worker threads, each with its own TUN queue and UDP
    /// socket; default: one per CPU, at most [`MAX_DEFAULT_WORKERS`].
    pub workers: Option<Spanned<u16>>,
    /// How long (µs) an idle worker keeps polling before it sleeps: lower
    /// latency for more CPU. Default [`DEFAULT_BUSY_POLL_US`]; 0 = sleep at once.
    pub busy_poll_us: Option<Spanned<u32>>,
}

/// Default cap on worker threads when `workers` is not set.
pub const MAX_DEFAULT_WORKERS: usize = 4;
/// Most workers `workers` may ask for.
pub const MAX_WORKERS: u16 = 64;
/// Default busy-poll window of an idle worker, µs.
pub const DEFAULT_BUSY_POLL_US: u32 = 50;
/// Longest busy-poll window `busy_poll_us` accepts, µs.
pub const MAX_BUSY_POLL_US: u32 = 1_000_000;

impl InterfaceConfig {
    /// Worker threads to run (configured, else one per CPU up to the cap).
    pub fn worker_count(&self) -> usize {
        match &self.workers {
            Some(w) => usize::from(*w.get_ref()),
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_DEFAULT_WORKERS),
        }
    }

    /// The busy-poll window.
    pub fn busy_poll(&self) -> std::time::Duration {
        let us = self
            .busy_poll_us
            .as_ref()
            .map_or(DEFAULT_BUSY_POLL_US, |b| *b.get_ref());
        std::time::Duration::from_micros(u64::from(us))
    }
}

/// `interface.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The overlay daemon uses the tunnel addresses as VTEPs.
    #[default]
    Route,
    /// The overlay daemon uses the underlay addresses as VTEPs, unchanged.
    Transparent,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// An address with its prefix length, e.g. `10.200.0.1/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl TunnelCidr {
    /// The prefix itself: the address with its host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for TunnelCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for TunnelCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not address/prefix, e.g. 10.200.0.1/16"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("`{p}` is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix == 0 || prefix > max {
            return Err(format!("prefix length must be 1..={max}, not {prefix}"));
        }
        Ok(Self { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for TunnelCidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

fn de_suite<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Suite>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Suite>().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "unknown suite `{s}`; expected `aes-256-gcm` or `chacha20-poly1305`"
        ))
    })
}

fn default_interface_name() -> Spanned<String> {
    Spanned::new(0..0, "vxsec0".to_string())
}
fn default_listen_port() -> u16 {
    DEFAULT_LISTEN_PORT
}
fn default_network_id() -> String {
    "default".to_string()
}
