//! vxsec: a node agent that encrypts VXLAN overlay traffic between hosts.
//!
//! Layers, top to bottom (see DESIGN §2): `agent` (tokio wiring, config,
//! control socket, metrics) → `io` (TUN, UDP; the only `unsafe`) →
//! `dataplane` (batch pipeline, policy, MTU) → `proto` (sans-I/O peer state
//! machine) → `wire` (zero-copy parsers) → `vxsec_crypto`.

pub mod agent;
pub mod dataplane;
pub mod fleet;
pub mod io;
pub mod proto;
pub mod wire;
