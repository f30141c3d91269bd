//! Fleet mode: node certificates signed by a fleet authority, their files,
//! and the verified view of the fleet that turns store records into peer
//! changes. The store client itself (etcd) lives in `agent::fleet`; nothing
//! here does network I/O, so other peer sources (the Kubernetes API) can
//! feed the same [`view::FleetView`].

pub mod authority;
pub mod cert;
pub mod files;
pub mod view;
