//! What every peer of one endpoint shares: the configuration fixed at start
//! (network, suite, rotation limits, timers, queue limit, clock origin) as
//! plain fields read through `&Core`, and the few shared tables that change,
//! each behind its own small leaf lock or as atomics: the static identities
//! (current and, while a rotation's grace lasts, previous: `identity.rs`),
//! the SPI table, the table of peers' current addresses, the precomputed
//! `ss` snapshot, the transmit and event queues, and the endpoint-wide
//! counters.
//!
//! It holds no peer state (each peer has its own lock, `peer.rs`) and no
//! handshake load state (`load.rs`, taken only by the handshake path). Every
//! lock here is a leaf: nothing else is locked while one is held.

use core::net::{IpAddr, SocketAddr};
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::Rng;
use vxsec_crypto::noise::Tai64N;
use vxsec_crypto::suite::{SaLimits, Suite};
use vxsec_crypto::x25519::SsTable;

use super::config::{RotationLimits, TimerConfig};
use super::identity::Identities;
use super::stats::SharedStats;
use super::{Event, PeerId, SealRecord, Transmit};

/// Datagrams waiting for `poll_transmit`, at most.
pub(crate) const MAX_QUEUED_TRANSMITS: usize = 8192;
/// Events waiting for `poll_event`, at most.
pub(crate) const MAX_QUEUED_EVENTS: usize = 1024;

/// A poisoned lock only means another thread panicked while holding it;
/// the data behind every lock here stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// A datagram waiting in the transmit queue.
struct OutPacket {
    dst: SocketAddr,
    bytes: Vec<u8>,
    record: Option<SealRecord>,
}

/// The endpoint's shared state (see the module doc).
pub(crate) struct Core {
    /// Our static identities (current, and previous during a grace period).
    pub identities: Identities,
    /// The network id (the Noise prologue of every identity).
    pub network_id: String,
    pub suite: Suite,
    pub rotation: RotationLimits,
    pub sa_limits: SaLimits,
    pub timers: TimerConfig,
    pub queue_packets: usize,
    start: Instant,
    unix_at_start: Duration,
    /// DH(our current static, peer static) of every configured peer: the
    /// Noise `ss`, made once at `add_peer` (and for every peer again when
    /// the identity rotates). A value made with another static key of ours
    /// is never used (the crypto crate checks), so a race with a rotation
    /// costs a DH, not a wrong one. Cloned (a reference count) so no
    /// lock is held across a handshake's Diffie-Hellman.
    ss_table: RwLock<SsTable>,
    pub spis: SpiTable,
    pub addresses: AddressIndex,
    pub stats: SharedStats,
    out: Mutex<VecDeque<OutPacket>>,
    /// Whether `out` may hold something (read without the lock).
    has_transmits: AtomicBool,
    events: Mutex<VecDeque<Event>>,
}

/// The configuration part of a [`Core`].
pub(crate) struct CoreConfig {
    pub identities: Identities,
    pub network_id: String,
    pub suite: Suite,
    pub rotation: RotationLimits,
    pub timers: TimerConfig,
    pub queue_packets: usize,
    pub start: Instant,
    pub unix_at_start: Duration,
}

impl Core {
    pub fn new(c: CoreConfig) -> Self {
        Core {
            sa_limits: c.rotation.sa_limits(c.suite),
            identities: c.identities,
            network_id: c.network_id,
            suite: c.suite,
            rotation: c.rotation,
            timers: c.timers,
            queue_packets: c.queue_packets,
            start: c.start,
            unix_at_start: c.unix_at_start,
            ss_table: RwLock::new(SsTable::default()),
            spis: SpiTable::default(),
            addresses: AddressIndex::default(),
            stats: SharedStats::default(),
            out: Mutex::new(VecDeque::new()),
            has_transmits: AtomicBool::new(false),
            events: Mutex::new(VecDeque::new()),
        }
    }

    /// TAI64N of the wall clock at `now`.
    pub fn wall(&self, now: Instant) -> Tai64N {
        Tai64N::from_unix(self.unix_at_start + now.saturating_duration_since(self.start))
    }

    /// The `ss` values as they are now (cheap: a reference count).
    pub fn ss_snapshot(&self) -> SsTable {
        read(&self.ss_table).clone()
    }

    /// Changes the `ss` values (peers added or removed).
    pub fn update_ss(&self, f: impl FnOnce(&mut SsTable)) {
        f(&mut write(&self.ss_table));
    }

    /// Replaces every `ss` value (the identity rotated); returns the old ones.
    pub fn replace_ss(&self, table: SsTable) -> SsTable {
        std::mem::replace(&mut write(&self.ss_table), table)
    }

    /// Queues a datagram; past [`MAX_QUEUED_TRANSMITS`] it is dropped (the
    /// driver is not polling; a data message dropped here is simply lost).
    pub fn push(&self, dst: SocketAddr, bytes: Vec<u8>, record: Option<SealRecord>) {
        let mut out = lock(&self.out);
        if out.len() < MAX_QUEUED_TRANSMITS {
            out.push_back(OutPacket { dst, bytes, record });
            self.has_transmits.store(true, Ordering::Release);
        }
    }

    /// Whether a datagram may be waiting (no lock taken).
    pub fn has_transmits(&self) -> bool {
        self.has_transmits.load(Ordering::Acquire)
    }

    /// Writes the next queued datagram into `out` (one too large for it is
    /// dropped).
    pub fn pop_transmit(&self, buf: &mut [u8]) -> Option<Transmit> {
        if !self.has_transmits() {
            return None;
        }
        let mut out = lock(&self.out);
        let found = loop {
            let Some(pkt) = out.pop_front() else {
                break None;
            };
            if let Some(dst) = buf.get_mut(..pkt.bytes.len()) {
                dst.copy_from_slice(&pkt.bytes);
                break Some(Transmit {
                    dst: pkt.dst,
                    len: pkt.bytes.len(),
                    record: pkt.record,
                });
            }
        };
        if out.is_empty() {
            self.has_transmits.store(false, Ordering::Release);
        }
        found
    }

    /// Queues an event, keeping only the newest [`MAX_QUEUED_EVENTS`].
    pub fn event(&self, e: Event) {
        let mut events = lock(&self.events);
        if events.len() >= MAX_QUEUED_EVENTS {
            events.pop_front();
        }
        events.push_back(e);
    }

    pub fn pop_event(&self) -> Option<Event> {
        lock(&self.events).pop_front()
    }
}

/// Local SPIs in use (SAs and pending initiations) and their owner. Read on
/// every received data message (a shared read lock); written only when a
/// handshake allocates or an SA retires one.
#[derive(Default)]
pub(crate) struct SpiTable {
    map: RwLock<HashMap<u32, PeerId>>,
}

impl SpiTable {
    /// A fresh random non-zero SPI not in use.
    pub fn allocate(&self, peer: PeerId, rng: &mut StdRng) -> u32 {
        let mut map = write(&self.map);
        loop {
            let spi: u32 = rng.gen();
            if spi != 0 && !map.contains_key(&spi) {
                map.insert(spi, peer);
                return spi;
            }
        }
    }
    pub fn release(&self, spi: u32) {
        write(&self.map).remove(&spi);
    }
    pub fn owner(&self, spi: u32) -> Option<PeerId> {
        read(&self.map).get(&spi).copied()
    }
    pub fn len(&self) -> usize {
        read(&self.map).len()
    }
}

/// Where each peer is now (its current endpoint, roaming included): which
/// peer a source address belongs to, and whether an IP is some peer's. An
/// IPv4 address and its IPv4-mapped IPv6 form (as a dual-stack socket
/// reports it) are the same address here.
#[derive(Default)]
pub(crate) struct AddressIndex {
    inner: RwLock<Addresses>,
}

#[derive(Default)]
struct Addresses {
    by_addr: HashMap<SocketAddr, PeerId>,
    /// Peers per IP (several peers may share a host).
    ips: HashMap<IpAddr, u32>,
}

impl AddressIndex {
    /// Records that `peer` moved from `old` to `new` (either may be `None`).
    pub fn moved(&self, peer: PeerId, old: Option<SocketAddr>, new: Option<SocketAddr>) {
        let (old, new) = (old.map(canonical), new.map(canonical));
        if old == new {
            return;
        }
        let mut a = write(&self.inner);
        if let Some(o) = old {
            if a.by_addr.get(&o) == Some(&peer) {
                a.by_addr.remove(&o);
            }
            if let Some(n) = a.ips.get_mut(&o.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    a.ips.remove(&o.ip());
                }
            }
        }
        if let Some(n) = new {
            a.by_addr.insert(n, peer);
            *a.ips.entry(n.ip()).or_insert(0) += 1;
        }
    }

    /// The peer whose current endpoint is `addr`.
    pub fn peer_at(&self, addr: SocketAddr) -> Option<PeerId> {
        read(&self.inner).by_addr.get(&canonical(addr)).copied()
    }

    /// Whether `ip` is some peer's current endpoint address.
    pub fn is_peer_ip(&self, ip: IpAddr) -> bool {
        read(&self.inner).ips.contains_key(&ip.to_canonical())
    }
}

/// `a` with an IPv4-mapped IPv6 address as plain IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
