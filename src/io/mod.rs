//! The I/O layer: the batch buffer every layer shares ([`Arena`], with the
//! one data-message offset), TUN devices (multi-queue, and the vnet_hdr
//! offloads in `tun::offload`: checksum completion, GSO segmenting, USO
//! and UDP-tunnel coalescing, as wireguard-go keeps them in its tun
//! package), batched UDP sockets (recvmmsg/sendmmsg, GSO, and GRO
//! splitting planned by the pure `udp::gro_split`), a cross-thread
//! wake-up, routes and links over rtnetlink and nftables through `nft`'s
//! JSON mode, all blocking. It sits beside `proto` and uses only `wire`:
//! it contains no protocol logic and no cryptography, parses packets only
//! as far as the kernel's offloads need, and has no policy about what to
//! install. Only `route` touches tokio, on a private runtime, because
//! `rtnetlink` is async; its callers see blocking functions.
//!
//! This is the only module of vxsec allowed to use `unsafe`; every block
//! carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

pub mod arena;
pub mod nft;
pub mod route;
pub mod steer;
pub mod sys;
pub mod tun;
pub mod udp;

pub use arena::Arena;
pub use sys::{Readiness, Waker};
pub use tun::{Tun, TunConfig, TunOffloads, TunQueue, TunStats};
pub use udp::{BatchUdp, SendOutcome, UdpConfig, UdpStats};

/// Errors of the I/O layer: an operating-system call failed (with the
/// operation named) or the operator configured something impossible.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The interface name is empty, too long or contains a NUL byte.
    #[error("invalid interface name {0:?} (1..=15 bytes, no NUL)")]
    BadName(String),
    /// The kernel (over netlink) or `nft` refused a request.
    #[error("{op}: {message}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// The kernel's or the tool's answer.
        message: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}

impl IoError {
    pub(crate) fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> IoError {
        move |source| IoError::Os { op, source }
    }

    pub(crate) fn last_os(op: &'static str) -> IoError {
        IoError::Os {
            op,
            source: std::io::Error::last_os_error(),
        }
    }
}
