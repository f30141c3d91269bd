//! Handshake DoS control on the responder side: the "under load" state
//! (engaged by the driver's handshake backlog, as wireguard-go's
//! `underLoad`, or by the mac1-valid handshake rate), the per-source
//! initiation limit (applied only under load, only to sources that proved
//! their address with mac2), the global and per-source cookie reply caps,
//! and the two-minute cookie secret rotation. Cookies are sealed under the
//! static key the answered message addressed: during an identity rotation's
//! grace period a second checker serves the previous key.
//!
//! It does not compute MACs (`vxsec_crypto::cookie`) or decide what to send.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::HashMap;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::RngCore;
use vxsec_crypto::cookie::{CookieChecker, COOKIE_NONCE_LEN, ENCRYPTED_COOKIE_LEN, MAC_LEN};
use vxsec_crypto::key::PublicKey;

use super::config::LoadConfig;
use super::core::Core;
use super::stats::Counter;
use super::Event;

/// The cookie secret changes this often.
pub(crate) const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);
/// Initiators use a received cookie for at most this long (a little less
/// than the secret's lifetime, as in WireGuard).
pub(crate) const COOKIE_USABLE_FOR: Duration = Duration::from_secs(110);
/// The load state lasts at least this long once engaged (wireguard-go's
/// `UnderLoadAfterTime`).
pub(crate) const LOAD_HOLD: Duration = Duration::from_secs(1);
/// A backlog of at least 1/8 of the driver's handshake queue is load
/// (wireguard-go: `QueueHandshakeSize / 8`).
pub(crate) const BACKLOG_DIVISOR: usize = 8;
/// Most source IPs tracked by each per-source table.
const MAX_SOURCES: usize = 8192;
/// A full per-source table is swept for idle sources at most this often
/// (a flood of fresh sources must not cost a sweep per datagram).
const PRUNE_EVERY: Duration = Duration::from_millis(100);

/// The handshake load state and the generator of cookie secrets and nonces
/// (and of the seeds of new peers' generators): the endpoint keeps it
/// behind one lock, taken on the handshake path and by the timers only.
pub(crate) struct LoadState {
    pub control: LoadControl,
    pub rng: StdRng,
}

/// Reports a change of the load state (event, counter).
pub(crate) fn update_load(core: &Core, control: &mut LoadControl, now: Instant) {
    if let Some(engaged) = control.transition(now) {
        if engaged {
            core.stats.count(Counter::LoadEngaged);
        }
        core.event(Event::LoadProtection { engaged });
    }
}

/// A token bucket; time is an argument.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }

    /// Takes one token if there is one.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full by `now` (nothing to remember).
    fn idle(&self, rate: f64, burst: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate >= burst
    }
}

/// One token bucket per source IP, in a bounded table.
struct SourceBuckets {
    rate: f64,
    burst: f64,
    map: HashMap<IpAddr, Bucket>,
    last_prune: Option<Instant>,
}

impl SourceBuckets {
    fn new(rate: u32, burst: u32) -> Self {
        SourceBuckets {
            rate: f64::from(rate),
            burst: f64::from(burst),
            map: HashMap::new(),
            last_prune: None,
        }
    }

    /// Takes a token for `ip`. With the table full of sources that are all
    /// still limited, a new source is refused when `full_refuses`, let
    /// through otherwise (then another limit must hold).
    fn take(&mut self, ip: IpAddr, now: Instant, full_refuses: bool) -> bool {
        if self.map.len() >= MAX_SOURCES && !self.map.contains_key(&ip) {
            let due = self
                .last_prune
                .is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_EVERY);
            if due {
                let (rate, burst) = (self.rate, self.burst);
                self.map.retain(|_, b| !b.idle(rate, burst, now));
                self.last_prune = Some(now);
            }
            if self.map.len() >= MAX_SOURCES {
                return !full_refuses;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.map
            .entry(ip)
            .or_insert_with(|| Bucket::full(burst, now))
            .take(rate, burst, now)
    }
}

/// Responder-side DoS state.
pub(crate) struct LoadControl {
    handshakes_per_second: u32,
    window_start: Instant,
    window_count: u32,
    under_load_until: Option<Instant>,
    /// The state last reported by [`LoadControl::transition`].
    engaged: bool,
    initiations: SourceBuckets,
    cookie_global: Bucket,
    cookie_global_rate: f64,
    cookies: SourceBuckets,
    /// mac2 and cookies for our current static key.
    checker: CookieChecker,
    /// The same for the previous static key, during a rotation's grace.
    previous_checker: Option<CookieChecker>,
    secret_born: Instant,
}

impl LoadControl {
    pub fn new(cfg: LoadConfig, local: &PublicKey, now: Instant, rng: &mut StdRng) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let global = f64::from(cfg.cookie_replies_per_second);
        LoadControl {
            handshakes_per_second: cfg.handshakes_per_second_before_cookies,
            window_start: now,
            window_count: 0,
            under_load_until: None,
            engaged: false,
            initiations: SourceBuckets::new(cfg.per_source_per_second, cfg.per_source_burst),
            cookie_global: Bucket::full(global, now),
            cookie_global_rate: global,
            cookies: SourceBuckets::new(
                cfg.cookie_replies_per_source_per_second,
                cfg.cookie_replies_per_source_burst,
            ),
            checker: CookieChecker::new(local, secret),
            previous_checker: None,
            secret_born: now,
        }
    }

    /// Counts one handshake message (mac1 already valid); above the
    /// configured rate the load state is held for [`LOAD_HOLD`].
    pub fn note_handshake(&mut self, now: Instant) {
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count = self.window_count.saturating_add(1);
        if self.window_count > self.handshakes_per_second {
            self.under_load_until = Some(now + LOAD_HOLD);
        }
    }

    /// The driver's handshake queue holds `queued` of `capacity` messages:
    /// at least 1/[`BACKLOG_DIVISOR`] of it is load, held for [`LOAD_HOLD`].
    pub fn note_backlog(&mut self, now: Instant, queued: usize, capacity: usize) {
        let threshold = (capacity / BACKLOG_DIVISOR).max(1);
        if queued >= threshold {
            self.under_load_until = Some(now + LOAD_HOLD);
        }
    }

    /// Whether mac2 is required now.
    pub fn under_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|t| now < t)
    }

    /// `Some(engaged)` when the load state changed since the last call.
    pub fn transition(&mut self, now: Instant) -> Option<bool> {
        let now_engaged = self.under_load(now);
        (now_engaged != self.engaged).then(|| {
            self.engaged = now_engaged;
            now_engaged
        })
    }

    /// When the load state ends, if engaged (so the driver's timer notices).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.under_load_until.filter(|_| self.engaged)
    }

    /// Rotates the cookie secret if it is older than two minutes.
    pub fn refresh_secret(&mut self, now: Instant, rng: &mut StdRng) {
        if now.saturating_duration_since(self.secret_born) >= COOKIE_SECRET_LIFETIME {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            self.checker.rotate_secret(secret);
            if let Some(c) = &mut self.previous_checker {
                rng.fill_bytes(&mut secret);
                c.rotate_secret(secret);
            }
            self.secret_born = now;
        }
    }

    /// Our static key became `local`: cookies for it come from a fresh
    /// checker; the old one keeps serving the previous key (mac2 of its
    /// cookies stays valid) until [`LoadControl::retire_previous`].
    pub fn rotate_identity(&mut self, local: &PublicKey, rng: &mut StdRng) {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let old = std::mem::replace(&mut self.checker, CookieChecker::new(local, secret));
        self.previous_checker = Some(old);
    }

    /// The previous static key is retired: its checker goes (wiped).
    pub fn retire_previous(&mut self) {
        self.previous_checker = None;
    }

    /// mac2 check under a cookie of the current or the previous key's
    /// checker (both always computed: constant time per checker).
    pub fn verify_mac2(&self, src: &SocketAddr, input: &[u8], mac2: &[u8; MAC_LEN]) -> bool {
        let current = self.checker.verify_mac2(src, input, mac2);
        let previous = self
            .previous_checker
            .as_ref()
            .is_some_and(|c| c.verify_mac2(src, input, mac2));
        current | previous
    }

    /// Seals `src`'s cookie under the key the answered message addressed
    /// (`to_previous`: our previous static key; if it was retired
    /// meanwhile, the current one).
    pub fn seal_cookie(
        &self,
        to_previous: bool,
        src: &SocketAddr,
        mac1: &[u8; MAC_LEN],
        nonce: &[u8; COOKIE_NONCE_LEN],
    ) -> [u8; ENCRYPTED_COOKIE_LEN] {
        let checker = match &self.previous_checker {
            Some(c) if to_previous => c,
            _ => &self.checker,
        };
        checker.seal_cookie(src, mac1, nonce)
    }

    /// Per-source initiation limit, for a source that proved its address
    /// (valid mac2) while under load; `false` = over the limit. With the
    /// table full, a new source passes: it still paid for a cookie round
    /// trip, and the handshake queue bounds the work.
    pub fn allow_initiation(&mut self, src: IpAddr, now: Instant) -> bool {
        self.initiations.take(src, now, false)
    }

    /// Whether a cookie reply may go to `src` now: its per-source bucket
    /// and the global bucket must both have a token. A configured peer's
    /// endpoint (`peer_endpoint`) skips both: an attacker can spoof a
    /// peer's address as easily as any other, and a cap there would let it
    /// spend the peer's cookies (the peer needs the reply to its *own*
    /// initiation). Replies to peers are bounded by the handshake queue
    /// instead, they are smaller than what triggers them, and a peer drops
    /// the ones it did not ask for.
    pub fn allow_cookie_reply(&mut self, src: IpAddr, now: Instant, peer_endpoint: bool) -> bool {
        if peer_endpoint {
            return true;
        }
        if !self.cookies.take(src, now, true) {
            return false;
        }
        let rate = self.cookie_global_rate;
        self.cookie_global.take(rate, rate, now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;
    use rand::SeedableRng;
    use vxsec_crypto::key::PrivateKey;

    fn lc(threshold: u32) -> (LoadControl, Instant) {
        let now = Instant::now();
        let mut rng = StdRng::from_seed([5; 32]);
        let cfg = LoadConfig {
            handshakes_per_second_before_cookies: threshold,
            per_source_per_second: 2,
            per_source_burst: 3,
            cookie_replies_per_second: 10,
            cookie_replies_per_source_per_second: 1,
            cookie_replies_per_source_burst: 2,
        };
        let k = PrivateKey::generate().public_key();
        (LoadControl::new(cfg, &k, now, &mut rng), now)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn load_engages_above_threshold_and_decays() {
        let (mut l, t0) = lc(5);
        for _ in 0..5 {
            l.note_handshake(t0);
        }
        assert!(!l.under_load(t0));
        assert_eq!(l.transition(t0), None);
        l.note_handshake(t0);
        assert!(l.under_load(t0 + Duration::from_millis(999)));
        assert_eq!(l.transition(t0), Some(true));
        assert_eq!(l.transition(t0), None);
        assert_eq!(l.poll_timeout(), Some(t0 + LOAD_HOLD));
        assert!(!l.under_load(t0 + Duration::from_secs(1)));
        assert_eq!(l.transition(t0 + Duration::from_secs(1)), Some(false));
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn backlog_of_an_eighth_engages_load() {
        let (mut l, t0) = lc(1000);
        l.note_backlog(t0, 127, 1024);
        assert!(!l.under_load(t0));
        l.note_backlog(t0, 128, 1024);
        assert!(l.under_load(t0));
        // Held while the backlog lasts, released a second after it ends.
        let t1 = t0 + Duration::from_millis(900);
        l.note_backlog(t1, 500, 1024);
        assert!(l.under_load(t0 + Duration::from_millis(1500)));
        l.note_backlog(t0 + Duration::from_millis(1500), 0, 1024);
        assert!(!l.under_load(t1 + LOAD_HOLD));
    }

    #[test]
    fn per_source_initiation_bucket_limits_and_refills() {
        let (mut l, t0) = lc(5);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert!((0..3).all(|_| l.allow_initiation(a, t0)));
        assert!(!l.allow_initiation(a, t0));
        assert!(l.allow_initiation(b, t0), "other sources unaffected");
        assert!(l.allow_initiation(a, t0 + Duration::from_millis(500)));
        assert!(!l.allow_initiation(a, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn cookie_replies_are_capped_per_source_and_globally() {
        let (mut l, t0) = lc(5);
        let a = ip("192.0.2.1");
        assert!(l.allow_cookie_reply(a, t0, false));
        assert!(l.allow_cookie_reply(a, t0, false));
        assert!(!l.allow_cookie_reply(a, t0, false), "per-source burst 2");
        // 10 global tokens, 2 spent: 8 more sources get one, then none.
        let granted = (0..20)
            .filter(|k| l.allow_cookie_reply(ip(&format!("198.18.0.{k}")), t0, false))
            .count();
        assert_eq!(granted, 8);
        // A peer's endpoint skips both caps.
        let peer = ip("192.0.2.9");
        assert!((0..100).all(|_| l.allow_cookie_reply(peer, t0, true)));
        // A second later the global bucket has refilled.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.allow_cookie_reply(ip("198.18.1.1"), t1, false));
    }

    #[test]
    fn a_full_source_table_falls_back_to_the_global_cap() {
        let (mut l, t0) = lc(5);
        for k in 0..MAX_SOURCES as u32 {
            let _ = l.cookies.take(IpAddr::from(k.to_be_bytes()), t0, true);
        }
        let fresh = ip("203.0.113.1");
        assert!(!l.allow_cookie_reply(fresh, t0, false));
        assert!(
            l.allow_cookie_reply(fresh, t0, true),
            "peer endpoints still served"
        );
        // Once the old sources' buckets refill, the table makes room.
        let later = t0 + Duration::from_secs(5);
        assert!(l.allow_cookie_reply(fresh, later, false));
    }
}
