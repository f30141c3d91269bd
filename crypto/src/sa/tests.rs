#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::kdf::{derive_data_keys, Direction};
use crate::key::SymmetricKey;

const SPI: u32 = 0x0102_0304;

/// The reference count of an `Arc` of either half sits in a cache line
/// of its own, apart from the key schedule (see `DirectionCipher`).
#[test]
fn cipher_halves_start_on_their_own_cache_line() {
    assert!(core::mem::align_of::<SealCipher>() >= 64);
    assert!(core::mem::align_of::<OpenCipher>() >= 64);
}

fn pair_with(suite: Suite, limits: SaLimits) -> (SealingKey, OpeningKey) {
    let secret = SymmetricKey::from_bytes([0x42; 32]);
    let dir = Direction::InitiatorToResponder;
    (
        SealingKey::new(derive_data_keys(&secret, suite, dir), suite, SPI, limits),
        OpeningKey::new(derive_data_keys(&secret, suite, dir), suite, limits),
    )
}

fn pair(suite: Suite) -> (SealingKey, OpeningKey) {
    pair_with(suite, suite.default_limits())
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// A sealed message of `plain` (exactly header ‖ ciphertext ‖ tag).
fn seal_msg(tx: &mut SealingKey, plain: &[u8]) -> (Vec<u8>, Sealed) {
    let mut buf = vec![0u8; DATA_OVERHEAD + plain.len()];
    buf[DATA_HEADER_LEN..DATA_HEADER_LEN + plain.len()].copy_from_slice(plain);
    let sealed = tx.seal(&mut buf, plain.len()).unwrap();
    assert_eq!(sealed.len, buf.len());
    (buf, sealed)
}

#[test]
fn round_trip_both_suites_many_sizes() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite);
        for (i, len) in [0usize, 1, 15, 16, 17, 64, 512, 1450, 9000]
            .into_iter()
            .enumerate()
        {
            let plain = payload(len, i as u8);
            let (mut msg, sealed) = seal_msg(&mut tx, &plain);
            assert_eq!(sealed.counter, i as u64);
            assert_eq!(sealed.status, LimitStatus::Ok);
            assert_eq!(msg[0], MSG_TYPE_DATA);
            assert_eq!(&msg[1..4], &[0, 0, 0]);
            assert_eq!(&msg[4..8], &SPI.to_be_bytes());
            assert_eq!(&msg[8..16], &(i as u64).to_be_bytes());
            if len >= 16 {
                assert_ne!(&msg[16..16 + len], &plain[..], "{suite}: not encrypted");
            }
            let range = rx.open(&mut msg).unwrap();
            assert_eq!(range, DATA_HEADER_LEN..DATA_HEADER_LEN + len);
            assert_eq!(&msg[range], &plain[..]);
        }
        assert_eq!(tx.packets(), 9);
        assert_eq!(rx.packets(), 9);
        let total: u64 = [0u64, 1, 15, 16, 17, 64, 512, 1450, 9000].iter().sum();
        assert_eq!(tx.bytes(), total);
        assert_eq!(rx.bytes(), total);
        assert_eq!(tx.suite(), suite);
        assert_eq!(rx.suite(), suite);
        assert_eq!(tx.peer_spi(), SPI);
        assert_eq!(tx.key_fingerprint(), rx.key_fingerprint());
        assert_eq!(rx.max_counter(), Some(8));
    }
}

#[test]
fn ciphertext_matches_ring_with_expected_nonce_and_aad() {
    // Independent check of nonce = salt ‖ counter and AAD = header: decrypt
    // with ring directly, using the salt recovered from the KDF output.
    let secret = SymmetricKey::from_bytes([7; 32]);
    for suite in Suite::ALL {
        let keys = derive_data_keys(&secret, suite, Direction::ResponderToInitiator);
        let raw_key = *keys.key();
        let salt = keys.salt();
        let mut tx = SealingKey::new(keys, suite, 9, suite.default_limits());
        seal_msg(&mut tx, b"first"); // counter 0
        let (msg, sealed) = seal_msg(&mut tx, b"hello vxsec");
        assert_eq!(sealed.counter, 1);
        let key = LessSafeKey::new(UnboundKey::new(suite.algorithm(), &raw_key).unwrap());
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&salt);
        n[4..].copy_from_slice(&1u64.to_be_bytes());
        let mut body = msg[16..].to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(n),
                Aad::from(&msg[..16]),
                &mut body,
            )
            .unwrap();
        assert_eq!(plain, b"hello vxsec");
    }
}

#[test]
fn every_single_bit_flip_is_refused() {
    for suite in Suite::ALL {
        let (mut tx, _) = pair(suite);
        let plain = payload(40, 3);
        let (msg, _) = seal_msg(&mut tx, &plain);
        for byte in 0..msg.len() {
            for bit in 0..8 {
                // A fresh receiver each time so no replay state interferes.
                let (_, mut rx) = pair(suite);
                let mut bad = msg.clone();
                bad[byte] ^= 1 << bit;
                let err = rx.open(&mut bad).unwrap_err();
                // Flipping a high counter bit may cross the reject limit;
                // everything else must fail authentication.
                assert!(
                    err == OpenError::AuthFailed
                        || (err == OpenError::Exhausted && (8..16).contains(&byte)),
                    "{suite}: byte {byte} bit {bit}: {err:?}"
                );
                assert_eq!(rx.packets(), 0);
                assert_eq!(rx.max_counter(), None, "window touched by a forgery");
            }
        }
        let (_, mut rx) = pair(suite);
        let mut good = msg.clone();
        assert!(rx.open(&mut good).is_ok());
    }
}

#[test]
fn replay_is_refused_and_forgery_does_not_burn_counter() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite);
        let (msg, _) = seal_msg(&mut tx, b"once");
        // A forgery with the same counter must not commit it.
        let mut forged = msg.clone();
        *forged.last_mut().unwrap() ^= 0x80;
        assert_eq!(rx.open(&mut forged), Err(OpenError::AuthFailed));
        assert_eq!(rx.auth_failures(), 1);
        let mut first = msg.clone();
        assert!(rx.open(&mut first).is_ok());
        let mut again = msg.clone();
        assert_eq!(rx.open(&mut again), Err(OpenError::Replay));
        assert_eq!(rx.packets(), 1);
    }
}

#[test]
fn out_of_order_within_window_is_accepted() {
    let (mut tx, mut rx) = pair(Suite::Aes256Gcm);
    let msgs: Vec<Vec<u8>> = (0..100)
        .map(|i| seal_msg(&mut tx, &[i as u8; 10]).0)
        .collect();
    for i in (0..100).rev() {
        let mut m = msgs[i].clone();
        let r = rx.open(&mut m).unwrap();
        assert_eq!(&m[r], &[i as u8; 10]);
    }
}

#[test]
fn counters_are_never_reused() {
    let (mut tx, _) = pair(Suite::ChaCha20Poly1305);
    let mut seen = std::collections::HashSet::new();
    let mut buf = vec![0u8; 100];
    for _ in 0..1000 {
        let s = tx.seal(&mut buf, 10).unwrap();
        assert!(seen.insert(s.counter));
        assert_eq!(header_counter(buf[..16].try_into().unwrap()), s.counter);
    }
    // A refused seal consumes nothing.
    assert_eq!(tx.seal(&mut buf[..20], 10), Err(SealError::BufferTooSmall));
    assert_eq!(tx.seal(&mut buf, 10).unwrap().counter, 1000);
}

#[test]
fn buffer_checks() {
    let (mut tx, _) = pair(Suite::Aes256Gcm);
    let mut buf = vec![0u8; DATA_OVERHEAD + 8];
    assert_eq!(tx.seal(&mut buf, 9), Err(SealError::BufferTooSmall));
    assert_eq!(tx.seal(&mut buf[..5], 0), Err(SealError::BufferTooSmall));
    assert_eq!(
        tx.seal(&mut buf[..DATA_OVERHEAD + 7], 8),
        Err(SealError::BufferTooSmall)
    );
    assert_eq!(
        tx.seal(&mut buf, usize::MAX),
        Err(SealError::BufferTooSmall)
    );
    assert_eq!(tx.packets(), 0);
    assert_eq!(tx.seal(&mut buf, 8).unwrap().len, DATA_OVERHEAD + 8);
    // Extra spare room after the tag is allowed and left alone.
    let mut big = vec![0xeeu8; 100];
    let s = tx.seal(&mut big, 8).unwrap();
    assert!(big[s.len..].iter().all(|&b| b == 0xee));
}

#[test]
fn truncated_messages() {
    let (mut tx, mut rx) = pair(Suite::Aes256Gcm);
    let (msg, _) = seal_msg(&mut tx, b"");
    assert_eq!(msg.len(), DATA_OVERHEAD);
    for n in 0..DATA_OVERHEAD {
        let mut m = msg[..n].to_vec();
        assert_eq!(rx.open(&mut m), Err(OpenError::Truncated), "len {n}");
    }
    let mut m = msg.clone();
    assert_eq!(rx.open(&mut m), Ok(16..16));
}

#[test]
fn wrong_key_or_direction_fails() {
    let secret = SymmetricKey::from_bytes([1; 32]);
    let suite = Suite::Aes256Gcm;
    let l = suite.default_limits();
    let mut tx = SealingKey::new(
        derive_data_keys(&secret, suite, Direction::InitiatorToResponder),
        suite,
        SPI,
        l,
    );
    let mut rx = OpeningKey::new(
        derive_data_keys(&secret, suite, Direction::ResponderToInitiator),
        suite,
        l,
    );
    assert_ne!(tx.key_fingerprint(), rx.key_fingerprint());
    let (mut msg, _) = seal_msg(&mut tx, b"hi");
    assert_eq!(rx.open(&mut msg), Err(OpenError::AuthFailed));
}

#[test]
fn packet_limits_rekey_soon_then_exhausted() {
    let limits = SaLimits {
        rekey_after_packets: 3,
        reject_after_packets: 5,
        rekey_after_bytes: u64::MAX - 1,
        reject_after_bytes: u64::MAX,
    };
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair_with(suite, limits);
        let mut buf = [0u8; 64];
        let statuses: Vec<LimitStatus> = (0..5)
            .map(|_| tx.seal(&mut buf, 4).unwrap().status)
            .collect();
        use LimitStatus::*;
        assert_eq!(statuses, [Ok, Ok, RekeySoon, RekeySoon, Exhausted]);
        assert_eq!(tx.status(), Exhausted);
        assert_eq!(tx.seal(&mut buf, 4), Err(SealError::Exhausted));
        assert_eq!(tx.seal(&mut buf, 0), Err(SealError::Exhausted));
        assert_eq!(tx.packets(), 5);
        // The receiver refuses counters an honest sender cannot have used,
        // before decrypting (a forged counter 5 is not even tried).
        let mut m = [0u8; 40];
        m[..16].copy_from_slice(&header_bytes(SPI, 5));
        assert_eq!(rx.open(&mut m), Err(OpenError::Exhausted));
        assert_eq!(rx.auth_failures(), 0);
    }
}

#[test]
fn byte_limits_rekey_soon_then_exhausted() {
    let limits = SaLimits {
        rekey_after_packets: u64::MAX - 1,
        reject_after_packets: u64::MAX,
        rekey_after_bytes: 100,
        reject_after_bytes: 250,
    };
    let (mut tx, _) = pair_with(Suite::Aes256Gcm, limits);
    let mut buf = [0u8; 200];
    assert_eq!(tx.seal(&mut buf, 99).unwrap().status, LimitStatus::Ok);
    assert_eq!(tx.seal(&mut buf, 1).unwrap().status, LimitStatus::RekeySoon);
    // 100 + 151 would pass 250: refused, nothing consumed.
    assert_eq!(tx.seal(&mut buf, 151), Err(SealError::Exhausted));
    assert_eq!((tx.packets(), tx.bytes()), (2, 100));
    assert_eq!(
        tx.seal(&mut buf, 150).unwrap().status,
        LimitStatus::Exhausted
    );
    assert_eq!(tx.seal(&mut buf, 0), Err(SealError::Exhausted));
    assert_eq!(tx.bytes(), 250);
}

#[test]
fn keys_print_redacted_and_errors_display() {
    let (tx, rx) = pair(Suite::Aes256Gcm);
    assert_eq!(format!("{tx:?}"), "<redacted>");
    assert_eq!(format!("{rx:?}"), "<redacted>");
    for e in [SealError::Exhausted, SealError::BufferTooSmall] {
        assert!(!e.to_string().is_empty());
    }
    for e in [
        OpenError::Truncated,
        OpenError::Replay,
        OpenError::AuthFailed,
        OpenError::Exhausted,
    ] {
        assert!(!e.to_string().is_empty());
    }
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn cipher_halves_are_shareable_and_redacted() {
    assert_send_sync::<Arc<SealCipher>>();
    assert_send_sync::<Arc<OpenCipher>>();
    assert_send_sync::<SealTicket>();
    assert_send_sync::<OpenTicket>();
    assert_send_sync::<Opened>();
    let (tx, rx) = pair(Suite::Aes256Gcm);
    assert_eq!(format!("{:?}", tx.cipher()), "<redacted>");
    assert_eq!(format!("{:?}", rx.cipher()), "<redacted>");
    assert_eq!(tx.cipher().key_fingerprint(), tx.key_fingerprint());
    assert_eq!(rx.cipher().key_fingerprint(), rx.key_fingerprint());
    for e in [
        SealError::WrongKey.to_string(),
        OpenError::WrongKey.to_string(),
    ] {
        assert!(!e.is_empty());
    }
}

#[test]
fn split_seal_is_byte_identical_to_one_shot() {
    for suite in Suite::ALL {
        let (mut one, _) = pair(suite);
        let (mut split, _) = pair(suite);
        for (i, len) in [0usize, 1, 17, 1400].into_iter().enumerate() {
            let plain = payload(len, i as u8);
            let (a, sa) = seal_msg(&mut one, &plain);
            let ticket = split.reserve(len).unwrap();
            assert_eq!((ticket.counter(), ticket.payload_len()), (i as u64, len));
            let mut b = vec![0u8; DATA_OVERHEAD + len];
            b[DATA_HEADER_LEN..DATA_HEADER_LEN + len].copy_from_slice(&plain);
            let sb = split.cipher().seal(ticket, &mut b).unwrap();
            assert_eq!(sa, sb);
            assert_eq!(a, b, "{suite} len {len}");
        }
        assert_eq!(
            (one.packets(), one.bytes()),
            (split.packets(), split.bytes())
        );
    }
}

#[test]
fn reserve_counts_up_front_and_refusal_consumes_nothing() {
    let limits = SaLimits {
        rekey_after_packets: 2,
        reject_after_packets: 3,
        rekey_after_bytes: u64::MAX - 1,
        reject_after_bytes: u64::MAX,
    };
    let (mut tx, _) = pair_with(Suite::Aes256Gcm, limits);
    assert_eq!(
        tx.reserve(MAX_PAYLOAD_LEN + 1),
        Err(SealError::BufferTooSmall)
    );
    let t0 = tx.reserve(10).unwrap();
    assert_eq!((tx.packets(), tx.bytes()), (1, 10));
    assert_eq!(t0.status(), LimitStatus::Ok);
    // A ticket dropped unsealed burns its counter: never handed out again.
    drop(t0);
    let t1 = tx.reserve(5).unwrap();
    assert_eq!((t1.counter(), t1.status()), (1, LimitStatus::RekeySoon));
    let t2 = tx.reserve(5).unwrap();
    assert_eq!((t2.counter(), t2.status()), (2, LimitStatus::Exhausted));
    assert_eq!(tx.reserve(0), Err(SealError::Exhausted));
    assert_eq!((tx.packets(), tx.bytes()), (3, 20));
    // Sealed out of order, each under its own counter.
    let mut b2 = [0u8; 64];
    assert_eq!(tx.cipher().seal(t2, &mut b2).unwrap().counter, 2);
    // A buffer too small for the ticket burns it and writes nothing.
    let mut small = [0xaau8; 20];
    assert_eq!(
        tx.cipher().seal(t1, &mut small),
        Err(SealError::BufferTooSmall)
    );
    assert!(small.iter().all(|&b| b == 0xaa));
}

#[test]
fn tickets_only_work_with_their_own_key() {
    let (mut tx, mut rx) = pair(Suite::Aes256Gcm);
    let secret = SymmetricKey::from_bytes([0x43; 32]);
    let other = derive_data_keys(&secret, Suite::Aes256Gcm, Direction::InitiatorToResponder);
    let mut tx2 = SealingKey::new(
        other,
        Suite::Aes256Gcm,
        SPI,
        Suite::Aes256Gcm.default_limits(),
    );
    let other = derive_data_keys(&secret, Suite::Aes256Gcm, Direction::InitiatorToResponder);
    let rx2 = OpeningKey::new(other, Suite::Aes256Gcm, Suite::Aes256Gcm.default_limits());
    let mut buf = [0u8; 64];
    let t = tx.reserve(4).unwrap();
    assert_eq!(tx2.cipher().seal(t, &mut buf), Err(SealError::WrongKey));
    assert!(buf.iter().all(|&b| b == 0), "nothing written");
    let (msg, _) = seal_msg(&mut tx, b"abcd");
    let mut m = msg.clone();
    let t = rx.precheck(&m).unwrap();
    let wrong = rx2.cipher().open(t, &mut m);
    assert!(!wrong.is_authentic());
    assert_eq!(rx.commit(wrong), Err(OpenError::WrongKey));
    // An Opened from one key is not accepted by another.
    let (mut m2, _) = seal_msg(&mut tx2, b"abcd");
    let t = rx2.precheck(&m2).unwrap();
    let opened = rx2.cipher().open(t, &mut m2);
    assert_eq!(rx.commit(opened), Err(OpenError::WrongKey));
    assert_eq!((rx.packets(), rx.max_counter()), (0, None));
}

#[test]
fn duplicate_passing_precheck_twice_commits_once() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite);
        let (msg, _) = seal_msg(&mut tx, b"twice");
        let (mut a, mut b) = (msg.clone(), msg.clone());
        // Two workers precheck the same counter before either commits.
        let ta = rx.precheck(&a).unwrap();
        let tb = rx.precheck(&b).unwrap();
        let (ca, cb) = (Arc::clone(rx.cipher()), Arc::clone(rx.cipher()));
        let oa = ca.open(ta, &mut a);
        let ob = cb.open(tb, &mut b);
        assert!(oa.is_authentic() && ob.is_authentic());
        assert_eq!(rx.commit(ob), Ok(DATA_HEADER_LEN..DATA_HEADER_LEN + 5));
        assert_eq!(rx.commit(oa), Err(OpenError::Replay));
        assert_eq!((rx.packets(), rx.bytes()), (1, 5));
        assert_eq!(&b[DATA_HEADER_LEN..DATA_HEADER_LEN + 5], b"twice");
    }
}

#[test]
fn split_open_counts_auth_failures_at_commit_only() {
    let (mut tx, mut rx) = pair(Suite::ChaCha20Poly1305);
    let (mut msg, _) = seal_msg(&mut tx, b"x");
    *msg.last_mut().unwrap() ^= 1;
    let t = rx.precheck(&msg).unwrap();
    let opened = rx.cipher().open(t, &mut msg);
    assert!(!opened.is_authentic() && opened.payload().is_none());
    assert_eq!(rx.auth_failures(), 0, "the pure step counts nothing");
    assert_eq!(rx.commit(opened), Err(OpenError::AuthFailed));
    assert_eq!(rx.auth_failures(), 1);
    assert_eq!(rx.max_counter(), None);
    // Prechecks refuse like the one-shot does, changing nothing.
    assert_eq!(
        rx.precheck(&msg[..DATA_OVERHEAD - 1]),
        Err(OpenError::Truncated)
    );
}

#[test]
fn two_threads_reserve_under_a_lock_and_seal_without_it() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    let (tx, mut rx) = pair(Suite::Aes256Gcm);
    let tx = Mutex::new(tx);
    let msgs: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u8)
            .map(|w| {
                let tx = &tx;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for k in 0..500u32 {
                        let (ticket, cipher) = {
                            let mut g = tx.lock().unwrap();
                            let t = g.reserve(8).unwrap();
                            (t, Arc::clone(g.cipher()))
                        };
                        let mut buf = vec![0u8; DATA_OVERHEAD + 8];
                        buf[16..20].copy_from_slice(&k.to_be_bytes());
                        buf[20] = w;
                        let s = cipher.seal(ticket, &mut buf).unwrap();
                        out.push((s.counter, buf));
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<&(u64, Vec<u8>)> = msgs.iter().flatten().collect();
    let counters: HashSet<u64> = all.iter().map(|(c, _)| *c).collect();
    assert_eq!(counters.len(), 1000, "a counter was used twice");
    assert_eq!(counters, (0..1000).collect());
    for (c, m) in all {
        let mut m = m.clone();
        assert!(rx.open(&mut m).is_ok(), "counter {c}");
    }
}

mod interleavings {
    //! Reserve/seal and precheck/open/commit interleaved across two
    //! handles of each cipher, against the replay-window model and the
    //! one-shot API.
    use super::*;
    use crate::replay::model::Model;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    #[derive(Clone, Debug)]
    enum Op {
        Reserve { len: u8 },
        Seal { handle: bool, pick: usize },
        Precheck { pick: usize, tamper: bool },
        Open { handle: bool, pick: usize },
        Commit { pick: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u8>().prop_map(|len| Op::Reserve { len: len % 48 }),
            3 => (any::<bool>(), any::<usize>()).prop_map(|(handle, pick)| Op::Seal { handle, pick }),
            4 => (any::<usize>(), prop::bool::weighted(0.15))
                .prop_map(|(pick, tamper)| Op::Precheck { pick, tamper }),
            3 => (any::<bool>(), any::<usize>()).prop_map(|(handle, pick)| Op::Open { handle, pick }),
            3 => any::<usize>().prop_map(|pick| Op::Commit { pick }),
        ]
    }

    /// An open step's result waiting for its commit: the result, the
    /// message, whether it was tampered with, its counter.
    type Pending = (Opened, Vec<u8>, bool, u64);

    fn take<T>(v: &mut Vec<T>, pick: usize) -> Option<T> {
        if v.is_empty() {
            None
        } else {
            let i = pick % v.len();
            Some(v.swap_remove(i))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn never_reuse_never_double_accept_same_bytes(
            suite_aes in any::<bool>(),
            ops in prop::collection::vec(op(), 1..300),
        ) {
            let suite = if suite_aes { Suite::Aes256Gcm } else { Suite::ChaCha20Poly1305 };
            let (mut tx, mut rx) = pair(suite);
            let seal_handles = [Arc::clone(tx.cipher()), Arc::clone(tx.cipher())];
            let open_handles = [Arc::clone(rx.cipher()), Arc::clone(rx.cipher())];
            let mut model = Model::default();
            let mut reserved: Vec<SealTicket> = Vec::new();
            let mut lens: HashMap<u64, usize> = HashMap::new();
            // Sealed messages by counter; `seen` proves no counter sealed twice.
            let mut produced: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut seen = HashSet::new();
            let mut prechecked: Vec<(OpenTicket, Vec<u8>, bool)> = Vec::new();
            let mut opened: Vec<Pending> = Vec::new();
            let mut accepted = HashSet::new();
            let mut auth_failures = 0u64;
            for op in ops {
                match op {
                    Op::Reserve { len } => {
                        let t = tx.reserve(len.into()).unwrap();
                        prop_assert!(lens.insert(t.counter(), len.into()).is_none(), "counter reserved twice");
                        reserved.push(t);
                    }
                    Op::Seal { handle, pick } => {
                        let Some(t) = take(&mut reserved, pick) else { continue };
                        let (c, len) = (t.counter(), t.payload_len());
                        let mut buf = vec![0u8; DATA_OVERHEAD + len];
                        buf[16..16 + len].copy_from_slice(&payload(len, c as u8));
                        let s = seal_handles[usize::from(handle)].seal(t, &mut buf).unwrap();
                        prop_assert_eq!(s.counter, c);
                        prop_assert!(seen.insert(c), "counter {} sealed twice", c);
                        produced.push((c, buf));
                    }
                    Op::Precheck { pick, tamper } => {
                        if produced.is_empty() { continue }
                        let (c, msg) = &produced[pick % produced.len()];
                        let mut m = msg.clone();
                        if tamper {
                            let last = m.len() - 1;
                            m[last] ^= 0x40;
                        }
                        let r = rx.precheck(&m);
                        prop_assert_eq!(r.is_ok(), model.check(*c), "precheck of {}", c);
                        if let Ok(t) = r {
                            prop_assert_eq!(t.counter(), *c);
                            prechecked.push((t, m, tamper));
                        }
                    }
                    Op::Open { handle, pick } => {
                        let Some((t, mut m, tamper)) = take(&mut prechecked, pick) else { continue };
                        let c = t.counter();
                        let r = open_handles[usize::from(handle)].open(t, &mut m);
                        prop_assert_eq!(r.is_authentic(), !tamper);
                        prop_assert_eq!(r.counter(), c);
                        opened.push((r, m, tamper, c));
                    }
                    Op::Commit { pick } => {
                        let Some((r, m, tamper, c)) = take(&mut opened, pick) else { continue };
                        let got = rx.commit(r);
                        if !model.check(c) {
                            prop_assert_eq!(got, Err(OpenError::Replay));
                        } else if tamper {
                            auth_failures += 1;
                            prop_assert_eq!(got, Err(OpenError::AuthFailed));
                        } else {
                            model.commit(c);
                            prop_assert!(accepted.insert(c), "counter {} accepted twice", c);
                            let range = got.unwrap();
                            prop_assert_eq!(&m[range], &payload(lens[&c], c as u8)[..]);
                        }
                    }
                }
                prop_assert_eq!(rx.max_counter(), model.max());
                prop_assert_eq!(rx.packets(), accepted.len() as u64);
                prop_assert_eq!(rx.auth_failures(), auth_failures);
            }
            prop_assert_eq!(tx.packets(), lens.len() as u64);
            // Byte-identical to the one-shot API, counter by counter.
            let (mut reference, _) = pair(suite);
            let mut by_counter: Vec<(u64, Vec<u8>)> = produced;
            by_counter.sort_by_key(|(c, _)| *c);
            let mut next = 0u64;
            for (c, msg) in by_counter {
                while next < c {
                    let mut skip = vec![0u8; DATA_OVERHEAD + lens[&next]];
                    let _ = reference.seal(&mut skip, lens[&next]).unwrap();
                    next += 1;
                }
                let len = lens[&c];
                let (want, _) = seal_msg(&mut reference, &payload(len, c as u8));
                next += 1;
                prop_assert_eq!(msg, want, "counter {}", c);
            }
        }
    }
}

#[test]
fn header_helpers_round_trip() {
    let h = header_bytes(0xdead_beef, 0x0102_0304_0506_0708);
    assert_eq!(
        h,
        [4, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(header_counter(&h), 0x0102_0304_0506_0708);
}
