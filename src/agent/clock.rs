//! The agent's one window onto the clocks. Everything below the agent takes
//! time as an argument; this is the only place allowed to read it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic now.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time since the Unix epoch (for TAI64N handshake timestamps).
#[allow(clippy::disallowed_methods)]
pub fn unix_time() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}
