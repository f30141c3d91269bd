//! Handshake DoS control on the responder side: the "under load" detector
//! (handshake messages per second above a threshold → require mac2), the
//! per-source-IP token buckets, and the two-minute cookie secret rotation.
//!
//! It does not compute MACs (`vxsec_crypto::cookie`) or decide what to send.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::HashMap;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::RngCore;
use vxsec_crypto::cookie::CookieChecker;
use vxsec_crypto::key::PublicKey;

use super::config::LoadConfig;

/// The cookie secret changes this often.
pub(crate) const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);
/// Initiators use a received cookie for at most this long (a little less
/// than the secret's lifetime, as in WireGuard).
pub(crate) const COOKIE_USABLE_FOR: Duration = Duration::from_secs(110);
/// The load state lasts at least this long once engaged.
const LOAD_HOLD: Duration = Duration::from_secs(1);
/// Most source IPs tracked by the rate limiter.
const MAX_SOURCES: usize = 8192;

/// Responder-side DoS state.
pub(crate) struct LoadControl {
    cfg: LoadConfig,
    window_start: Instant,
    window_count: u32,
    under_load_until: Option<Instant>,
    buckets: HashMap<IpAddr, Bucket>,
    pub checker: CookieChecker,
    secret_born: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl LoadControl {
    pub fn new(cfg: LoadConfig, local: &PublicKey, now: Instant, rng: &mut StdRng) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        LoadControl {
            cfg,
            window_start: now,
            window_count: 0,
            under_load_until: None,
            buckets: HashMap::new(),
            checker: CookieChecker::new(local, secret),
            secret_born: now,
        }
    }

    /// Counts one handshake message (mac1 already valid); returns whether the
    /// endpoint just entered the load state.
    pub fn note_handshake(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count = self.window_count.saturating_add(1);
        if self.window_count > self.cfg.handshakes_per_second_before_cookies {
            let was = self.under_load(now);
            self.under_load_until = Some(now + LOAD_HOLD);
            return !was;
        }
        false
    }

    /// Whether mac2 is required now.
    pub fn under_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|t| now < t)
    }

    /// Rotates the cookie secret if it is older than two minutes.
    pub fn refresh_secret(&mut self, now: Instant, rng: &mut StdRng) {
        if now.saturating_duration_since(self.secret_born) >= COOKIE_SECRET_LIFETIME {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            self.checker.rotate_secret(secret);
            self.secret_born = now;
        }
    }

    /// Token bucket per source IP; `false` = over the limit.
    pub fn allow(&mut self, src: &SocketAddr, now: Instant) -> bool {
        let burst = f64::from(self.cfg.per_source_burst);
        let rate = f64::from(self.cfg.per_source_per_second);
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&src.ip()) {
            self.prune(now);
            if self.buckets.len() >= MAX_SOURCES {
                // Spread across this many sources we are under load anyway:
                // mac2 (source-bound cookies) is the defence, not this table.
                return true;
            }
        }
        let b = self.buckets.entry(src.ip()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn prune(&mut self, now: Instant) {
        let burst = f64::from(self.cfg.per_source_burst);
        let rate = f64::from(self.cfg.per_source_per_second);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
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
        };
        let k = PrivateKey::generate().public_key();
        (LoadControl::new(cfg, &k, now, &mut rng), now)
    }

    #[test]
    fn load_engages_above_threshold_and_decays() {
        let (mut l, t0) = lc(5);
        for _ in 0..5 {
            assert!(!l.note_handshake(t0));
        }
        assert!(!l.under_load(t0));
        assert!(l.note_handshake(t0));
        assert!(l.under_load(t0 + Duration::from_millis(999)));
        assert!(!l.under_load(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn per_source_bucket_limits_and_refills() {
        let (mut l, t0) = lc(5);
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1".parse().unwrap();
        assert!((0..3).all(|_| l.allow(&a, t0)));
        assert!(!l.allow(&a, t0));
        assert!(l.allow(&b, t0), "other sources unaffected");
        assert!(l.allow(&a, t0 + Duration::from_millis(500)));
        assert!(!l.allow(&a, t0 + Duration::from_millis(500)));
    }
}
