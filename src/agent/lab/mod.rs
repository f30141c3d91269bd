//! `vxsec lab`: a three-node encrypted VXLAN lab in network namespaces, and
//! the building blocks the netns tests share with it (topology, agents,
//! traffic). Needs root. It does not implement the agent: it runs the real
//! `vxsec` binary in each node namespace.

pub mod cmd;
pub mod topology;
pub mod traffic;

pub use cmd::{is_root, Cmd, LabError, Proc};
