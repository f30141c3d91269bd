//! Unit tests of one peer's state machine (through the endpoint).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
use super::super::testing::{established, pair, pass, receive, seal, A, B};
use super::super::{SealOutcome, SendError};
use super::*;
use vxsec_crypto::sa::DATA_OVERHEAD;

#[test]
fn queue_is_bounded_and_never_sends_cleartext() {
    let (a, _, ab, _, now) = pair();
    let mut buf = [0u8; 64];
    for _ in 0..64 {
        assert_eq!(seal(&a, now, ab, &mut buf, 32), Ok(SealOutcome::Queued));
    }
    assert_eq!(seal(&a, now, ab, &mut buf, 32), Err(SendError::QueueFull));
    assert_eq!(
        seal(&a, now, ab, &mut buf[..40], 32),
        Err(SendError::BufferTooSmall)
    );
    let mut out = [0u8; 2048];
    let mut n = 0;
    while let Some(t) = a.poll_transmit(now, &mut out) {
        assert_eq!(out[0], crate::wire::outer::MSG_INITIATION);
        assert!(t.record.is_none());
        n += 1;
    }
    assert_eq!(n, 1, "one initiation, not one per packet");
}

#[test]
fn passive_and_persistent_keepalives() {
    let (a, b, ab, _, now) = established();
    // b received data (the confirming keepalive is empty, so send real data).
    let mut buf = [0u8; 64];
    let SealOutcome::Sealed { len, .. } = seal(&a, now, ab, &mut buf, 8).unwrap() else {
        panic!()
    };
    receive(&b, now, A.parse().unwrap(), &mut buf[..len]).unwrap();
    let due = b.poll_timeout().unwrap();
    assert_eq!(
        due,
        now + Duration::from_secs(10),
        "passive keepalive 10 s after data"
    );
    b.handle_timeout(due);
    let mut out = [0u8; 2048];
    let t = b.poll_transmit(due, &mut out).unwrap();
    assert_eq!(t.len, DATA_OVERHEAD, "an empty data message");
    // Persistent keepalive on a fresh peer config.
    let key = b.public_key();
    a.remove_peer(&key);
    let mut cfg = PeerConfig::new(key, Some(B.parse().unwrap()));
    cfg.persistent_keepalive = Some(Duration::from_secs(25));
    let now2 = now + Duration::from_secs(1);
    let ab = a.add_peer(now2, cfg).unwrap();
    a.rekey(now2, Some(ab));
    let b2 = b;
    for _ in 0..3 {
        pass(&a, A, &b2, now2);
        pass(&b2, B, &a, now2);
    }
    assert!(a.peer_status(ab).unwrap().established);
    assert_eq!(a.poll_timeout(), Some(now2 + Duration::from_secs(25)));
    let t25 = now2 + Duration::from_secs(25);
    a.handle_timeout(t25);
    let t = a.poll_transmit(t25, &mut out).unwrap();
    assert_eq!(t.len, DATA_OVERHEAD);
    assert_eq!(a.peer_status(ab).unwrap().stats.keepalives_sent, 2);
}
