#![no_main]
//! Outer message parsing: arbitrary datagrams never panic, and whatever
//! parses re-emits to exactly the same bytes and parses back to the same
//! message, with views that agree with the raw bytes.
use libfuzzer_sys::fuzz_target;
use vxsec::wire::outer::{mac_offsets, parse_message, Message, DATA_HEADER_LEN, MAC_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse_message(data) else {
        return;
    };
    let mut out = vec![0u8; data.len()];
    let n = msg.emit(&mut out).expect("a parsed message re-emits");
    assert_eq!(&out[..n], data, "round trip");
    assert_eq!(parse_message(&out[..n]), Ok(msg));
    assert_eq!(data.first(), Some(&msg.msg_type()));
    assert_eq!(
        data.get(1..4),
        Some(&[0u8, 0, 0][..]),
        "reserved bytes are zero"
    );
    match msg {
        Message::Initiation(m) => {
            check_macs(data, m.mac1(), m.mac2(), m.mac1_input(), m.mac2_input())
        }
        Message::Response(m) => {
            check_macs(data, m.mac1(), m.mac2(), m.mac1_input(), m.mac2_input());
            assert_eq!(&data[8..12], &m.receiver_spi().to_be_bytes());
        }
        Message::CookieReply(m) => assert_eq!(&data[8..32], m.nonce()),
        Message::Data(m) => {
            assert_eq!(&data[..DATA_HEADER_LEN], m.header());
            assert_eq!(&data[8..16], &m.counter().to_be_bytes());
            assert!(m.ciphertext_and_tag().len() >= 16);
        }
    }
});

fn check_macs(data: &[u8], mac1: &[u8; MAC_LEN], mac2: &[u8; MAC_LEN], in1: &[u8], in2: &[u8]) {
    let (o1, o2) = mac_offsets(data.len());
    assert_eq!(&data[o1..o2], mac1);
    assert_eq!(&data[o2..], mac2);
    assert_eq!(in1, &data[..o1]);
    assert_eq!(in2, &data[..o2]);
}
