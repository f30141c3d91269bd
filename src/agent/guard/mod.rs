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
//!
//! Files: what the guards are (`spec`: the types, constants and the spec
//! from the config), their nftables rules (`rules`, `transparent`), the
//! kernel calls that install, inspect and remove them (`kernel`), `vxsec
//! up`/`down`'s use of them (`lifecycle`) and transparent mode's steering
//! (`steer`). This file only re-exports: no child imports it.

mod kernel;
mod lifecycle;
mod rules;
mod spec;
pub mod steer;
pub mod transparent;

pub use kernel::{inspect, install, remove, set_elements, set_peers};
pub use lifecycle::{at_start, down, DownError};
pub use spec::{
    GuardSpec, GuardState, Installed, Outcome, Removed, RuleState, TransparentGuard,
    BLACKHOLE_METRIC, INPUT_CHAIN, OUTPUT_CHAIN, ROUTE_PROTOCOL, TABLE,
};
