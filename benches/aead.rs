//! AEAD cost per packet at 64, 512, 1450 and 9000 bytes, for each suite:
//! ring's raw `LessSafeKey` (baseline), vxsec's `SealingKey`/`OpeningKey`,
//! a null cipher (header write, counter and replay bookkeeping, no AEAD) and,
//! for ChaCha20-Poly1305, RustCrypto's `chacha20poly1305` beside ring.
//!
//! Run: `cargo bench --bench aead -- --warm-up-time 1 --measurement-time 3`.
//! Does not measure batching (see `benches/batch.rs`).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use vxsec_crypto::kdf::{derive_data_keys, Direction};
use vxsec_crypto::key::SymmetricKey;
use vxsec_crypto::replay::ReplayWindow;
use vxsec_crypto::sa::{OpeningKey, SaLimits, SealingKey, DATA_HEADER_LEN, DATA_OVERHEAD};
use vxsec_crypto::suite::Suite;

const SIZES: [usize; 4] = [64, 512, 1450, 9000];
/// Limits that never trigger during a bench run, so every seal takes the
/// same (successful) path.
const UNLIMITED: SaLimits = SaLimits {
    rekey_after_packets: u64::MAX,
    reject_after_packets: u64::MAX,
    rekey_after_bytes: u64::MAX,
    reject_after_bytes: u64::MAX,
};
const RAW_KEY: [u8; 32] = [0x11; 32];

fn vxsec_pair(suite: Suite) -> (SealingKey, OpeningKey) {
    let secret = SymmetricKey::from_bytes([0x5a; 32]);
    let d = Direction::InitiatorToResponder;
    (
        SealingKey::new(derive_data_keys(&secret, suite, d), suite, 1, UNLIMITED),
        OpeningKey::new(derive_data_keys(&secret, suite, d), suite, UNLIMITED),
    )
}

fn ring_key(suite: Suite) -> LessSafeKey {
    let alg = match suite {
        Suite::Aes256Gcm => &ring::aead::AES_256_GCM,
        Suite::ChaCha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
    };
    match UnboundKey::new(alg, &RAW_KEY) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => panic!("32-byte key"),
    }
}

fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

fn header(counter: u64) -> [u8; DATA_HEADER_LEN] {
    let mut h = [0u8; DATA_HEADER_LEN];
    h[0] = 4;
    h[4..8].copy_from_slice(&1u32.to_be_bytes());
    h[8..].copy_from_slice(&counter.to_be_bytes());
    h
}

/// Times `run` over pools of freshly prepared messages: `prepare(n)` (not
/// timed) fills `n` messages, `run(n)` (timed) consumes them. The pool keeps
/// the working set in cache and amortises the timer over many packets.
#[allow(clippy::disallowed_methods)] // a bench measures wall time by definition
fn timed_pools<S>(
    iters: u64,
    pool: u64,
    state: &mut S,
    mut prepare: impl FnMut(&mut S, usize),
    mut run: impl FnMut(&mut S, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(pool);
        prepare(state, n as usize);
        let t = Instant::now();
        run(state, n as usize);
        total += t.elapsed();
        left -= n;
    }
    total
}

/// Messages per pool: about 128 KiB of working set, at most 256.
fn pool_len(size: usize) -> usize {
    (128 * 1024 / (size + DATA_OVERHEAD)).clamp(1, 256)
}

fn bench_seal(c: &mut Criterion) {
    for suite in Suite::ALL {
        let mut g = c.benchmark_group(format!("seal/{suite}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let mut buf = vec![0x42u8; size + DATA_OVERHEAD];

            let key = ring_key(suite);
            let mut counter = 0u64;
            g.bench_with_input(BenchmarkId::new("ring-raw", size), &size, |b, &size| {
                b.iter(|| {
                    counter += 1;
                    let h = header(counter);
                    let tag = key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce_bytes(counter)),
                        Aad::from(&h),
                        &mut buf[DATA_HEADER_LEN..DATA_HEADER_LEN + size],
                    );
                    black_box(tag.ok());
                })
            });

            let (mut tx, _) = vxsec_pair(suite);
            g.bench_with_input(BenchmarkId::new("vxsec", size), &size, |b, &size| {
                b.iter(|| black_box(tx.seal(black_box(&mut buf), size).ok()))
            });

            let mut counter = 0u64;
            g.bench_with_input(BenchmarkId::new("null", size), &size, |b, _| {
                b.iter(|| {
                    buf[..DATA_HEADER_LEN].copy_from_slice(&header(counter));
                    counter += 1;
                    black_box(&mut buf);
                })
            });

            if suite == Suite::ChaCha20Poly1305 {
                let rc = chacha20poly1305::ChaCha20Poly1305::new(&RAW_KEY.into());
                let mut counter = 0u64;
                g.bench_with_input(BenchmarkId::new("rustcrypto", size), &size, |b, &size| {
                    b.iter(|| {
                        counter += 1;
                        let h = header(counter);
                        let tag = rc.encrypt_in_place_detached(
                            &nonce_bytes(counter).into(),
                            &h,
                            &mut buf[DATA_HEADER_LEN..DATA_HEADER_LEN + size],
                        );
                        black_box(tag.ok());
                    })
                });
            }
        }
        g.finish();
    }
}

fn bench_open(c: &mut Criterion) {
    for suite in Suite::ALL {
        let mut g = c.benchmark_group(format!("open/{suite}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let pool = pool_len(size);
            let mut msgs: Vec<Vec<u8>> = vec![vec![0x42u8; size + DATA_OVERHEAD]; pool];

            let key = ring_key(suite);
            let mut counter = 0u64;
            g.bench_with_input(BenchmarkId::new("ring-raw", size), &size, |b, &size| {
                b.iter_custom(|iters| {
                    let mut st = (&mut msgs, &mut counter, 0u64);
                    timed_pools(
                        iters,
                        pool as u64,
                        &mut st,
                        |(msgs, counter, first), n| {
                            *first = **counter;
                            for m in &mut msgs[..n] {
                                let h = header(**counter);
                                m[..DATA_HEADER_LEN].copy_from_slice(&h);
                                let (body, tag) = m[DATA_HEADER_LEN..].split_at_mut(size);
                                let n = Nonce::assume_unique_for_key(nonce_bytes(**counter));
                                if let Ok(t) =
                                    key.seal_in_place_separate_tag(n, Aad::from(&h), body)
                                {
                                    tag.copy_from_slice(t.as_ref());
                                }
                                **counter += 1;
                            }
                        },
                        |(msgs, _, first), n| {
                            let first = *first;
                            for (i, m) in msgs[..n].iter_mut().enumerate() {
                                let (h, body) = m.split_at_mut(DATA_HEADER_LEN);
                                let nonce =
                                    Nonce::assume_unique_for_key(nonce_bytes(first + i as u64));
                                let ok = key.open_in_place(nonce, Aad::from(&*h), body).is_ok();
                                assert!(ok);
                            }
                        },
                    )
                })
            });

            let (mut tx, mut rx) = vxsec_pair(suite);
            g.bench_with_input(BenchmarkId::new("vxsec", size), &size, |b, &size| {
                b.iter_custom(|iters| {
                    timed_pools(
                        iters,
                        pool as u64,
                        &mut msgs,
                        |msgs, n| {
                            for m in &mut msgs[..n] {
                                let _ = tx.seal(m, size);
                            }
                        },
                        |msgs, n| {
                            for m in &mut msgs[..n] {
                                let ok = rx.open(black_box(m)).is_ok();
                                assert!(ok);
                            }
                        },
                    )
                })
            });

            let mut window = ReplayWindow::new();
            let mut buf = vec![0u8; size + DATA_OVERHEAD];
            let mut counter = 0u64;
            g.bench_with_input(BenchmarkId::new("null", size), &size, |b, _| {
                b.iter(|| {
                    // The sender's side wrote a fresh counter; the receiver
                    // parses it, checks and commits the replay window.
                    buf[8..16].copy_from_slice(&counter.to_be_bytes());
                    counter += 1;
                    let h = black_box(&buf[..DATA_HEADER_LEN]);
                    let mut c = [0u8; 8];
                    c.copy_from_slice(&h[8..16]);
                    let c = u64::from_be_bytes(c);
                    if window.check(c) {
                        window.commit(c);
                    }
                    black_box(&window);
                })
            });

            if suite == Suite::ChaCha20Poly1305 {
                let rc = chacha20poly1305::ChaCha20Poly1305::new(&RAW_KEY.into());
                let mut counter = 0u64;
                g.bench_with_input(BenchmarkId::new("rustcrypto", size), &size, |b, &size| {
                    b.iter_custom(|iters| {
                        let mut st = (&mut msgs, &mut counter, 0u64);
                        timed_pools(
                            iters,
                            pool as u64,
                            &mut st,
                            |(msgs, counter, first), n| {
                                *first = **counter;
                                for m in &mut msgs[..n] {
                                    let h = header(**counter);
                                    m[..DATA_HEADER_LEN].copy_from_slice(&h);
                                    let (body, tag) = m[DATA_HEADER_LEN..].split_at_mut(size);
                                    let nonce = nonce_bytes(**counter).into();
                                    if let Ok(t) = rc.encrypt_in_place_detached(&nonce, &h, body) {
                                        tag.copy_from_slice(&t);
                                    }
                                    **counter += 1;
                                }
                            },
                            |(msgs, _, first), n| {
                                let first = *first;
                                for (i, m) in msgs[..n].iter_mut().enumerate() {
                                    let (h, rest) = m.split_at_mut(DATA_HEADER_LEN);
                                    let (body, tag) = rest.split_at_mut(size);
                                    let nonce = nonce_bytes(first + i as u64).into();
                                    let tag = (&*tag).into();
                                    let ok =
                                        rc.decrypt_in_place_detached(&nonce, h, body, tag).is_ok();
                                    assert!(ok);
                                }
                            },
                        )
                    })
                });
            }
        }
        g.finish();
    }
}

/// One timed sample: prepares what it needs untimed, returns the time spent
/// on exactly `reps` packets.
type Sampler<'a> = Box<dyn FnMut(usize) -> Duration + 'a>;

/// Interleaves the samplers round by round (rotating their order) so that
/// machine load hits all of them alike, and returns per sampler the minimum
/// and median ns/packet. The minimum is the figure least disturbed by load
/// (noise only ever adds time).
fn paired(
    samplers: &mut [(&'static str, Sampler<'_>)],
    reps: usize,
    rounds: usize,
) -> Vec<(f64, f64)> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); samplers.len()];
    for round in 0..rounds {
        for k in 0..samplers.len() {
            let j = (round + k) % samplers.len();
            samples[j].push((samplers[j].1)(reps));
        }
    }
    samples
        .iter_mut()
        .map(|s| {
            s.sort();
            let ns = |d: Duration| d.as_secs_f64() * 1e9 / reps as f64;
            (ns(s[0]), ns(s[s.len() / 2]))
        })
        .collect()
}

/// Packets per sample: about 64 KiB of payload, 4 to 256 packets.
fn reps_for(size: usize) -> usize {
    (64 * 1024 / size).clamp(4, 256)
}

/// The same comparisons as the criterion groups, measured pairwise (see
/// [`paired`]) and printed as a markdown table: ns/packet (min and median of
/// the rounds), GB/s from the minimum, and the ratio to ring's raw figure.
#[allow(clippy::disallowed_methods)] // a bench measures wall time by definition
fn paired_table() {
    const ROUNDS: usize = 300;
    println!("| op | suite | bytes | impl | ns/pkt (min) | ns/pkt (median) | GB/s (min) | vs ring-raw (min) |");
    println!("|---|---|---:|---|---:|---:|---:|---:|");
    for suite in Suite::ALL {
        for size in SIZES {
            let reps = reps_for(size);
            let key = ring_key(suite);
            let rc = chacha20poly1305::ChaCha20Poly1305::new(&RAW_KEY.into());
            let (mut tx, mut rx) = vxsec_pair(suite);
            let (mut open_tx, _) = vxsec_pair(suite);
            let mut bufs: Vec<Vec<u8>> = vec![vec![0x42u8; size + DATA_OVERHEAD]; 5];
            let [b_raw, b_vx, b_null, b_rc, b_open] = &mut bufs[..] else {
                return;
            };
            let mut counter = 0u64;
            let mut rc_counter = 0u64;
            let mut null_counter = 0u64;

            let mut seal: Vec<(&'static str, Sampler<'_>)> = vec![
                (
                    "ring-raw",
                    Box::new(|reps| {
                        let t = Instant::now();
                        for _ in 0..reps {
                            counter += 1;
                            let h = header(counter);
                            let (body, tag_out) = b_raw[DATA_HEADER_LEN..].split_at_mut(size);
                            let tag = key.seal_in_place_separate_tag(
                                Nonce::assume_unique_for_key(nonce_bytes(counter)),
                                Aad::from(&h),
                                body,
                            );
                            // Every caller must store the tag; so does vxsec.
                            if let Ok(t) = tag {
                                tag_out.copy_from_slice(t.as_ref());
                            }
                            black_box(&mut *b_raw);
                        }
                        t.elapsed()
                    }),
                ),
                (
                    "vxsec",
                    Box::new(|reps| {
                        let t = Instant::now();
                        for _ in 0..reps {
                            black_box(tx.seal(black_box(&mut *b_vx), size).ok());
                        }
                        t.elapsed()
                    }),
                ),
                (
                    "null",
                    Box::new(|reps| {
                        let t = Instant::now();
                        for _ in 0..reps {
                            b_null[..DATA_HEADER_LEN].copy_from_slice(&header(null_counter));
                            null_counter += 1;
                            black_box(&mut *b_null);
                        }
                        t.elapsed()
                    }),
                ),
            ];
            if suite == Suite::ChaCha20Poly1305 {
                seal.push((
                    "rustcrypto",
                    Box::new(|reps| {
                        let t = Instant::now();
                        for _ in 0..reps {
                            rc_counter += 1;
                            let h = header(rc_counter);
                            let tag = rc.encrypt_in_place_detached(
                                &nonce_bytes(rc_counter).into(),
                                &h,
                                &mut b_rc[DATA_HEADER_LEN..DATA_HEADER_LEN + size],
                            );
                            black_box(tag.ok());
                        }
                        t.elapsed()
                    }),
                ));
            }
            let names: Vec<&str> = seal.iter().map(|(n, _)| *n).collect();
            let results = paired(&mut seal, reps, ROUNDS);
            drop(seal);
            common::print_rows("seal", suite, size, &names, &results);

            // Open: one pool of `reps` fresh messages per sample (sealed untimed).
            let mut pool: Vec<Vec<u8>> = vec![vec![0u8; size + DATA_OVERHEAD]; reps];
            let mut raw_pool = pool.clone();
            let mut raw_counter = 0u64;
            let mut window = ReplayWindow::new();
            let mut win_counter = 0u64;
            let mut open: Vec<(&'static str, Sampler<'_>)> = vec![
                (
                    "ring-raw",
                    Box::new(|reps| {
                        let first = raw_counter;
                        for m in &mut raw_pool[..reps] {
                            let h = header(raw_counter);
                            m[..DATA_HEADER_LEN].copy_from_slice(&h);
                            let (body, tag) = m[DATA_HEADER_LEN..].split_at_mut(size);
                            let n = Nonce::assume_unique_for_key(nonce_bytes(raw_counter));
                            if let Ok(t) = key.seal_in_place_separate_tag(n, Aad::from(&h), body) {
                                tag.copy_from_slice(t.as_ref());
                            }
                            raw_counter += 1;
                        }
                        let t = Instant::now();
                        for (i, m) in raw_pool[..reps].iter_mut().enumerate() {
                            let (h, body) = m.split_at_mut(DATA_HEADER_LEN);
                            let n = Nonce::assume_unique_for_key(nonce_bytes(first + i as u64));
                            let ok = key.open_in_place(n, Aad::from(&*h), body).is_ok();
                            assert!(ok);
                        }
                        t.elapsed()
                    }),
                ),
                (
                    "vxsec",
                    Box::new(|reps| {
                        for m in &mut pool[..reps] {
                            let _ = open_tx.seal(m, size);
                        }
                        let t = Instant::now();
                        for m in &mut pool[..reps] {
                            let ok = rx.open(black_box(m)).is_ok();
                            assert!(ok);
                        }
                        t.elapsed()
                    }),
                ),
                (
                    "null",
                    Box::new(|reps| {
                        let t = Instant::now();
                        for _ in 0..reps {
                            b_open[8..16].copy_from_slice(&win_counter.to_be_bytes());
                            win_counter += 1;
                            let h = black_box(&b_open[..DATA_HEADER_LEN]);
                            let mut c = [0u8; 8];
                            c.copy_from_slice(&h[8..16]);
                            let c = u64::from_be_bytes(c);
                            if window.check(c) {
                                window.commit(c);
                            }
                            black_box(&window);
                        }
                        t.elapsed()
                    }),
                ),
            ];
            let names: Vec<&str> = open.iter().map(|(n, _)| *n).collect();
            let results = paired(&mut open, reps, ROUNDS);
            common::print_rows("open", suite, size, &names, &results);
        }
    }
}

criterion_group!(benches, bench_seal, bench_open);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only in a real bench run (`cargo bench`, not `cargo test --benches`),
    // and only when no filter excludes it (`cargo bench --bench aead -- paired`
    // runs the paired table alone).
    if common::run_paired() {
        paired_table();
    }
}
