//! The fail-closed guards: kernel state that `vxsec up` installs before the
//! TUN device carries anything and that outlives the agent (SIGTERM,
//! SIGKILL, panic, OOM kill, a failed reload), so that VXLAN for the tunnel
//! prefix never leaves in cleartext and cleartext VXLAN is never accepted,
//! whatever state the agent is in. Only `vxsec down` removes them.
//!
//! Two independent layers (defence in depth):
//! * a `blackhole` route for the tunnel prefix in the main table, metric
//!   [`BLACKHOLE_METRIC`], route protocol [`ROUTE_PROTOCOL`]: while `vxsec0`
//!   exists its own prefix route (metric 0 for IPv4, 256 for IPv6) wins;
//!   when it is gone the prefix routes nowhere instead of via the default
//!   route;
//! * `table inet vxsec`: an output rule dropping UDP to the VXLAN port for
//!   the tunnel prefix unless it leaves through the TUN (kernel VXLAN
//!   encapsulates through LOCAL_OUT, so this sees it), and an input rule
//!   dropping UDP to the VXLAN port that did not come out of the TUN.
//!
//! This module decides what to install and recognises what is already
//! there (a restart adopts it, never duplicates it); the kernel calls are
//! in `io::route` and `io::nft`.

mod lifecycle;
mod rules;
pub mod steer;
pub mod transparent;

use std::borrow::Cow;
use std::net::IpAddr;

use nftables::schema::NfListObject;
use nftables::stmt::{Counter, Statement};
use nftables::types::NfFamily;
use serde::{Deserialize, Serialize};

pub use lifecycle::{at_start, down, DownError};

use super::config::{Config, Mode, TransparentUnknown, TunnelCidr};
use crate::io::route::{self, BlackholeRoute};
use crate::io::{nft, IoError};

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

/// Installs the guards for `spec`, adopting what a previous run left when
/// it is already right and replacing it otherwise. Idempotent.
pub fn install(spec: &GuardSpec) -> Result<Installed, IoError> {
    let want = spec.blackhole();
    let existing = route::blackholes(ROUTE_PROTOCOL)?;
    let route_outcome = if existing.contains(&want) {
        Outcome::Adopted
    } else {
        route::replace_blackhole(&want, ROUTE_PROTOCOL)?;
        Outcome::Installed
    };
    // The new prefix is guarded before an old one is let go.
    let mut stale_routes = Vec::new();
    for r in existing.into_iter().filter(|r| *r != want) {
        if route::delete_blackhole(&r, ROUTE_PROTOCOL)? {
            stale_routes.push(r);
        }
    }
    let table_outcome = if spec.table_matches(&table_state()?) {
        Outcome::Adopted
    } else {
        nft::apply(&spec.ruleset())?;
        Outcome::Installed
    };
    if let Some(t) = &spec.transparent {
        // A restart keeps the peers a previous run had (e.g. added over the
        // control socket, not in the file): VXLAN to them stays dropped
        // until they are added again, rather than leaving in cleartext as
        // to a stranger. The next peer change makes the set exact.
        let mut peers = t.peers.clone();
        if table_outcome == Outcome::Adopted {
            peers.extend(set_elements()?);
        }
        set_peers(&TransparentGuard::normalized(peers))?;
    }
    Ok(Installed {
        route: route_outcome,
        table: table_outcome,
        stale_routes,
    })
}

/// The addresses in transparent mode's peer sets now (none without the table).
pub fn set_elements() -> Result<Vec<IpAddr>, IoError> {
    let Some(objects) = nft::list_table(NfFamily::INet, TABLE)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for o in objects {
        if let NfListObject::Set(set) = o {
            if set.name != transparent::PEERS4 && set.name != transparent::PEERS6 {
                continue;
            }
            for e in set.elem.iter().flat_map(|e| e.iter()) {
                if let nftables::expr::Expression::String(a) = e {
                    out.extend(a.parse::<IpAddr>().ok());
                }
            }
        }
    }
    Ok(out)
}

/// Makes transparent mode's peer sets exactly `peers` (one transaction).
pub fn set_peers(peers: &[IpAddr]) -> Result<(), IoError> {
    nft::apply(&transparent::peer_set_doc(peers))
}

/// Removes every guard the agent installs (all its blackhole routes, its
/// table) and the TUN device `tun` if it still exists. For `vxsec down`.
pub fn remove(tun: &str) -> Result<Removed, IoError> {
    let mut removed = Removed::default();
    for r in route::blackholes(ROUTE_PROTOCOL)? {
        if route::delete_blackhole(&r, ROUTE_PROTOCOL)? {
            removed.routes.push(r);
        }
    }
    removed.table = nft::delete_table(NfFamily::INet, TABLE)?;
    removed.steer_rules = steer::rules()?;
    steer::sync(&steer::Steering {
        tun: tun.to_owned(),
        vxlan_port: 0,
        peers: Vec::new(),
        enabled: false,
    })?;
    removed.link = route::delete_link(tun)?;
    removed.link_name = tun.to_owned();
    Ok(removed)
}

fn table_state() -> Result<GuardState, IoError> {
    let mut state = GuardState::default();
    let Some(objects) = nft::list_table(NfFamily::INet, TABLE)? else {
        return Ok(state);
    };
    state.table = true;
    for o in objects {
        match o {
            NfListObject::Chain(c) => {
                let hook = c
                    .hook
                    .map_or_else(|| "none".to_owned(), |h| format!("{h:?}").to_lowercase());
                let prio = c.prio.map_or_else(|| "none".to_owned(), |p| p.to_string());
                state
                    .chains
                    .push(format!("{} hook {hook} prio {prio}", c.name));
            }
            NfListObject::Rule(r) => {
                let packets = r
                    .expr
                    .iter()
                    .find_map(|s| match s {
                        Statement::Counter(Counter::Anonymous(Some(c))) => c.packets,
                        _ => None,
                    })
                    .unwrap_or(0);
                state.rules.push(RuleState {
                    chain: r.chain.into_owned(),
                    comment: r.comment.map(Cow::into_owned).unwrap_or_default(),
                    packets: packets as u64,
                });
            }
            _ => {}
        }
    }
    Ok(state)
}

/// The guards as the kernel has them now (routes over rtnetlink, the table
/// from `nft -j`).
pub fn inspect() -> Result<GuardState, IoError> {
    let mut state = table_state()?;
    state.routes = route::blackholes(ROUTE_PROTOCOL)?
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(state)
}
