//! The fleet state shared by the fleet task, `status`, metrics, the control
//! socket and a clean stop: status counters, last contact with etcd, the
//! live lease (revoked on leave), this node's certificate and a static key
//! rotation in progress (the new certificate to publish, when the previous
//! key retires), and the application of view changes to the peer table
//! through the control socket's request handler. It runs no etcd session
//! itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vxsec_crypto::key::PublicKey;

use super::setup::FleetSetup;
use super::status::{FleetStatus, RotationStatus};
use crate::agent::clock;
use crate::agent::control::protocol::{PeerSpec, Request, Response};
use crate::fleet::cert::CertBody;
use crate::fleet::view::{Change, FleetView};

/// Rounds over every etcd member when withdrawing the record at a clean
/// stop (bounded by a 6 s budget in all).
const REVOKE_ROUNDS: usize = 5;

/// The request handler shared with the control socket.
pub type Apply = Arc<dyn Fn(Request) -> Response + Send + Sync>;

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
    /// This node's certificate now (replaced by a rotation).
    own: Mutex<CertBody>,
    /// A rotation's new certificate, waiting for the fleet task to publish.
    publish: Mutex<Option<(Vec<u8>, CertBody)>>,
    /// Woken when `publish` is set (or a rotation's retire time changed).
    pub(super) rotated: tokio::sync::Notify,
    rotation: Mutex<Option<Rotation>>,
    /// Held for the whole of one rotation request (one at a time).
    rotating: Mutex<()>,
    /// `fleet.rotation_grace_seconds`.
    grace: Duration,
}

/// This node's last static key rotation.
struct Rotation {
    previous: PublicKey,
    at: Instant,
    /// When the previous key retires; `None` once it has.
    retire_at: Option<Instant>,
    published: bool,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
            own: Mutex::new(setup.own_body.clone()),
            publish: Mutex::new(None),
            rotated: tokio::sync::Notify::new(),
            rotation: Mutex::new(None),
            rotating: Mutex::new(()),
            grace: setup.rotation_grace,
        }
    }

    /// One rotation at a time: held from its checks to its end.
    pub fn rotation_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        locked(&self.rotating)
    }

    /// This node's certificate as it is now.
    pub fn own_body(&self) -> CertBody {
        locked(&self.own).clone()
    }

    /// This node rolled its static key from `previous` at `now`; `cert`
    /// (for `body`) is to be published in place of the old record, and the
    /// previous key retires after the grace period. Returns when.
    pub fn begin_rotation(
        &self,
        previous: PublicKey,
        cert: Vec<u8>,
        body: CertBody,
        now: Instant,
    ) -> Instant {
        let retire_at = now + self.grace;
        *locked(&self.own) = body.clone();
        *locked(&self.publish) = Some((cert, body));
        *locked(&self.rotation) = Some(Rotation {
            previous,
            at: now,
            retire_at: Some(retire_at),
            published: false,
        });
        self.rotated.notify_one();
        retire_at
    }

    /// The new certificate to publish, if a rotation left one.
    pub(super) fn take_publish(&self) -> Option<(Vec<u8>, CertBody)> {
        locked(&self.publish).take()
    }

    /// The rotation's certificate is in etcd.
    pub(super) fn mark_published(&self) {
        if let Some(r) = locked(&self.rotation).as_mut() {
            r.published = true;
        }
    }

    /// When the previous key is due to retire, if it is still answered.
    pub(super) fn retire_at(&self) -> Option<Instant> {
        locked(&self.rotation).as_ref().and_then(|r| r.retire_at)
    }

    /// The previous key was retired.
    pub fn retired(&self) {
        if let Some(r) = locked(&self.rotation).as_mut() {
            r.retire_at = None;
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
        let now = clock::now();
        s.rotation = locked(&self.rotation).as_ref().map(|r| RotationStatus {
            previous_public_key: r.previous.to_string(),
            rotated_seconds_ago: now.saturating_duration_since(r.at).as_secs_f64(),
            previous_active: r.retire_at.is_some(),
            retires_in_seconds: r
                .retire_at
                .map(|t| t.saturating_duration_since(now).as_secs_f64()),
            published: r.published,
        });
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
            Change::Rekey { old, body } => {
                let resp = apply(Request::PeerKeyChange {
                    old_public_key: old.to_string(),
                    peer: peer_spec(&body),
                });
                if !resp.ok {
                    // E.g. its endpoint changed too: re-create it (its
                    // SAs go; it handshakes again).
                    warn!(
                        peer = %body.public_key.fingerprint(),
                        "fleet peer's key change not applied in place ({}); re-creating it",
                        resp.error.unwrap_or_default()
                    );
                    let _ = apply(Request::PeerRemove {
                        public_key: old.to_string(),
                    });
                    let key = body.public_key;
                    let resp = apply(Request::PeerAdd {
                        peer: peer_spec(&body),
                    });
                    if !resp.ok {
                        view.handle_refused(&key, &resp.error.unwrap_or_default());
                    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{config, signed_sample};
    use super::*;
    use crate::agent::config::TunnelCidr;

    /// A fleet state for a node with a valid certificate and a 30 s grace.
    fn state() -> (FleetState, CertBody, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, body, crt) = signed_sample(dir.path());
        let c = config(&a, &crt, "rotation_grace_seconds = 30\n");
        let cidr: TunnelCidr = "10.200.0.5/16".parse().expect("cidr");
        let f = c.fleet.as_ref().expect("fleet");
        let setup =
            super::super::prepare(f, "vxsec0", "prod", body.public_key, cidr).expect("prepared");
        (FleetState::new(&setup), body, dir)
    }

    #[test]
    fn a_rotation_is_published_once_and_retires_after_the_grace() {
        let (s, signed, _dir) = state();
        let body = s.own_body();
        assert_eq!(
            (body.public_key, body.tunnel_address),
            (signed.public_key, signed.tunnel_address)
        );
        assert!(s.snapshot().rotation.is_none());
        assert!(s.take_publish().is_none());
        let mut new = body.clone();
        new.public_key = PublicKey::from_bytes([3; 32]);
        let now = clock::now();
        let retire_at = s.begin_rotation(body.public_key, b"cert".to_vec(), new.clone(), now);
        assert_eq!(retire_at, now + Duration::from_secs(30));
        assert_eq!(s.own_body(), new);
        assert_eq!(s.retire_at(), Some(retire_at));
        let r = s.snapshot().rotation.expect("rotation shown");
        assert_eq!(r.previous_public_key, body.public_key.to_string());
        assert!(r.previous_active && !r.published);
        assert!(r.retires_in_seconds.is_some_and(|t| t > 29.0 && t <= 30.0));
        assert_eq!(s.take_publish(), Some((b"cert".to_vec(), new)));
        assert!(s.take_publish().is_none(), "published once");
        s.mark_published();
        s.retired();
        let r = s.snapshot().rotation.expect("rotation shown");
        assert!(r.published && !r.previous_active && r.retires_in_seconds.is_none());
        assert_eq!(s.retire_at(), None);
    }
}
