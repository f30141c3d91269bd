//! Static key rotation between two endpoints: the previous key answers
//! during the grace period and not after it, SAs survive both sides of a
//! rotation, the handshakes after it use the new key, and cookies follow
//! the key an initiation addressed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use vxsec_crypto::key::PrivateKey;

use super::super::testing::{established, pass, receive, seal, A, B};
use super::super::{DropReason, Endpoint, Incoming, PeerId, SealOutcome};
use super::IDENTITY_REKEY_DELAY;

/// Seals one packet `x` → peer `id` and hands it to `y`: whether `y` got it
/// as data.
fn data(x: &Endpoint, x_addr: &str, id: PeerId, y: &Endpoint, now: Instant) -> bool {
    let mut buf = [0u8; 16 + 8 + 16];
    buf[16..24].copy_from_slice(b"sequence");
    let Ok(SealOutcome::Sealed { len, .. }) = seal(x, now, id, &mut buf, 8) else {
        return false;
    };
    let r = receive(y, now, x_addr.parse().unwrap(), &mut buf[..len]);
    matches!(r, Ok(Incoming::Data { .. }))
}

fn spi(e: &Endpoint, id: PeerId) -> u32 {
    e.peer_status(id).unwrap().current.unwrap().local_spi
}

fn results(v: &[(Result<Incoming, DropReason>, Vec<u8>)]) -> Vec<Result<Incoming, DropReason>> {
    v.iter().map(|(r, _)| r.clone()).collect()
}

#[test]
fn previous_key_answers_during_grace_and_sas_are_kept() {
    let (a, b, ab, ba, t0) = established();
    let old_a = a.public_key();
    let (sa_ab, sa_ba) = (spi(&a, ab), spi(&b, ba));
    let t1 = t0 + Duration::from_secs(2);
    let replaced = a.rotate_identity(t1, PrivateKey::generate()).unwrap();
    assert_eq!(replaced, old_a);
    assert_ne!(a.public_key(), old_a);
    assert_eq!(a.previous_public_key(), Some(old_a));
    // No initiation now (b does not know the new key yet); one is due
    // within the rotation's rekey delay and spread.
    assert!(pass(&a, A, &b, t1).is_empty());
    let due = a.poll_timeout().unwrap();
    assert!(due <= t1 + IDENTITY_REKEY_DELAY + Duration::from_secs(5));
    // The SAs did not move: data flows both ways on them.
    assert!(data(&a, A, ab, &b, t1));
    assert!(data(&b, B, ba, &a, t1));
    assert_eq!((spi(&a, ab), spi(&b, ba)), (sa_ab, sa_ba));
    // b still initiates to the old key: a answers with it, even though
    // its own initiation is pending (that one cannot succeed).
    let t2 = t1 + Duration::from_secs(3);
    b.rekey(t2, Some(ba));
    let r = results(&pass(&b, B, &a, t2));
    assert!(
        matches!(r.as_slice(), [Ok(Incoming::Handshake { .. })]),
        "{r:?}"
    );
    let r = results(&pass(&a, A, &b, t2));
    assert!(
        r.contains(&Ok(Incoming::Handshake { peer: Some(ba) })),
        "{r:?}"
    );
    assert_ne!(spi(&b, ba), sa_ba, "b handshook with a's previous key");
    assert!(data(&b, B, ba, &a, t2));
    assert!(data(&a, A, ab, &b, t2));
    // That handshake used the old key: a's rekey with the new key is still
    // due, and b (which does not know that key) refuses it.
    let t3 = t1 + IDENTITY_REKEY_DELAY + Duration::from_secs(6);
    a.handle_timeout(t3);
    let r = results(&pass(&a, A, &b, t3));
    assert_eq!(r, vec![Err(DropReason::UnknownPeer)]);
}

#[test]
fn previous_key_is_refused_after_retirement() {
    let (a, b, ab, ba, t0) = established();
    let t1 = t0 + Duration::from_secs(2);
    a.rotate_identity(t1, PrivateKey::generate()).unwrap();
    pass(&a, A, &b, t1);
    assert!(a.retire_previous_identity());
    assert!(!a.retire_previous_identity(), "retired once");
    assert_eq!(a.previous_public_key(), None);
    let auth_before = a.stats().drops.auth;
    let t2 = t1 + Duration::from_secs(3);
    b.rekey(t2, Some(ba));
    let r = results(&pass(&b, B, &a, t2));
    assert_eq!(r, vec![Err(DropReason::Auth)], "mac1 under the retired key");
    assert_eq!(a.stats().drops.auth, auth_before + 1);
    assert_eq!(a.stats().initiations_processed, 0, "no DH for it");
    // The SAs made before the rotation still carry data.
    assert!(data(&a, A, ab, &b, t2));
    assert!(data(&b, B, ba, &a, t2));
}

#[test]
fn peer_key_update_keeps_the_peer_and_handshakes_with_the_new_key() {
    let (a, b, ab, ba, t0) = established();
    let old_a = a.public_key();
    let sa_ba = spi(&b, ba);
    let t1 = t0 + Duration::from_secs(2);
    a.rotate_identity(t1, PrivateKey::generate()).unwrap();
    let new_a = a.public_key();
    pass(&a, A, &b, t1);
    let stats_before = b.peer_status(ba).unwrap().stats;
    // b learns a's new key: same peer id, same SA, counters kept.
    let t2 = t1 + Duration::from_millis(100);
    assert_eq!(b.update_peer_key(t2, &old_a, new_a), Ok(ba));
    assert_eq!(b.peer_id(&new_a), Some(ba));
    assert_eq!(b.peer_id(&old_a), None);
    let st = b.peer_status(ba).unwrap();
    assert_eq!(st.public_key, new_a);
    assert_eq!(st.current.as_ref().unwrap().local_spi, sa_ba);
    assert_eq!(st.stats.traffic, stats_before.traffic);
    assert_eq!(st.stats.handshakes, stats_before.handshakes);
    assert!(
        st.handshake_pending,
        "b handshakes with the new key at once"
    );
    // That initiation addresses the new key, and a answers it with it.
    let r = results(&pass(&b, B, &a, t2));
    assert!(
        matches!(r.as_slice(), [Ok(Incoming::Handshake { .. })]),
        "{r:?}"
    );
    let r = results(&pass(&a, A, &b, t2));
    assert!(
        r.contains(&Ok(Incoming::Handshake { peer: Some(ba) })),
        "{r:?}"
    );
    let st = b.peer_status(ba).unwrap();
    assert!(!st.handshake_pending);
    assert_ne!(st.current.unwrap().local_spi, sa_ba);
    assert!(data(&a, A, ab, &b, t2));
    assert!(data(&b, B, ba, &a, t2), "a then b: a awaits no reply");
    // That handshake used a's new key: a's own rotation rekey is off.
    let later = t1 + IDENTITY_REKEY_DELAY + Duration::from_secs(6);
    a.handle_timeout(later);
    let r = results(&pass(&a, A, &b, later));
    assert!(
        !r.iter()
            .any(|r| matches!(r, Ok(Incoming::Handshake { .. }))),
        "{r:?}"
    );
    assert!(!a.peer_status(ab).unwrap().handshake_pending);
    // Retiring the old key changes nothing for b, and a's own initiations
    // (new key) are accepted by b.
    a.retire_previous_identity();
    let t3 = later + Duration::from_secs(1);
    a.rekey(t3, Some(ab));
    let r = results(&pass(&a, A, &b, t3));
    assert!(
        matches!(r.as_slice(), [Ok(Incoming::Handshake { .. })]),
        "{r:?}"
    );
    pass(&b, B, &a, t3);
    assert!(data(&a, A, ab, &b, t3));
    assert!(data(&b, B, ba, &a, t3));
}

#[test]
fn key_updates_refuse_bad_keys_and_change_nothing() {
    let (a, b, _, ba, t0) = established();
    let old_a = a.public_key();
    let own_b = b.public_key();
    assert!(b.update_peer_key(t0, &old_a, own_b).is_err());
    let zero = vxsec_crypto::key::PublicKey::from_bytes([0; 32]);
    assert!(b.update_peer_key(t0, &old_a, zero).is_err());
    let nobody = PrivateKey::generate().public_key();
    assert!(b
        .update_peer_key(t0, &nobody, PrivateKey::generate().public_key())
        .is_err());
    assert_eq!(b.peer_id(&old_a), Some(ba));
    // Rotating to our own key or a peer's is refused.
    assert!(a
        .rotate_identity(t0, PrivateKey::from_bytes([7; 32]))
        .is_ok());
    assert!(a
        .rotate_identity(t0, PrivateKey::from_bytes([7; 32]))
        .is_err());
    assert_eq!(a.previous_public_key(), Some(old_a));
}

#[test]
fn cookies_follow_the_key_the_initiation_addressed() {
    let (a, b, _, ba, t0) = established();
    let t1 = t0 + Duration::from_secs(2);
    a.rotate_identity(t1, PrivateKey::generate()).unwrap();
    pass(&a, A, &b, t1);
    // a is under load: an initiation without mac2 gets a cookie, sealed
    // under the key it addressed (the previous one), which b can open.
    a.handle_handshake_backlog(t1, 1000, 1024);
    let t2 = t1 + Duration::from_millis(200);
    b.rekey(t2, Some(ba));
    let r = results(&pass(&b, B, &a, t2));
    assert_eq!(r, vec![Err(DropReason::RateLimited)]);
    let r = results(&pass(&a, A, &b, t2));
    assert!(
        matches!(r.as_slice(), [Ok(Incoming::Handshake { .. })]),
        "{r:?}"
    );
    assert_eq!(b.peer_status(ba).unwrap().stats.cookies_received, 1);
    // b retries at once, with mac2: a (still under load) answers.
    a.handle_handshake_backlog(t2, 1000, 1024);
    b.handle_timeout(t2);
    let r = results(&pass(&b, B, &a, t2));
    assert!(
        matches!(r.as_slice(), [Ok(Incoming::Handshake { .. })]),
        "{r:?}"
    );
    let r = results(&pass(&a, A, &b, t2));
    assert!(
        r.contains(&Ok(Incoming::Handshake { peer: Some(ba) })),
        "{r:?}"
    );
}
