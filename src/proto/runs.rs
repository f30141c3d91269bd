//! The data path in runs: many datagrams of a batch through one phase with
//! each peer's lock taken once per run of consecutive datagrams of that
//! peer (and the peer table's read lock once per run), instead of once per
//! datagram. [`SendRun::reserve_seal`] and [`ReceiveRun::precheck`] /
//! [`ReceiveRun::commit`] do exactly what [`Endpoint::reserve_seal`],
//! [`Endpoint::precheck_datagram`] and [`Endpoint::commit_datagram`] do for
//! one datagram; the AEAD still runs between the runs, with no lock held.
//!
//! A run must not call back into the endpoint: handshake messages and data
//! under unknown SPIs are handed back to the caller, who passes them to
//! [`Endpoint::handle_handshake`] / [`Endpoint::handle_unknown_spi`] once
//! the run is over.

use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::trace;
use vxsec_crypto::sa::OpenCipher;

use super::core::Core;
use super::endpoint::Endpoint;
use super::jobs::{OpenJob, OpenedJob, SealStart};
use super::peers::PeerRun;
use super::{DropReason, Incoming, PeerId, SendError};
use crate::wire::outer::{parse_message, Message};

/// Reservations for the send phase, in one run (see the module doc).
pub struct SendRun<'r, 't> {
    run: &'r mut PeerRun<'t>,
}

impl SendRun<'_, '_> {
    /// [`Endpoint::reserve_seal`] within the run.
    pub fn reserve_seal(
        &mut self,
        now: Instant,
        peer: PeerId,
        buf: &[u8],
        payload_len: usize,
    ) -> Result<SealStart, SendError> {
        let core = self.run.core();
        let p = self.run.peer(peer).ok_or(SendError::UnknownPeer)?;
        Ok(match p.reserve(core, now, buf, payload_len)? {
            Some((job, cipher)) => SealStart::Reserved { job, cipher },
            None => SealStart::Queued,
        })
    }
}

/// What [`ReceiveRun::precheck`] made of a datagram.
#[derive(Debug)]
pub enum Prechecked {
    /// Open it, then commit it (in a later run is fine).
    Data {
        job: OpenJob,
        opener: Arc<OpenCipher>,
    },
    /// Not a data message: pass it to [`Endpoint::handle_handshake`] after
    /// the run.
    NotData,
}

/// The receive phases, in one run (see the module doc).
pub struct ReceiveRun<'r, 't> {
    run: &'r mut PeerRun<'t>,
}

impl ReceiveRun<'_, '_> {
    /// [`Endpoint::precheck_datagram`] for a data message within the run.
    /// A data message under an SPI we do not know is
    /// [`DropReason::UnknownSpi`] (counted): the caller may pass its source
    /// to [`Endpoint::handle_unknown_spi`] after the run.
    pub fn precheck(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<Prechecked, DropReason> {
        let spi = match parse_message(buf) {
            Ok(Message::Data(d)) => d.receiver_spi(),
            _ => return Ok(Prechecked::NotData),
        };
        let core = self.run.core();
        // Consecutive datagrams of one peer skip the shared SPI table.
        let owner = self.run.held_owner_of(spi).or_else(|| core.spis.owner(spi));
        let Some(p) = owner.and_then(|id| self.run.peer(id)) else {
            return Err(count(core, from, DropReason::UnknownSpi));
        };
        match p.precheck(now, from, spi, buf) {
            Ok((job, opener)) => Ok(Prechecked::Data { job, opener }),
            Err(reason) => {
                p.count_drop(reason);
                Err(count(core, from, reason))
            }
        }
    }

    /// [`Endpoint::commit_datagram`] within the run.
    pub fn commit(
        &mut self,
        now: Instant,
        job: OpenedJob,
        opener: &Arc<OpenCipher>,
    ) -> Result<Incoming, DropReason> {
        let core = self.run.core();
        let from = job.from;
        let Some(p) = self.run.peer(job.peer) else {
            return Err(count(core, from, DropReason::SaGone));
        };
        p.commit(core, now, job, opener).map_err(|reason| {
            p.count_drop(reason);
            count(core, from, reason)
        })
    }
}

/// Counts a drop endpoint-wide (the caller counts it for the peer).
fn count(core: &Core, from: SocketAddr, reason: DropReason) -> DropReason {
    core.stats.count_drop(reason);
    trace!(%from, %reason, "datagram dropped");
    reason
}

impl Endpoint {
    /// Runs `f` with a [`SendRun`]: reservations for many packets, each
    /// peer locked once per run of consecutive packets of that peer.
    pub fn send_run<R>(&self, f: impl FnOnce(&mut SendRun<'_, '_>) -> R) -> R {
        self.peer_run(|run| f(&mut SendRun { run }))
    }

    /// Runs `f` with a [`ReceiveRun`]: prechecks or commits for many
    /// datagrams, each peer locked once per run of consecutive datagrams
    /// of that peer.
    pub fn receive_run<R>(&self, f: impl FnOnce(&mut ReceiveRun<'_, '_>) -> R) -> R {
        self.peer_run(|run| f(&mut ReceiveRun { run }))
    }
}
