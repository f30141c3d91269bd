//! Shared harness of the netns integration tests: root check, binary paths,
//! and the lab building blocks re-exported. Topologies and agents clean up
//! through their `Drop` guards (also on panic).
#![allow(dead_code)]

use std::path::PathBuf;

pub use vxsec::agent::lab::topology::{Topology, VxlanOver, LAB_VNI};
pub use vxsec::agent::lab::traffic;
pub use vxsec::agent::lab::{is_root, Cmd};

/// True when the test may run; otherwise prints why it skips.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: netns tests must run as root in CI");
    }
    eprintln!(
        "SKIP {test}: needs root (network namespaces); run `sudo -E cargo test --test 'netns_*'`"
    );
    false
}

pub fn vxsec_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vxsec"))
}

pub fn helper_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vxsec-lab-helper"))
}
