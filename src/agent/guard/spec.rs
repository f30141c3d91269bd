//! What the fail-closed guards are: the constants that name them in the
//! kernel, the [`GuardSpec`] built from the config, and the types that say
//! what is installed ([`GuardState`], [`Installed`], [`Removed`]).
//!
//! No kernel calls (`guard::kernel`) and no nftables rules (`guard::rules`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::agent::config::{Config, Mode, TransparentUnknown, TunnelCidr};
use crate::io::route::BlackholeRoute;

/// The agent's nftables table (family `inet`).
pub const TABLE: &str = "vxsec";
/// Route protocol number of the agent's routes (`ip route` shows `proto 120`).
pub const ROUTE_PROTOCOL: u8 = 120;
/// Metric of the blackhole route: above the TUN's own prefix route (0 for
/// IPv4, 256 for IPv6), so it only matters when the TUN is gone.
pub const BLACKHOLE_METRIC: u32 = 10_000;
/// Output chain (leak guard) and input chain (injection guard).
pub const OUTPUT_CHAIN: &str = "output";
pub const INPUT_CHAIN: &str = "input";

/// What the guards protect, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSpec {
    /// The TUN device (`interface.name`).
    pub tun: String,
    /// The tunnel prefix (`interface.address`, host bits cleared).
    pub prefix: TunnelCidr,
    /// `policy.vxlan_port`.
    pub vxlan_port: u16,
    /// Transparent mode's guards; `None` in route mode.
    pub transparent: Option<TransparentGuard>,
}

/// What transparent mode adds to the guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransparentGuard {
    /// The peers' underlay addresses (their endpoints' IPs), normalized.
    pub peers: Vec<IpAddr>,
    pub unknown: TransparentUnknown,
}

/// Whether a part of the guards was created now or found in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Created (or replaced: something else stood there).
    Installed,
    /// Already exactly as wanted (a previous run's): left alone.
    Adopted,
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub route: Outcome,
    pub table: Outcome,
    /// Our blackhole routes for other prefixes (an older configuration), removed.
    pub stale_routes: Vec<BlackholeRoute>,
}

/// What `remove` found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub routes: Vec<BlackholeRoute>,
    pub table: bool,
    /// Transparent mode's steering rules removed (as `ip rule` shows them).
    pub steer_rules: Vec<String>,
    /// Whether the TUN device `link_name` existed and was deleted.
    pub link: bool,
    pub link_name: String,
}

/// One rule of the agent's table, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleState {
    pub chain: String,
    pub comment: String,
    /// Packets the rule dropped (its counter).
    pub packets: u64,
}

/// The guards as they are in the kernel now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardState {
    /// Our blackhole routes, as `blackhole <prefix> metric <m>`.
    pub routes: Vec<String>,
    /// Whether `table inet vxsec` exists.
    pub table: bool,
    /// Its base chains, as `<name> hook <hook>`.
    pub chains: Vec<String>,
    pub rules: Vec<RuleState>,
}

impl GuardSpec {
    pub fn from_config(c: &Config) -> Self {
        let cidr = c.interface.address.get_ref();
        GuardSpec {
            tun: c.interface.name.get_ref().clone(),
            prefix: TunnelCidr {
                addr: cidr.network(),
                prefix: cidr.prefix,
            },
            vxlan_port: c.policy.vxlan_port,
            transparent: (c.interface.mode == Mode::Transparent).then(|| TransparentGuard {
                peers: TransparentGuard::normalized(
                    c.peers.iter().filter_map(|p| p.endpoint.map(|e| e.ip())),
                ),
                unknown: c.policy.transparent_unknown,
            }),
        }
    }

    /// The blackhole route for the tunnel prefix.
    pub fn blackhole(&self) -> BlackholeRoute {
        BlackholeRoute {
            dst: self.prefix.addr,
            len: self.prefix.prefix,
            metric: BLACKHOLE_METRIC,
        }
    }

    /// The output rule's comment; it names everything the rule matches, so
    /// a table whose comments match was installed for this same spec.
    pub fn output_comment(&self) -> String {
        format!(
            "vxsec: UDP/{} to {} leaves only through {}",
            self.vxlan_port, self.prefix, self.tun
        )
    }

    pub fn input_comment(&self) -> String {
        format!(
            "vxsec: UDP/{} accepted only from {}",
            self.vxlan_port, self.tun
        )
    }
}
