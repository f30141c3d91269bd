//! What a wake-up costs on this machine: the floor under vxsec's added
//! round-trip time.
//!
//! A datagram goes over loopback UDP to a receiver thread, timed from just
//! before `send` to the receiver's return from `recv`:
//! * `same thread`: the sender receives it itself, non-blocking: the
//!   system calls alone, no wake-up;
//! * `blocked` receiver on the same CPU as the sender, or on the other
//!   CPU: the scheduler must wake it (on another CPU through an
//!   inter-processor interrupt, and in a VM a halted vCPU must be resumed
//!   by the host);
//! * `polling` receiver on the other CPU: it spins on non-blocking `recv`
//!   (yielding), as vxsec's workers do for `busy_poll_us`.
//!
//! Each after an idle gap of 50 µs and of 5 ms (the e2e benchmark pings
//! every 5 ms). A vxsec round trip needs three such wake-ups that a
//! kernel VXLAN round trip does not (the sending agent's worker, the
//! receiving agent's worker, the sending agent's worker for the reply).
//!
//! `cargo bench --bench wakeup` (needs 2 CPUs for the cross-CPU rows).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a bench: a failure should stop it loudly
#![allow(clippy::disallowed_methods)] // a bench measures wall time by definition

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vxsec::io::sys::pin_current_thread;

const ROUNDS: usize = 200;

#[derive(Clone, Copy)]
enum Receiver {
    Blocked,
    Polling,
}

fn nanos(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Latencies in µs, sorted, of `ROUNDS` wake-ups of a receiver on
/// `rx_cpu` by a sender on `tx_cpu` after `gap` of idleness.
fn measure(tx_cpu: usize, rx_cpu: usize, mode: Receiver, gap: Duration) -> Vec<f64> {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx_addr = rx.local_addr().unwrap();
    let back_addr = back.local_addr().unwrap();
    let base = Instant::now();
    let t0 = Arc::new(AtomicU64::new(0));
    let t0_rx = Arc::clone(&t0);
    let receiver = std::thread::spawn(move || {
        pin_current_thread(rx_cpu).unwrap();
        if matches!(mode, Receiver::Polling) {
            rx.set_nonblocking(true).unwrap();
        }
        let mut buf = [0u8; 64];
        let mut lat = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            loop {
                match rx.recv(&mut buf) {
                    Ok(_) => break,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("recv: {e}"),
                }
            }
            let t1 = nanos(base);
            lat.push(t1.saturating_sub(t0_rx.load(Ordering::Acquire)) as f64 / 1e3);
            rx.send_to(b"k", back_addr).unwrap();
        }
        lat
    });
    pin_current_thread(tx_cpu).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..ROUNDS {
        std::thread::sleep(gap);
        t0.store(nanos(base), Ordering::Release);
        tx.send_to(b"p", rx_addr).unwrap();
        back.recv(&mut buf).unwrap();
    }
    let mut lat = receiver.join().unwrap();
    lat.sort_by(f64::total_cmp);
    lat
}

/// The same datagram sent and received by one thread: no wake-up at all.
fn same_thread(cpu: usize, gap: Duration) -> Vec<f64> {
    pin_current_thread(cpu).unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_nonblocking(true).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = rx.local_addr().unwrap();
    let mut buf = [0u8; 64];
    let mut lat = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        std::thread::sleep(gap);
        let t0 = Instant::now();
        tx.send_to(b"p", addr).unwrap();
        while rx.recv(&mut buf).is_err() {}
        lat.push(t0.elapsed().as_nanos() as f64 / 1e3);
    }
    lat.sort_by(f64::total_cmp);
    lat
}

fn pct(v: &[f64], p: usize) -> f64 {
    v.get(v.len() * p / 100).copied().unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks; nothing to list
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "wake-up latency, loopback UDP, {ROUNDS} rounds per row, {cpus} CPUs, load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!("| receiver | idle gap | p50 µs | p90 µs |");
    println!("|---|---:|---:|---:|");
    for gap in [Duration::from_micros(50), Duration::from_millis(5)] {
        let g = format!("{} µs", gap.as_micros());
        let row = |name: &str, v: Vec<f64>| {
            println!("| {name} | {g} | {:.1} | {:.1} |", pct(&v, 50), pct(&v, 90));
        };
        row("same thread (no wake-up)", same_thread(0, gap));
        row("blocked, same CPU", measure(0, 0, Receiver::Blocked, gap));
        if cpus >= 2 {
            row("blocked, other CPU", measure(0, 1, Receiver::Blocked, gap));
            row("polling, other CPU", measure(0, 1, Receiver::Polling, gap));
        }
    }
}
