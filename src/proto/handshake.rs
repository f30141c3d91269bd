//! Handshake messages arriving at the endpoint: initiations (mac1 → mac2;
//! under load only: cookie required, per-source limit → Noise DH → known
//! peer → fresh timestamp → suite → collision rule → `next` SA + response),
//! responses (complete our pending initiation) and cookie replies (capped
//! globally and per source on the way out).
//!
//! It does not send initiations or manage SA slots (`peer.rs`), and keeps
//! no state of its own.

use core::net::SocketAddr;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use rand::RngCore;
use tracing::{debug, warn};
use vxsec_crypto::cookie::{open_cookie_reply, COOKIE_NONCE_LEN, MAC_LEN};
use vxsec_crypto::key::PublicKey;
use vxsec_crypto::noise::{ResponderHandshake, ResponsePayload, MAX_NOISE_LEN};
use vxsec_crypto::suite::Suite;

use super::endpoint::Core;
use super::peer::Peer;
use super::sa::{Role, Sa};
use super::stats::DropReason;
use super::{Event, Incoming, PeerId};
use crate::wire::outer::{
    emit_cookie_reply, emit_response, mac_offsets, CookieReply, Initiation, Response,
};

/// A refused datagram and the peer it is attributed to, if any.
pub(crate) type Refusal = (Option<PeerId>, DropReason);

pub(crate) fn handle_initiation(
    core: &mut Core,
    peers: &mut BTreeMap<PeerId, Peer>,
    by_key: &HashMap<PublicKey, PeerId>,
    now: Instant,
    from: SocketAddr,
    msg: &Initiation<'_>,
) -> Result<Incoming, Refusal> {
    if !core.load.checker.verify_mac1(msg.mac1_input(), msg.mac1()) {
        return Err((None, DropReason::Auth));
    }
    core.load.note_handshake(now);
    core.update_load(now);
    core.load.refresh_secret(now, &mut core.rng);
    // mac2 is optional when not under load, but one that is present must be
    // right (so no bit of an initiation is unauthenticated). A wrong one
    // gets a fresh cookie: an initiator holding a cookie from before our
    // restart recovers at its next retry.
    let mac2_present = msg.mac2() != &[0u8; MAC_LEN];
    let mac2_ok = mac2_present
        && core
            .load
            .checker
            .verify_mac2(&from, msg.mac2_input(), msg.mac2());
    if mac2_present && !mac2_ok {
        send_cookie_reply(core, peers, now, from, msg.sender_spi(), msg.mac1());
        return Err((None, DropReason::Auth));
    }
    // Under load (WireGuard's rule): no DH without a proven source address,
    // and a proven address is rate-limited. Not under load, nothing is:
    // a per-source limit there would let anyone who spoofs a peer's address
    // drain that peer's bucket and lock it out.
    if core.load.under_load(now) {
        if !mac2_ok {
            send_cookie_reply(core, peers, now, from, msg.sender_spi(), msg.mac1());
            return Err((None, DropReason::RateLimited));
        }
        if !core.load.allow_initiation(from.ip(), now) {
            return Err((None, DropReason::RateLimited));
        }
    }
    core.stats.initiations_processed += 1;
    let (responder, key, payload) = core
        .identity
        .read_initiation(msg.noise(), &core.ss_table)
        .map_err(|_| (None, DropReason::Auth))?;
    let id = by_key
        .get(&key)
        .copied()
        .ok_or((None, DropReason::UnknownPeer))?;
    let peer = peers.get_mut(&id).ok_or((None, DropReason::UnknownPeer))?;
    let span = peer.span.clone();
    let _g = span.enter();
    if peer.last_initiation.is_some_and(|t| payload.timestamp <= t) {
        debug!("initiation with a stale timestamp refused");
        return Err((Some(id), DropReason::StaleInitiation));
    }
    peer.last_initiation = Some(payload.timestamp);
    peer.roam(core, from);
    let sender_spi = msg.sender_spi();

    if payload.suite_id != core.suite.wire_id() {
        let theirs = Suite::from_wire_id(payload.suite_id);
        let ours = core.suite;
        report_mismatch(core, peer, now, theirs);
        send_response(
            core,
            peer,
            responder,
            ResponsePayload::Mismatch {
                theirs: ours.wire_id(),
            },
            0,
            sender_spi,
        );
        return Ok(Incoming::Handshake { peer: Some(id) });
    }

    if peer.pending.is_some() {
        // Simultaneous initiations: the larger static key keeps its own,
        // the smaller abandons its own and answers. Deterministic, and each
        // side keeps sealing on its current SA meanwhile.
        peer.stats.collisions += 1;
        if core.identity.public_key() > &peer.key {
            debug!("handshake collision: keeping our initiation");
            return Ok(Incoming::Handshake { peer: Some(id) });
        }
        debug!("handshake collision: answering theirs");
        if let Some(p) = peer.pending.take() {
            core.spis.release(p.local_spi);
        }
    }

    let local_spi = core.spis.allocate(id, &mut core.rng);
    let Some(secrets) = send_response(
        core,
        peer,
        responder,
        ResponsePayload::Accepted(core.suite),
        local_spi,
        sender_spi,
    ) else {
        core.spis.release(local_spi);
        return Err((Some(id), DropReason::Auth));
    };
    let times = core.sa_times(now);
    let sa = Sa::new(
        Role::Responder,
        local_spi,
        sender_spi,
        &secrets,
        core.suite,
        core.sa_limits,
        times,
    );
    // Make before break: RX-ready before the response leaves.
    peer.sas.install_next(sa, &mut core.spis);
    debug!(
        local_spi,
        remote_spi = sender_spi,
        "responded; next SA installed"
    );
    Ok(Incoming::Handshake { peer: Some(id) })
}

/// Writes and queues a response; returns the session secrets.
fn send_response(
    core: &mut Core,
    peer: &Peer,
    responder: ResponderHandshake,
    payload: ResponsePayload,
    local_spi: u32,
    remote_spi: u32,
) -> Option<vxsec_crypto::noise::SessionSecrets> {
    let dst = peer.endpoint?;
    let mut noise = [0u8; MAX_NOISE_LEN];
    let (n, secrets) = responder
        .write_response(peer.psk.as_ref(), payload, &mut noise)
        .ok()?;
    let mut msg = vec![0u8; MAX_NOISE_LEN + 64];
    let len = emit_response(&mut msg, local_spi, remote_spi, noise.get(..n)?).ok()?;
    msg.truncate(len);
    let (m1, m2) = mac_offsets(len);
    let mac1 = peer.mac1_to_peer.compute(msg.get(..m1)?);
    msg.get_mut(m1..m2)?.copy_from_slice(&mac1);
    core.push(dst, msg, None);
    Some(secrets)
}

fn report_mismatch(core: &mut Core, peer: &mut Peer, now: Instant, theirs: Option<Suite>) {
    let already = peer.mismatch_until.is_some_and(|t| now < t);
    peer.pause_after_mismatch(core, now);
    if !already {
        warn!(
            ours = core.suite.name(),
            theirs = theirs.map_or("unknown", Suite::name),
            "suite mismatch: no SA with this peer until one side changes its suite"
        );
        core.event(Event::SuiteMismatch {
            peer: peer.id,
            ours: core.suite,
            theirs,
        });
    }
}

/// Queues a cookie reply to `to` if the caps allow it (global and per
/// source; a configured peer's endpoint is exempt); counts it either way.
fn send_cookie_reply(
    core: &mut Core,
    peers: &BTreeMap<PeerId, Peer>,
    now: Instant,
    to: SocketAddr,
    receiver_spi: u32,
    mac1: &[u8; MAC_LEN],
) {
    let peer_endpoint = core.is_peer_endpoint(peers, to.ip(), now);
    if !core.load.allow_cookie_reply(to.ip(), now, peer_endpoint) {
        core.stats.cookie_replies_dropped += 1;
        return;
    }
    let mut nonce = [0u8; COOKIE_NONCE_LEN];
    core.rng.fill_bytes(&mut nonce);
    let enc = core.load.checker.seal_cookie(&to, mac1, &nonce);
    let mut msg = vec![0u8; 64];
    if let Ok(len) = emit_cookie_reply(&mut msg, receiver_spi, &nonce, &enc) {
        msg.truncate(len);
        core.stats.cookie_replies_sent += 1;
        core.push(to, msg, None);
    }
}

/// The pending initiation of the peer owning local SPI `spi`.
fn pending_owner<'p>(
    core: &Core,
    peers: &'p mut BTreeMap<PeerId, Peer>,
    spi: u32,
) -> Result<&'p mut Peer, Refusal> {
    let id = core.spis.owner(spi).ok_or((None, DropReason::UnknownSpi))?;
    let peer = peers.get_mut(&id).ok_or((None, DropReason::UnknownSpi))?;
    if peer.pending.as_ref().is_some_and(|p| p.local_spi == spi) {
        Ok(peer)
    } else {
        Err((Some(id), DropReason::UnknownSpi))
    }
}

pub(crate) fn handle_response(
    core: &mut Core,
    peers: &mut BTreeMap<PeerId, Peer>,
    now: Instant,
    from: SocketAddr,
    msg: &Response<'_>,
) -> Result<Incoming, Refusal> {
    let spi = msg.receiver_spi();
    let peer = pending_owner(core, peers, spi)?;
    let id = peer.id;
    let span = peer.span.clone();
    let _g = span.enter();
    if !core.load.checker.verify_mac1(msg.mac1_input(), msg.mac1()) {
        return Err((Some(id), DropReason::Auth));
    }
    // vxsec v1 responses carry no cookie: mac2 must be zero.
    if msg.mac2() != &[0u8; MAC_LEN] {
        return Err((Some(id), DropReason::Malformed));
    }
    let hs = peer
        .pending
        .as_mut()
        .and_then(|p| p.hs.as_mut())
        .ok_or((Some(id), DropReason::UnknownSpi))?;
    let (payload, secrets) = hs
        .read_response(msg.noise())
        .map_err(|_| (Some(id), DropReason::Auth))?;
    peer.roam(core, from);
    match payload {
        ResponsePayload::Accepted(s) if s == core.suite => {
            let times = core.sa_times(now);
            let sa = Sa::new(
                Role::Initiator,
                spi,
                msg.sender_spi(),
                &secrets,
                core.suite,
                core.sa_limits,
                times,
            );
            peer.complete_as_initiator(core, now, sa);
            Ok(Incoming::Handshake { peer: Some(id) })
        }
        ResponsePayload::Accepted(other) => {
            report_mismatch(core, peer, now, Some(other));
            Err((Some(id), DropReason::Policy))
        }
        ResponsePayload::Mismatch { theirs } => {
            report_mismatch(core, peer, now, Suite::from_wire_id(theirs));
            Ok(Incoming::Handshake { peer: Some(id) })
        }
    }
}

pub(crate) fn handle_cookie_reply(
    core: &mut Core,
    peers: &mut BTreeMap<PeerId, Peer>,
    now: Instant,
    msg: &CookieReply<'_>,
) -> Result<Incoming, Refusal> {
    let peer = pending_owner(core, peers, msg.receiver_spi())?;
    let id = peer.id;
    let mac1 = peer
        .pending
        .as_ref()
        .map(|p| p.mac1)
        .unwrap_or([0; MAC_LEN]);
    let cookie = open_cookie_reply(&peer.key, &mac1, msg.nonce(), msg.encrypted_cookie())
        .map_err(|_| (Some(id), DropReason::Auth))?;
    peer.cookie = Some((cookie, now));
    peer.stats.cookies_received += 1;
    core.stats.cookies_received += 1;
    // Retry now, with mac2, rather than after the retry delay: a rekey
    // under load then takes one extra round trip, not a second or more.
    // At most one retry per initiation sent: the retry has a new mac1, so
    // a second reply to the old one no longer opens.
    if let Some(p) = peer.pending.as_mut() {
        p.retry_at = p.retry_at.min(now);
    }
    debug!(parent: &peer.span, "cookie received; retrying with mac2");
    Ok(Incoming::Handshake { peer: Some(id) })
}

#[cfg(test)]
mod dos_tests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::endpoint::tests::{pair, pass, A};
    use super::*;

    #[test]
    fn mac1_is_checked_before_any_dh() {
        let (mut a, mut b, ab, _, now) = pair();
        let mut buf = [0u8; 48];
        a.seal(now, ab, &mut buf, 16).unwrap();
        let mut out = [0u8; 2048];
        let t = a.poll_transmit(now, &mut out).unwrap();
        let mut m = out[..t.len].to_vec();
        let (m1, _) = mac_offsets(m.len());
        m[m1] ^= 1;
        let r = b.handle_datagram(now, A.parse().unwrap(), &mut m);
        assert_eq!(r, Err(DropReason::Auth));
        assert_eq!(b.stats().initiations_processed, 0, "no DH for a bad mac1");
    }

    #[test]
    fn collision_keeps_the_larger_keys_initiation() {
        let (mut a, mut b, ab, ba, now) = pair();
        a.rekey(now, Some(ab));
        b.rekey(now, Some(ba));
        let mut out = [0u8; 2048];
        let t = a.poll_transmit(now, &mut out).unwrap();
        let mut ia = out[..t.len].to_vec();
        let t = b.poll_transmit(now, &mut out).unwrap();
        let mut ib = out[..t.len].to_vec();
        // The two initiations cross on the wire.
        assert!(b.handle_datagram(now, A.parse().unwrap(), &mut ia).is_ok());
        assert!(a
            .handle_datagram(
                now,
                super::super::endpoint::tests::B.parse().unwrap(),
                &mut ib
            )
            .is_ok());
        // Exactly one side answered: the one with the smaller key.
        let (larger, smaller) = if a.public_key() > b.public_key() {
            (&a, &b)
        } else {
            (&b, &a)
        };
        let l = larger.peers().next().unwrap();
        let s = smaller.peers().next().unwrap();
        assert!(l.handshake_pending && l.next.is_none());
        assert!(!s.handshake_pending && s.next.is_some());
        assert_eq!((l.stats.collisions, s.stats.collisions), (1, 1));
        // The smaller side's response completes the larger side's handshake.
        let (mut larger, mut smaller, s_addr) = if a.public_key() > b.public_key() {
            (a, b, super::super::endpoint::tests::B)
        } else {
            (b, a, A)
        };
        let r = pass(&mut smaller, s_addr, &mut larger, now);
        assert_eq!(r.len(), 1);
        assert!(larger.peers().next().unwrap().established);
    }
}
