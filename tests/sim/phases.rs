//! One datagram at a time through the endpoint's two-phase data path, the
//! path the agent runs (reserve → seal; precheck → open → commit), back to
//! back. Shared by the simulations, the `endpoint` fuzz targets and the
//! handshake bench (`#[path]` includes): the product has no one-shot API.

use std::net::SocketAddr;
use std::time::Instant;

use vxsec::proto::{
    DropReason, Endpoint, Incoming, PeerId, Received, SealOutcome, SealStart, SendError,
};

/// One datagram through the receive phases (handshake messages are
/// handled in the first).
pub fn receive(
    ep: &Endpoint,
    now: Instant,
    from: SocketAddr,
    buf: &mut [u8],
) -> Result<Incoming, DropReason> {
    match ep.precheck_datagram(now, from, buf)? {
        Received::Data { job, opener } => {
            let opened = job.open(&opener, buf);
            ep.commit_datagram(now, opened, &opener)
        }
        Received::Done(incoming) => Ok(incoming),
    }
}

/// Seals `buf[16..16 + len]` for `peer` through the send phases.
pub fn seal(
    ep: &Endpoint,
    now: Instant,
    peer: PeerId,
    buf: &mut [u8],
    len: usize,
) -> Result<SealOutcome, SendError> {
    match ep.reserve_seal(now, peer, buf, len)? {
        SealStart::Reserved { job, cipher } => job.seal(&cipher, buf),
        SealStart::Queued => Ok(SealOutcome::Queued),
    }
}
