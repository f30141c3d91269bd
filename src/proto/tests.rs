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

/// The endpoint serves threads at once: nonce uniqueness and replay
/// protection hold by construction (counters are reserved under the peer's
/// lock; a message is accepted only by the commit that advances the
/// window), checked here against a model.
mod concurrency {
    use std::collections::{HashMap, HashSet};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Instant;

    use proptest::prelude::*;
    use vxsec_crypto::sa::OpenCipher;

    use super::super::testing::{established, A};
    use super::super::*;

    #[test]
    fn endpoint_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Endpoint>();
        shared::<Arc<Endpoint>>();
    }

    /// `threads` threads each reserve and seal `per_thread` messages for the
    /// same peer (same SA); returns every message with its record.
    fn seal_concurrently(
        a: &Endpoint,
        ab: PeerId,
        now: Instant,
        threads: usize,
        per_thread: usize,
        runs: bool,
    ) -> Vec<(SealRecord, Vec<u8>)> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let mut out = Vec::new();
                        let mut bufs: Vec<Vec<u8>> = (0..per_thread)
                            .map(|k| {
                                let mut buf = vec![0u8; 16 + 8 + 16];
                                buf[16..20].copy_from_slice(&(t as u32).to_be_bytes());
                                buf[20..24].copy_from_slice(&(k as u32).to_be_bytes());
                                buf
                            })
                            .collect();
                        // Reservations one by one, or all in one run.
                        let starts: Vec<SealStart> = if runs && t % 2 == 0 {
                            a.send_run(|run| {
                                bufs.iter()
                                    .map(|b| run.reserve_seal(now, ab, b, 8).unwrap())
                                    .collect()
                            })
                        } else {
                            bufs.iter()
                                .map(|b| a.reserve_seal(now, ab, b, 8).unwrap())
                                .collect()
                        };
                        for (start, mut buf) in starts.into_iter().zip(bufs.drain(..)) {
                            let SealStart::Reserved { job, cipher } = start else {
                                panic!("established: no queueing")
                            };
                            let SealOutcome::Sealed { len, record, .. } =
                                job.seal(&cipher, &mut buf).unwrap()
                            else {
                                panic!()
                            };
                            buf.truncate(len);
                            out.push((record, buf));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    }

    /// One receive worker: its datagrams in batches, each batch prechecked,
    /// then opened, then committed (as the data plane runs them); returns
    /// the plaintexts it accepted.
    fn receive_worker(
        b: &Endpoint,
        now: Instant,
        msgs: Vec<Vec<u8>>,
        batch: usize,
        runs: bool,
    ) -> Vec<Vec<u8>> {
        let from: SocketAddr = A.parse().unwrap();
        let mut accepted = Vec::new();
        for chunk in msgs.chunks(batch.max(1)) {
            let mut bufs: Vec<Vec<u8>> = chunk.to_vec();
            let mut jobs: Vec<(usize, OpenJob, Arc<OpenCipher>)> = Vec::new();
            if runs {
                b.receive_run(|run| {
                    for (i, m) in bufs.iter().enumerate() {
                        if let Ok(Prechecked::Data { job, opener }) = run.precheck(now, from, m) {
                            jobs.push((i, job, opener));
                        }
                    }
                });
            } else {
                for (i, m) in bufs.iter_mut().enumerate() {
                    if let Ok(Received::Data { job, opener }) = b.precheck_datagram(now, from, m) {
                        jobs.push((i, job, opener));
                    }
                }
            }
            let opened: Vec<_> = jobs
                .into_iter()
                .map(|(i, job, o)| (i, job.open(&o, &mut bufs[i]), o))
                .collect();
            let results: Vec<_> = if runs {
                b.receive_run(|run| {
                    opened
                        .into_iter()
                        .map(|(i, job, o)| (i, run.commit(now, job, &o)))
                        .collect()
                })
            } else {
                opened
                    .into_iter()
                    .map(|(i, job, o)| (i, b.commit_datagram(now, job, &o)))
                    .collect()
            };
            for (i, r) in results {
                if let Ok(Incoming::Data { payload, .. }) = r {
                    accepted.push(bufs[i][payload].to_vec());
                }
            }
        }
        accepted
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Two or more threads seal for one SA and two threads receive the
        /// stream with duplicates, in any order and batching, one datagram
        /// at a time or in runs: every
        /// (key, counter) is sealed once, every message is accepted exactly
        /// once, and every duplicate is counted as a replay.
        #[test]
        fn concurrent_seal_and_receive_match_the_model(
            threads in 2usize..4,
            per_thread in 1usize..80,
            dups in proptest::collection::vec(any::<bool>(), 0..240),
            split in proptest::collection::vec(any::<bool>(), 0..480),
            batch in 1usize..64,
            seed in any::<u64>(),
            runs in any::<bool>(),
        ) {
            let (a, b, ab, _, now) = established();
            let sealed = seal_concurrently(&a, ab, now, threads, per_thread, runs);
            // Model of the sender: each (key, counter) once, and counters
            // handed out without gaps.
            let records: HashSet<SealRecord> = sealed.iter().map(|(r, _)| *r).collect();
            prop_assert_eq!(records.len(), sealed.len());
            let keys: HashSet<[u8; 8]> = records.iter().map(|r| r.key_fingerprint).collect();
            prop_assert_eq!(keys.len(), 1, "one SA");
            let lo = records.iter().map(|r| r.counter).min().unwrap();
            let hi = records.iter().map(|r| r.counter).max().unwrap();
            prop_assert_eq!((hi - lo + 1) as usize, sealed.len());
            // The wire: every message, some twice, shuffled, split in two.
            let mut wire: Vec<Vec<u8>> = Vec::new();
            for (k, (_, m)) in sealed.iter().enumerate() {
                wire.push(m.clone());
                if dups.get(k).copied().unwrap_or(false) {
                    wire.push(m.clone());
                }
            }
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
            rand::seq::SliceRandom::shuffle(&mut wire[..], &mut rng);
            let (mut left, mut right) = (Vec::new(), Vec::new());
            for (k, m) in wire.iter().enumerate() {
                if split.get(k).copied().unwrap_or(k % 2 == 0) {
                    left.push(m.clone());
                } else {
                    right.push(m.clone());
                }
            }
            let replays_before = b.stats().drops.replay;
            let (got_l, got_r) = std::thread::scope(|s| {
                // With runs, one worker uses them and the other does not.
                let l = s.spawn(|| receive_worker(&b, now, left, batch, runs));
                let r = s.spawn(|| receive_worker(&b, now, right, batch, false));
                (l.join().unwrap(), r.join().unwrap())
            });
            // Model of the receiver: a HashSet of what was accepted.
            let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
            for pt in got_l.into_iter().chain(got_r) {
                *seen.entry(pt).or_insert(0) += 1;
            }
            prop_assert!(seen.values().all(|&n| n == 1), "a message accepted twice");
            prop_assert_eq!(seen.len(), sealed.len(), "every message accepted");
            let duplicates = (wire.len() - sealed.len()) as u64;
            prop_assert_eq!(b.stats().drops.replay - replays_before, duplicates);
        }
    }
}

/// Rekey triggers the endpoint decides (no driver-side maps).
mod triggers {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::super::testing::{established, pair, pass, seal, A, B};
    use super::super::*;
    use crate::wire::outer::MSG_INITIATION;

    #[test]
    fn unknown_spi_from_a_peer_without_sa_starts_one_handshake_per_second() {
        let (a, _b, _, _, now) = pair();
        let b_addr: SocketAddr = B.parse().unwrap();
        let stranger: SocketAddr = "198.51.100.1:1".parse().unwrap();
        assert!(!a.handle_unknown_spi(now, stranger), "not a peer's address");
        assert!(a.handle_unknown_spi(now, b_addr));
        let mut out = [0u8; 2048];
        let t = a.poll_transmit(now, &mut out).unwrap();
        assert_eq!((out[0], t.dst), (MSG_INITIATION, b_addr));
        let soon = now + Duration::from_millis(500);
        assert!(!a.handle_unknown_spi(soon, b_addr), "rate-limited");
        assert!(a.poll_transmit(soon, &mut out).is_none());
        // A second later it may ask again (the pending initiation stands,
        // so nothing new is sent), also from b's address as a dual-stack
        // socket reports it (IPv4-mapped).
        assert!(a.handle_unknown_spi(now + Duration::from_secs(1), b_addr));
        let std::net::IpAddr::V4(v4) = b_addr.ip() else {
            panic!()
        };
        let mapped = SocketAddr::from((v4.to_ipv6_mapped(), b_addr.port()));
        assert!(a.handle_unknown_spi(now + Duration::from_secs(2), mapped));
    }

    #[test]
    fn unknown_spi_follows_roaming_and_spares_established_peers() {
        let (a, b, ab, _, now) = established();
        let b_addr: SocketAddr = B.parse().unwrap();
        assert!(a.is_peer_endpoint(b_addr.ip()));
        assert!(!a.handle_unknown_spi(now, b_addr), "a has an SA with b");
        // b roams: its authenticated data now comes from a new address.
        let roamed: SocketAddr = "192.0.2.77:9".parse().unwrap();
        let mut buf = [0u8; 64];
        let SealOutcome::Sealed { len, .. } =
            seal(&b, now, b.peers().next().unwrap().id, &mut buf, 8).unwrap()
        else {
            panic!()
        };
        let r = super::super::testing::receive(&a, now, roamed, &mut buf[..len]);
        assert!(matches!(r, Ok(Incoming::Data { .. })), "{r:?}");
        assert_eq!(a.peer_status(ab).unwrap().endpoint, Some(roamed));
        assert!(a.is_peer_endpoint(roamed.ip()));
        assert!(
            !a.is_peer_endpoint(b_addr.ip()),
            "the old address is no peer's"
        );
        // A dual-stack socket reports IPv4 sources in their mapped form.
        let mapped = SocketAddr::new(
            match roamed.ip() {
                std::net::IpAddr::V4(v4) => std::net::IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            },
            roamed.port(),
        );
        assert!(a.is_peer_endpoint(mapped.ip()));
        assert!(
            !a.handle_unknown_spi(now, mapped),
            "established: nothing to do"
        );
        // Removed peers are forgotten.
        a.remove_peer(&b.public_key());
        assert!(!a.is_peer_endpoint(roamed.ip()));
        assert!(!a.handle_unknown_spi(now, roamed));
        let _ = pass(&a, A, &b, now);
    }
}

/// The timer schedule: one entry per peer, nothing for idle peers, exact
/// deadlines, and only due peers touched.
mod schedule {
    use std::time::{Duration, Instant};

    use vxsec_crypto::key::PrivateKey;

    use super::super::testing::{established, receive, seal, A, B};
    use super::super::*;

    #[test]
    fn an_idle_endpoint_with_1000_peers_has_no_timer() {
        let now = Instant::now();
        let ep = Endpoint::try_new(
            EndpointConfig::new(PrivateKey::generate(), "t"),
            now,
            Duration::ZERO,
        )
        .unwrap();
        for k in 0..1000u32 {
            let key = PrivateKey::generate().public_key();
            let addr = format!("10.1.{}.{}:51830", k / 250, k % 250 + 1)
                .parse()
                .unwrap();
            ep.add_peer(now, PeerConfig::new(key, Some(addr))).unwrap();
        }
        assert_eq!(ep.poll_timeout(), None, "nothing to wake up for");
        assert_eq!(ep.scheduled_timers(), 0);
        // Rekeying one peer schedules that peer only; firing it touches it
        // alone (one retransmission), the other 999 are not visited.
        let one = ep.peers().nth(500).unwrap().id;
        let generation = ep.timers_generation();
        ep.rekey(now, Some(one));
        assert!(
            ep.timers_generation() > generation,
            "the earliest deadline moved earlier"
        );
        assert_eq!(ep.scheduled_timers(), 1);
        let mut out = [0u8; 2048];
        assert!(ep.poll_transmit(now, &mut out).is_some());
        let due = ep.poll_timeout().unwrap();
        ep.handle_timeout(due);
        assert!(
            ep.poll_transmit(due, &mut out).is_some(),
            "the retransmission"
        );
        assert!(ep.poll_transmit(due, &mut out).is_none());
        assert_eq!(ep.scheduled_timers(), 1);
    }

    #[test]
    fn poll_timeout_is_exact_after_the_data_path_moves_a_deadline_later() {
        let (a, b, ab, ba, now) = established();
        let from_a = A.parse().unwrap();
        // b receives data: it owes a keepalive 10 s later (earlier than any
        // other deadline, so the data path schedules it).
        let mut buf = [0u8; 64];
        let SealOutcome::Sealed { len, .. } = seal(&a, now, ab, &mut buf, 8).unwrap() else {
            panic!()
        };
        receive(&b, now, from_a, &mut buf[..len]).unwrap();
        let owed = now + Duration::from_secs(10);
        assert_eq!(b.poll_timeout(), Some(owed));
        // b sends data: the keepalive is no longer owed. The data path left
        // the schedule as it was; poll_timeout corrects it.
        let t = now + Duration::from_secs(1);
        let mut buf = [0u8; 64];
        seal(&b, t, ba, &mut buf, 8).unwrap();
        let next = b.poll_timeout().unwrap();
        assert!(next > owed, "{next:?} should be past {owed:?}");
        assert_eq!(b.scheduled_timers(), 1);
        let _ = B;
    }
}

/// Runs hand back what they must not handle inside (handshakes, unknown
/// SPIs) and count what they drop, as the one-datagram calls do.
mod runs {
    use std::net::SocketAddr;

    use super::super::testing::{established, pair, seal, A};
    use super::super::*;
    use crate::wire::outer::MSG_INITIATION;

    #[test]
    fn a_run_hands_back_handshakes_and_counts_unknown_spis() {
        let (a, b, ab, _, now) = pair();
        a.rekey(now, Some(ab));
        let mut out = [0u8; 2048];
        let t = a.poll_transmit(now, &mut out).unwrap();
        assert_eq!(out[0], MSG_INITIATION);
        let from: SocketAddr = A.parse().unwrap();
        let mut unknown = vec![0u8; 48];
        unknown[0] = 4;
        unknown[4..8].copy_from_slice(&7u32.to_be_bytes());
        let (init, stray) = b.receive_run(|run| {
            (
                run.precheck(now, from, &out[..t.len]),
                run.precheck(now, from, &unknown),
            )
        });
        assert!(matches!(init, Ok(Prechecked::NotData)));
        assert_eq!(stray.err(), Some(DropReason::UnknownSpi));
        assert_eq!(b.stats().drops.unknown_spi, 1);
        assert_eq!(b.stats().initiations_processed, 0, "not handled in the run");
    }

    #[test]
    fn a_run_of_reservations_hands_out_consecutive_counters() {
        let (a, _b, ab, _, now) = established();
        let buf = [0u8; 64];
        let first = match a.reserve_seal(now, ab, &buf, 8).unwrap() {
            SealStart::Reserved { job, .. } => job.record().counter,
            SealStart::Queued => panic!(),
        };
        let counters: Vec<u64> = a.send_run(|run| {
            (0..10)
                .map(|_| match run.reserve_seal(now, ab, &buf, 8).unwrap() {
                    SealStart::Reserved { job, .. } => job.record().counter,
                    SealStart::Queued => panic!(),
                })
                .collect()
        });
        assert_eq!(counters, (first + 1..first + 11).collect::<Vec<_>>());
        assert_eq!(
            a.send_run(|run| run.reserve_seal(now, PeerId(99), &buf, 8).err()),
            Some(SendError::UnknownPeer)
        );
        let mut msg = [0u8; 64];
        assert!(seal(&a, now, ab, &mut msg, 8).is_ok());
    }
}
