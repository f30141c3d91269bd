//! The node agent: configuration, key files, the control socket, metrics,
//! and the wiring of TUN, UDP and the protocol core on threads and tokio.
//! No cryptography and no packet parsing live here.

pub mod clock;
pub mod config;
pub mod control;
pub mod fleet;
pub mod guard;
mod handshake;
pub mod keys;
pub mod metrics;
pub mod netinfo;
pub mod notify;
mod peers;
pub mod run;
mod snapshot;
pub mod status;
pub mod transparent;
mod worker;
