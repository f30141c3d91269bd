//! The handshake thread and its bounded queue (wireguard-go's
//! `queue.handshake`): data-plane workers hand handshake messages (types
//! 1–3) over without waiting, a full queue drops and counts them, and one
//! thread hands them to the protocol core, tells the core how deep the
//! backlog is (a backlog of 1/8 of the queue or more is "under load"),
//! and sends what the core answered (responses, cookie replies) without
//! ever waiting for send-buffer space: a full buffer drops and counts.
//!
//! It does not parse or authenticate anything itself (the core does).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use tracing::debug;
use vxsec_crypto::batch::Arena;

use super::{clock, log_event, Shared, BATCH, IDLE_WAIT};
use crate::dataplane::pipeline::{Outbound, MAX_DIVERTED_LEN};
use crate::io::udp::BatchUdp;

/// Handshake messages waiting for the handshake thread, at most
/// (wireguard-go's `QueueHandshakeSize`).
pub(super) const QUEUE_CAPACITY: usize = 1024;
/// Extra room, past a full queue, for messages from configured peers'
/// endpoints: a flood from elsewhere cannot crowd out a peer's handshake
/// (one that spoofs a peer's address competes for this reserve only).
const PEER_RESERVE: usize = 64;
/// Most messages handled per lock of the pipeline...
const PER_LOCK: usize = 64;
/// ...and most time spent on them under it (a Diffie-Hellman takes tens of
/// microseconds; the data plane waits on this lock meanwhile).
const PER_LOCK_TIME: Duration = Duration::from_micros(300);

/// One queued handshake message (fixed size: the queue allocates nothing
/// per message).
pub(super) struct HsMsg {
    from: SocketAddr,
    len: usize,
    buf: [u8; MAX_DIVERTED_LEN],
}

/// The bounded queue, shared by every worker, with its counters. A worker
/// pushes a whole batch under one lock and wakes the handshake thread at
/// most once per batch (and only if it sleeps).
pub(super) struct HandshakeQueue {
    q: Mutex<VecDeque<HsMsg>>,
    ready: Condvar,
    /// The handshake thread waits (or is about to) for messages.
    sleeping: AtomicBool,
    /// Messages queued and not yet taken (mirrors the queue's length).
    depth: AtomicUsize,
    /// Messages dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Messages queued.
    pub queued: AtomicU64,
}

impl HandshakeQueue {
    pub fn new() -> Self {
        HandshakeQueue {
            q: Mutex::new(VecDeque::with_capacity(QUEUE_CAPACITY + PEER_RESERVE)),
            ready: Condvar::new(),
            sleeping: AtomicBool::new(false),
            depth: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        }
    }

    /// Queues copies of `msgs` (source, bytes, from a configured peer's
    /// endpoint); never waits for room: what does not fit (queue full, past
    /// the peers' reserve for theirs, or a message too long) is dropped and
    /// counted.
    pub fn push_batch<'a>(&self, msgs: impl Iterator<Item = (SocketAddr, &'a [u8], bool)>) {
        let (mut queued, mut dropped) = (0u64, 0u64);
        {
            let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
            for (from, bytes, peer) in msgs {
                let room = QUEUE_CAPACITY + if peer { PEER_RESERVE } else { 0 };
                if q.len() >= room || bytes.len() > MAX_DIVERTED_LEN {
                    dropped += 1;
                    continue;
                }
                let mut m = HsMsg {
                    from,
                    len: bytes.len(),
                    buf: [0; MAX_DIVERTED_LEN],
                };
                if let Some(dst) = m.buf.get_mut(..bytes.len()) {
                    dst.copy_from_slice(bytes);
                    q.push_back(m);
                    queued += 1;
                }
            }
            self.depth.store(q.len(), Ordering::Relaxed);
        }
        self.queued.fetch_add(queued, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        if queued > 0 && self.sleeping.load(Ordering::Acquire) {
            self.ready.notify_one();
        }
    }

    /// Tops `out` up to `max` messages, waiting up to `wait` for one if
    /// the queue is empty; returns the backlog seen (queued and in `out`).
    fn take(&self, out: &mut VecDeque<HsMsg>, max: usize, wait: Duration) -> usize {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() && !wait.is_zero() {
            self.sleeping.store(true, Ordering::Release);
            q = self
                .ready
                .wait_timeout(q, wait)
                .map(|(q, _)| q)
                .unwrap_or_else(|e| e.into_inner().0);
            self.sleeping.store(false, Ordering::Release);
        }
        let backlog = q.len() + out.len();
        let n = q.len().min(max.saturating_sub(out.len()));
        out.extend(q.drain(..n));
        self.depth.store(q.len(), Ordering::Relaxed);
        backlog
    }

    /// Messages waiting now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

/// The handshake thread: until `s.stop`, takes messages off the queue,
/// hands them to the core under the pipeline lock ([`PER_LOCK`] messages
/// or [`PER_LOCK_TIME`] at a time) and sends the answers through `udp`
/// without waiting.
pub(super) fn handshake_loop(s: &Shared, mut udp: BatchUdp, stride: usize) {
    let mut arena = Arena::new(BATCH, stride);
    let mut out = Outbound::with_capacity(BATCH);
    let mut batch: VecDeque<HsMsg> = VecDeque::with_capacity(PER_LOCK);
    while !s.stop.load(Ordering::Relaxed) {
        // The backlog as wireguard-go measures it: what is queued when
        // messages are taken (these included).
        let wait = if batch.is_empty() {
            IDLE_WAIT
        } else {
            Duration::ZERO
        };
        let backlog = s.hs.take(&mut batch, PER_LOCK, wait);
        if batch.is_empty() {
            continue;
        }
        let mut more = {
            let mut p = s.lock();
            let now = clock::now();
            p.endpoint
                .handle_handshake_backlog(now, backlog, QUEUE_CAPACITY);
            while let Some(mut m) = batch.pop_front() {
                if let Some(buf) = m.buf.get_mut(..m.len) {
                    // Refusals are counted by the core.
                    let _ = p.endpoint.handle_handshake(now, m.from, buf);
                }
                if clock::now().saturating_duration_since(now) >= PER_LOCK_TIME {
                    break;
                }
            }
            p.drain_transmits(now, &mut arena, &mut out);
            while let Some(ev) = p.endpoint.poll_event() {
                log_event(&p, &ev);
            }
            out.send_slots.len() == arena.slot_count()
        };
        loop {
            if !out.send_slots.is_empty() {
                if let Err(e) = udp.send_batch_nowait(&arena, &out.send_slots, &out.send_dests) {
                    debug!("handshake reply send failed: {e}");
                }
            }
            if !more {
                break;
            }
            let mut p = s.lock();
            p.drain_transmits(clock::now(), &mut arena, &mut out);
            more = out.send_slots.len() == arena.slot_count();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_and_never_waits() {
        let q = HandshakeQueue::new();
        let from = SocketAddr::from(([192, 0, 2, 1], 1));
        let msg = [1u8; 148];
        let too_long = [1u8; MAX_DIVERTED_LEN + 1];
        q.push_batch((0..QUEUE_CAPACITY + 10).map(|_| (from, &msg[..], false)));
        q.push_batch(std::iter::once((from, &too_long[..], true)));
        assert_eq!(q.depth(), QUEUE_CAPACITY);
        assert_eq!(q.queued.load(Ordering::Relaxed), QUEUE_CAPACITY as u64);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 11);
        // A full queue still takes a peer's messages, into the reserve.
        let peer = SocketAddr::from(([192, 0, 2, 2], 51830));
        q.push_batch((0..PEER_RESERVE + 1).map(|_| (peer, &msg[..], true)));
        assert_eq!(q.depth(), QUEUE_CAPACITY + PEER_RESERVE);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 12);
        let full = QUEUE_CAPACITY + PEER_RESERVE;
        let mut out = VecDeque::new();
        let backlog = q.take(&mut out, PER_LOCK, Duration::ZERO);
        assert_eq!((backlog, out.len()), (full, PER_LOCK));
        assert_eq!(q.depth(), full - PER_LOCK);
        let m = out.pop_front().unwrap_or_else(|| unreachable!());
        assert_eq!((m.from, &m.buf[..m.len]), (from, &msg[..]));
        // Topping up counts what is held already and takes only the rest.
        let backlog = q.take(&mut out, PER_LOCK, Duration::ZERO);
        assert_eq!((backlog, out.len()), (full - 1, PER_LOCK));
    }
}
