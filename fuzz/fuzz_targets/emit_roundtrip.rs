#![no_main]
//! Emitters round-trip: fuzzer-chosen field values (not bytes) go through
//! every emitter (outer handshake, cookie and data headers; Ethernet with
//! and without a VLAN tag; IPv4; IPv6; UDP; VXLAN), and what was emitted
//! parses back to exactly those fields. An emitter may refuse a value
//! (too long, a VNI over 24 bits), never write something that reads back
//! differently.

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use vxsec::wire::outer::{
    emit_cookie_reply, emit_data_header, emit_initiation, emit_response, parse_message, Message,
};
use vxsec::wire::{
    vxlan, EthernetFrame, EthernetRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket,
    UdpRepr, VxlanPacket,
};

/// Reads fixed-size values off the input, zero-padded at the end.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.bytes())
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut x = Input(data);
    let mut out = vec![0u8; 70_000];
    match x.u8() % 9 {
        0 => {
            let spi = x.u32();
            let len = usize::from(x.u16() % 1100);
            let noise = x.take(len);
            if let Ok(n) = emit_initiation(&mut out, spi, &noise) {
                let Ok(Message::Initiation(m)) = parse_message(&out[..n]) else {
                    panic!("an emitted initiation does not parse")
                };
                assert_eq!((m.sender_spi(), m.noise()), (spi, &noise[..]));
            }
        }
        1 => {
            let (s, r) = (x.u32(), x.u32());
            let len = usize::from(x.u16() % 1100);
            let noise = x.take(len);
            if let Ok(n) = emit_response(&mut out, s, r, &noise) {
                let Ok(Message::Response(m)) = parse_message(&out[..n]) else {
                    panic!("an emitted response does not parse")
                };
                assert_eq!(
                    (m.sender_spi(), m.receiver_spi(), m.noise()),
                    (s, r, &noise[..])
                );
            }
        }
        2 => {
            let (r, nonce, enc) = (x.u32(), x.bytes::<24>(), x.bytes::<32>());
            let n = emit_cookie_reply(&mut out, r, &nonce, &enc).expect("fixed size");
            let Ok(Message::CookieReply(m)) = parse_message(&out[..n]) else {
                panic!("an emitted cookie reply does not parse")
            };
            assert_eq!(
                (m.receiver_spi(), m.nonce(), m.encrypted_cookie()),
                (r, &nonce, &enc)
            );
        }
        3 => {
            let (r, c) = (x.u32(), x.u64());
            let n = emit_data_header(&mut out, r, c).expect("16 bytes");
            out[n..n + 16].fill(0xa5); // a tag
            let Ok(Message::Data(m)) = parse_message(&out[..n + 16]) else {
                panic!("an emitted data header does not parse")
            };
            assert_eq!((m.receiver_spi(), m.counter()), (r, c));
        }
        4 => {
            let vlan = (x.u8() & 1 == 1).then(|| (x.u8(), x.u16()));
            let repr = EthernetRepr {
                dst: x.bytes(),
                src: x.bytes(),
                vlan,
                ethertype: x.u16(),
            };
            if let Ok(n) = repr.emit(&mut out) {
                assert_eq!(n, repr.header_len());
                let f = EthernetFrame::new_checked(&out[..n + 46]).expect("parses");
                let back = EthernetRepr::parse(&f);
                if repr.vlan.is_none() && repr.ethertype == 0x8100 {
                    // An untagged frame whose ethertype says "tagged" reads as tagged.
                    return;
                }
                assert_eq!(back, repr);
            }
        }
        5 => {
            let repr = Ipv4Repr {
                src: Ipv4Addr::from(x.u32()),
                dst: Ipv4Addr::from(x.u32()),
                protocol: x.u8(),
                ttl: x.u8(),
                dont_frag: x.u8() & 1 == 1,
                ident: x.u16(),
                payload_len: usize::from(x.u16()),
            };
            if let Ok(n) = repr.emit(&mut out) {
                let total = n + repr.payload_len;
                let p = Ipv4Packet::new_checked(&out[..total]).expect("an emitted header parses");
                assert_eq!(Ipv4Repr::parse(&p), repr);
            }
        }
        6 => {
            let repr = Ipv6Repr {
                src: Ipv6Addr::from(u128::from_be_bytes(x.bytes())),
                dst: Ipv6Addr::from(u128::from_be_bytes(x.bytes())),
                next_header: x.u8(),
                hop_limit: x.u8(),
                payload_len: usize::from(x.u16()),
            };
            if let Ok(n) = repr.emit(&mut out) {
                let total = n + repr.payload_len;
                let p = Ipv6Packet::new_checked(&out[..total]).expect("an emitted header parses");
                assert_eq!(Ipv6Repr::parse(&p), repr);
            }
        }
        7 => {
            let repr = UdpRepr {
                src_port: x.u16(),
                dst_port: x.u16(),
                payload_len: usize::from(x.u16()),
            };
            if let Ok(n) = repr.emit(&mut out) {
                let p = UdpPacket::new_checked(&out[..n + repr.payload_len]).expect("parses");
                assert_eq!(UdpRepr::parse(&p), repr);
            }
        }
        _ => {
            let vni = x.u32();
            if let Ok(n) = vxlan::emit(&mut out, vni) {
                let p = VxlanPacket::new_checked(&out[..n]).expect("an emitted header parses");
                assert_eq!(p.vni(), vni);
            } else {
                assert!(vni > 0x00ff_ffff, "VNI {vni} refused");
            }
        }
    }
});
