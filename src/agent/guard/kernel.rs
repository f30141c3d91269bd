//! The guards in the kernel: install them for a [`GuardSpec`] (adopting a
//! previous run's when it is right), keep transparent mode's peer sets,
//! read them back, and remove them for `vxsec down`. The kernel calls
//! themselves are `io::route` and `io::nft`.
//!
//! What to install is decided in `guard::spec`, `guard::rules` and
//! `guard::transparent`, not here.

use std::borrow::Cow;
use std::net::IpAddr;

use nftables::schema::NfListObject;
use nftables::stmt::{Counter, Statement};
use nftables::types::NfFamily;

use super::spec::{
    GuardSpec, GuardState, Installed, Outcome, Removed, RuleState, TransparentGuard,
    ROUTE_PROTOCOL, TABLE,
};
use super::{steer, transparent};
use crate::io::route;
use crate::io::{nft, IoError};

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
