//! The etcd session of fleet mode: publish this node's certificate under a
//! lease kept alive, list the network's records once, then watch them (no
//! polling) from the listed revision. Any failure ends the session; the
//! next starts after a backoff with jitter and lists again, so nothing is
//! missed. Known peers are never dropped because etcd is unreachable.
//! After a static key rotation the new certificate replaces this node's
//! record under the same lease (or in the next session), and the previous
//! key is retired when its grace period ends, connected or not.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    WatchOptions,
};
use rand::Rng;
use tracing::{debug, info, warn};

use super::setup::{save_cache, FleetSetup};
use super::state::{apply_changes, Apply, FleetState};
use crate::agent::clock;
use crate::agent::control::protocol::Request;

/// First and longest wait between sessions.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// HTTP/2 pings: a silent etcd is noticed within two of these.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// Runs sessions forever (the task ends with the agent's runtime).
pub(super) async fn follow(mut setup: FleetSetup, state: Arc<FleetState>, apply: Apply) {
    state.set_connect(setup.endpoints.clone(), options(&setup));
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    // One member per session, the next after a failure: a dead member
    // costs one attempt, not a stuck balanced channel.
    let mut member = rand::thread_rng().gen_range(0..setup.endpoints.len().max(1));
    loop {
        let endpoint = setup.endpoints.get(member).cloned().unwrap_or_default();
        let result = session(&mut setup, &endpoint, &state, &apply).await;
        if result.is_err() {
            member = (member + 1) % setup.endpoints.len().max(1);
        }
        state.set_session(None);
        if state.is_leaving() {
            return;
        }
        let synced = match result {
            Ok(()) => true,
            Err((synced, e)) => {
                state.update(|s| {
                    s.connected = false;
                    s.reconnects += 1;
                });
                if warned {
                    debug!("fleet: etcd session ended: {e}");
                } else if e.contains("authentication failed") || e.contains("permission denied") {
                    // etcd's own words for a wrong user/password or a role
                    // without the prefix: the operator's to fix, not a fault.
                    warn!("fleet: etcd refused this node's credentials (check `user`, `password_file` and the user's role on the prefix), keeping known peers: {e}");
                    warned = true;
                } else {
                    warn!("fleet: etcd unreachable or session lost, keeping known peers: {e}");
                    warned = true;
                }
                synced
            }
        };
        if synced {
            backoff = BACKOFF_MIN;
            warned = false;
        }
        // Full jitter on top of half the backoff: never a thundering herd.
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
        let wait = backoff / 2 + Duration::from_millis(jitter);
        expire_while_waiting(&mut setup, &state, &apply, wait).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Sleeps `wait`, removing peers whose certificates expire meanwhile.
async fn expire_while_waiting(
    setup: &mut FleetSetup,
    state: &FleetState,
    apply: &Apply,
    wait: Duration,
) {
    let deadline = tnow() + wait;
    loop {
        let next = expiry_sleep(setup).map_or(deadline, |d| deadline.min(d));
        tokio::select! {
            () = tokio::time::sleep_until(next) => expire(setup, state, apply),
            () = state.readd.notified() => readd(setup, state, apply),
            () = state.rotated.notified() => {
                adopt_rotation(setup, state);
            }
            () = retire_sleep(state) => retire(state, apply),
        }
        if tnow() >= deadline {
            return;
        }
    }
}

/// Takes a rotation's new certificate as this node's own (published by
/// the caller, or by the next session); whether there was one.
fn adopt_rotation(setup: &mut FleetSetup, state: &FleetState) -> bool {
    let Some((cert, body)) = state.take_publish() else {
        return false;
    };
    setup.own_cert = cert;
    setup.own_not_after_unix = body.not_after_unix;
    setup.view.set_own_key(body.public_key);
    true
}

/// Sleeps until the previous key's grace ends (forever if none is active).
async fn retire_sleep(state: &FleetState) {
    match state.retire_at() {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn retire(state: &FleetState, apply: &Apply) {
    let r = apply(Request::RetirePreviousIdentity);
    // Nothing to retire (e.g. retired early over the control socket).
    state.retired();
    info!(
        "fleet: rotation grace over: {}",
        r.message.or(r.error).unwrap_or_default()
    );
}

fn expiry_sleep(setup: &FleetSetup) -> Option<tokio::time::Instant> {
    let at = setup.view.next_expiry_unix()?;
    let now = clock::unix_time().as_secs();
    Some(tnow() + Duration::from_secs(at.saturating_sub(now)))
}

fn expire(setup: &mut FleetSetup, state: &FleetState, apply: &Apply) {
    let changes = setup.view.handle_expiry(clock::unix_time().as_secs());
    if !changes.is_empty() {
        apply_changes(changes, &mut setup.view, apply, state);
        save_cache(setup);
    }
}

fn readd(setup: &mut FleetSetup, state: &FleetState, apply: &Apply) {
    let changes = setup.view.all_peers();
    info!(
        peers = changes.len(),
        "fleet: peers added again after reload"
    );
    apply_changes(changes, &mut setup.view, apply, state);
}

fn options(setup: &FleetSetup) -> ConnectOptions {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(KEEPALIVE, KEEPALIVE)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some(t) = &setup.tls {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&t.ca));
        if let Some((cert, key)) = &t.identity {
            tls = tls.identity(Identity::from_pem(cert, key.as_slice()));
        }
        o = o.with_tls(tls);
    }
    if let Some((u, p)) = &setup.user {
        o = o.with_user(u.clone(), p.as_str());
    }
    o
}

type SessionError = (bool, String);

/// Writes this node's certificate under its record key and `lease`.
async fn publish(
    client: &mut Client,
    setup: &FleetSetup,
    state: &FleetState,
    lease: i64,
) -> Result<(), etcd_client::Error> {
    let opts = PutOptions::new().with_lease(lease);
    client
        .put(
            setup.own_record_key.as_str(),
            setup.own_cert.clone(),
            Some(opts),
        )
        .await?;
    state.mark_published();
    Ok(())
}

/// One session; `Err((synced, why))` says whether it got as far as a full
/// listing before it broke.
async fn session(
    setup: &mut FleetSetup,
    endpoint: &str,
    state: &FleetState,
    apply: &Apply,
) -> Result<(), SessionError> {
    let ttl = Duration::from_secs(setup.lease_ttl_seconds.unsigned_abs());
    let e = |synced| move |err: etcd_client::Error| (synced, err.to_string());
    let mut client = Client::connect([endpoint], Some(options(setup)))
        .await
        .map_err(e(false))?;
    let lease = client
        .lease_grant(setup.lease_ttl_seconds, None)
        .await
        .map_err(e(false))?
        .id();
    adopt_rotation(setup, state);
    publish(&mut client, setup, state, lease)
        .await
        .map_err(e(false))?;
    let (mut keeper, mut keepalive) = client.lease_keep_alive(lease).await.map_err(e(false))?;
    state.set_session(Some((client.clone(), lease)));
    let prefix = setup.view.nodes_prefix().to_string();
    let listing = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(e(false))?;
    let revision = listing.header().map_or(0, |h| h.revision());
    let items: Vec<(String, Vec<u8>)> = listing
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect();
    let changes = setup
        .view
        .handle_snapshot(&items, clock::unix_time().as_secs());
    apply_changes(changes, &mut setup.view, apply, state);
    save_cache(setup);
    state.synced();
    info!(
        records = items.len(),
        peers = setup.view.peer_count(),
        revision,
        "fleet: synced with etcd, watching"
    );
    let mut watch = client
        .watch(
            prefix.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .map_err(e(true))?;
    let mut renew = tokio::time::interval(ttl / 3);
    loop {
        let expiry = expiry_sleep(setup).unwrap_or_else(|| tnow() + Duration::from_secs(3600));
        tokio::select! {
            _ = renew.tick() => keeper.keep_alive().await.map_err(e(true))?,
            r = keepalive.message() => match r.map_err(e(true))? {
                Some(r) if r.ttl() > 0 => state.synced(),
                Some(_) => return Err((true, "lease expired; publishing again".into())),
                None => return Err((true, "lease keep-alive stream closed".into())),
            },
            m = watch.message() => {
                let Some(resp) = m.map_err(e(true))? else {
                    return Err((true, "watch stream closed".into()));
                };
                if resp.canceled() {
                    return Err((true, format!(
                        "watch canceled ({}; compacted at {})",
                        resp.cancel_reason(), resp.compact_revision()
                    )));
                }
                let now = clock::unix_time().as_secs();
                let mut changes = Vec::new();
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key());
                    if key == setup.own_record_key
                        && kv.value() != setup.own_cert.as_slice()
                        && !state.is_leaving()
                    {
                        // Deleted or overwritten by someone else: publish again.
                        return Err((true, "own record changed in etcd; publishing again".into()));
                    }
                    changes.extend(match ev.event_type() {
                        EventType::Put => setup.view.handle_put(&key, kv.value(), now),
                        EventType::Delete => setup.view.handle_delete(&key),
                    });
                }
                apply_changes(changes, &mut setup.view, apply, state);
                if !resp.events().is_empty() {
                    save_cache(setup);
                }
                state.synced();
            }
            () = tokio::time::sleep_until(expiry) => expire(setup, state, apply),
            () = state.readd.notified() => readd(setup, state, apply),
            () = state.rotated.notified() => {
                if adopt_rotation(setup, state) {
                    // The same key and lease: peers see the record change
                    // in place (a key change, not a node leaving).
                    publish(&mut client, setup, state, lease)
                        .await
                        .map_err(e(true))?;
                    info!("fleet: rotated certificate published");
                }
            }
            () = retire_sleep(state) => retire(state, apply),
        }
    }
}

/// The agent clock as a tokio instant.
fn tnow() -> tokio::time::Instant {
    tokio::time::Instant::from_std(clock::now())
}
