//! The Internet checksum's hot loop, `wire::checksum::accumulate` (eight
//! native-endian 32-bit lanes, one byte-order fix at the end), beside its
//! previous implementation (one big-endian 32-bit word per step, kept here
//! verbatim as the baseline) in the same run, at 64, 1450 and 9000 bytes.
//! Both start one byte into the buffer, as a checksum over an IPv4 header
//! or a segment at an arbitrary offset would.
//!
//! After criterion's groups, an interleaved table (`paired`) alternates the
//! two in short bursts and prints min and median ns per call, so load from
//! other processes hits both alike.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a bench: a failure should stop it loudly

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use vxsec::wire::checksum::{accumulate, fold};

#[allow(dead_code)] // print_rows is for the AEAD tables
mod common;

const SIZES: [usize; 3] = [64, 1450, 9000];

/// The implementation before the lane sum, verbatim.
#[inline]
fn previous(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        if let &[a, b, c, d] = w {
            acc += u64::from(u32::from_be_bytes([a, b, c, d]));
        }
    }
    match *words.remainder() {
        [a] => acc + u64::from(u16::from_be_bytes([a, 0])),
        [a, b] => acc + u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => {
            acc + u64::from(u16::from_be_bytes([a, b])) + u64::from(u16::from_be_bytes([c, 0]))
        }
        _ => acc,
    }
}

fn data(size: usize) -> Vec<u8> {
    (0..size + 1)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for size in SIZES {
        let buf = data(size);
        let d = &buf[1..];
        assert_eq!(fold(previous(0, d)), fold(accumulate(0, d)));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("previous", size), |b| {
            b.iter(|| previous(0, black_box(d)))
        });
        g.bench_function(BenchmarkId::new("lanes", size), |b| {
            b.iter(|| accumulate(0, black_box(d)))
        });
    }
    g.finish();
}

/// Appends the ns per call of one burst of `burst` calls of `f`.
#[allow(clippy::disallowed_methods)] // timing is this function's whole job
fn burst_ns(f: fn(u64, &[u8]) -> u64, d: &[u8], burst: u32, out: &mut Vec<f64>) {
    let t = Instant::now();
    let mut x = 0u64;
    for _ in 0..burst {
        x = x.wrapping_add(f(0, black_box(d)));
    }
    black_box(x);
    out.push(t.elapsed().as_nanos() as f64 / f64::from(burst));
}

fn interleaved_summary() {
    if !common::run_paired() {
        return;
    }
    println!("\n## paired: accumulate, previous vs lanes, interleaved bursts (ns per call, min (median))\n");
    println!("| bytes | previous | lanes | speed-up (min) |");
    println!("|---|---|---|---|");
    for size in SIZES {
        let buf = data(size);
        let d = &buf[1..];
        let burst = (200_000 / size as u32).max(1);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..400 {
            burst_ns(previous, d, burst, &mut a);
            burst_ns(accumulate, d, burst, &mut b);
        }
        let stat = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() / 2])
        };
        let (a, b) = (stat(&mut a), stat(&mut b));
        println!(
            "| {size} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2}x |",
            a.0,
            a.1,
            b.0,
            b.1,
            a.0 / b.0
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    interleaved_summary();
}
