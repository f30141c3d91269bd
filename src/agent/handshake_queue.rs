//! The bounded handshake queue between the data-plane workers and the
//! control thread (wireguard-go's `queue.handshake`): workers hand
//! handshake messages (types 1–3) over without waiting, a full queue drops
//! and counts them (with a reserve for configured peers' endpoints), and
//! the control thread is woken only when it has something to do.
//!
//! It holds bytes only: it parses, authenticates and sends nothing (the
//! control thread in `agent::handshake` hands the messages to the node).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::dataplane::rx::MAX_DIVERTED_LEN;

/// Handshake messages waiting for the handshake thread, at most
/// (wireguard-go's `QueueHandshakeSize`).
pub(super) const QUEUE_CAPACITY: usize = 1024;
/// Extra room, past a full queue, for messages from configured peers'
/// endpoints: a flood from elsewhere cannot crowd out a peer's handshake
/// (one that spoofs a peer's address competes for this reserve only).
const PEER_RESERVE: usize = 64;
/// One queued handshake message (fixed size: the queue allocates nothing
/// per message).
pub(super) struct HsMsg {
    pub(super) from: SocketAddr,
    pub(super) len: usize,
    pub(super) buf: [u8; MAX_DIVERTED_LEN],
}

/// The bounded queue, shared by every worker, with its counters and the
/// control thread's wake-up. A worker pushes a whole batch under one lock
/// and wakes the control thread at most once per batch (and only if it
/// sleeps).
pub(super) struct HandshakeQueue {
    q: Mutex<VecDeque<HsMsg>>,
    ready: Condvar,
    /// The control thread waits (or is about to) for messages.
    sleeping: AtomicBool,
    /// Something besides a message needs the control thread.
    poked: AtomicBool,
    /// The node's timer generation the control thread last computed its
    /// sleep from: a worker seeing another one moved a timer earlier.
    pub(super) timers_seen: AtomicU64,
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
            poked: AtomicBool::new(false),
            timers_seen: AtomicU64::new(0),
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
        if queued > 0 && self.sleeping.load(Ordering::SeqCst) {
            self.ready.notify_one();
        }
    }

    /// Wakes the control thread (now, if it sleeps; else it runs again
    /// before sleeping): a control request or a handshake started.
    pub fn wake(&self) {
        self.poked.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            // Taking the lock orders this after the thread's wait began.
            drop(self.q.lock().unwrap_or_else(|e| e.into_inner()));
            self.ready.notify_one();
        }
    }

    /// A worker's batch is done: `urgent` if it left the core something
    /// to send; `timers_generation` is the node's now. Wakes the control
    /// thread if urgent, or if a protocol timer moved earlier than the one
    /// it sleeps until. One atomic load when neither.
    pub fn after_batch(&self, urgent: bool, timers_generation: u64) {
        if urgent || timers_generation != self.timers_seen.load(Ordering::Acquire) {
            self.wake();
        }
    }

    /// Tops `out` up to `max` messages, waiting up to `wait` for one if
    /// the queue is empty and nobody woke the thread; returns the backlog
    /// seen (queued and in `out`).
    pub(super) fn take(&self, out: &mut VecDeque<HsMsg>, max: usize, wait: Duration) -> usize {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() && !wait.is_zero() {
            self.sleeping.store(true, Ordering::SeqCst);
            if !self.poked.load(Ordering::SeqCst) {
                q = self
                    .ready
                    .wait_timeout(q, wait)
                    .map(|(q, _)| q)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            self.sleeping.store(false, Ordering::SeqCst);
        }
        self.poked.store(false, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::clock;

    /// At most this many taken at a time, as the control thread's `PER_LOCK`.
    const TAKE_MAX: usize = 64;

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
        let backlog = q.take(&mut out, TAKE_MAX, Duration::ZERO);
        assert_eq!((backlog, out.len()), (full, TAKE_MAX));
        assert_eq!(q.depth(), full - TAKE_MAX);
        let m = out.pop_front().unwrap_or_else(|| unreachable!());
        assert_eq!((m.from, &m.buf[..m.len]), (from, &msg[..]));
        // Topping up counts what is held already and takes only the rest.
        let backlog = q.take(&mut out, TAKE_MAX, Duration::ZERO);
        assert_eq!((backlog, out.len()), (full - 1, TAKE_MAX));
    }

    /// A wake-up before the thread sleeps is not lost: `take` returns at
    /// once instead of waiting out its timeout; a worker's batch wakes the
    /// thread only when urgent or when a timer moved earlier than the one
    /// the thread sleeps until.
    #[test]
    fn a_wake_up_is_never_lost_and_batches_wake_only_when_needed() {
        let q = HandshakeQueue::new();
        let mut out = VecDeque::new();
        q.wake();
        let t = clock::now();
        q.take(&mut out, TAKE_MAX, Duration::from_secs(5));
        assert!(clock::now().saturating_duration_since(t) < Duration::from_secs(1));
        // Timers as the thread last saw them: a plain batch leaves it alone...
        q.after_batch(false, 0);
        assert!(!q.poked.load(Ordering::SeqCst));
        // ...an urgent one always marks it...
        q.after_batch(true, 0);
        assert!(q.poked.load(Ordering::SeqCst));
        q.take(&mut out, TAKE_MAX, Duration::ZERO);
        assert!(!q.poked.load(Ordering::SeqCst), "taken");
        // ...and so does one after which a timer is due earlier.
        q.after_batch(false, 1);
        assert!(q.poked.load(Ordering::SeqCst));
    }
}
