//! Zero-copy parsers and emitters for everything vxsec puts on or takes off
//! the wire: the four outer messages (DESIGN §3) and the inner packets the
//! data plane classifies (IPv4, IPv6, UDP, VXLAN, Ethernet), the TCP header
//! fields the TUN offloads rewrite, plus checksums.
//!
//! Nothing here allocates, copies a packet, reads a clock or panics on any
//! input: parsers check lengths once (`new_checked` / `parse_*`) and every
//! accessor afterwards is infallible. Policy decisions live in
//! `dataplane::policy`, not here.

pub mod checksum;
mod classify;
mod error;
pub mod ethernet;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod outer;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use classify::{
    emit_vxlan_in_ipv4, emit_vxlan_in_ipv6, parse_vxlan_in_ip, Classified, Fragment, IpVersion,
    VxlanFlow,
};
pub use error::WireError;
pub use ethernet::{EthernetFrame, EthernetRepr};
pub use ipv4::{Ipv4Header, Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Header, Ipv6Packet, Ipv6Repr};
pub use outer::{parse_message, Message};
pub use tcp::TcpSegment;
pub use udp::{UdpHeader, UdpPacket, UdpRepr};
pub use vxlan::VxlanPacket;
