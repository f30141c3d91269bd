//! The handshake thread and its bounded queue (wireguard-go's
//! `queue.handshake`): data-plane workers hand handshake messages (types
//! 1–3) over without waiting, a full queue drops and counts them, and one
//! thread hands them to the protocol core, tells the core how deep the
//! backlog is (a backlog of 1/8 of the queue or more is "under load"),
//! and sends what the core answered (responses, cookie replies) without
//! ever waiting for send-buffer space: a full buffer drops and counts.
//!
//! It does not parse or authenticate anything itself (the core does).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};

use tracing::debug;
use vxsec_crypto::batch::Arena;

use super::{clock, log_event, Shared, BATCH, IDLE_WAIT};
use crate::dataplane::pipeline::{Outbound, MAX_DIVERTED_LEN};
use crate::io::udp::BatchUdp;

/// Handshake messages waiting for the handshake thread, at most
/// (wireguard-go's `QueueHandshakeSize`).
pub(super) const QUEUE_CAPACITY: usize = 1024;
/// Messages handled per lock of the pipeline.
const PER_LOCK: usize = 16;

/// One queued handshake message (fixed size: the queue allocates nothing
/// per message).
pub(super) struct HsMsg {
    from: SocketAddr,
    len: usize,
    buf: [u8; MAX_DIVERTED_LEN],
}

/// The producer side, shared by every worker, with its counters.
pub(super) struct HandshakeQueue {
    tx: SyncSender<HsMsg>,
    /// Messages queued and not yet taken by the handshake thread.
    depth: AtomicUsize,
    /// Messages dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Messages queued.
    pub queued: AtomicU64,
}

impl HandshakeQueue {
    pub fn new() -> (Self, Receiver<HsMsg>) {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let q = HandshakeQueue {
            tx,
            depth: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        };
        (q, rx)
    }

    /// Queues a copy of `bytes` from `from`; never waits. `false` (and
    /// counted) if the queue is full or the message too long to queue.
    pub fn push(&self, from: SocketAddr, bytes: &[u8]) -> bool {
        let mut m = HsMsg {
            from,
            len: bytes.len(),
            buf: [0; MAX_DIVERTED_LEN],
        };
        let Some(dst) = m.buf.get_mut(..bytes.len()) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        dst.copy_from_slice(bytes);
        self.depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(m) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Messages waiting now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

/// The handshake thread: until `s.stop`, takes messages off `rx`, hands
/// them to the core (under the pipeline lock, [`PER_LOCK`] at a time) and
/// sends the answers through `udp` without waiting.
pub(super) fn handshake_loop(s: &Shared, rx: &Receiver<HsMsg>, mut udp: BatchUdp, stride: usize) {
    let mut arena = Arena::new(BATCH, stride);
    let mut out = Outbound::with_capacity(BATCH);
    let mut batch: Vec<HsMsg> = Vec::with_capacity(PER_LOCK);
    while !s.stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(IDLE_WAIT) {
            Ok(m) => batch.push(m),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < PER_LOCK {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        // The backlog as wireguard-go measures it: what is still queued
        // when a message is taken (this batch included).
        let backlog = s.hs.depth();
        s.hs.depth.fetch_sub(batch.len(), Ordering::Relaxed);
        let mut more = {
            let mut p = s.lock();
            let now = clock::now();
            p.endpoint
                .handle_handshake_backlog(now, backlog, QUEUE_CAPACITY);
            for m in &mut batch {
                if let Some(buf) = m.buf.get_mut(..m.len) {
                    // Refusals are counted by the core.
                    let _ = p.endpoint.handle_datagram(now, m.from, buf);
                }
            }
            p.drain_transmits(now, &mut arena, &mut out);
            while let Some(ev) = p.endpoint.poll_event() {
                log_event(&p, &ev);
            }
            out.send_slots.len() == arena.slot_count()
        };
        batch.clear();
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
