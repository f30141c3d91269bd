//! Zero-copy parsers and emitters for everything vxsec puts on or takes off
//! the wire: the four outer messages (DESIGN §3) and the inner packets the
//! data plane classifies (IPv4, IPv6, UDP, VXLAN, Ethernet), plus checksums.
//!
//! Nothing here allocates, copies a packet, reads a clock or panics on any
//! input: parsers check lengths once (`new_checked` / `parse_*`) and every
//! accessor afterwards is infallible. Policy decisions live in
//! `dataplane::policy`, not here.

mod error;
pub mod outer;

pub use error::WireError;
