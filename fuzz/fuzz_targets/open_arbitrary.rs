#![no_main]
//! Two invariants of `OpeningKey::open`:
//! 1. arbitrary bytes opened under a fixed key (that the fuzzer never sees
//!    used) never authenticate, for either suite;
//! 2. a message sealed from fuzz input round-trips, and the same message with
//!    a fuzz-chosen byte flipped (fuzz-chosen nonzero XOR mask) is refused
//!    without disturbing the receiver (the untouched message opens after).
//!
//! Input for 2: `[pos u16 LE][mask u8][payload…]`.

use libfuzzer_sys::fuzz_target;
use vxsec_crypto::kdf::{derive_data_keys, Direction};
use vxsec_crypto::key::SymmetricKey;
use vxsec_crypto::sa::{OpenError, OpeningKey, SealingKey, DATA_HEADER_LEN, DATA_OVERHEAD};
use vxsec_crypto::suite::Suite;

fn opening_key(secret: [u8; 32], suite: Suite) -> OpeningKey {
    let keys = derive_data_keys(
        &SymmetricKey::from_bytes(secret),
        suite,
        Direction::InitiatorToResponder,
    );
    OpeningKey::new(keys, suite, suite.default_limits())
}

fn sealing_key(secret: [u8; 32], suite: Suite) -> SealingKey {
    let keys = derive_data_keys(
        &SymmetricKey::from_bytes(secret),
        suite,
        Direction::InitiatorToResponder,
    );
    SealingKey::new(keys, suite, 0x0a0b_0c0d, suite.default_limits())
}

fuzz_target!(|data: &[u8]| {
    for suite in Suite::ALL {
        // 1. Forgery under a key nothing in this target ever seals with.
        let mut rx = opening_key([0xf0; 32], suite);
        let mut msg = data.to_vec();
        assert!(
            rx.open(&mut msg).is_err(),
            "{suite}: arbitrary bytes authenticated"
        );
        assert_eq!(rx.packets(), 0);

        // 2. Seal, tamper one byte, open.
        let [p0, p1, mask, payload @ ..] = data else {
            continue;
        };
        let payload = &payload[..payload.len().min(4096)];
        let mut tx = sealing_key([0x0f; 32], suite);
        let mut rx = opening_key([0x0f; 32], suite);
        let mut buf = vec![0u8; payload.len() + DATA_OVERHEAD];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
        let sealed = match tx.seal(&mut buf, payload.len()) {
            Ok(s) => s,
            Err(e) => panic!("{suite}: seal failed: {e}"),
        };
        assert_eq!(sealed.len, buf.len());

        let pos = usize::from(u16::from_le_bytes([*p0, *p1])) % buf.len();
        let mut tampered = buf.clone();
        tampered[pos] ^= if *mask == 0 { 1 } else { *mask };
        assert!(
            rx.open(&mut tampered).is_err(),
            "{suite}: flipped byte {pos} accepted"
        );
        assert_eq!(rx.packets(), 0);

        match rx.open(&mut buf) {
            Ok(range) => assert_eq!(&buf[range], payload, "{suite}: round trip"),
            Err(e) => panic!("{suite}: untouched message refused: {e}"),
        }
        // And once only: a second sender with the same key reproduces the
        // identical message (counter 0), which must now be a replay.
        let mut replay = vec![0u8; payload.len() + DATA_OVERHEAD];
        replay[DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
        let mut tx2 = sealing_key([0x0f; 32], suite);
        assert!(tx2.seal(&mut replay, payload.len()).is_ok());
        assert_eq!(rx.open(&mut replay), Err(OpenError::Replay), "{suite}");
    }
});
