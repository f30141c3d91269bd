//! The `vxsec-lab-helper` binary's entry point: one mode per run, started
//! inside a network namespace (`ip netns exec`); it dispatches to the
//! traffic modes (`traffic`), the guard modes (`guards`) and the handshake
//! flood (`flood`).
//!
//! It implements no mode itself; the `start_*` functions that drive the
//! helper from outside live with each mode.

use crate::{flood, guards, traffic};

/// Entry point of `vxsec-lab-helper MODE ARGS…`; returns the exit code.
///
/// Modes: `probe`; `tcp-recv BIND`; `tcp-send ADDR BYTES [MARKER]`;
/// `udp-recv BIND`; `udp-send ADDR INTERVAL_US PAYLOAD_BYTES [MAX_COUNT]`
/// (stops at stdin EOF or MAX_COUNT). Each prints `READY` once listening or
/// started, then one `RESULT key=value…` line.
pub fn helper_main(args: &[String]) -> i32 {
    let mode = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or(&[]);
    let res = match mode {
        "probe" => {
            println!("vxsec-lab-helper ok");
            Ok(())
        }
        "tcp-recv" => traffic::tcp_recv(rest),
        "tcp-send" => traffic::tcp_send(rest),
        "udp-recv" => traffic::udp_recv(rest),
        "udp-send" => traffic::udp_send(rest),
        "udp-inject" => traffic::udp_inject(rest),
        "guard-install" | "guard-state" => guards::helper_mode(mode, rest),
        "hs-flood" => flood::hs_flood(rest),
        _ => Err(format!("unknown mode {mode:?}")),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vxsec-lab-helper {mode}: {e}");
            println!("RESULT error={}", e.replace(' ', "_"));
            1
        }
    }
}
