//! Transparent mode's steering: the policy routing that sends VXLAN for the
//! peers' underlay addresses into the TUN instead of out of the underlay
//! interface. One `ip rule` per family (UDP to the VXLAN port sent by this
//! host, `iif lo`; forwarded packets are left alone → table
//! [`STEER_TABLE`]) and one host route per peer in that table through the
//! TUN, all marked with [`ROUTE_PROTOCOL`]; plus loose `rp_filter` on the
//! TUN, since decrypted packets arrive there with a source that routes via
//! the underlay. Only UDP to the VXLAN port is steered: vxsec's own UDP
//! (its listen port) to the same addresses takes the main table as before,
//! so nothing loops. VXLAN to an address with no route in the table falls
//! through to the main table (nodes without vxsec; the nft guards decide
//! whether it may leave). The routes vanish with the TUN; the rules stay
//! (harmless without routes) until `vxsec down` or a start in route mode.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::io::steer::{self, PortRule};
use crate::io::IoError;

use super::spec::ROUTE_PROTOCOL;

/// The routing table of the agent's steering routes (`ip route show table 120`).
pub const STEER_TABLE: u8 = 120;
/// Priority of the steering rules: after `local` (0), before `main` (32766).
pub const STEER_RULE_PRIORITY: u32 = 1_000;

/// What the steering should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steering {
    pub tun: String,
    pub vxlan_port: u16,
    /// Peers' underlay addresses; empty with `enabled = false`.
    pub peers: Vec<IpAddr>,
    /// Transparent mode on; off removes every rule and route of ours.
    pub enabled: bool,
}

/// What [`sync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    pub rules_added: usize,
    pub rules_removed: usize,
    pub routes_added: usize,
    pub routes_removed: usize,
}

impl Steering {
    fn rules(&self) -> Vec<PortRule> {
        if !self.enabled {
            return Vec::new();
        }
        [false, true]
            .into_iter()
            .map(|v6| PortRule {
                v6,
                local_only: true,
                dport: self.vxlan_port,
                table: STEER_TABLE,
                priority: STEER_RULE_PRIORITY,
            })
            .collect()
    }
}

fn host_len(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

/// Makes the kernel's rules and routes exactly `want`: routes for new peers
/// first, then the rules, then stale routes and rules go. Idempotent;
/// blocking (rtnetlink on a private runtime), so never call it on a tokio
/// worker.
pub fn sync(want: &Steering) -> Result<Synced, IoError> {
    let mut done = Synced::default();
    let peers: HashSet<IpAddr> = if want.enabled {
        want.peers.iter().copied().collect()
    } else {
        HashSet::new()
    };
    let have_routes: HashSet<(IpAddr, u8)> = steer::dev_routes(STEER_TABLE, ROUTE_PROTOCOL)?
        .into_iter()
        .collect();
    for &a in &peers {
        if !have_routes.contains(&(a, host_len(a))) {
            let src = source_towards(a);
            steer::replace_dev_route(a, host_len(a), STEER_TABLE, &want.tun, src, ROUTE_PROTOCOL)?;
            done.routes_added += 1;
        }
    }
    if want.enabled {
        loose_rp_filter(&want.tun)?;
    }
    let have_rules = steer::port_rules(ROUTE_PROTOCOL)?;
    let want_rules = want.rules();
    for r in &want_rules {
        if !have_rules.contains(r) {
            steer::add_port_rule(r, ROUTE_PROTOCOL)?;
            done.rules_added += 1;
        }
    }
    for (a, len) in have_routes {
        if !(len == host_len(a) && peers.contains(&a))
            && steer::delete_dev_route(a, len, STEER_TABLE, ROUTE_PROTOCOL)?
        {
            done.routes_removed += 1;
        }
    }
    for r in have_rules.iter().filter(|r| !want_rules.contains(r)) {
        if steer::delete_port_rule(r, ROUTE_PROTOCOL)? {
            done.rules_removed += 1;
        }
    }
    let routes_changed = done.routes_added + done.routes_removed > 0;
    if want.enabled && routes_changed && done.rules_added + done.rules_removed == 0 {
        flush_route_caches(want.vxlan_port)?;
    }
    Ok(done)
}

/// Makes sockets drop the routes they cached. A VXLAN device caches its
/// route to each remote; an IPv6 cached route stays valid until its own
/// table changes, so a peer's VXLAN that fell back to the main table (while
/// it was no peer, or while the TUN was gone) would keep using it after
/// its route in [`STEER_TABLE`] is back. Adding or removing a rule flushes
/// every cached route of the family (IPv4 also on any route change): so
/// add a copy of our rule one priority later (it matches what ours
/// matches and looks up the same table, so nothing changes meanwhile) and
/// remove it.
fn flush_route_caches(vxlan_port: u16) -> Result<(), IoError> {
    for v6 in [false, true] {
        let r = PortRule {
            v6,
            local_only: true,
            dport: vxlan_port,
            table: STEER_TABLE,
            priority: STEER_RULE_PRIORITY + 1,
        };
        steer::add_port_rule(&r, ROUTE_PROTOCOL)?;
        steer::delete_port_rule(&r, ROUTE_PROTOCOL)?;
    }
    Ok(())
}

/// The address this host sends from towards `peer` over the underlay (the
/// main table's choice: a UDP socket "connected" to vxsec's port, which is
/// not steered; nothing is sent). It becomes the steering route's `src`, so
/// a VXLAN device without a `local` address (Docker's overlay driver makes
/// them so) still sends from its underlay address, which the peer checks,
/// and not from the TUN's address. `None` when the kernel has no route.
fn source_towards(peer: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = if peer.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let s = std::net::UdpSocket::bind((any, 0)).ok()?;
    s.connect((peer, crate::agent::config::DEFAULT_LISTEN_PORT))
        .ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// The rules of ours in the kernel now, as `ip rule` would print them.
pub fn rules() -> Result<Vec<String>, IoError> {
    Ok(steer::port_rules(ROUTE_PROTOCOL)?
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// `net.ipv4.conf.<tun>.rp_filter = 2` (loose): the kernel uses the larger
/// of this and `conf.all.rp_filter`, so strict (1) in `all` is overridden
/// for the TUN only. Decrypted VXLAN arrives on the TUN from a peer's
/// underlay address, which routes via the underlay interface: strict
/// reverse-path filtering would drop every packet.
fn loose_rp_filter(tun: &str) -> Result<(), IoError> {
    let path = format!("/proc/sys/net/ipv4/conf/{tun}/rp_filter");
    std::fs::write(&path, "2").map_err(IoError::os("set rp_filter"))
}
