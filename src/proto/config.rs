//! Configuration of the protocol core: rotation limits (DESIGN §5), timer
//! values, the endpoint identity and its peers, with defaults and validation
//! errors that name the offending field.
//!
//! It does not read files or parse TOML (the agent does); the serde types
//! here are what the agent's `[rotation]` and `[timers]` tables map onto.

use core::net::SocketAddr;
use core::time::Duration;

use serde::{Deserialize, Serialize};
use vxsec_crypto::key::{PrivateKey, Psk, PublicKey};
use vxsec_crypto::suite::SaLimits;
use vxsec_crypto::suite::Suite;

/// A configuration value that cannot be used, with the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `rotation.rekey_after_seconds`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

/// Upper bound of time settings (keeps instant arithmetic far from overflow).
const MAX_SECONDS: u64 = 366 * 86_400;
const MAX_MS: u64 = MAX_SECONDS * 1_000;

/// Per-SA limits (DESIGN §5). Packet/byte limits left unset take the
/// suite's defaults (`Suite::default_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationLimits {
    /// Start a new handshake this long after an SA was created, minus a
    /// uniform jitter of up to `jitter_percent`.
    pub rekey_after_seconds: u64,
    /// Stop using an SA this long after its creation (default: rekey + 60 s).
    pub reject_after_seconds: Option<u64>,
    /// Jitter subtracted from the rekey time, in percent (0..=50).
    pub jitter_percent: u8,
    pub rekey_after_packets: Option<u64>,
    pub reject_after_packets: Option<u64>,
    pub rekey_after_bytes: Option<u64>,
    pub reject_after_bytes: Option<u64>,
}

impl Default for RotationLimits {
    fn default() -> Self {
        RotationLimits {
            rekey_after_seconds: 600,
            reject_after_seconds: None,
            jitter_percent: 10,
            rekey_after_packets: None,
            reject_after_packets: None,
            rekey_after_bytes: None,
            reject_after_bytes: None,
        }
    }
}

impl RotationLimits {
    /// Nominal rekey time (before jitter).
    pub fn rekey_after(&self) -> Duration {
        Duration::from_secs(self.rekey_after_seconds)
    }
    /// Hard time limit of an SA.
    pub fn reject_after(&self) -> Duration {
        Duration::from_secs(
            self.reject_after_seconds
                .unwrap_or(self.rekey_after_seconds.saturating_add(60)),
        )
    }
    /// Packet and byte limits for `suite`, overrides applied.
    pub fn sa_limits(&self, suite: Suite) -> SaLimits {
        let d = suite.default_limits();
        SaLimits {
            rekey_after_packets: self.rekey_after_packets.unwrap_or(d.rekey_after_packets),
            reject_after_packets: self.reject_after_packets.unwrap_or(d.reject_after_packets),
            rekey_after_bytes: self.rekey_after_bytes.unwrap_or(d.rekey_after_bytes),
            reject_after_bytes: self.reject_after_bytes.unwrap_or(d.reject_after_bytes),
        }
    }

    /// Checks internal consistency for `suite`.
    pub fn validate(&self, suite: Suite) -> Result<(), ConfigError> {
        if self.rekey_after_seconds == 0 {
            return Err(ConfigError::new(
                "rotation.rekey_after_seconds",
                "must be at least 1",
            ));
        }
        if self.rekey_after_seconds > MAX_SECONDS {
            return Err(ConfigError::new(
                "rotation.rekey_after_seconds",
                "must be at most one year",
            ));
        }
        if self
            .reject_after_seconds
            .is_some_and(|s| s > MAX_SECONDS + 86_400)
        {
            return Err(ConfigError::new(
                "rotation.reject_after_seconds",
                "must be at most one year and a day",
            ));
        }
        if self.reject_after() <= self.rekey_after() {
            return Err(ConfigError::new(
                "rotation.reject_after_seconds",
                "must be greater than rekey_after_seconds",
            ));
        }
        if self.jitter_percent > 50 {
            return Err(ConfigError::new(
                "rotation.jitter_percent",
                "must be at most 50",
            ));
        }
        let l = self.sa_limits(suite);
        if l.rekey_after_packets == 0 || l.rekey_after_packets >= l.reject_after_packets {
            return Err(ConfigError::new(
                "rotation.rekey_after_packets",
                "must be at least 1 and below reject_after_packets",
            ));
        }
        if l.rekey_after_bytes == 0 || l.rekey_after_bytes >= l.reject_after_bytes {
            return Err(ConfigError::new(
                "rotation.rekey_after_bytes",
                "must be at least 1 and below reject_after_bytes",
            ));
        }
        Ok(())
    }
}

/// Timer values of the handshake and liveness machinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimerConfig {
    /// First handshake retransmission delay; doubles per attempt.
    pub handshake_retry_ms: u64,
    /// Cap of the retransmission delay.
    pub handshake_retry_max_ms: u64,
    /// Retransmission jitter (added, uniform), in percent of the delay.
    pub handshake_retry_jitter_percent: u8,
    /// Initiation attempts before the peer is declared unreachable.
    pub handshake_attempts: u32,
    /// Send an empty data message if we received data but sent nothing for this long.
    pub keepalive_ms: u64,
    /// Start a handshake if we sent data but received nothing for this long.
    pub dead_peer_ms: u64,
    /// Pause between handshakes after a suite mismatch (no retry storm).
    pub suite_mismatch_backoff_ms: u64,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            handshake_retry_ms: 1_000,
            handshake_retry_max_ms: 8_000,
            handshake_retry_jitter_percent: 20,
            handshake_attempts: 8,
            keepalive_ms: 10_000,
            dead_peer_ms: 15_000,
            suite_mismatch_backoff_ms: 60_000,
        }
    }
}

impl TimerConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.handshake_retry_ms == 0 {
            return Err(ConfigError::new(
                "timers.handshake_retry_ms",
                "must be at least 1",
            ));
        }
        if self.handshake_retry_max_ms < self.handshake_retry_ms {
            return Err(ConfigError::new(
                "timers.handshake_retry_max_ms",
                "must be at least handshake_retry_ms",
            ));
        }
        if self.handshake_retry_jitter_percent > 100 {
            return Err(ConfigError::new(
                "timers.handshake_retry_jitter_percent",
                "must be at most 100",
            ));
        }
        if self.handshake_attempts == 0 {
            return Err(ConfigError::new(
                "timers.handshake_attempts",
                "must be at least 1",
            ));
        }
        for (field, v) in [
            ("timers.handshake_retry_max_ms", self.handshake_retry_max_ms),
            ("timers.dead_peer_ms", self.dead_peer_ms),
            (
                "timers.suite_mismatch_backoff_ms",
                self.suite_mismatch_backoff_ms,
            ),
        ] {
            if v > MAX_MS {
                return Err(ConfigError::new(field, "must be at most one year"));
            }
        }
        if self.keepalive_ms == 0 || self.dead_peer_ms <= self.keepalive_ms {
            return Err(ConfigError::new(
                "timers.dead_peer_ms",
                "must be greater than keepalive_ms (both non-zero)",
            ));
        }
        Ok(())
    }
}

/// Handshake DoS limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// Handshake messages per second above which mac2 (a cookie) is
    /// required (the driver's handshake backlog engages it too, see
    /// [`super::Endpoint::handle_handshake_backlog`]).
    pub handshakes_per_second_before_cookies: u32,
    /// Per-source-IP initiation rate under load, for sources that proved
    /// their address with a valid mac2 (token bucket refill per second).
    pub per_source_per_second: u32,
    /// Per-source-IP burst of the above.
    pub per_source_burst: u32,
    /// Cookie replies per second, all sources together (so a spoofed flood
    /// cannot make this node a reflector or fill its send buffer). A
    /// configured peer's current endpoint is exempt from this cap and the
    /// per-source one: a flood, spoofed or not, must not starve a peer of
    /// the cookie it needs (replies to peers are bounded by the handshake
    /// queue).
    pub cookie_replies_per_second: u32,
    /// Cookie replies per second to one source IP (peers' endpoints exempt).
    pub cookie_replies_per_source_per_second: u32,
    /// Burst of both cookie buckets' (global burst = one second's worth).
    pub cookie_replies_per_source_burst: u32,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            handshakes_per_second_before_cookies: 200,
            per_source_per_second: 20,
            per_source_burst: 10,
            cookie_replies_per_second: 1000,
            cookie_replies_per_source_per_second: 5,
            cookie_replies_per_source_burst: 10,
        }
    }
}

/// One peer.
pub struct PeerConfig {
    /// The peer's static X25519 public key (its identity).
    pub public_key: PublicKey,
    /// Optional pre-shared key (zero when unset).
    pub psk: Option<Psk>,
    /// Where to send handshakes until the peer is heard from.
    pub endpoint: Option<SocketAddr>,
    /// Send an empty data message this often when idle (NAT bindings).
    pub persistent_keepalive: Option<Duration>,
    /// Human name for logs and status.
    pub name: Option<String>,
}

impl PeerConfig {
    /// A peer with only a key and an endpoint.
    pub fn new(public_key: PublicKey, endpoint: Option<SocketAddr>) -> Self {
        PeerConfig {
            public_key,
            psk: None,
            endpoint,
            persistent_keepalive: None,
            name: None,
        }
    }
}

/// The endpoint: identity, suite, limits, timers.
pub struct EndpointConfig {
    pub private_key: PrivateKey,
    /// Bound into the Noise prologue (at most 64 bytes).
    pub network_id: String,
    pub suite: Suite,
    pub rotation: RotationLimits,
    pub timers: TimerConfig,
    pub load: LoadConfig,
    /// Packets queued per peer while no SA is usable.
    pub queue_packets: usize,
    /// Seed for SPIs and jitter (deterministic simulation); `None` = OS randomness.
    pub rng_seed: Option<[u8; 32]>,
}

impl EndpointConfig {
    /// Defaults for everything but the identity and network.
    pub fn new(private_key: PrivateKey, network_id: impl Into<String>) -> Self {
        EndpointConfig {
            private_key,
            network_id: network_id.into(),
            suite: Suite::preferred(),
            rotation: RotationLimits::default(),
            timers: TimerConfig::default(),
            load: LoadConfig::default(),
            queue_packets: 64,
            rng_seed: None,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.network_id.len() > vxsec_crypto::noise::MAX_NETWORK_ID_LEN {
            return Err(ConfigError::new("network_id", "longer than 64 bytes"));
        }
        self.rotation.validate(self.suite)?;
        self.timers.validate()?;
        if self.load.per_source_per_second == 0 || self.load.per_source_burst == 0 {
            return Err(ConfigError::new(
                "load.per_source_per_second",
                "rate and burst must be at least 1",
            ));
        }
        if self.load.cookie_replies_per_second == 0
            || self.load.cookie_replies_per_source_per_second == 0
            || self.load.cookie_replies_per_source_burst == 0
        {
            return Err(ConfigError::new(
                "load.cookie_replies_per_second",
                "cookie reply rates and burst must be at least 1",
            ));
        }
        if self.queue_packets == 0 || self.queue_packets > 65_536 {
            return Err(ConfigError::new("queue_packets", "must be in 1..=65536"));
        }
        Ok(())
    }

    /// Replaces each invalid group by its defaults (for `Endpoint::new`).
    pub(crate) fn sanitized(mut self) -> Self {
        if self.network_id.len() > vxsec_crypto::noise::MAX_NETWORK_ID_LEN {
            self.network_id = String::new();
        }
        if self.rotation.validate(self.suite).is_err() {
            self.rotation = RotationLimits::default();
        }
        if self.timers.validate().is_err() {
            self.timers = TimerConfig::default();
        }
        if self.load.per_source_per_second == 0
            || self.load.per_source_burst == 0
            || self.load.cookie_replies_per_second == 0
            || self.load.cookie_replies_per_source_per_second == 0
            || self.load.cookie_replies_per_source_burst == 0
        {
            self.load = LoadConfig::default();
        }
        if self.queue_packets == 0 || self.queue_packets > 65_536 {
            self.queue_packets = 64;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_follow_design() {
        let r = RotationLimits::default();
        assert_eq!(r.rekey_after(), Duration::from_secs(600));
        assert_eq!(r.reject_after(), Duration::from_secs(660));
        assert_eq!(r.jitter_percent, 10);
        for s in Suite::ALL {
            r.validate(s).unwrap();
            assert_eq!(r.sa_limits(s), s.default_limits());
        }
        TimerConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let r = RotationLimits {
            rekey_after_seconds: 0,
            ..RotationLimits::default()
        };
        let e = r.validate(Suite::Aes256Gcm).unwrap_err();
        assert_eq!(e.field, "rotation.rekey_after_seconds");
        assert!(e.to_string().starts_with("rotation.rekey_after_seconds: "));
        let r = RotationLimits {
            rekey_after_packets: Some(10),
            reject_after_packets: Some(10),
            ..RotationLimits::default()
        };
        assert_eq!(
            r.validate(Suite::Aes256Gcm).unwrap_err().field,
            "rotation.rekey_after_packets"
        );
        let r = RotationLimits {
            reject_after_seconds: Some(600),
            ..RotationLimits::default()
        };
        assert_eq!(
            r.validate(Suite::Aes256Gcm).unwrap_err().field,
            "rotation.reject_after_seconds"
        );
        let t = TimerConfig {
            handshake_attempts: 0,
            ..TimerConfig::default()
        };
        assert_eq!(t.validate().unwrap_err().field, "timers.handshake_attempts");
    }

    #[test]
    fn rotation_parses_from_toml_with_defaults() {
        let r: RotationLimits = toml::from_str("rekey_after_seconds = 30").unwrap();
        assert_eq!(r.rekey_after_seconds, 30);
        assert_eq!(r.reject_after(), Duration::from_secs(90));
        assert!(toml::from_str::<RotationLimits>("bogus = 1").is_err());
    }
}
