//! Fleet mode in the agent: checks this node's certificate and reads the
//! TLS/password files at start ([`prepare`]), then runs one tokio task that
//! starts from the local cache and keeps the peer table in step with etcd
//! ([`super::fleet_etcd`]). Peer changes go through the same request
//! handler as the control socket's `peer add/remove`; this module adds no
//! second way to change peers. etcd is never in the data path: losing it
//! changes no peer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vxsec_crypto::key::PublicKey;
use zeroize::Zeroizing;

use super::config::TunnelCidr;
use super::control::{PeerSpec, Request, Response};
use super::fleet_config::FleetConfig;
use super::fleet_status::FleetStatus;
use super::{clock, keys};
use crate::fleet::authority::AuthorityKey;
use crate::fleet::cert::CertBody;
use crate::fleet::files;
use crate::fleet::view::{record_key, Change, FleetView};

/// Rounds over every etcd member when withdrawing the record at a clean
/// stop (bounded by a 6 s budget in all).
const REVOKE_ROUNDS: usize = 5;

/// Warn at start when this node's certificate has less than this left.
const OWN_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// The request handler shared with the control socket.
pub type Apply = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// Everything the fleet task needs, loaded and checked before the agent
/// creates anything.
pub struct FleetSetup {
    pub(super) endpoints: Vec<String>,
    pub(super) own_record_key: String,
    pub(super) own_cert: Vec<u8>,
    /// When this node's own certificate expires (the others then drop it).
    pub(super) own_not_after_unix: u64,
    pub(super) lease_ttl_seconds: i64,
    pub(super) cache_path: PathBuf,
    pub(super) tls: Option<TlsFiles>,
    pub(super) user: Option<(String, Zeroizing<String>)>,
    pub(super) view: FleetView,
}

/// PEM contents of the TLS files.
pub(super) struct TlsFiles {
    pub ca: Vec<u8>,
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

/// Reads and checks the fleet files: the node certificate must verify
/// against the configured authority and name this node's key, tunnel
/// address and network.
pub fn prepare(
    f: &FleetConfig,
    interface: &str,
    network_id: &str,
    own_key: PublicKey,
    own_cidr: TunnelCidr,
) -> Result<FleetSetup, String> {
    let authority: AuthorityKey = *f.authority_public_key.get_ref();
    let cert = files::load_certificate(&f.certificate_file).map_err(|e| e.to_string())?;
    let at = f.certificate_file.display();
    let body = authority
        .verify(&cert, network_id, clock::unix_time().as_secs())
        .map_err(|e| format!("{at}: {e}"))?
        .body;
    if body.public_key != own_key {
        return Err(format!(
            "{at}: certifies key {} but this node's key is {own_key}",
            body.public_key
        ));
    }
    if body.tunnel_address != own_cidr.addr {
        return Err(format!(
            "{at}: certifies tunnel address {} but interface.address is {}",
            body.tunnel_address, own_cidr.addr
        ));
    }
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))
    };
    let tls = match &f.ca_file {
        None => None,
        Some(ca) => Some(TlsFiles {
            ca: read(ca.get_ref())?,
            identity: match (&f.cert_file, &f.key_file) {
                (Some(c), Some(k)) => {
                    let key = keys::read_secret(k.get_ref()).map_err(|e| e.to_string())?;
                    Some((read(c.get_ref())?, Zeroizing::new(key.as_bytes().to_vec())))
                }
                _ => None,
            },
        }),
    };
    let user = match (&f.user, &f.password_file) {
        (Some(u), Some(p)) => {
            let pw = keys::read_secret(p.get_ref()).map_err(|e| e.to_string())?;
            Some((
                u.get_ref().clone(),
                Zeroizing::new(pw.trim_end_matches('\n').to_string()),
            ))
        }
        _ => None,
    };
    let prefix = f.prefix.get_ref();
    Ok(FleetSetup {
        endpoints: f.endpoints.get_ref().clone(),
        own_record_key: record_key(prefix, network_id, own_cidr.addr),
        own_cert: cert,
        own_not_after_unix: body.not_after_unix,
        lease_ttl_seconds: i64::from(*f.lease_ttl_seconds.get_ref()),
        cache_path: f.cache_path(interface),
        tls,
        user,
        view: FleetView::new(authority, prefix, network_id, own_key, own_cidr),
    })
}

/// The fleet state shown by `status` and metrics.
pub struct FleetState {
    status: Mutex<FleetStatus>,
    last_sync: Mutex<Option<Instant>>,
    /// The live session's client (if any) and the last lease granted, for
    /// [`FleetState::leave`]; how to connect when no session is live.
    lease: Mutex<(Option<etcd_client::Client>, Option<i64>)>,
    connect: Mutex<Option<(Vec<String>, etcd_client::ConnectOptions)>>,
    leaving: AtomicBool,
    /// SIGHUP re-read the static peers (dropping every peer not in the
    /// file): the fleet task adds its peers again.
    pub(super) readd: tokio::sync::Notify,
}

impl FleetState {
    pub fn new(setup: &FleetSetup) -> Self {
        Self {
            status: Mutex::new(FleetStatus {
                endpoints: setup.endpoints.clone(),
                records_prefix: setup.view.nodes_prefix().to_string(),
                ..FleetStatus::default()
            }),
            last_sync: Mutex::new(None),
            lease: Mutex::new((None, None)),
            connect: Mutex::new(None),
            leaving: AtomicBool::new(false),
            readd: tokio::sync::Notify::new(),
        }
    }

    /// Clean stop: revokes this node's lease so peers remove it at once
    /// (a crashed agent's record goes when the lease expires).
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        let (client, lease) =
            std::mem::take(&mut *self.lease.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(id) = lease else { return };
        let connect = self
            .connect
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let revoke = async move {
            if let Some(mut c) = client {
                let once = tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(id));
                if let Ok(Ok(_)) = once.await {
                    return Ok(());
                }
            }
            // Every member in turn, a few rounds: right after a leader
            // dies the survivors answer "no leader" until they elect one
            // (about a second), and a revoke needs the leader.
            let mut last = Err("no etcd endpoint".to_string());
            for round in 0..REVOKE_ROUNDS {
                if round > 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                for ep in connect.iter().flat_map(|(eps, _)| eps.iter()) {
                    let opts = connect.as_ref().map(|(_, o)| o.clone());
                    let once = async {
                        etcd_client::Client::connect([ep], opts)
                            .await?
                            .lease_revoke(id)
                            .await
                    };
                    match tokio::time::timeout(Duration::from_secs(1), once).await {
                        Ok(Ok(_)) => return Ok(()),
                        Ok(Err(e)) => last = Err(e.to_string()),
                        Err(_) => last = Err(format!("{ep}: no answer")),
                    }
                }
            }
            last
        };
        match tokio::time::timeout(Duration::from_secs(6), revoke).await {
            Ok(Ok(())) => info!("fleet: record withdrawn"),
            Ok(Err(e)) => {
                warn!("fleet: cannot withdraw the record ({e}); it expires with its lease")
            }
            Err(_) => warn!("fleet: etcd did not answer; the record expires with its lease"),
        }
    }

    /// After a SIGHUP reload: add every accepted fleet peer again.
    pub fn after_reload(&self) {
        self.readd.notify_one();
    }

    pub(super) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    /// A session started (`Some`) or ended (`None`); the lease id is kept.
    pub(super) fn set_session(&self, session: Option<(etcd_client::Client, i64)>) {
        let mut l = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        match session {
            Some((c, id)) => *l = (Some(c), Some(id)),
            None => l.0 = None,
        }
    }

    pub(super) fn set_connect(&self, endpoints: Vec<String>, opts: etcd_client::ConnectOptions) {
        *self.connect.lock().unwrap_or_else(|e| e.into_inner()) = Some((endpoints, opts));
    }

    pub fn snapshot(&self) -> FleetStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.last_sync_seconds = self
            .last_sync
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| clock::now().saturating_duration_since(t).as_secs_f64());
        s
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut FleetStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// etcd answered.
    pub(super) fn synced(&self) {
        *self.last_sync.lock().unwrap_or_else(|e| e.into_inner()) = Some(clock::now());
        self.update(|s| s.connected = true);
    }
}

/// Applies view changes to the peer table through `apply` (the control
/// socket's handler) and mirrors the view's counters into `state`.
pub(super) fn apply_changes(
    changes: Vec<Change>,
    view: &mut FleetView,
    apply: &Apply,
    state: &FleetState,
) {
    for ch in changes {
        match ch {
            Change::Add(body) => {
                let key = body.public_key;
                let resp = apply(Request::PeerAdd {
                    peer: peer_spec(&body),
                });
                if !resp.ok {
                    let why = resp.error.unwrap_or_default();
                    view.handle_refused(&key, &why);
                }
            }
            Change::Remove(key) => {
                let resp = apply(Request::PeerRemove {
                    public_key: key.to_string(),
                });
                if !resp.ok {
                    warn!(peer = %key.fingerprint(), "fleet peer was already gone");
                }
            }
        }
    }
    let c = view.counters.clone();
    let peers = view.peer_count() as u64;
    state.update(|s| {
        s.peers = peers;
        s.accepted = c.accepted;
        s.removed = c.removed;
        s.rejected = c
            .rejected
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
    });
}

/// The control-socket form of a certified peer.
fn peer_spec(b: &CertBody) -> PeerSpec {
    PeerSpec {
        name: Some(if b.name.is_empty() {
            b.public_key.fingerprint()
        } else {
            b.name.clone()
        }),
        public_key: b.public_key.to_string(),
        endpoint: b.endpoints.first().map(ToString::to_string),
        tunnel_address: b.tunnel_address.to_string(),
        allowed_vnis: (!b.allowed_vnis.is_empty()).then(|| b.allowed_vnis.clone()),
        psk_file: None,
        persistent_keepalive_seconds: None,
    }
}

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
    super::fleet_etcd::follow(setup, state, apply).await;
}

fn record_key_of(setup: &FleetSetup, b: &CertBody) -> String {
    format!("{}{}", setup.view.nodes_prefix(), b.tunnel_address)
}

/// Saves the verified records (logs, never fails the task).
pub(super) fn save_cache(setup: &FleetSetup) {
    if let Some(dir) = setup.cache_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = files::save_cache(&setup.cache_path, &setup.view.cached()) {
        warn!("fleet: cannot write the cache: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Config;
    use crate::fleet::authority::Authority;
    use crate::fleet::cert::tests::sample;

    /// A config whose `[fleet]` trusts `a` and names `crt`.
    fn config(a: &Authority, crt: &std::path::Path) -> Config {
        let text = format!(
            "[interface]\naddress = \"10.200.0.5/16\"\nprivate_key_file = \"/k\"\nnetwork_id = \"prod\"\n\n[fleet]\nendpoints = [\"http://10.0.0.1:2379\"]\nauthority_public_key = \"{}\"\ncertificate_file = \"{}\"\n",
            a.public_key(),
            crt.display()
        );
        Config::parse(std::path::Path::new("/t.toml"), &text).expect("valid")
    }

    #[test]
    fn own_certificate_must_fit_this_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Authority::generate().expect("key");
        let mut body = sample();
        let now = clock::unix_time().as_secs();
        body.not_before_unix = now - 10;
        body.not_after_unix = now + 3600;
        let crt = dir.path().join("n.crt");
        files::write_certificate(&crt, &a.sign(body.clone()).expect("signs")).expect("write");
        let c = config(&a, &crt);
        let f = c.fleet.as_ref().expect("fleet");
        let cidr: TunnelCidr = "10.200.0.5/16".parse().expect("cidr");
        let ok = prepare(f, "vxsec0", "prod", body.public_key, cidr);
        assert!(ok.is_ok(), "{:?}", ok.err());
        let e = prepare(f, "vxsec0", "prod", PublicKey::from_bytes([2; 32]), cidr).err();
        assert!(e.is_some_and(|e| e.contains("certifies key")));
        let other: TunnelCidr = "10.200.0.6/16".parse().expect("cidr");
        let e = prepare(f, "vxsec0", "prod", body.public_key, other).err();
        assert!(e.is_some_and(|e| e.contains("certifies tunnel address")));
        let e = prepare(f, "vxsec0", "dev", body.public_key, cidr).err();
        assert!(e.is_some_and(|e| e.contains("another network")));
        // Signed by someone else.
        let rogue = Authority::generate().expect("key");
        let crt2 = dir.path().join("r.crt");
        files::write_certificate(&crt2, &rogue.sign(body).expect("signs")).expect("write");
        let c2 = config(&a, &crt2);
        let e = prepare(
            c2.fleet.as_ref().expect("fleet"),
            "vxsec0",
            "prod",
            PublicKey::from_bytes([9; 32]),
            cidr,
        )
        .err();
        assert!(e.is_some_and(|e| e.contains("another authority")));
    }
}
