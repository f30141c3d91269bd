//! When the guards change: `vxsec up` installs (or adopts) them before the
//! TUN exists, or, with `policy.fail_closed = false`, leaves the host alone
//! and says if a previous run's guards are still there; `vxsec down`
//! removes them and the TUN, refusing while the agent runs. Nothing else
//! removes them: not a stop, a crash or a failed reload.

use std::path::Path;

use tracing::{info, warn};

use super::{inspect, install, remove, GuardSpec, Outcome, Removed, TABLE};
use crate::agent::config::{Config, ConfigFileError};
use crate::agent::control::{self, Request};

/// Called by `vxsec up` before the TUN device is created. An error means
/// the agent must not start: with fail_closed on, it never runs unguarded.
pub fn at_start(c: &Config) -> Result<(), String> {
    let spec = GuardSpec::from_config(c);
    if !c.policy.fail_closed {
        match inspect() {
            Ok(s) if s.table || !s.routes.is_empty() => warn!(
                "policy.fail_closed = false, but guards of a previous run are in place \
                 (table inet {TABLE}, {} blackhole route(s)); they stay until `vxsec down`",
                s.routes.len()
            ),
            Ok(_) => warn!(
                "policy.fail_closed = false: no guards; VXLAN for {} may leave in cleartext \
                 whenever vxsec is not running, unless your own firewall stops it",
                spec.prefix
            ),
            Err(e) => warn!("policy.fail_closed = false; cannot read the guards: {e}"),
        }
        return Ok(());
    }
    let done = install(&spec).map_err(|e| {
        format!(
            "cannot install the fail-closed guards for {}: {e} \
             (vxsec does not run unguarded; set policy.fail_closed = false if your own firewall keeps VXLAN in)",
            spec.prefix
        )
    })?;
    for r in &done.stale_routes {
        info!(route = %r, "removed the guard route of an older configuration");
    }
    let word = |o: Outcome| match o {
        Outcome::Installed => "installed",
        Outcome::Adopted => "adopted",
    };
    info!(
        route = %spec.blackhole(),
        route_state = word(done.route),
        table = %format!("inet {TABLE}"),
        table_state = word(done.table),
        "fail-closed guards in place: VXLAN (UDP/{}) to {} leaves only through {}, and is accepted only from it",
        spec.vxlan_port, spec.prefix, spec.tun
    );
    Ok(())
}

/// Why `vxsec down` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum DownError {
    #[error("{0}")]
    Config(#[from] ConfigFileError),
    #[error(
        "the agent is running (its control socket {} answers); stop it first \
         (e.g. `systemctl stop vxsec`), then run `vxsec down`", .0.display()
    )]
    Running(std::path::PathBuf),
    #[error("{0}")]
    Kernel(#[from] crate::io::IoError),
}

/// `vxsec down -c FILE`: removes the guards and the TUN device named in
/// FILE, unless the agent still answers on its control socket.
pub fn down(config_path: &Path) -> Result<Removed, DownError> {
    let c = Config::load(config_path)?;
    let socket = c.control_socket();
    if control::request(&socket, &Request::Status).is_ok() {
        return Err(DownError::Running(socket));
    }
    Ok(remove(c.interface.name.get_ref())?)
}
