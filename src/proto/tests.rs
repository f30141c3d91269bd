//! Tests of the endpoint as a whole: its driver API, its locks (the
//! endpoint serves threads at once; nonces stay unique and replays refused
//! under concurrency, checked against a model), its timer schedule and the
//! rekey triggers it decides.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod endpoint {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
    use super::super::testing::{pair, pass, receive, seal, A, B};
    use super::super::*;
    use std::time::Duration;
    use std::time::Instant;
    use vxsec_crypto::key::{PrivateKey, PublicKey};

    #[test]
    fn queued_packet_travels_after_handshake_never_in_clear() {
        let (a, b, ab, _, now) = pair();
        let mut buf = [0u8; 16 + 11 + 16];
        buf[16..27].copy_from_slice(b"hello world");
        assert_eq!(seal(&a, now, ab, &mut buf, 11), Ok(SealOutcome::Queued));
        let mut out = [0u8; 2048];
        let t = a.poll_transmit(now, &mut out).unwrap();
        assert_eq!(out[0], crate::wire::outer::MSG_INITIATION);
        assert!(!out[..t.len].windows(11).any(|w| w == b"hello world"));
        let mut init = out[..t.len].to_vec();
        assert!(a.poll_transmit(now, &mut out).is_none());
        let r = receive(&b, now, A.parse().unwrap(), &mut init);
        assert!(matches!(r, Ok(Incoming::Handshake { .. })));
        let res = pass(&b, B, &a, now);
        assert!(matches!(res[0].0, Ok(Incoming::Handshake { .. })));
        let res = pass(&a, A, &b, now);
        assert_eq!(res.len(), 1, "the queued packet, no extra keepalive");
        let (r, m) = &res[0];
        let Ok(Incoming::Data { payload, .. }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(&m[payload.clone()], b"hello world");
        assert!(a.peers().all(|p| p.established));
        assert!(b.peers().all(|p| p.established && p.next.is_none()));
        assert!(matches!(
            a.poll_event(),
            Some(Event::HandshakeComplete { .. })
        ));
        assert!(a.poll_timeout().is_some());
        assert_eq!(a.live_spis(), 1);
    }

    #[test]
    fn add_peer_refuses_own_and_duplicate_keys() {
        let (a, _, _, _, now) = pair();
        let own = a.public_key();
        let e = a.add_peer(now, PeerConfig::new(own, None)).unwrap_err();
        assert_eq!(e.field, "peer.public_key");
        let other = a.peers().next().unwrap().public_key;
        assert!(a.add_peer(now, PeerConfig::new(other, None)).is_err());
        assert!(a.remove_peer(&other));
        assert!(!a.remove_peer(&other));
        assert!(a.peer_id(&other).is_none());
    }

    #[test]
    fn peers_ss_is_precomputed_on_add_and_dropped_on_remove() {
        let (a, _, _, _, now) = pair();
        let other = a.peers().next().unwrap().public_key;
        assert!(a.core.ss_snapshot().get(&other).is_some());
        // A low-order key can never complete a handshake: refused up front.
        let zero = PublicKey::from_bytes([0; 32]);
        let e = a.add_peer(now, PeerConfig::new(zero, None)).unwrap_err();
        assert_eq!(e.field, "peer.public_key");
        assert!(a.peer_id(&zero).is_none());
        assert_eq!(a.core.ss_snapshot().len(), 1);
        assert!(a.remove_peer(&other));
        assert!(a.core.ss_snapshot().is_empty());
    }

    #[test]
    fn garbage_is_malformed_and_counted() {
        let (a, _, _, _, now) = pair();
        for junk in [&[][..], &[9, 0, 0, 0][..], &[4, 1, 0, 0, 0, 0, 0, 0][..]] {
            let mut j = junk.to_vec();
            assert_eq!(
                receive(&a, now, B.parse().unwrap(), &mut j),
                Err(DropReason::Malformed)
            );
        }
        assert_eq!(a.stats().drops.malformed, 3);
    }

    #[test]
    fn invalid_config_is_refused_by_try_new_and_sanitized_by_new() {
        let now = Instant::now();
        let mut c = EndpointConfig::new(PrivateKey::generate(), "t");
        c.rotation.rekey_after_seconds = 0;
        let e = Endpoint::try_new(c, now, Duration::ZERO).err().unwrap();
        assert_eq!(e.field, "rotation.rekey_after_seconds");
        let mut c = EndpointConfig::new(PrivateKey::generate(), "x".repeat(100));
        c.timers.handshake_attempts = 0;
        let ep = Endpoint::new(c, now, Duration::ZERO);
        assert_eq!(ep.peers().count(), 0);
    }
}
