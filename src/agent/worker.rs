//! The data-plane worker threads: each owns a TUN queue and a UDP socket
//! and moves both directions through the shared [`crate::dataplane::Node`]
//! (TX: TUN → [`TxBatch`] → UDP; RX: UDP → [`RxBatch`] → TUN, handshake
//! messages to the control thread's queue), with a busy-poll window before
//! it sleeps. Workers run no protocol timers and send nothing on the
//! core's behalf: they wake the control thread when a batch needs it.
//!
//! It does no protocol work itself and holds no peer state.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use crate::io::Arena;
use tracing::{debug, warn};

use super::clock;
use super::shared::{Shared, BATCH};
use crate::dataplane::{RxBatch, TxBatch};
use crate::io::sys::{self, Waker};
use crate::io::tun::TunQueue;
use crate::io::udp::BatchUdp;

/// Longest a worker sleeps before looking at the stop flag (a stop wakes
/// it anyway; this only bounds a missed wake-up).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// One data-plane worker: its own TUN queue and UDP socket, both
/// directions, and a busy-poll window before it sleeps. A reply the kernel
/// queues on the TUN while this worker writes a packet is read on the next
/// turn, without a wake-up; while busy-polling, the worker also serves
/// other workers' sockets that are free, so the answer to what it just
/// sent is picked up whichever socket the kernel chose.
pub(super) fn worker_loop(
    s: &Shared,
    waker: &Waker,
    me: usize,
    mut tun: TunQueue,
    rx_sides: &[Mutex<RxSide>],
    stride: usize,
    busy: Duration,
) {
    let Some(own) = rx_sides.get(me) else {
        return;
    };
    let mut udp = own
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .udp
        .try_clone();
    let mut tx = TxSide::new(stride);
    let mut last_work = clock::now();
    while !s.stop.load(Ordering::Relaxed) {
        let mut moved = tx.turn(s, &mut tun, &mut udp);
        // The lock spans receive → TUN write, so a socket's datagrams reach
        // the TUN in order whichever worker serves it.
        moved += own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .turn(s, &mut tun);
        let now = clock::now();
        if moved > 0 {
            last_work = now;
            continue;
        }
        if now.saturating_duration_since(last_work) < busy {
            for (k, side) in rx_sides.iter().enumerate() {
                if k != me {
                    if let Ok(mut side) = side.try_lock() {
                        if side.turn(s, &mut tun) > 0 {
                            last_work = now;
                        }
                    }
                }
            }
            // Polling, but any runnable thread on this CPU goes first.
            std::thread::yield_now();
            continue;
        }
        match sys::wait_either_readable(tun.as_fd(), udp.as_fd(), waker, Some(IDLE_WAIT)) {
            // Traffic woke us: a new busy-poll window starts.
            Ok((true, _) | (_, true)) => last_work = clock::now(),
            Ok(_) => {}
            Err(e) => {
                warn!("worker wait failed: {e}");
                std::thread::sleep(IDLE_WAIT);
            }
        }
    }
}

/// A worker's buffers for the TUN → UDP direction.
struct TxSide {
    arena: Arena,
    batch: TxBatch,
}

impl TxSide {
    fn new(stride: usize) -> Self {
        Self {
            arena: Arena::new(BATCH, stride),
            batch: TxBatch::with_capacity(BATCH),
        }
    }

    /// Reads one batch from the TUN (never blocks), seals it and sends it;
    /// returns the packets read.
    fn turn(&mut self, s: &Shared, tun: &mut TunQueue, udp: &mut BatchUdp) -> usize {
        let n = match tun.read_batch(&mut self.arena, BATCH) {
            Ok(n) => n,
            Err(e) => {
                debug!("TUN read failed: {e}");
                0
            }
        };
        if n == 0 {
            return 0;
        }
        let now = clock::now();
        self.batch.send(&s.node, now, &mut self.arena, n);
        let b = &self.batch;
        if !b.send_slots().is_empty() {
            if let Err(e) = udp.send_batch(&self.arena, b.send_slots(), b.send_dests()) {
                debug!("UDP send failed: {e}");
            }
        }
        if !b.to_tun().is_empty() {
            let _ = tun.write_batch(&self.arena, b.to_tun());
        }
        s.hs.after_batch(b.needs_control(), s.node.timers_generation());
        n
    }
}

/// One UDP socket and the buffers for its UDP → TUN direction; owned by
/// one worker, served by any worker that is busy-polling.
pub(super) struct RxSide {
    udp: BatchUdp,
    arena: Arena,
    from: Vec<SocketAddr>,
    batch: RxBatch,
}

impl RxSide {
    pub(super) fn new(udp: BatchUdp, stride: usize) -> Self {
        Self {
            udp,
            arena: Arena::new(BATCH, stride),
            from: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)); BATCH],
            batch: RxBatch::with_capacity(BATCH).divert_handshakes(),
        }
    }

    /// Receives one batch (never blocks), opens it and writes what passes
    /// to `tun`; returns the datagrams received.
    fn turn(&mut self, s: &Shared, tun: &mut TunQueue) -> usize {
        let n = match self.udp.recv_batch(&mut self.arena, BATCH, &mut self.from) {
            Ok(n) => n,
            Err(e) => {
                debug!("UDP receive failed: {e}");
                0
            }
        };
        if n == 0 {
            return 0;
        }
        // The node's endpoint lock is held to precheck and to commit, not
        // for the AEAD nor the policy. This side's own lock, held by the
        // caller, still spans receive → TUN write, so the socket's
        // datagrams stay in order.
        let now = clock::now();
        self.batch
            .receive(&s.node, now, &mut self.arena, n, &self.from);
        // Handshake messages go to the control thread; a full queue drops
        // (and counts) them. The worker never waits on handshake work.
        let b = &self.batch;
        if !b.handshakes().is_empty() {
            let (arena, from) = (&self.arena, &self.from);
            s.hs.push_batch(
                b.handshakes()
                    .iter()
                    .filter_map(|&(i, peer)| Some((*from.get(i)?, arena.message(i)?, peer))),
            );
        }
        if !b.to_tun().is_empty() {
            let _ = tun.write_batch(&self.arena, b.to_tun());
        }
        s.hs.after_batch(b.needs_control(), s.node.timers_generation());
        n
    }
}
