//! Transparent mode's glue in the agent: after the TUN exists and whenever
//! the peers change (control socket, SIGHUP), make the steering (policy
//! routing into the TUN) and the guards' peer sets match the peers the
//! data path knows. The kernel calls block on their own runtime, so they
//! run on a short-lived thread of their own: callers may be on a tokio
//! worker. In route mode it only clears a previous transparent run's
//! steering. What is installed is decided in `agent::guard`.

use std::net::IpAddr;

use tracing::{info, warn};

use super::config::{Config, Mode};
use super::guard::{self, steer};

/// VXLAN's own overhead over an IPv4 / IPv6 outer header (the VXLAN
/// device's MTU is the TUN's MTU minus this in transparent mode).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// Brings steering and peer sets in line with `peers` (the peers'
/// underlay addresses). Errors name what failed; the caller logs them.
/// At start (`at_start`) the guard's sets are left as `guard::install`
/// made them (the file's peers plus a previous run's), only the steering
/// is synced.
pub fn apply(c: &Config, peers: Vec<IpAddr>, at_start: bool) -> Result<(), String> {
    let transparent = c.interface.mode == Mode::Transparent;
    let want = steer::Steering {
        tun: c.interface.name.get_ref().clone(),
        vxlan_port: c.policy.vxlan_port,
        peers: if transparent {
            peers.clone()
        } else {
            Vec::new()
        },
        enabled: transparent,
    };
    let fail_closed = c.policy.fail_closed;
    let r = std::thread::scope(|sc| {
        sc.spawn(|| {
            let done = steer::sync(&want).map_err(|e| format!("transparent steering: {e}"))?;
            if transparent && fail_closed && !at_start {
                guard::set_peers(&guard::TransparentGuard::normalized(peers.iter().copied()))
                    .map_err(|e| format!("guard peer set: {e}"))?;
            }
            Ok::<_, String>(done)
        })
        .join()
        .map_err(|_| "transparent steering: thread panicked".to_string())?
    })?;
    if transparent {
        info!(
            peers = want.peers.len(),
            table = steer::STEER_TABLE,
            routes_added = r.routes_added,
            routes_removed = r.routes_removed,
            rules_added = r.rules_added,
            "transparent mode: UDP/{} to peers' underlay addresses steered into {}",
            want.vxlan_port,
            want.tun
        );
    } else if r.rules_removed + r.routes_removed > 0 {
        info!(
            rules = r.rules_removed,
            routes = r.routes_removed,
            "route mode: removed transparent steering of an earlier run"
        );
    }
    Ok(())
}

/// [`apply`], logging instead of failing: for peer changes at run time,
/// where the agent keeps running (the guards still keep VXLAN to known
/// peers from leaving in cleartext).
pub fn apply_logged(c: &Config, peers: Vec<IpAddr>) {
    if let Err(e) = apply(c, peers, false) {
        warn!("{e}");
    }
}
