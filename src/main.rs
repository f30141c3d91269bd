//! The `vxsec` command line.
fn main() {}
