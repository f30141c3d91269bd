//! The endpoint: one local identity, its peers (by public key and by
//! [`PeerId`]), the SPI demultiplexer, and the sans-I/O driver API
//! (`handle_*` in, `poll_*` out) the agent and the simulation call.
//!
//! It does not own sockets, buffers of the batched data path or a clock.

use core::net::IpAddr;
use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tracing::trace;
use vxsec_crypto::key::PublicKey;
use vxsec_crypto::noise::{NoiseIdentity, Tai64N};
use vxsec_crypto::sa::OpenCipher;
use vxsec_crypto::suite::{SaLimits, Suite};
use vxsec_crypto::x25519::SsTable;

use super::config::{ConfigError, EndpointConfig, PeerConfig, RotationLimits, TimerConfig};
use super::handshake::{handle_cookie_reply, handle_initiation, handle_response, Refusal};
use super::load::LoadControl;
use super::peer::Peer;
use super::sa::{SaTimes, SpiTable};
use super::split::{OpenedJob, Received, SealStart};
use super::stats::{DropReason, EndpointStats};
use super::{Event, Incoming, PeerId, PeerStatus, SealOutcome, SealRecord, SendError, Transmit};
use crate::wire::outer::{parse_message, Message};

/// Datagrams waiting for `poll_transmit`, at most.
pub const MAX_QUEUED_TRANSMITS: usize = 8192;
/// Events waiting for `poll_event`, at most.
pub const MAX_QUEUED_EVENTS: usize = 1024;

/// A datagram waiting in the transmit queue.
pub(crate) struct OutPacket {
    dst: SocketAddr,
    bytes: Vec<u8>,
    record: Option<SealRecord>,
}

/// Everything but the peers: shared by the peer and handshake code.
pub(crate) struct Core {
    pub identity: NoiseIdentity,
    /// DH(our static, peer static) of every configured peer: the Noise
    /// `ss`, made once at `add_peer` (configuration, not per handshake).
    pub ss_table: SsTable,
    pub suite: Suite,
    pub rotation: RotationLimits,
    pub sa_limits: SaLimits,
    pub timers: TimerConfig,
    pub queue_packets: usize,
    pub rng: StdRng,
    pub spis: SpiTable,
    pub stats: EndpointStats,
    pub events: VecDeque<Event>,
    out: VecDeque<OutPacket>,
    start: Instant,
    unix_at_start: Duration,
    pub load: LoadControl,
    /// Peers' current endpoint IPs (cookie replies to them skip the global
    /// cap), rebuilt at most every [`PEER_IPS_MAX_AGE`] or after a change.
    peer_ips: HashSet<IpAddr>,
    peer_ips_built: Option<Instant>,
}

/// How stale the peer endpoint set may get (a roam shows up within this).
const PEER_IPS_MAX_AGE: Duration = Duration::from_secs(1);

impl Core {
    /// TAI64N of the wall clock at `now`.
    pub fn wall(&self, now: Instant) -> Tai64N {
        Tai64N::from_unix(self.unix_at_start + now.saturating_duration_since(self.start))
    }

    /// Limits of an SA created at `now`.
    pub fn sa_times(&mut self, now: Instant) -> SaTimes {
        SaTimes::new(
            now,
            self.rotation.rekey_after(),
            self.rotation.reject_after(),
            self.rotation.jitter_percent,
            Duration::from_millis(self.timers.handshake_retry_ms),
            &mut self.rng,
        )
    }

    /// Queues a datagram; past [`MAX_QUEUED_TRANSMITS`] it is dropped (the
    /// driver is not polling; a data message dropped here is simply lost).
    pub fn push(&mut self, dst: SocketAddr, bytes: Vec<u8>, record: Option<SealRecord>) {
        if self.out.len() < MAX_QUEUED_TRANSMITS {
            self.out.push_back(OutPacket { dst, bytes, record });
        }
    }

    /// Reports a change of the load state (event, counter).
    pub fn update_load(&mut self, now: Instant) {
        if let Some(engaged) = self.load.transition(now) {
            if engaged {
                self.stats.load_engaged += 1;
            }
            self.event(Event::LoadProtection { engaged });
        }
    }

    /// Whether `ip` is some configured peer's current endpoint.
    pub fn is_peer_endpoint(
        &mut self,
        peers: &BTreeMap<PeerId, Peer>,
        ip: IpAddr,
        now: Instant,
    ) -> bool {
        let stale = self
            .peer_ips_built
            .is_none_or(|t| now.saturating_duration_since(t) >= PEER_IPS_MAX_AGE);
        if stale {
            self.peer_ips.clear();
            self.peer_ips
                .extend(peers.values().filter_map(|p| p.endpoint.map(|e| e.ip())));
            self.peer_ips_built = Some(now);
        }
        self.peer_ips.contains(&ip)
    }

    /// Queues an event, keeping only the newest [`MAX_QUEUED_EVENTS`].
    pub fn event(&mut self, e: Event) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}

/// A vxsec endpoint: one identity, many peers, one UDP socket's worth of traffic.
pub struct Endpoint {
    core: Core,
    peers: BTreeMap<PeerId, Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    next_peer_id: u32,
}

impl Endpoint {
    /// A fresh endpoint: new SPIs, new cookie secret, no SAs. `unix_time` is
    /// the wall clock at `now` (for TAI64N timestamps). Never panics: an
    /// invalid configuration is logged and its invalid groups replaced by
    /// defaults; use [`Endpoint::try_new`] to refuse it instead.
    pub fn new(config: EndpointConfig, now: Instant, unix_time: Duration) -> Self {
        let config = match config.validate() {
            Ok(()) => config,
            Err(e) => {
                tracing::error!(error = %e, "invalid endpoint configuration; using defaults for it");
                config.sanitized()
            }
        };
        Self::build(config, now, unix_time)
    }

    /// Like [`Endpoint::new`] but refuses an invalid configuration.
    pub fn try_new(
        config: EndpointConfig,
        now: Instant,
        unix_time: Duration,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config, now, unix_time))
    }

    fn build(config: EndpointConfig, now: Instant, unix_time: Duration) -> Self {
        let mut rng = match config.rng_seed {
            Some(seed) => StdRng::from_seed(seed),
            None => StdRng::from_entropy(),
        };
        let suite = config.suite;
        let sa_limits = config.rotation.sa_limits(suite);
        let identity = NoiseIdentity::new(config.private_key, config.network_id.as_bytes());
        let load = LoadControl::new(config.load, identity.public_key(), now, &mut rng);
        Endpoint {
            core: Core {
                identity,
                ss_table: SsTable::default(),
                suite,
                rotation: config.rotation,
                sa_limits,
                timers: config.timers,
                queue_packets: config.queue_packets,
                rng,
                spis: SpiTable::default(),
                stats: EndpointStats::default(),
                events: VecDeque::new(),
                out: VecDeque::new(),
                start: now,
                unix_at_start: unix_time,
                load,
                peer_ips: HashSet::new(),
                peer_ips_built: None,
            },
            peers: BTreeMap::new(),
            by_key: HashMap::new(),
            next_peer_id: 0,
        }
    }

    /// Our static public key.
    pub fn public_key(&self) -> PublicKey {
        *self.core.identity.public_key()
    }

    /// Our suite.
    pub fn suite(&self) -> Suite {
        self.core.suite
    }

    /// Adds a peer. Its first handshake starts when data is sealed for it
    /// (or on [`Endpoint::rekey`]).
    pub fn add_peer(&mut self, _now: Instant, peer: PeerConfig) -> Result<PeerId, ConfigError> {
        if peer.public_key == *self.core.identity.public_key() {
            return Err(ConfigError::new(
                "peer.public_key",
                "is this endpoint's own public key",
            ));
        }
        if self.by_key.contains_key(&peer.public_key) {
            return Err(ConfigError::new(
                "peer.public_key",
                "peer already configured",
            ));
        }
        if peer.persistent_keepalive.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "peer.persistent_keepalive",
                "must be positive when set",
            ));
        }
        let ss = self
            .core
            .identity
            .precompute_ss(&peer.public_key)
            .map_err(|_| {
                ConfigError::new(
                    "peer.public_key",
                    "is a low-order X25519 point: no handshake with it can succeed",
                )
            })?;
        let id = PeerId(self.next_peer_id);
        self.next_peer_id = self.next_peer_id.wrapping_add(1);
        self.core.ss_table.insert(ss);
        self.core.peer_ips_built = None;
        self.by_key.insert(peer.public_key, id);
        self.peers.insert(id, Peer::new(id, peer));
        Ok(id)
    }

    /// Removes a peer and all its SAs.
    pub fn remove_peer(&mut self, key: &PublicKey) -> bool {
        let Some(id) = self.by_key.remove(key) else {
            return false;
        };
        self.core.ss_table.remove(key);
        self.core.peer_ips_built = None;
        if let Some(mut p) = self.peers.remove(&id) {
            p.clear(&mut self.core);
        }
        true
    }

    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// A datagram from the UDP socket; data is decrypted in place in `buf`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Incoming, DropReason> {
        self.dispatch(now, from, buf).map_err(|(peer, reason)| {
            if matches!(
                parse_message(buf),
                Ok(Message::Initiation(_) | Message::Response(_) | Message::CookieReply(_))
            ) {
                self.core.stats.handshake_drops += 1;
            }
            self.count_drop(from, peer, reason)
        })
    }

    /// The driver's handshake queue (messages received, not yet handed to
    /// [`Endpoint::handle_datagram`]) holds `queued` of `capacity`: a
    /// backlog of 1/8 or more puts the endpoint under load for a second
    /// (cookies required, proven sources rate-limited), as wireguard-go
    /// decides from its handshake queue. The configured handshake rate
    /// (`load.handshakes_per_second_before_cookies`) engages it too.
    pub fn handle_handshake_backlog(&mut self, now: Instant, queued: usize, capacity: usize) {
        self.core.load.note_backlog(now, queued, capacity);
        self.core.update_load(now);
    }

    /// Whether the endpoint is under load now (mac2 required).
    pub fn under_load(&self, now: Instant) -> bool {
        self.core.load.under_load(now)
    }

    /// Counts a dropped datagram, endpoint-wide and for `peer`.
    fn count_drop(
        &mut self,
        from: SocketAddr,
        peer: Option<PeerId>,
        reason: DropReason,
    ) -> DropReason {
        self.core.stats.drops.count(reason);
        if let Some(p) = peer.and_then(|id| self.peers.get_mut(&id)) {
            p.stats.drops.count(reason);
        }
        trace!(%from, %reason, "datagram dropped");
        reason
    }

    /// The first phase of a two-phase [`Endpoint::handle_datagram`]. A data
    /// message for one of our SAs that passes the checks made before
    /// decryption (reject time, length, limit, replay window) comes back as
    /// [`Received::Data`]: open it with [`super::OpenJob::open`] (no
    /// endpoint needed), then call [`Endpoint::commit_datagram`]. Anything
    /// else is handled in full here, exactly as `handle_datagram` does; every
    /// drop is counted.
    pub fn precheck_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Received<'_>, DropReason> {
        let spi = match parse_message(buf) {
            Ok(Message::Data(d)) => d.receiver_spi(),
            _ => return self.handle_datagram(now, from, buf).map(Received::Done),
        };
        let Some((id, p)) = self
            .core
            .spis
            .owner(spi)
            .and_then(|id| Some((id, self.peers.get(&id)?)))
        else {
            return Err(self.count_drop(from, None, DropReason::UnknownSpi));
        };
        let job = match p.precheck(now, from, spi, buf) {
            Ok(job) => job,
            Err(reason) => return Err(self.count_drop(from, Some(id), reason)),
        };
        // The SA the precheck found is still there: nothing changed since
        // (the `None` arm is unreachable; it is counted endpoint-wide only).
        let Endpoint { core, peers, .. } = self;
        match peers.get(&id).and_then(|p| p.open_cipher(spi)) {
            Some(opener) => Ok(Received::Data { job, opener }),
            None => {
                core.stats.drops.count(DropReason::SaGone);
                Err(DropReason::SaGone)
            }
        }
    }

    /// The last phase of a two-phase receive: commits an opened data
    /// message on its SA if that SA (found again by SPI) is still the one
    /// `opener` belongs to, then does everything
    /// [`Endpoint::handle_datagram`] does for an accepted message (counters,
    /// liveness, promotion of `next`, roaming, rekey triggers). A duplicate
    /// that passed its precheck before the first copy was committed is a
    /// [`DropReason::Replay`]; an SA rotated out meanwhile is
    /// [`DropReason::SaGone`]. Every drop is counted.
    pub fn commit_datagram(
        &mut self,
        now: Instant,
        job: OpenedJob,
        opener: &Arc<OpenCipher>,
    ) -> Result<Incoming, DropReason> {
        let (from, id) = (job.from, job.peer);
        let Some(p) = self.peers.get_mut(&id) else {
            return Err(self.count_drop(from, None, DropReason::SaGone));
        };
        let span = p.span.clone();
        let _g = span.enter();
        p.commit(&mut self.core, now, job, opener)
            .map_err(|reason| self.count_drop(from, Some(id), reason))
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Incoming, Refusal> {
        let data_spi = match parse_message(buf) {
            Ok(Message::Data(d)) => Some(d.receiver_spi()),
            Ok(_) => None,
            Err(_) => return Err((None, DropReason::Malformed)),
        };
        if let Some(spi) = data_spi {
            let id = self
                .core
                .spis
                .owner(spi)
                .ok_or((None, DropReason::UnknownSpi))?;
            let peer = self
                .peers
                .get_mut(&id)
                .ok_or((None, DropReason::UnknownSpi))?;
            return peer
                .open(&mut self.core, now, from, spi, buf)
                .map_err(|r| (Some(id), r));
        }
        let core = &mut self.core;
        match parse_message(buf) {
            Ok(Message::Initiation(m)) => {
                handle_initiation(core, &mut self.peers, &self.by_key, now, from, &m)
            }
            Ok(Message::Response(m)) => handle_response(core, &mut self.peers, now, from, &m),
            Ok(Message::CookieReply(m)) => handle_cookie_reply(core, &mut self.peers, now, &m),
            Ok(Message::Data(_)) | Err(_) => Err((None, DropReason::Malformed)),
        }
    }

    /// Seals the plaintext at `buf[16..16 + payload_len]` for `peer` (the
    /// buffer needs 16 more bytes for the tag). Without a usable SA the
    /// packet is queued (bounded) and a handshake starts; never cleartext.
    pub fn seal(
        &mut self,
        now: Instant,
        peer: PeerId,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<SealOutcome, SendError> {
        let p = self.peers.get_mut(&peer).ok_or(SendError::UnknownPeer)?;
        let span = p.span.clone();
        let _g = span.enter();
        p.seal(&mut self.core, now, buf, payload_len)
    }

    /// The first phase of a two-phase [`Endpoint::seal`]: everything but the
    /// AEAD. Reserves a counter on the peer's current SA for the plaintext at
    /// `buf[16..16 + payload_len]` (and does the bookkeeping of a sent
    /// packet), or queues a copy and starts a handshake, as `seal` does.
    /// Seal the returned job with [`super::SealJob::seal`] and the returned
    /// cipher, on any thread, into a buffer holding the same plaintext.
    pub fn reserve_seal(
        &mut self,
        now: Instant,
        peer: PeerId,
        buf: &[u8],
        payload_len: usize,
    ) -> Result<SealStart<'_>, SendError> {
        let p = self.peers.get_mut(&peer).ok_or(SendError::UnknownPeer)?;
        let span = p.span.clone();
        let _g = span.enter();
        let Some(job) = p.reserve(&mut self.core, now, buf, payload_len)? else {
            return Ok(SealStart::Queued);
        };
        // The SA that reserved the counter is still current: reserving
        // changes no SA (a rekey it starts only sends an initiation).
        let cipher = p.seal_cipher().ok_or(SendError::KeyMismatch)?;
        Ok(SealStart::Reserved { job, cipher })
    }

    /// Fires every due timer (retransmissions, rekeys, keepalives, expiry).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.load.refresh_secret(now, &mut self.core.rng);
        self.core.update_load(now);
        for p in self.peers.values_mut() {
            let span = p.span.clone();
            let _g = span.enter();
            p.handle_timeout(&mut self.core, now);
        }
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.poll_timeout(&self.core))
            .chain(self.core.load.poll_timeout())
            .min()
    }

    /// Next datagram to send (handshakes, cookie replies, keepalives,
    /// queued data), written into `out`. A datagram larger than `out` is
    /// dropped (use a buffer of at least the tunnel MTU + 32).
    pub fn poll_transmit(&mut self, _now: Instant, out: &mut [u8]) -> Option<Transmit> {
        while let Some(pkt) = self.core.out.pop_front() {
            if let Some(dst) = out.get_mut(..pkt.bytes.len()) {
                dst.copy_from_slice(&pkt.bytes);
                return Some(Transmit {
                    dst: pkt.dst,
                    len: pkt.bytes.len(),
                    record: pkt.record,
                });
            }
        }
        None
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }

    /// Operator-forced rotation of one peer or all.
    pub fn rekey(&mut self, now: Instant, peer: Option<PeerId>) {
        for (id, p) in self.peers.iter_mut() {
            if peer.is_none_or(|want| want == *id) {
                let span = p.span.clone();
                let _g = span.enter();
                p.force_rekey(&mut self.core, now);
            }
        }
    }

    pub fn peers(&self) -> impl Iterator<Item = PeerStatus> + '_ {
        self.peers.values().map(Peer::status)
    }

    pub fn peer_status(&self, peer: PeerId) -> Option<PeerStatus> {
        self.peers.get(&peer).map(Peer::status)
    }

    pub fn stats(&self) -> &EndpointStats {
        &self.core.stats
    }

    /// Local SPIs in use (SAs and pending initiations), for leak checks.
    pub fn live_spis(&self) -> usize {
        self.core.spis.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
    use super::*;
    use vxsec_crypto::key::PrivateKey;

    pub(crate) const A: &str = "192.0.2.1:1";
    pub(crate) const B: &str = "192.0.2.2:1";

    /// Two endpoints configured with each other: (a, b, a's id for b, b's id for a, now).
    pub(crate) fn pair() -> (Endpoint, Endpoint, PeerId, PeerId, Instant) {
        let now = Instant::now();
        let unix = Duration::from_secs(1_700_000_000);
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let (pa, pb) = (ka.public_key(), kb.public_key());
        let mut a = Endpoint::try_new(EndpointConfig::new(ka, "t"), now, unix).unwrap();
        let mut b = Endpoint::try_new(EndpointConfig::new(kb, "t"), now, unix).unwrap();
        let ab = a
            .add_peer(now, PeerConfig::new(pb, Some(B.parse().unwrap())))
            .unwrap();
        let ba = b
            .add_peer(now, PeerConfig::new(pa, Some(A.parse().unwrap())))
            .unwrap();
        (a, b, ab, ba, now)
    }

    /// Moves everything queued from `x` (at `x_addr`) into `y`; returns the results.
    pub(crate) fn pass(
        x: &mut Endpoint,
        x_addr: &str,
        y: &mut Endpoint,
        now: Instant,
    ) -> Vec<(Result<Incoming, DropReason>, Vec<u8>)> {
        let mut out = vec![0u8; 2048];
        let mut v = Vec::new();
        while let Some(t) = x.poll_transmit(now, &mut out) {
            let mut m = out[..t.len].to_vec();
            let r = y.handle_datagram(now, x_addr.parse().unwrap(), &mut m);
            v.push((r, m));
        }
        v
    }

    /// `pair()` with a completed handshake a → b (b has seen data under
    /// the new SA, so both sides are established).
    pub(crate) fn established() -> (Endpoint, Endpoint, PeerId, PeerId, Instant) {
        let (mut a, mut b, ab, ba, now) = pair();
        a.rekey(now, Some(ab));
        for _ in 0..3 {
            pass(&mut a, A, &mut b, now);
            pass(&mut b, B, &mut a, now);
        }
        assert!(b.peer_status(ba).unwrap().established);
        (a, b, ab, ba, now)
    }

    #[test]
    fn queued_packet_travels_after_handshake_never_in_clear() {
        let (mut a, mut b, ab, _, now) = pair();
        let mut buf = [0u8; 16 + 11 + 16];
        buf[16..27].copy_from_slice(b"hello world");
        assert_eq!(a.seal(now, ab, &mut buf, 11), Ok(SealOutcome::Queued));
        let mut out = [0u8; 2048];
        let t = a.poll_transmit(now, &mut out).unwrap();
        assert_eq!(out[0], crate::wire::outer::MSG_INITIATION);
        assert!(!out[..t.len].windows(11).any(|w| w == b"hello world"));
        let mut init = out[..t.len].to_vec();
        assert!(a.poll_transmit(now, &mut out).is_none());
        let r = b.handle_datagram(now, A.parse().unwrap(), &mut init);
        assert!(matches!(r, Ok(Incoming::Handshake { .. })));
        let res = pass(&mut b, B, &mut a, now);
        assert!(matches!(res[0].0, Ok(Incoming::Handshake { .. })));
        let res = pass(&mut a, A, &mut b, now);
        assert_eq!(res.len(), 1, "the queued packet, no extra keepalive");
        let (r, m) = &res[0];
        let Ok(Incoming::Data { payload, .. }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(&m[payload.clone()], b"hello world");
        assert!(a.peers().all(|p| p.established));
        assert!(b.peers().all(|p| p.established && p.next.is_none()));
        assert!(matches!(
            a.poll_event(),
            Some(Event::HandshakeComplete { .. })
        ));
        assert!(a.poll_timeout().is_some());
        assert_eq!(a.live_spis(), 1);
    }

    #[test]
    fn add_peer_refuses_own_and_duplicate_keys() {
        let (mut a, _, _, _, now) = pair();
        let own = a.public_key();
        let e = a.add_peer(now, PeerConfig::new(own, None)).unwrap_err();
        assert_eq!(e.field, "peer.public_key");
        let other = a.peers().next().unwrap().public_key;
        assert!(a.add_peer(now, PeerConfig::new(other, None)).is_err());
        assert!(a.remove_peer(&other));
        assert!(!a.remove_peer(&other));
        assert!(a.peer_id(&other).is_none());
    }

    #[test]
    fn peers_ss_is_precomputed_on_add_and_dropped_on_remove() {
        let (mut a, _, _, _, now) = pair();
        let other = a.peers().next().unwrap().public_key;
        assert!(a.core.ss_table.get(&other).is_some());
        // A low-order key can never complete a handshake: refused up front.
        let zero = PublicKey::from_bytes([0; 32]);
        let e = a.add_peer(now, PeerConfig::new(zero, None)).unwrap_err();
        assert_eq!(e.field, "peer.public_key");
        assert!(a.peer_id(&zero).is_none());
        assert_eq!(a.core.ss_table.len(), 1);
        assert!(a.remove_peer(&other));
        assert!(a.core.ss_table.is_empty());
    }

    #[test]
    fn garbage_is_malformed_and_counted() {
        let (mut a, _, _, _, now) = pair();
        for junk in [&[][..], &[9, 0, 0, 0][..], &[4, 1, 0, 0, 0, 0, 0, 0][..]] {
            let mut j = junk.to_vec();
            assert_eq!(
                a.handle_datagram(now, B.parse().unwrap(), &mut j),
                Err(DropReason::Malformed)
            );
        }
        assert_eq!(a.stats().drops.malformed, 3);
    }

    #[test]
    fn invalid_config_is_refused_by_try_new_and_sanitized_by_new() {
        let now = Instant::now();
        let mut c = EndpointConfig::new(PrivateKey::generate(), "t");
        c.rotation.rekey_after_seconds = 0;
        let e = Endpoint::try_new(c, now, Duration::ZERO).err().unwrap();
        assert_eq!(e.field, "rotation.rekey_after_seconds");
        let mut c = EndpointConfig::new(PrivateKey::generate(), "x".repeat(100));
        c.timers.handshake_attempts = 0;
        let ep = Endpoint::new(c, now, Duration::ZERO);
        assert_eq!(ep.peers().count(), 0);
    }
}
