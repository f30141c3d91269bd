//! Runs the TUN offload fuzz oracles (`fuzz/oracles/offload.rs`, the
//! invariants the `tun_offload` and `tun_vnet_tunnel` targets assert) over
//! the corpus seeds and deterministic mutations of them, so `cargo test`
//! checks the same invariants without cargo-fuzz. Needs no root.

#[path = "../fuzz/oracles/offload.rs"]
#[allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]
mod offload_oracle;
