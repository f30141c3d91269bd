//! The batch data plane's building blocks below the I/O layer: policy
//! (VXLAN-only, per-peer VNIs), TUN offload segmentation, coalescing of
//! TUN writes (USO for UDP, UDP-tunnel GSO for VXLAN TCP), MTU arithmetic
//! and ICMP too-big replies. It knows nothing about tokio or sockets.

pub mod coalesce;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_check;
pub mod mtu;
pub mod offload;
pub mod pipeline;
pub mod policy;
pub mod tnl_coalesce;
