//! Handshake messages arriving at the endpoint: initiations (mac1, which
//! also says which of our static keys answers: the current one or, during a
//! rotation's grace, the previous one → mac2;
//! under load only: cookie required, per-source limit → Noise DH → known
//! peer → fresh timestamp → suite → collision rule → `next` SA + response),
//! responses (complete our pending initiation) and cookie replies (capped
//! globally and per source on the way out).
//!
//! Each message is read here and its result handed to the peer as a
//! [`HandshakeOutcome`], applied under the peer's lock; no peer field is
//! written here. The Diffie-Hellman of an initiation (which anyone may send)
//! runs with no lock held; the response's DH runs under the lock of the one
//! peer that proved itself, so it stalls only that peer. The load state is
//! taken only here, never with a peer's lock.
//!
//! It does not send initiations or manage SA slots (`peer.rs`), and keeps
//! no state of its own.

use core::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::RngCore;
use vxsec_crypto::cookie::{open_cookie_reply, COOKIE_NONCE_LEN, MAC_LEN};
use vxsec_crypto::noise::{ResponderHandshake, ResponsePayload, SessionSecrets, MAX_NOISE_LEN};
use vxsec_crypto::suite::Suite;

use super::core::{lock, Core};
use super::load::{update_load, LoadControl, LoadState};
use super::peer::{HandshakeOutcome, InitiationVerdict, PeerFixed};
use super::peers::Peers;
use super::sa_set::{Role, Sa};
use super::stats::{Counter, DropReason};
use super::{Incoming, PeerId};
use crate::wire::outer::{
    emit_cookie_reply, emit_response, mac_offsets, CookieReply, Initiation, Response,
};

/// A refused datagram and the peer it is attributed to, if any.
pub(crate) type Refusal = (Option<PeerId>, DropReason);

/// The DoS rules an initiation passes before any DH.
fn admit_initiation_load(
    core: &Core,
    load: &Mutex<LoadState>,
    now: Instant,
    from: SocketAddr,
    msg: &Initiation<'_>,
    to_previous: bool,
) -> Result<(), Refusal> {
    let mut guard = lock(load);
    let LoadState { control, rng } = &mut *guard;
    control.note_handshake(now);
    update_load(core, control, now);
    control.refresh_secret(now, rng);
    // mac2 is optional when not under load, but one that is present must
    // be right (so no bit of an initiation is unauthenticated). A wrong
    // one gets a fresh cookie: an initiator holding a cookie from before
    // our restart recovers at its next retry.
    let mac2_present = msg.mac2() != &[0u8; MAC_LEN];
    let mac2_ok = mac2_present && control.verify_mac2(&from, msg.mac2_input(), msg.mac2());
    if mac2_present && !mac2_ok {
        send_cookie_reply(core, control, rng, now, from, msg, to_previous);
        return Err((None, DropReason::Auth));
    }
    // Under load (WireGuard's rule): no DH without a proven source
    // address, and a proven address is rate-limited. Not under load,
    // nothing is: a per-source limit there would let anyone who spoofs
    // a peer's address drain that peer's bucket and lock it out.
    if control.under_load(now) {
        if !mac2_ok {
            send_cookie_reply(core, control, rng, now, from, msg, to_previous);
            return Err((None, DropReason::RateLimited));
        }
        if !control.allow_initiation(from.ip(), now) {
            return Err((None, DropReason::RateLimited));
        }
    }
    Ok(())
}

pub(crate) fn initiation(
    core: &Core,
    peers: &Peers,
    load: &Mutex<LoadState>,
    now: Instant,
    from: SocketAddr,
    msg: &Initiation<'_>,
) -> Result<Incoming, Refusal> {
    // The mac1 says which of our keys (current, or previous during a
    // rotation's grace) the initiator addressed; that one answers.
    let addressed = core
        .identities
        .addressed(msg.mac1_input(), msg.mac1())
        .ok_or((None, DropReason::Auth))?;
    admit_initiation_load(core, load, now, from, msg, addressed.is_previous)?;
    core.stats.count(Counter::InitiationsProcessed);
    // The DH with our static key: no lock held.
    let ss = addressed
        .previous_ss
        .clone()
        .unwrap_or_else(|| core.ss_snapshot());
    let ours = &addressed.identity;
    let (responder, key, payload) = ours
        .noise
        .read_initiation(msg.noise(), &ss)
        .map_err(|_| (None, DropReason::Auth))?;
    drop(ss);
    let id = peers.id(&key).ok_or((None, DropReason::UnknownPeer))?;
    let sender_spi = msg.sender_spi();
    peers
        .with_peer(core, id, true, |p, core| {
            let suite_ok = payload.suite_id == core.suite.wire_id();
            // An initiation to our previous key comes from a peer that
            // does not know the new one yet: an initiation of ours (made
            // with the new key) cannot succeed with it, so theirs wins.
            let ours_wins = !addressed.is_previous && ours.public_key() > &p.fixed().key;
            let verdict = p
                .admit_initiation(core, from, payload.timestamp, suite_ok, ours_wins)
                .map_err(|r| (Some(id), r))?;
            match verdict {
                InitiationVerdict::KeepOurs => {}
                InitiationVerdict::Mismatch => {
                    let ours = ResponsePayload::Mismatch {
                        theirs: core.suite.wire_id(),
                    };
                    let response =
                        write_response(p.fixed(), responder, ours, 0, sender_spi).map(|(m, _)| m);
                    let theirs = Suite::from_wire_id(payload.suite_id);
                    p.apply(core, now, HandshakeOutcome::Mismatch { theirs, response });
                }
                InitiationVerdict::Answer => {
                    let local_spi = p.allocate_spi(core);
                    let accepted = ResponsePayload::Accepted(core.suite);
                    let Some((response, secrets)) =
                        write_response(p.fixed(), responder, accepted, local_spi, sender_spi)
                    else {
                        core.spis.release(local_spi);
                        return Err((Some(id), DropReason::Auth));
                    };
                    let times = p.sa_times(core, now);
                    let sa = Sa::new(
                        Role::Responder,
                        local_spi,
                        sender_spi,
                        &secrets,
                        core.suite,
                        core.sa_limits,
                        times,
                    );
                    let by_current = !addressed.is_previous;
                    let outcome = HandshakeOutcome::Responded {
                        sa,
                        response,
                        by_current,
                    };
                    p.apply(core, now, outcome);
                }
            }
            Ok(Incoming::Handshake { peer: Some(id) })
        })
        .unwrap_or(Err((None, DropReason::UnknownPeer)))
}

pub(crate) fn response(
    core: &Core,
    peers: &Peers,
    now: Instant,
    from: SocketAddr,
    msg: &Response<'_>,
) -> Result<Incoming, Refusal> {
    let spi = msg.receiver_spi();
    let id = core.spis.owner(spi).ok_or((None, DropReason::UnknownSpi))?;
    // An initiation of ours sent before a rotation is answered to the
    // key it came from: the previous one is accepted during the grace.
    let core_mac1_ok = core
        .identities
        .addressed(msg.mac1_input(), msg.mac1())
        .is_some();
    peers
        .with_peer(core, id, true, |p, core| {
            let hs = p
                .pending_handshake(spi)
                .ok_or((Some(id), DropReason::UnknownSpi))?;
            if !core_mac1_ok {
                return Err((Some(id), DropReason::Auth));
            }
            // vxsec v1 responses carry no cookie: mac2 must be zero.
            if msg.mac2() != &[0u8; MAC_LEN] {
                return Err((Some(id), DropReason::Malformed));
            }
            let (payload, secrets) = hs
                .read_response(msg.noise())
                .map_err(|_| (Some(id), DropReason::Auth))?;
            p.roam(core, from);
            let outcome = match payload {
                ResponsePayload::Accepted(s) if s == core.suite => {
                    let times = p.sa_times(core, now);
                    let sa = Sa::new(
                        Role::Initiator,
                        spi,
                        msg.sender_spi(),
                        &secrets,
                        core.suite,
                        core.sa_limits,
                        times,
                    );
                    HandshakeOutcome::Completed { sa }
                }
                ResponsePayload::Accepted(other) => {
                    let theirs = Some(other);
                    p.apply(
                        core,
                        now,
                        HandshakeOutcome::Mismatch {
                            theirs,
                            response: None,
                        },
                    );
                    return Err((Some(id), DropReason::Policy));
                }
                ResponsePayload::Mismatch { theirs } => HandshakeOutcome::Mismatch {
                    theirs: Suite::from_wire_id(theirs),
                    response: None,
                },
            };
            p.apply(core, now, outcome);
            Ok(Incoming::Handshake { peer: Some(id) })
        })
        .unwrap_or(Err((None, DropReason::UnknownSpi)))
}

pub(crate) fn cookie_reply(
    core: &Core,
    peers: &Peers,
    now: Instant,
    msg: &CookieReply<'_>,
) -> Result<Incoming, Refusal> {
    let spi = msg.receiver_spi();
    let id = core.spis.owner(spi).ok_or((None, DropReason::UnknownSpi))?;
    peers
        .with_peer(core, id, true, |p, core| {
            let mac1 = p
                .pending_mac1(spi)
                .ok_or((Some(id), DropReason::UnknownSpi))?;
            let cookie =
                open_cookie_reply(&p.fixed().key, &mac1, msg.nonce(), msg.encrypted_cookie())
                    .map_err(|_| (Some(id), DropReason::Auth))?;
            p.apply(core, now, HandshakeOutcome::Cookie(cookie));
            Ok(Incoming::Handshake { peer: Some(id) })
        })
        .unwrap_or(Err((None, DropReason::UnknownSpi)))
}

/// Writes a response to `peer` (with mac1); returns it and the session
/// secrets.
fn write_response(
    peer: &PeerFixed,
    responder: ResponderHandshake,
    payload: ResponsePayload,
    local_spi: u32,
    remote_spi: u32,
) -> Option<(Vec<u8>, SessionSecrets)> {
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
    Some((msg, secrets))
}

/// Queues a cookie reply to `to` for initiation `msg` if the caps allow it
/// (global and per source; a configured peer's endpoint is exempt); counts
/// it either way. It is sealed under the key `msg` addressed
/// (`to_previous`: our previous one), the key the initiator opens it with.
fn send_cookie_reply(
    core: &Core,
    control: &mut LoadControl,
    rng: &mut StdRng,
    now: Instant,
    to: SocketAddr,
    msg: &Initiation<'_>,
    to_previous: bool,
) {
    let (receiver_spi, mac1) = (msg.sender_spi(), msg.mac1());
    let peer_endpoint = core.addresses.is_peer_ip(to.ip());
    if !control.allow_cookie_reply(to.ip(), now, peer_endpoint) {
        core.stats.count(Counter::CookieRepliesDropped);
        return;
    }
    let mut nonce = [0u8; COOKIE_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let enc = control.seal_cookie(to_previous, &to, mac1, &nonce);
    let mut msg = vec![0u8; 64];
    if let Ok(len) = emit_cookie_reply(&mut msg, receiver_spi, &nonce, &enc) {
        msg.truncate(len);
        core.stats.count(Counter::CookieRepliesSent);
        core.push(to, msg, None);
    }
}

#[cfg(test)]
mod dos_tests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::testing::{pair, pass, receive, seal, A, B};
    use super::*;

    #[test]
    fn mac1_is_checked_before_any_dh() {
        let (a, b, ab, _, now) = pair();
        let mut buf = [0u8; 48];
        seal(&a, now, ab, &mut buf, 16).unwrap();
        let mut out = [0u8; 2048];
        let t = a.poll_transmit(now, &mut out).unwrap();
        let mut m = out[..t.len].to_vec();
        let (m1, _) = mac_offsets(m.len());
        m[m1] ^= 1;
        let r = receive(&b, now, A.parse().unwrap(), &mut m);
        assert_eq!(r, Err(DropReason::Auth));
        assert_eq!(b.stats().initiations_processed, 0, "no DH for a bad mac1");
    }

    #[test]
    fn collision_keeps_the_larger_keys_initiation() {
        let (a, b, ab, ba, now) = pair();
        a.rekey(now, Some(ab));
        b.rekey(now, Some(ba));
        let mut out = [0u8; 2048];
        let t = a.poll_transmit(now, &mut out).unwrap();
        let mut ia = out[..t.len].to_vec();
        let t = b.poll_transmit(now, &mut out).unwrap();
        let mut ib = out[..t.len].to_vec();
        // The two initiations cross on the wire.
        assert!(receive(&b, now, A.parse().unwrap(), &mut ia).is_ok());
        assert!(a.handle_handshake(now, B.parse().unwrap(), &mut ib).is_ok());
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
        let (larger, smaller, s_addr) = if a.public_key() > b.public_key() {
            (a, b, B)
        } else {
            (b, a, A)
        };
        let r = pass(&smaller, s_addr, &larger, now);
        assert_eq!(r.len(), 1);
        assert!(larger.peers().next().unwrap().established);
    }
}
