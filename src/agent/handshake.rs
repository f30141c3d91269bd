//! The control thread (wireguard-go's `timers.go` and handshake worker):
//! it takes the handshake messages (types 1–3) that data-plane workers left
//! in the bounded queue (`agent::handshake_queue`, where a full queue drops
//! and counts them), hands them to the [`Node`], tells it how deep the
//! backlog is (a backlog of 1/8 of the queue or more is "under load"),
//! fires the protocol timers, and sends whatever the core queued
//! (responses, cookie replies, initiations, keepalives, data that waited
//! for a handshake) without ever waiting for send-buffer space: a full
//! buffer drops and counts.
//!
//! The thread sleeps until the core's next timer or until woken: by a
//! handshake message, by a control request, or by a worker whose batch
//! left the core something to send or moved a protocol timer earlier than
//! the one it sleeps until and than its horizon, [`MAX_SLEEP`] ahead (the
//! core's timer generation changed). Traffic that moves no timer that
//! close wakes nobody: a received packet arms a keepalive 10 s ahead, and
//! waking for it once per packet cost every round trip a thread wake-up. It does not parse or authenticate anything itself.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::io::Arena;
use tracing::{debug, info, warn};

use super::clock;
use super::handshake_queue::{HsMsg, QUEUE_CAPACITY};
use super::shared::{Shared, BATCH};
use crate::dataplane::node::{NamedEvent, Transmits};
use crate::dataplane::rx::MAX_DIVERTED_LEN;
use crate::dataplane::Node;
use crate::io::udp::BatchUdp;
use crate::proto::Event;

/// Longest the control thread sleeps: the horizon it gives the core
/// (timers that move earlier, but not before it, do not wake it).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Shortest sleep before a timer is looked at again.
const MIN_SLEEP: Duration = Duration::from_millis(1);
/// Most messages handled per lock of the endpoint...
const PER_LOCK: usize = 64;
/// ...and most time spent on them under it (a Diffie-Hellman takes tens of
/// microseconds; the data plane waits on this lock meanwhile).
const PER_LOCK_TIME: Duration = Duration::from_micros(300);

/// The control thread: until `s.stop`, takes handshake messages off the
/// queue and hands them to the node ([`PER_LOCK`] messages or
/// [`PER_LOCK_TIME`] at a time), fires due timers, sends what the core
/// queued through `udp` without waiting and logs its events; then sleeps
/// until the next timer or a wake-up.
pub(super) fn control_loop(s: &Shared, mut udp: BatchUdp, stride: usize) {
    let mut arena = Arena::new(BATCH, stride);
    let mut out = Transmits::with_capacity(BATCH);
    let mut batch: VecDeque<HsMsg> = VecDeque::with_capacity(PER_LOCK);
    let (mut next_timer, mut wake_by) = next_wake(s, clock::now());
    while !s.stop.load(Ordering::Relaxed) {
        let now = clock::now();
        let wait = if batch.is_empty() {
            wake_by.saturating_duration_since(now)
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
        (next_timer, wake_by) = next_wake(s, now);
    }
}

/// The core's next timer, and when to wake at the latest: by then, or
/// [`MAX_SLEEP`] from `now` (the horizon given to the core, so that a
/// timer moved earlier but not before it, such as the keepalive every
/// received packet arms 10 s ahead, wakes nobody).
fn next_wake(s: &Shared, now: Instant) -> (Option<Instant>, Instant) {
    let horizon = now + MAX_SLEEP;
    s.node.set_timers_horizon(horizon);
    // Read before the deadline: a timer a worker moves earlier than both
    // after this makes the generation differ, and the worker wakes us.
    s.hs.timers_seen
        .store(s.node.timers_generation(), Ordering::Release);
    // A timer still due right after it fired is looked at again a moment
    // later, not in a busy loop.
    let next = s.node.poll_timeout().map(|t| t.max(now + MIN_SLEEP));
    (next, next.map_or(horizon, |t| t.min(horizon)))
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
