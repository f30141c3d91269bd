//! The batch data plane's building blocks below the I/O layer: checksums,
//! TUN offload segmentation, MTU arithmetic and ICMP too-big replies, and
//! (H-wire) policy. It knows nothing about tokio or sockets.

pub mod inet_csum;
pub mod mtu;
pub mod offload;
