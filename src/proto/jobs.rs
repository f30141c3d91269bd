//! The jobs of the data path: what [`Endpoint::reserve_seal`] and
//! [`Endpoint::precheck_datagram`] hand out so the AEAD runs with no lock
//! held (not the endpoint's, not the peer's), and what
//! [`Endpoint::commit_datagram`] takes back. This is the only data path:
//! the agent, the simulations and the fuzz targets all drive it.
//!
//! Every piece of peer bookkeeping (counters, liveness, rekey triggers,
//! promotion of `next`, roaming, drop counting) stays in the endpoint's
//! phases, under the peer's lock; the jobs here only carry a ticket and
//! run the cipher. They do not look at the clock or any other peer state.
//!
//! [`Endpoint::reserve_seal`]: super::Endpoint::reserve_seal
//! [`Endpoint::precheck_datagram`]: super::Endpoint::precheck_datagram
//! [`Endpoint::commit_datagram`]: super::Endpoint::commit_datagram

use core::net::SocketAddr;
use std::sync::Arc;

use vxsec_crypto::sa::{OpenCipher, OpenTicket, Opened, SealCipher, SealError, SealTicket};

use super::{Incoming, PeerId, SealOutcome, SealRecord, SendError};

/// A data message to seal: a counter reserved on a peer's current SA, where
/// to send the result and the record of key and counter. Sealing consumes
/// it, so its counter seals at most one message.
#[must_use = "a reserved counter is burnt unless it is sealed"]
#[derive(Debug)]
pub struct SealJob {
    ticket: SealTicket,
    dst: SocketAddr,
    record: SealRecord,
}

impl SealJob {
    pub(crate) fn new(ticket: SealTicket, dst: SocketAddr, record: SealRecord) -> Self {
        SealJob {
            ticket,
            dst,
            record,
        }
    }

    /// Where the sealed message goes.
    pub fn dst(&self) -> SocketAddr {
        self.dst
    }

    /// Key fingerprint and counter of the message.
    pub fn record(&self) -> SealRecord {
        self.record
    }

    /// Seals `buf[16..16 + payload_len]` in place with `cipher`, which must
    /// be the one [`Endpoint::reserve_seal`](super::Endpoint::reserve_seal)
    /// returned with this job (another key is refused with
    /// [`SendError::KeyMismatch`]). Needs no endpoint: run it on any thread.
    pub fn seal(self, cipher: &SealCipher, buf: &mut [u8]) -> Result<SealOutcome, SendError> {
        let sealed = cipher.seal(self.ticket, buf).map_err(|e| match e {
            SealError::BufferTooSmall => SendError::BufferTooSmall,
            SealError::WrongKey | SealError::Exhausted => SendError::KeyMismatch,
        })?;
        Ok(SealOutcome::Sealed {
            len: sealed.len,
            dst: self.dst,
            record: self.record,
        })
    }
}

/// Result of [`Endpoint::reserve_seal`](super::Endpoint::reserve_seal).
#[derive(Debug)]
pub enum SealStart {
    /// Seal with [`SealJob::seal`] and this cipher.
    Reserved {
        job: SealJob,
        cipher: Arc<SealCipher>,
    },
    /// No usable SA: a copy was queued and a handshake is under way.
    Queued,
}

/// A data message that passed its SA's prechecks: open it with
/// [`OpenJob::open`], then hand the result to
/// [`Endpoint::commit_datagram`](super::Endpoint::commit_datagram).
#[must_use = "the message counts only once opened and committed"]
#[derive(Debug)]
pub struct OpenJob {
    ticket: OpenTicket,
    peer: PeerId,
    spi: u32,
    from: SocketAddr,
}

impl OpenJob {
    pub(crate) fn new(ticket: OpenTicket, peer: PeerId, spi: u32, from: SocketAddr) -> Self {
        OpenJob {
            ticket,
            peer,
            spi,
            from,
        }
    }

    /// The peer whose SA the message is for.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Authenticates and decrypts `buf` (the whole data message) in place
    /// with `opener`, the cipher [`Received::Data`] came with. Needs no
    /// endpoint: run it on any thread.
    pub fn open(self, opener: &OpenCipher, buf: &mut [u8]) -> OpenedJob {
        OpenedJob {
            result: opener.open(self.ticket, buf),
            peer: self.peer,
            spi: self.spi,
            from: self.from,
        }
    }
}

/// An [`OpenJob`] after the AEAD: authenticated or not, not yet accepted.
#[must_use = "the message counts only once committed"]
#[derive(Debug)]
pub struct OpenedJob {
    pub(crate) result: Opened,
    pub(crate) peer: PeerId,
    pub(crate) spi: u32,
    pub(crate) from: SocketAddr,
}

impl OpenedJob {
    /// The peer whose SA the message is for.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Whether the message authenticated (it may still be refused at
    /// commit, as a replay or because its SA is gone; a forgery may still
    /// be counted as a replay if its counter was committed meanwhile).
    pub fn authenticated(&self) -> bool {
        self.result.is_authentic()
    }
}

/// Result of [`Endpoint::precheck_datagram`](super::Endpoint::precheck_datagram).
#[derive(Debug)]
pub enum Received {
    /// A data message for an SA of ours that passed its prechecks.
    Data {
        job: OpenJob,
        opener: Arc<OpenCipher>,
    },
    /// Not a data message: handled in full (as by
    /// [`Endpoint::handle_handshake`](super::Endpoint::handle_handshake)).
    Done(Incoming),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
    use super::super::testing::{established, pair, pass, receive, seal, A, B};
    use super::super::{DropReason, Endpoint, Event, PeerStats};
    use super::*;
    use crate::wire::outer::MSG_DATA;
    use std::time::{Duration, Instant};

    /// Prechecked data messages of a batch, by index, waiting to be opened.
    type Run = Vec<(usize, Result<(OpenJob, Arc<OpenCipher>), DropReason>)>;

    /// A batch of received datagrams, each with its result.
    type Results = Vec<(Result<Incoming, DropReason>, Vec<u8>)>;

    /// Delivers a batch through the two-phase receive, as the pipeline
    /// does: data messages are prechecked in a run, then all opened, then
    /// all committed in order; a non-data message ends the run first.
    fn deliver_split(y: &Endpoint, from: SocketAddr, now: Instant, batch: Vec<Vec<u8>>) -> Results {
        let mut results = Vec::new();
        let mut run: Run = Vec::new();
        let mut bufs = batch;
        let flush =
            |y: &Endpoint, run: &mut Run, bufs: &mut Vec<Vec<u8>>, results: &mut Results| {
                let opened: Vec<_> = run
                    .drain(..)
                    .map(|(i, r)| (i, r.map(|(job, o)| (job.open(&o, &mut bufs[i]), o))))
                    .collect();
                for (i, r) in opened {
                    let r = r.and_then(|(job, o)| y.commit_datagram(now, job, &o));
                    results.push((r, bufs[i].clone()));
                }
            };
        for i in 0..bufs.len() {
            if bufs[i].first() != Some(&MSG_DATA) {
                flush(y, &mut run, &mut bufs, &mut results);
            }
            match y.precheck_datagram(now, from, &mut bufs[i]) {
                Ok(Received::Data { job, opener }) => run.push((i, Ok((job, opener)))),
                Ok(Received::Done(inc)) => results.push((Ok(inc), bufs[i].clone())),
                Err(r) => run.push((i, Err(r))),
            }
        }
        flush(y, &mut run, &mut bufs, &mut results);
        results
    }

    /// Seals through the two-phase API.
    fn seal_split(
        x: &Endpoint,
        now: Instant,
        peer: PeerId,
        buf: &mut [u8],
        len: usize,
    ) -> SealOutcome {
        // Reserve a whole batch's worth first would be the same: the job
        // carries everything the seal needs.
        match x.reserve_seal(now, peer, buf, len).unwrap() {
            SealStart::Reserved { job, cipher } => job.seal(&cipher, buf).unwrap(),
            SealStart::Queued => SealOutcome::Queued,
        }
    }

    #[derive(Debug, PartialEq)]
    struct Observed {
        stats: Vec<PeerStats>,
        drops: (u64, u64, u64, u64),
        events: Vec<&'static str>,
        results: Vec<Result<&'static str, DropReason>>,
    }

    fn kind(e: &Event) -> &'static str {
        match e {
            Event::HandshakeComplete { .. } => "complete",
            Event::Rekeyed { .. } => "rekeyed",
            Event::SuiteMismatch { .. } => "mismatch",
            Event::PeerUnreachable { .. } => "unreachable",
            Event::Roamed { .. } => "roamed",
            Event::LoadProtection { .. } => "load",
        }
    }

    /// Handshake, data both ways, a rekey, duplicated and tampered data:
    /// everything observable, with each message taken through the phases
    /// on its own (`split == false`) or in batches whose data messages are
    /// all prechecked, then all opened, then all committed (`true`).
    fn scenario(split: bool) -> Observed {
        let (a, b, ab, ba, now) = pair();
        let deliver = |x: &Endpoint, xa: &str, y: &Endpoint, t: Instant, dup: bool| -> Results {
            let from: SocketAddr = xa.parse().unwrap();
            let mut out = vec![0u8; 2048];
            let mut batch = Vec::new();
            while let Some(tr) = x.poll_transmit(t, &mut out) {
                if dup && out[0] == MSG_DATA {
                    // A forgery before the original, a duplicate after it.
                    let mut bad = out[..tr.len].to_vec();
                    *bad.last_mut().unwrap() ^= 1;
                    batch.push(bad);
                    batch.push(out[..tr.len].to_vec());
                }
                batch.push(out[..tr.len].to_vec());
            }
            if split {
                deliver_split(y, from, t, batch)
            } else {
                batch
                    .into_iter()
                    .map(|mut m| (receive(y, t, from, &mut m), m))
                    .collect()
            }
        };
        let seal_n = |x: &Endpoint, t: Instant, peer: PeerId, n: u8| {
            let mut buf = [0u8; 16 + 8 + 16];
            buf[16..24].fill(n);
            if split {
                seal_split(x, t, peer, &mut buf, 8)
            } else {
                seal(x, t, peer, &mut buf, 8).unwrap()
            }
        };
        let mut results = Vec::new();
        let mut log = |r: Results| {
            for (r, _) in r {
                results.push(r.map(|i| match i {
                    Incoming::Data { .. } => "data",
                    Incoming::Keepalive { .. } => "keepalive",
                    Incoming::Handshake { .. } => "handshake",
                }));
            }
        };
        assert_eq!(seal_n(&a, now, ab, 1), SealOutcome::Queued);
        for _ in 0..3 {
            log(deliver(&a, A, &b, now, false));
            log(deliver(&b, B, &a, now, false));
        }
        // Data both ways, in batches with duplicates and forgeries.
        let t1 = now + Duration::from_secs(1);
        let mut inflight = Vec::new();
        for n in 0..4 {
            let SealOutcome::Sealed { len, .. } = seal_n(&b, t1, ba, n) else {
                panic!()
            };
            inflight.push(len);
        }
        // Sealed messages went to the caller's buffer, not the queue: send
        // them through the queue path of `a` instead (a → b).
        for n in 0..4 {
            let mut buf = [0u8; 16 + 8 + 16];
            buf[16..24].fill(n);
            let SealOutcome::Sealed { len, dst, record } = (if split {
                seal_split(&a, t1, ab, &mut buf, 8)
            } else {
                seal(&a, t1, ab, &mut buf, 8).unwrap()
            }) else {
                panic!()
            };
            assert_eq!(dst, B.parse().unwrap());
            let msgs = vec![buf[..len].to_vec(), buf[..len].to_vec()];
            let r = if split {
                deliver_split(&b, A.parse().unwrap(), t1, msgs)
            } else {
                msgs.into_iter()
                    .map(|mut m| (receive(&b, t1, A.parse().unwrap(), &mut m), m))
                    .collect()
            };
            assert_eq!(
                record.counter,
                u64::from(n) + 1,
                "after the confirming keepalive"
            );
            log(r);
        }
        // A rekey started by b, with data in flight on both SAs.
        let t2 = now + Duration::from_secs(2);
        b.rekey(t2, Some(ba));
        for _ in 0..3 {
            log(deliver(&b, B, &a, t2, true));
            log(deliver(&a, A, &b, t2, true));
        }
        let mut events = Vec::new();
        for x in [&a, &b] {
            while let Some(e) = x.poll_event() {
                events.push(kind(&e));
            }
        }
        let d = |x: &Endpoint| x.stats().drops;
        Observed {
            stats: vec![
                a.peer_status(ab).unwrap().stats,
                b.peer_status(ba).unwrap().stats,
            ],
            drops: (d(&a).replay, d(&a).auth, d(&b).replay, d(&b).auth),
            events,
            results,
        }
    }

    #[test]
    fn batched_phases_behave_like_one_message_at_a_time() {
        let one = scenario(false);
        let two = scenario(true);
        assert_eq!(one, two);
        // The scenario did exercise what it claims.
        assert!(one.events.contains(&"rekeyed"));
        assert!(one.drops.0 > 0 && one.drops.1 > 0, "{one:?}");
        assert!(one.results.iter().filter(|r| **r == Ok("data")).count() >= 5);
    }

    fn sealed(a: &Endpoint, ab: PeerId, now: Instant) -> Vec<u8> {
        let mut buf = [0u8; 16 + 5 + 16];
        buf[16..21].copy_from_slice(b"hello");
        let SealOutcome::Sealed { len, .. } = seal_split(a, now, ab, &mut buf, 5) else {
            panic!()
        };
        buf[..len].to_vec()
    }

    #[test]
    fn duplicate_prechecked_twice_is_committed_once() {
        let (a, b, ab, ba, now) = established();
        let msg = sealed(&a, ab, now);
        let from: SocketAddr = A.parse().unwrap();
        let (mut m1, mut m2) = (msg.clone(), msg);
        let Ok(Received::Data {
            job: j1,
            opener: o1,
        }) = b.precheck_datagram(now, from, &mut m1)
        else {
            panic!()
        };
        let Ok(Received::Data {
            job: j2,
            opener: o2,
        }) = b.precheck_datagram(now, from, &mut m2)
        else {
            panic!()
        };
        assert!(Arc::ptr_eq(&o1, &o2));
        let (d1, d2) = (j1.open(&o1, &mut m1), j2.open(&o2, &mut m2));
        assert!(d1.authenticated() && d2.authenticated());
        let before = b.peer_status(ba).unwrap().stats.traffic.rx_packets;
        let r2 = b.commit_datagram(now, d2, &o2).unwrap();
        let Incoming::Data { payload, .. } = r2 else {
            panic!("{r2:?}")
        };
        assert_eq!(&m2[payload], b"hello");
        assert_eq!(b.commit_datagram(now, d1, &o1), Err(DropReason::Replay));
        assert_eq!(b.stats().drops.replay, 1);
        let st = b.peer_status(ba).unwrap().stats;
        assert_eq!(st.drops.replay, 1);
        assert_eq!(st.traffic.rx_packets, before + 1);
    }

    #[test]
    fn commit_on_a_rotated_out_sa_is_dropped_and_counted() {
        let (a, b, ab, ba, now) = established();
        let from: SocketAddr = A.parse().unwrap();
        let mut old = sealed(&a, ab, now);
        let Ok(Received::Data { job, opener }) = b.precheck_datagram(now, from, &mut old) else {
            panic!()
        };
        let old_opener = opener;
        let old_job = job.open(&old_opener, &mut old);
        // Two rekeys: the old SA goes current → previous → gone.
        for k in 1..=2 {
            let t = now + Duration::from_secs(k);
            a.rekey(t, Some(ab));
            for _ in 0..3 {
                pass(&a, A, &b, t);
                pass(&b, B, &a, t);
            }
        }
        assert_eq!(b.peer_status(ba).unwrap().stats.rekeys, 2);
        let expired = b.stats().drops.expired;
        assert_eq!(
            b.commit_datagram(now, old_job, &old_opener),
            Err(DropReason::SaGone)
        );
        assert_eq!(b.stats().drops.expired, expired + 1);
        assert_eq!(b.peer_status(ba).unwrap().stats.drops.expired, 1);
    }

    #[test]
    fn commit_with_another_sas_opener_is_refused() {
        let (a, b, ab, ba, now) = established();
        let from: SocketAddr = A.parse().unwrap();
        let mut on_old = sealed(&a, ab, now);
        let t = now + Duration::from_secs(1);
        a.rekey(t, Some(ab));
        for _ in 0..3 {
            pass(&a, A, &b, t);
            pass(&b, B, &a, t);
        }
        let mut on_new = sealed(&a, ab, t);
        let Ok(Received::Data { job, opener }) = b.precheck_datagram(t, from, &mut on_old) else {
            panic!()
        };
        let old_opener = opener;
        let Ok(Received::Data { opener, .. }) = b.precheck_datagram(t, from, &mut on_new) else {
            panic!()
        };
        let new_opener = opener;
        // Opened under its own SA (still `previous`, its SPI found), but
        // committed with another SA's opener: not the SA it was checked on.
        let opened = job.open(&old_opener, &mut on_old);
        assert!(opened.authenticated());
        assert_eq!(
            b.commit_datagram(t, opened, &new_opener),
            Err(DropReason::SaGone)
        );
        // Opened with the wrong cipher: refused by the key as well.
        let mut again = on_new.clone();
        let Ok(Received::Data { job, .. }) = b.precheck_datagram(t, from, &mut again) else {
            panic!()
        };
        let opened = job.open(&old_opener, &mut again);
        assert!(!opened.authenticated());
        assert_eq!(
            b.commit_datagram(t, opened, &new_opener),
            Err(DropReason::SaGone)
        );
        assert_eq!(b.peer_status(ba).unwrap().stats.drops.auth, 0);
    }

    #[test]
    fn reserve_seal_queues_without_sa_and_refuses_a_foreign_cipher() {
        let (a, b, ab, _, now) = pair();
        let mut buf = [0u8; 64];
        assert!(matches!(
            a.reserve_seal(now, ab, &buf, 8),
            Ok(SealStart::Queued)
        ));
        assert_eq!(
            a.reserve_seal(now, PeerId(99), &buf, 8).err(),
            Some(SendError::UnknownPeer)
        );
        assert_eq!(
            a.reserve_seal(now, ab, &buf[..30], 8).err(),
            Some(SendError::BufferTooSmall)
        );
        for _ in 0..3 {
            pass(&a, A, &b, now);
            pass(&b, B, &a, now);
        }
        let ba = b.peers().next().unwrap().id;
        let foreign = match b.reserve_seal(now, ba, &buf, 8).unwrap() {
            SealStart::Reserved { cipher, .. } => cipher,
            SealStart::Queued => panic!("b is established"),
        };
        let SealStart::Reserved { job, .. } = a.reserve_seal(now, ab, &buf, 8).unwrap() else {
            panic!()
        };
        let counter = job.record().counter;
        assert_eq!(job.seal(&foreign, &mut buf), Err(SendError::KeyMismatch));
        // The refused job's counter is burnt, never handed out again.
        let SealStart::Reserved { job, .. } = a.reserve_seal(now, ab, &buf, 8).unwrap() else {
            panic!()
        };
        assert_eq!(job.record().counter, counter + 1);
        drop(job);
    }
}
