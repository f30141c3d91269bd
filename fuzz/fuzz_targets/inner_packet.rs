#![no_main]
//! Inner packet parsing: `parse_vxlan_in_ip` and every view over arbitrary
//! bytes. Accessors never panic after `new_checked`; checksum fill then
//! verify succeeds; the one-pass classification agrees with the individual
//! views; the policy decides without panicking.
use core::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use vxsec::dataplane::policy::{Policy, VniSet};
use vxsec::wire::{
    parse_vxlan_in_ip, EthernetFrame, Fragment, IpVersion, Ipv4Packet, Ipv6Packet, UdpPacket,
    VxlanPacket,
};

const PORT: u16 = 4789;

fuzz_target!(|data: &[u8]| {
    let classified = parse_vxlan_in_ip(data, PORT);
    let mut copy = data.to_vec();

    if let Ok(mut ip) = Ipv4Packet::new_checked(&mut copy[..]) {
        assert!(20 <= ip.header_len() && ip.header_len() <= ip.total_len());
        assert!(ip.total_len() <= data.len());
        assert_eq!(ip.payload().len(), ip.total_len() - ip.header_len());
        assert_eq!(ip.options().len(), ip.header_len() - 20);
        let _ = (
            ip.dscp_ecn(),
            ip.ident(),
            ip.ttl(),
            ip.checksum(),
            ip.frag_offset_bytes(),
        );
        ip.fill_checksum();
        assert!(ip.verify_checksum(), "fill then verify");
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if let Ok(mut udp) = UdpPacket::new_checked(ip.payload_mut()) {
            udp.fill_checksum_v4(src, dst);
            assert!(udp.verify_checksum_v4(src, dst));
        }
    }
    let mut copy = data.to_vec();
    if let Ok(mut ip) = Ipv6Packet::new_checked(&mut copy[..]) {
        assert_eq!(ip.payload().len(), ip.payload_len());
        let _ = (
            ip.traffic_class(),
            ip.flow_label(),
            ip.hop_limit(),
            ip.next_header(),
        );
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if let Ok(mut udp) = UdpPacket::new_checked(ip.payload_mut()) {
            udp.fill_checksum_v6(&src, &dst);
            assert!(udp.verify_checksum_v6(&src, &dst));
            assert_eq!(udp.payload().len() + 8, udp.len());
        }
    }
    if let Ok(v) = VxlanPacket::new_checked(data) {
        assert!(v.vni() <= 0x00ff_ffff && v.flags() & 0x08 != 0);
        assert_eq!(v.payload().len(), data.len() - 8);
    }
    if let Ok(e) = EthernetFrame::new_checked(data) {
        assert_eq!(e.payload().len(), data.len() - e.header_len());
        assert_eq!(e.vlan_id().is_some(), e.header_len() == 18);
        let _ = (e.dst_mac(), e.src_mac(), e.ethertype(), e.vlan_pcp());
    }

    let Ok(c) = classified else {
        return;
    };
    match c.version {
        IpVersion::V4 => {
            let ip = Ipv4Packet::new_checked(data).expect("classified v4 parses as v4");
            assert_eq!(
                (c.src, c.dst),
                (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()))
            );
            assert_eq!(
                (c.protocol, c.total_len, c.header_len),
                (ip.protocol(), ip.total_len(), ip.header_len())
            );
            assert_eq!(c.dont_frag, ip.dont_frag());
            assert_eq!(c.fragment == Fragment::No, !ip.is_fragment());
            if c.fragment == Fragment::No {
                check_udp(c.udp_ports, c.vni, c.protocol, ip.payload());
            }
            if c.fragment == Fragment::NonFirst {
                assert_eq!((c.udp_ports, c.vni, c.icmp), (None, None, None));
            }
        }
        IpVersion::V6 => {
            let ip = Ipv6Packet::new_checked(data).expect("classified v6 parses as v6");
            assert_eq!(
                (c.src, c.dst),
                (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()))
            );
            assert_eq!(
                (c.protocol, c.total_len),
                (ip.next_header(), ip.total_len())
            );
            check_udp(c.udp_ports, c.vni, c.protocol, ip.payload());
        }
    }
    if c.vni.is_some() {
        assert_eq!(c.udp_dst_port(), Some(PORT));
    }
    let policy = Policy::default();
    let allowed = VniSet::only([42]).expect("valid VNI");
    if policy.check(&c, &VniSet::any()).is_ok() && !c.is_icmp() {
        assert!(c.vni.is_some() && c.fragment == Fragment::No);
        assert_eq!(policy.check(&c, &allowed).is_ok(), c.vni == Some(42));
    }
});

/// For a whole (unfragmented) UDP packet the classification matches the views.
fn check_udp(ports: Option<(u16, u16)>, vni: Option<u32>, protocol: u8, l4: &[u8]) {
    if protocol != 17 {
        assert_eq!((ports, vni), (None, None));
        return;
    }
    let udp = UdpPacket::new_checked(l4).expect("classified UDP parses");
    assert_eq!(ports, Some((udp.src_port(), udp.dst_port())));
    if udp.dst_port() == PORT {
        let v = VxlanPacket::new_checked(udp.payload()).expect("classified VXLAN parses");
        assert_eq!(vni, Some(v.vni()));
    } else {
        assert_eq!(vni, None);
    }
}
