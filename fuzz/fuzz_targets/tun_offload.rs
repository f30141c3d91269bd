//! Fuzzes the TUN offload path: vnet header parse/emit, GSO segmentation
//! (reassembly and checksums), USO and UDP-tunnel coalescing (which must
//! segment back to its input) and ICMP too-big builders, with
//! the invariants in `vxsec::dataplane::fuzz_check::offload_input`.
//! Input: 10-byte virtio_net_hdr ‖ IP packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vxsec::dataplane::fuzz_check::offload_input(data);
});
