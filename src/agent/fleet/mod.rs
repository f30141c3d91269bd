//! Fleet mode in the agent: peers from etcd, certified by a fleet authority.
//! At start [`prepare`] checks this node's certificate and reads the
//! TLS/password files (`setup`); then [`run`] starts from the local cache and
//! keeps the peer table in step with etcd (`etcd`), through the shared
//! [`FleetState`] (`state`) that `status` and metrics read (`status`).
//! `rotate` rolls this node's static key on request (the control socket's
//! `rotate_identity`); the fleet task then publishes the new certificate and
//! retires the old key after the grace period. The
//! `[fleet]` config section is the config's (`agent::config::FleetConfig`).
//!
//! Arrows point one way: `etcd` uses `setup` and `state`; `state` uses
//! `setup` and `status`; nothing here imports `etcd` but this file. Peer
//! changes go through the same request handler as the control socket's
//! `peer add/remove`; this module adds no second way to change peers. etcd
//! is never in the data path: losing it changes no peer. Certificates, their
//! files and the verified view are `crate::fleet` (no network I/O there).

mod etcd;
pub(in crate::agent) mod rotate;
mod setup;
mod state;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::clock;
use crate::fleet::cert::CertBody;
use crate::fleet::files;

pub use setup::{prepare, FleetSetup};
pub use state::{Apply, FleetState};
pub use status::FleetStatus;

use state::apply_changes;

/// Warn at start when this node's certificate has less than this left.
const OWN_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Starts from the cache (every record verified again), then follows etcd.
pub async fn run(mut setup: FleetSetup, state: Arc<FleetState>, apply: Apply) {
    let left = setup
        .own_not_after_unix
        .saturating_sub(clock::unix_time().as_secs());
    if left < OWN_EXPIRY_WARNING.as_secs() {
        warn!(
            days = left / 86_400,
            "fleet: this node's certificate expires soon; peers drop it then (`vxsec fleet sign` a new one)"
        );
    }
    match files::load_cache(&setup.cache_path) {
        Ok(certs) => {
            let now = clock::unix_time().as_secs();
            let items: Vec<(String, Vec<u8>)> = certs
                .into_iter()
                .filter_map(|c| {
                    let (sc, _) = crate::fleet::cert::SignedCert::parse(&c).ok()?;
                    let k = record_key_of(&setup, &sc.body);
                    Some((k, c))
                })
                .collect();
            let changes = setup.view.handle_snapshot(&items, now);
            apply_changes(changes, &mut setup.view, &apply, &state);
            let n = setup.view.peer_count() as u64;
            state.update(|s| s.loaded_from_cache = n);
            info!(peers = n, cache = %setup.cache_path.display(), "fleet: started from the cache");
        }
        Err(e) => info!("fleet: no cache loaded ({e})"),
    }
    etcd::follow(setup, state, apply).await;
}

fn record_key_of(setup: &FleetSetup, b: &CertBody) -> String {
    format!("{}{}", setup.view.nodes_prefix(), b.tunnel_address)
}

/// What the fleet modules' unit tests share: a signed certificate and a
/// config that trusts its authority.
#[cfg(test)]
mod test_support {
    use std::path::{Path, PathBuf};

    use crate::agent::clock;
    use crate::agent::config::Config;
    use crate::fleet::authority::Authority;
    use crate::fleet::cert::tests::sample;
    use crate::fleet::cert::CertBody;
    use crate::fleet::files;

    /// A new authority and the sample certificate it signed, valid from
    /// 10 s ago for an hour, written to `dir/n.crt`.
    pub fn signed_sample(dir: &Path) -> (Authority, CertBody, PathBuf) {
        let a = Authority::generate().expect("key");
        let mut body = sample();
        let now = clock::unix_time().as_secs();
        body.not_before_unix = now - 10;
        body.not_after_unix = now + 3600;
        let crt = dir.join("n.crt");
        files::write_certificate(&crt, &a.sign(body.clone()).expect("signs")).expect("write");
        (a, body, crt)
    }

    /// A config for the sample's node (10.200.0.5/16, network "prod")
    /// whose `[fleet]` trusts `a`, names `crt` and adds `extra` lines.
    pub fn config(a: &Authority, crt: &Path, extra: &str) -> Config {
        let text = format!(
            "[interface]\naddress = \"10.200.0.5/16\"\nprivate_key_file = \"/k\"\nnetwork_id = \"prod\"\n\n[fleet]\nendpoints = [\"http://10.0.0.1:2379\"]\nauthority_public_key = \"{}\"\ncertificate_file = \"{}\"\n{extra}",
            a.public_key(),
            crt.display()
        );
        Config::parse(Path::new("/t.toml"), &text).expect("valid")
    }
}
