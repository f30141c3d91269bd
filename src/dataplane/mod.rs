//! The batch data plane's building blocks above the I/O layer: policy
//! (VXLAN-only, per-peer VNIs), MTU arithmetic and ICMP too-big replies,
//! and the pipeline between TUN and UDP batches. It knows nothing about
//! tokio or sockets; TUN offloads (segmenting, coalescing) live in
//! `io::tun::offload`.

pub mod mtu;
pub mod pipeline;
pub mod policy;
