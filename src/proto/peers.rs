//! The endpoint's peers: a read-mostly table (by [`PeerId`] and by public
//! key) of peers each behind its own `Mutex`, and the timer schedule of
//! their earliest deadlines, kept up to date by [`Peers::with_peer`], the
//! one way to change a peer.
//!
//! It does not route datagrams (the endpoint finds peers by SPI or address
//! through `core.rs`) and reads no clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use vxsec_crypto::key::PublicKey;

use super::config::ConfigError;
use super::core::{lock, read, write, Core};
use super::peer::Peer;
use super::timers::Schedule;
use super::PeerId;

#[derive(Default)]
struct Table {
    by_id: BTreeMap<PeerId, Arc<Mutex<Peer>>>,
    by_key: HashMap<PublicKey, PeerId>,
    next_id: u32,
}

/// The peers and their timers (see the module doc).
#[derive(Default)]
pub(crate) struct Peers {
    table: RwLock<Table>,
    schedule: Schedule,
}

impl Peers {
    /// Adds the peer `build` makes with a fresh id, unless `key` is taken.
    pub fn insert(
        &self,
        key: PublicKey,
        build: impl FnOnce(PeerId) -> Peer,
    ) -> Result<PeerId, ConfigError> {
        let mut table = write(&self.table);
        if table.by_key.contains_key(&key) {
            return Err(ConfigError::new(
                "peer.public_key",
                "peer already configured",
            ));
        }
        let id = PeerId(table.next_id);
        table.next_id = table.next_id.wrapping_add(1);
        table.by_key.insert(key, id);
        table.by_id.insert(id, Arc::new(Mutex::new(build(id))));
        Ok(id)
    }

    /// Removes the peer with `key`, releasing its SPIs, address and timer.
    pub fn remove(&self, core: &Core, key: &PublicKey) -> bool {
        let entry = {
            let mut table = write(&self.table);
            let Some(id) = table.by_key.remove(key) else {
                return false;
            };
            table.by_id.remove(&id)
        };
        if let Some(entry) = entry {
            let mut p = lock(&entry);
            p.clear(core);
            self.schedule.remove(p.id(), p.scheduled());
        }
        true
    }

    /// Files the peer with key `old` under `new` (same id); refused if
    /// there is no peer `old` or `new` is another peer's.
    pub fn change_key(&self, old: &PublicKey, new: PublicKey) -> Result<PeerId, ConfigError> {
        let mut table = write(&self.table);
        if table.by_key.contains_key(&new) {
            return Err(ConfigError::new(
                "peer.public_key",
                "peer already configured",
            ));
        }
        let id = table
            .by_key
            .remove(old)
            .ok_or_else(|| ConfigError::new("peer.public_key", "no such peer"))?;
        table.by_key.insert(new, id);
        Ok(id)
    }

    /// Every peer's static key.
    pub fn keys(&self) -> Vec<PublicKey> {
        read(&self.table).by_key.keys().copied().collect()
    }

    pub fn id(&self, key: &PublicKey) -> Option<PeerId> {
        read(&self.table).by_key.get(key).copied()
    }

    /// The peer `id` (its lock not taken; the table's is released).
    pub fn entry(&self, id: PeerId) -> Option<Arc<Mutex<Peer>>> {
        read(&self.table).by_id.get(&id).cloned()
    }

    /// Every peer, in id order.
    pub fn all(&self) -> Vec<Arc<Mutex<Peer>>> {
        read(&self.table).by_id.values().cloned().collect()
    }

    pub fn ids(&self) -> Vec<PeerId> {
        read(&self.table).by_id.keys().copied().collect()
    }

    /// Runs `f` on peer `id` under its lock (in its span), then brings its
    /// entry in the timer schedule up to date: exactly (`exact`), or, on
    /// the data path, only if its deadline moved earlier. `None` if there
    /// is no such peer.
    pub fn with_peer<R>(
        &self,
        core: &Core,
        id: PeerId,
        exact: bool,
        f: impl FnOnce(&mut Peer, &Core) -> R,
    ) -> Option<R> {
        let entry = self.entry(id)?;
        let mut p = lock(&entry);
        if p.is_removed() {
            return None;
        }
        let span = p.fixed().span.clone();
        let _g = span.enter();
        let r = f(&mut p, core);
        let want = p.poll_timeout(core);
        let now_scheduled = self.schedule.update(id, p.scheduled(), want, exact);
        p.set_scheduled(now_scheduled);
        Some(r)
    }

    /// Runs `f` with a [`PeerRun`]: the table read-locked for its duration,
    /// each peer locked once per run of consecutive uses. `f` must not call
    /// back into the endpoint (the table lock is not re-entrant when a
    /// writer waits).
    pub fn run<R>(&self, core: &Core, f: impl FnOnce(&mut PeerRun<'_>) -> R) -> R {
        let table = read(&self.table);
        let mut run = PeerRun {
            core,
            schedule: &self.schedule,
            table: &table,
            current: None,
        };
        let r = f(&mut run);
        run.release();
        r
    }

    /// Fires the timers of the peers that are due at `now`; no other peer
    /// is visited.
    pub fn handle_timeout(&self, core: &Core, now: Instant) {
        for id in self.schedule.take_due(now) {
            self.with_peer(core, id, true, |p, core| {
                // Its entry left the schedule: `with_peer` adds the next.
                p.set_scheduled(None);
                p.handle_timeout(core, now);
            });
        }
    }

    /// The earliest peer deadline. Corrects entries of the schedule that
    /// the data path left earlier than their peer's deadline.
    pub fn poll_timeout(&self, core: &Core) -> Option<Instant> {
        loop {
            let (at, id) = self.schedule.first()?;
            // `with_peer` makes the peer's entry exact.
            let seen = self.with_peer(core, id, true, |p, core| {
                (p.scheduled(), p.poll_timeout(core))
            });
            match seen {
                Some((scheduled, want)) if scheduled == Some(at) && want == Some(at) => {
                    return Some(at)
                }
                // Corrected: look again.
                Some((scheduled, _)) if scheduled == Some(at) => {}
                // Not the peer's entry (it was removed, or fired meanwhile).
                Some(_) | None => self.schedule.remove(id, Some(at)),
            }
        }
    }

    /// See [`Schedule::generation`].
    pub fn timers_generation(&self) -> u64 {
        self.schedule.generation()
    }

    /// See [`Schedule::set_horizon`].
    pub fn set_timers_horizon(&self, by: Instant) {
        self.schedule.set_horizon(by);
    }

    pub fn scheduled_timers(&self) -> usize {
        self.schedule.len()
    }
}

/// Consecutive data-path operations on peers, each peer's lock taken once
/// per run of uses (see [`Peers::run`]). When it lets a peer go, its timer
/// entry is brought forward if its deadline moved earlier.
pub(crate) struct PeerRun<'t> {
    core: &'t Core,
    schedule: &'t Schedule,
    table: &'t Table,
    current: Option<(PeerId, MutexGuard<'t, Peer>)>,
}

impl<'t> PeerRun<'t> {
    pub fn core(&self) -> &'t Core {
        self.core
    }

    /// The peer locked now, if one of its SAs has local SPI `spi`: the
    /// next datagram of a run under the same SPI needs no SPI-table lookup
    /// (SPIs are unique, and one leaves a peer's SAs only under its lock).
    pub fn held_owner_of(&self, spi: u32) -> Option<PeerId> {
        self.current
            .as_ref()
            .filter(|(_, p)| p.has_sa(spi))
            .map(|(id, _)| *id)
    }

    /// Peer `id`, locked (the previous one is let go first).
    pub fn peer(&mut self, id: PeerId) -> Option<&mut Peer> {
        if self.current.as_ref().is_none_or(|(held, _)| *held != id) {
            self.release();
            let entry = self.table.by_id.get(&id)?;
            self.current = Some((id, lock(entry)));
        }
        self.current.as_mut().map(|(_, g)| &mut **g)
    }

    /// Lets the locked peer go.
    pub fn release(&mut self) {
        if let Some((id, mut p)) = self.current.take() {
            let want = p.poll_timeout(self.core);
            let now_scheduled = self.schedule.update(id, p.scheduled(), want, false);
            p.set_scheduled(now_scheduled);
        }
    }
}
