//! The data plane: [`Node`] (the one owner of peer state: protocol core,
//! router, policy, drop counters), the two directions of a packet through
//! it ([`tx`]: TUN → seal → UDP; [`rx`]: UDP → open → TUN) and their
//! building blocks (policy, router, MTU arithmetic and ICMP too-big
//! replies). It knows nothing about tokio, threads or sockets: the agent's
//! workers do the I/O around it, and TUN offloads (segmenting, coalescing)
//! live in `io::tun::offload`.

pub mod mtu;
pub mod node;
pub mod policy;
pub mod router;
pub mod rx;
#[cfg(test)]
mod testing;
pub mod tx;

pub use node::{Node, NodeStatus, PeerSnapshot};
pub use router::{InnerAddr, PeerRoute, Route, Router};
pub use rx::RxBatch;
pub use tx::TxBatch;
