//! Fuzzes the TUN offload path: vnet header parse/emit, GSO segmentation
//! (reassembly and checksums), USO and UDP-tunnel coalescing (which must
//! segment back to its input) and ICMP too-big builders, with
//! the invariants in `fuzz/oracles/offload.rs` (`offload_input`).
//! Input: 10-byte virtio_net_hdr ‖ IP packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../oracles/offload.rs"]
#[allow(dead_code)] // each target uses a subset of the oracles
mod offload_oracle;

fuzz_target!(|data: &[u8]| {
    offload_oracle::offload_input(data);
});
