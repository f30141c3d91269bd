//! Fuzzes the TUN offload path behind the 24-byte vnet header the kernel
//! uses for UDP-tunnel offloads (legacy fields, hash fields, outer UDP and
//! inner IP offsets): the header round-trips, then the same invariants as
//! `tun_offload` (`fuzz/oracles/offload.rs`, `offload_input_tunnel`).
//! Input: 24-byte virtio_net_hdr_v1_hash_tunnel ‖ IP packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../oracles/offload.rs"]
#[allow(dead_code)] // each target uses a subset of the oracles
mod offload_oracle;

fuzz_target!(|data: &[u8]| {
    offload_oracle::offload_input_tunnel(data);
});
