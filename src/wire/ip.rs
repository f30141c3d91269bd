//! IP protocol numbers (IANA), shared by IPv4's protocol field and IPv6's
//! next-header field: the one definition of each number vxsec uses. Only
//! constants; the header views are in `ipv4` and `ipv6`.

/// IPv6 hop-by-hop options header.
pub const PROTO_HOP_BY_HOP: u8 = 0;
/// ICMP (IPv4).
pub const PROTO_ICMP: u8 = 1;
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;
/// IPv6 fragment header.
pub const PROTO_IPV6_FRAGMENT: u8 = 44;
/// ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
