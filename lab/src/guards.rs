//! The lab's view of the agent's fail-closed guards (`agent::guard`): the
//! helper modes that install them repeatedly or report them from inside a
//! namespace (routes over rtnetlink, the table from `nft -j`), and the
//! readable listing `vxsec-lab` prints. The lab installs no firewall rules
//! of its own: the agents do.

use std::path::Path;

use crate::cmd::{Cmd, LabError};
use vxsec::agent::config::Config;
use vxsec::agent::guard::{self, GuardSpec, GuardState, Outcome};
use vxsec::io::{nft, route};

/// `vxsec-lab-helper guard-install CONFIG N [force]`: installs the guards
/// for CONFIG N times (with `force`, first N times through the write path:
/// route replace and table replace), then prints `installed=… adopted=…`
/// and the state as JSON. `vxsec-lab-helper guard-state`: prints the state as JSON.
pub fn helper_mode(mode: &str, args: &[String]) -> Result<(), String> {
    if mode == "guard-install" {
        let path = args.first().ok_or("usage: guard-install CONFIG N")?;
        let n: u32 = args
            .get(1)
            .ok_or("usage: guard-install CONFIG N")?
            .parse()
            .map_err(|e| format!("N: {e}"))?;
        let c = Config::load(Path::new(path)).map_err(|e| e.to_string())?;
        let spec = GuardSpec::from_config(&c);
        if args.get(2).map(String::as_str) == Some("force") {
            // The write path every time, as if nothing were there.
            for _ in 0..n {
                route::replace_blackhole(&spec.blackhole(), guard::ROUTE_PROTOCOL)
                    .map_err(|e| e.to_string())?;
                nft::apply(&spec.ruleset()).map_err(|e| e.to_string())?;
            }
            println!("forced={n}");
        }
        let (mut installed, mut adopted) = (0u32, 0u32);
        for _ in 0..n {
            let r = guard::install(&spec).map_err(|e| e.to_string())?;
            for o in [r.route, r.table] {
                match o {
                    Outcome::Installed => installed += 1,
                    Outcome::Adopted => adopted += 1,
                }
            }
        }
        println!("installed={installed} adopted={adopted}");
    }
    let state = guard::inspect().map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string(&state).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// The guards in namespace `ns`, as the kernel reports them.
pub fn state(helper: &Path, ns: &str) -> Result<GuardState, LabError> {
    let out = Cmd::in_netns(ns, helper.to_string_lossy())
        .arg("guard-state")
        .run()?;
    let last = out.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .map_err(|e| LabError::Check(format!("guard-state is not JSON ({e}): {out}")))
}

/// What an operator would type to see the guards in `ns`, and its output.
pub fn describe(ns: &str) -> Result<String, LabError> {
    let routes = Cmd::new("ip")
        .args(["-n", ns, "route", "show", "table", "all", "proto", "120"])
        .run()?;
    let routes6 = Cmd::new("ip")
        .args([
            "-n", ns, "-6", "route", "show", "table", "all", "proto", "120",
        ])
        .run()?;
    let table = Cmd::in_netns(ns, "nft")
        .args(["list", "table", "inet", guard::TABLE])
        .run()?;
    Ok(format!(
        "$ ip route show table all proto 120\n{routes}{routes6}$ nft list table inet {}\n{table}",
        guard::TABLE
    ))
}
