//! The control thread and its bounded handshake queue (wireguard-go's
//! `queue.handshake` and `timers.go`): data-plane workers hand handshake
//! messages (types 1–3) over without waiting, a full queue drops and
//! counts them, and one thread hands them to the [`Node`], tells it how
//! deep the backlog is (a backlog of 1/8 of the queue or more is "under
//! load"), fires the protocol timers, and sends whatever the core queued
//! (responses, cookie replies, initiations, keepalives, data that waited
//! for a handshake) without ever waiting for send-buffer space: a full
//! buffer drops and counts.
//!
//! The thread sleeps until the core's next timer or until woken: by a
//! handshake message, by a control request, or by a worker whose batch
//! left the core something to send or moved a protocol timer earlier than
//! the one it sleeps until (the core's timer generation changed). Traffic
//! that moves no timer earlier wakes nobody; an idle agent does not wake
//! for nothing. It does not parse or authenticate anything itself.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::io::Arena;
use tracing::{debug, info, warn};

use super::clock;
use super::run::{Shared, BATCH};
use crate::dataplane::node::{NamedEvent, Transmits};
use crate::dataplane::rx::MAX_DIVERTED_LEN;
use crate::dataplane::Node;
use crate::io::udp::BatchUdp;
use crate::proto::Event;

/// Longest the control thread sleeps without a timer due (it is woken for
/// everything else; this only bounds a missed wake-up).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Shortest sleep before a timer is looked at again.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// Handshake messages waiting for the handshake thread, at most
/// (wireguard-go's `QueueHandshakeSize`).
pub(super) const QUEUE_CAPACITY: usize = 1024;
/// Extra room, past a full queue, for messages from configured peers'
/// endpoints: a flood from elsewhere cannot crowd out a peer's handshake
/// (one that spoofs a peer's address competes for this reserve only).
const PEER_RESERVE: usize = 64;
/// Most messages handled per lock of the endpoint...
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
    timers_seen: AtomicU64,
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
    fn take(&self, out: &mut VecDeque<HsMsg>, max: usize, wait: Duration) -> usize {
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

/// The control thread: until `s.stop`, takes handshake messages off the
/// queue and hands them to the node ([`PER_LOCK`] messages or
/// [`PER_LOCK_TIME`] at a time), fires due timers, sends what the core
/// queued through `udp` without waiting and logs its events; then sleeps
/// until the next timer or a wake-up.
pub(super) fn control_loop(s: &Shared, mut udp: BatchUdp, stride: usize) {
    let mut arena = Arena::new(BATCH, stride);
    let mut out = Transmits::with_capacity(BATCH);
    let mut batch: VecDeque<HsMsg> = VecDeque::with_capacity(PER_LOCK);
    let mut next_timer = s.node.poll_timeout();
    while !s.stop.load(Ordering::Relaxed) {
        let now = clock::now();
        let wait = if batch.is_empty() {
            next_timer.map_or(MAX_SLEEP, |t| {
                t.saturating_duration_since(now).min(MAX_SLEEP)
            })
        } else {
            Duration::ZERO
        };
        // The backlog as wireguard-go measures it: what is queued when
        // messages are taken (these included).
        let backlog = s.hs.take(&mut batch, PER_LOCK, wait);
        let now = clock::now();
        if !batch.is_empty() {
            // At least one message, then as many as the time budget allows.
            let msgs = batch
                .iter_mut()
                .enumerate()
                .take_while(|(k, _)| {
                    *k == 0 || clock::now().saturating_duration_since(now) < PER_LOCK_TIME
                })
                .map(|(_, m)| (m.from, m.buf.split_at_mut(m.len.min(MAX_DIVERTED_LEN)).0));
            let done = s.node.handle_handshakes(now, backlog, QUEUE_CAPACITY, msgs);
            batch.drain(..done.min(batch.len()));
        }
        if next_timer.is_some_and(|t| t <= now) {
            s.node.handle_timeout(now);
        }
        flush(&s.node, now, &mut arena, &mut out, &mut udp);
        // Read before the deadline: a timer a worker moves earlier after
        // this makes its generation differ, and the worker wakes us.
        s.hs.timers_seen
            .store(s.node.timers_generation(), Ordering::Release);
        // A timer still due right after it fired is looked at again a
        // moment later, not in a busy loop.
        next_timer = s.node.poll_timeout().map(|t| t.max(now + MIN_SLEEP));
    }
}

/// Sends whatever the core has queued, without waiting for buffer space,
/// and logs the core's events.
fn flush(node: &Node, now: Instant, arena: &mut Arena, out: &mut Transmits, udp: &mut BatchUdp) {
    loop {
        node.poll_transmits(now, arena, out);
        if !out.slots().is_empty() {
            if let Err(e) = udp.send_batch_nowait(arena, out.slots(), out.dests()) {
                debug!("control send failed: {e}");
            }
        }
        if out.slots().len() < arena.slot_count() {
            break;
        }
    }
    while let Some(ev) = node.poll_event() {
        log_event(&ev);
    }
}

/// Logs one event of the core for the operator.
fn log_event(ev: &NamedEvent) {
    let name = &ev.peer_name;
    match &ev.event {
        Event::HandshakeComplete {
            role,
            local_spi,
            remote_spi,
            ..
        }
        | Event::Rekeyed {
            role,
            local_spi,
            remote_spi,
            ..
        } => info!(
            peer = %name,
            ?role,
            local_spi = format_args!("{local_spi:#010x}"),
            remote_spi = format_args!("{remote_spi:#010x}"),
            "{}",
            if matches!(ev.event, Event::Rekeyed { .. }) { "keys rotated" } else { "tunnel established" }
        ),
        Event::SuiteMismatch { ours, theirs, .. } => warn!(
            peer = %name, ours = %ours,
            theirs = %theirs.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
            "suite mismatch: configure the same `suite` on both nodes"
        ),
        Event::PeerUnreachable { .. } => {
            warn!(peer = %name, "peer unreachable: no handshake answer")
        }
        Event::Roamed { from, to, .. } => {
            info!(peer = %name, ?from, %to, "peer endpoint changed")
        }
        Event::LoadProtection { engaged: true } => warn!(
            "handshake load protection engaged: cookies (mac2) required, \
             proven sources rate-limited"
        ),
        Event::LoadProtection { engaged: false } => {
            info!("handshake load protection disengaged")
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
        q.take(&mut out, PER_LOCK, Duration::from_secs(5));
        assert!(clock::now().saturating_duration_since(t) < Duration::from_secs(1));
        // Timers as the thread last saw them: a plain batch leaves it alone...
        q.after_batch(false, 0);
        assert!(!q.poked.load(Ordering::SeqCst));
        // ...an urgent one always marks it...
        q.after_batch(true, 0);
        assert!(q.poked.load(Ordering::SeqCst));
        q.take(&mut out, PER_LOCK, Duration::ZERO);
        assert!(!q.poked.load(Ordering::SeqCst), "taken");
        // ...and so does one after which a timer is due earlier.
        q.after_batch(false, 1);
        assert!(q.poked.load(Ordering::SeqCst));
    }
}
