//! Test helpers for the protocol core's unit tests (and the dataplane's):
//! two endpoints configured with each other, and the production phases
//! chained for one message (`reserve_seal` → `SealJob::seal`;
//! `precheck_datagram` → `OpenJob::open` → `commit_datagram`).
//!
//! Test-only: compiled under `cfg(test)`, never part of the product.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use core::net::SocketAddr;
use core::time::Duration;
use std::time::Instant;

use vxsec_crypto::key::PrivateKey;

use super::{
    DropReason, Endpoint, EndpointConfig, Incoming, PeerConfig, PeerId, Received, SealOutcome,
    SealStart, SendError,
};

pub(crate) const A: &str = "192.0.2.1:1";
pub(crate) const B: &str = "192.0.2.2:1";

/// Two endpoints configured with each other: (a, b, a's id for b, b's id for a, now).
pub(crate) fn pair() -> (Endpoint, Endpoint, PeerId, PeerId, Instant) {
    let now = Instant::now();
    let unix = Duration::from_secs(1_700_000_000);
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let a = Endpoint::try_new(EndpointConfig::new(ka, "t"), now, unix).unwrap();
    let b = Endpoint::try_new(EndpointConfig::new(kb, "t"), now, unix).unwrap();
    let ab = a
        .add_peer(now, PeerConfig::new(pb, Some(B.parse().unwrap())))
        .unwrap();
    let ba = b
        .add_peer(now, PeerConfig::new(pa, Some(A.parse().unwrap())))
        .unwrap();
    (a, b, ab, ba, now)
}

/// One received datagram through the receive phases, back to back.
pub(crate) fn receive(
    y: &Endpoint,
    now: Instant,
    from: SocketAddr,
    buf: &mut [u8],
) -> Result<Incoming, DropReason> {
    match y.precheck_datagram(now, from, buf)? {
        Received::Data { job, opener } => {
            let opened = job.open(&opener, buf);
            y.commit_datagram(now, opened, &opener)
        }
        Received::Done(incoming) => Ok(incoming),
    }
}

/// Seals `buf[16..16 + len]` for `peer` through the send phases.
pub(crate) fn seal(
    x: &Endpoint,
    now: Instant,
    peer: PeerId,
    buf: &mut [u8],
    len: usize,
) -> Result<SealOutcome, SendError> {
    match x.reserve_seal(now, peer, buf, len)? {
        SealStart::Reserved { job, cipher } => job.seal(&cipher, buf),
        SealStart::Queued => Ok(SealOutcome::Queued),
    }
}

/// Moves everything queued from `x` (at `x_addr`) into `y`; returns the results.
pub(crate) fn pass(
    x: &Endpoint,
    x_addr: &str,
    y: &Endpoint,
    now: Instant,
) -> Vec<(Result<Incoming, DropReason>, Vec<u8>)> {
    let mut out = vec![0u8; 2048];
    let mut v = Vec::new();
    while let Some(t) = x.poll_transmit(now, &mut out) {
        let mut m = out[..t.len].to_vec();
        let r = receive(y, now, x_addr.parse().unwrap(), &mut m);
        v.push((r, m));
    }
    v
}

/// `pair()` with a completed handshake a → b (b has seen data under
/// the new SA, so both sides are established).
pub(crate) fn established() -> (Endpoint, Endpoint, PeerId, PeerId, Instant) {
    let (a, b, ab, ba, now) = pair();
    a.rekey(now, Some(ab));
    for _ in 0..3 {
        pass(&a, A, &b, now);
        pass(&b, B, &a, now);
    }
    assert!(b.peer_status(ba).unwrap().established);
    (a, b, ab, ba, now)
}
