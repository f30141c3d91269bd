//! The fleet view: which store records are accepted as peers. A pure state
//! machine fed by any peer source (etcd today, Kubernetes node annotations
//! later): `handle_put`/`handle_delete`/`handle_snapshot` take store keys and
//! raw values, verify them, and return the [`Change`]s the agent applies.
//! No I/O, no clock (time comes in as Unix seconds).
//!
//! Store layout: one record per tunnel address,
//! `<prefix>/<network_id>/nodes/<tunnel address>`, whose value is a node
//! certificate. A record is accepted only if it verifies against the
//! authority, names this network, is valid now, sits under the key of its
//! own tunnel address, lies in this node's tunnel prefix, and no other
//! accepted record holds its public key. Rejections are counted by reason
//! and logged once per (record, reason).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use tracing::{info, warn};
use vxsec_crypto::key::PublicKey;

use super::authority::AuthorityKey;
use super::cert::{CertBody, SignedCert};
use crate::agent::config::TunnelCidr;

/// What the agent must do to its peer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add or replace the peer of this certificate.
    Add(Box<CertBody>),
    /// Remove the peer with this key.
    Remove(PublicKey),
    /// The node at this record rolled its static key (same tunnel address,
    /// same node name): the peer with key `old` takes the certificate's key
    /// and keeps its SAs.
    Rekey { old: PublicKey, body: Box<CertBody> },
}

/// One accepted record.
#[derive(Debug, Clone)]
struct Accepted {
    bytes: Vec<u8>,
    body: CertBody,
}

/// Counters exported by `status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewCounters {
    pub accepted: u64,
    pub removed: u64,
    pub rejected: BTreeMap<&'static str, u64>,
}

/// The verified fleet as this node sees it.
pub struct FleetView {
    authority: AuthorityKey,
    network_id: String,
    own_key: PublicKey,
    own_prefix: TunnelCidr,
    nodes_prefix: String,
    records: HashMap<String, Accepted>,
    logged: HashSet<(String, &'static str)>,
    pub counters: ViewCounters,
}

impl FleetView {
    pub fn new(
        authority: AuthorityKey,
        store_prefix: &str,
        network_id: &str,
        own_key: PublicKey,
        own_prefix: TunnelCidr,
    ) -> Self {
        Self {
            authority,
            network_id: network_id.to_string(),
            own_key,
            own_prefix,
            nodes_prefix: nodes_prefix(store_prefix, network_id),
            records: HashMap::new(),
            logged: HashSet::new(),
            counters: ViewCounters::default(),
        }
    }

    /// This node rolled its static key: its own record now carries `key`.
    pub fn set_own_key(&mut self, key: PublicKey) {
        self.own_key = key;
    }

    /// The prefix every record of this network lives under.
    pub fn nodes_prefix(&self) -> &str {
        &self.nodes_prefix
    }

    /// Accepted peers (not counting this node's own record).
    pub fn peer_count(&self) -> usize {
        self.records.len()
    }

    /// The certificates to cache.
    pub fn cached(&self) -> Vec<&[u8]> {
        self.records.values().map(|a| a.bytes.as_slice()).collect()
    }

    /// An `Add` for every accepted record (to restore the peer table).
    pub fn all_peers(&self) -> Vec<Change> {
        self.records
            .values()
            .map(|a| Change::Add(Box::new(a.body.clone())))
            .collect()
    }

    /// The earliest expiry of an accepted record.
    pub fn next_expiry_unix(&self) -> Option<u64> {
        self.records.values().map(|a| a.body.not_after_unix).min()
    }

    /// A record was written (or read during a snapshot).
    pub fn handle_put(&mut self, store_key: &str, value: &[u8], now_unix: u64) -> Vec<Change> {
        if self
            .records
            .get(store_key)
            .is_some_and(|a| a.bytes == value)
        {
            return Vec::new();
        }
        match self.check(store_key, value, now_unix) {
            Ok(None) => Vec::new(),
            Ok(Some(body)) => {
                let mut out = Vec::new();
                let mut rekey_from = None;
                if let Some(old) = self.records.get(store_key) {
                    if old.body.public_key != body.public_key {
                        if old.body.name == body.name {
                            rekey_from = Some(old.body.public_key);
                        } else {
                            out.push(Change::Remove(old.body.public_key));
                        }
                    }
                }
                self.logged.retain(|(k, _)| k != store_key);
                self.counters.accepted += 1;
                info!(node = %body.name, address = %body.tunnel_address,
                      peer = %body.public_key.fingerprint(), "fleet record accepted");
                self.records.insert(
                    store_key.to_string(),
                    Accepted {
                        bytes: value.to_vec(),
                        body: body.clone(),
                    },
                );
                out.push(match rekey_from {
                    Some(old) => Change::Rekey {
                        old,
                        body: Box::new(body),
                    },
                    None => Change::Add(Box::new(body)),
                });
                out
            }
            // A bad write never replaces an accepted record.
            Err(reason) => {
                self.reject(store_key, reason, "");
                Vec::new()
            }
        }
    }

    /// The agent could not add an accepted record's peer (e.g. a static
    /// peer holds its tunnel address): count it and forget the record.
    pub fn handle_refused(&mut self, key: &PublicKey, why: &str) {
        let store_key = self
            .records
            .iter()
            .find(|(_, a)| a.body.public_key == *key)
            .map(|(k, _)| k.clone());
        if let Some(k) = store_key {
            self.records.remove(&k);
            self.counters.accepted = self.counters.accepted.saturating_sub(1);
            self.reject(&k, "address_conflict", why);
        }
    }

    /// A record was deleted (or its lease expired).
    pub fn handle_delete(&mut self, store_key: &str) -> Vec<Change> {
        self.logged.retain(|(k, _)| k != store_key);
        match self.records.remove(store_key) {
            Some(a) => {
                self.counters.removed += 1;
                info!(node = %a.body.name, address = %a.body.tunnel_address, "fleet record removed");
                vec![Change::Remove(a.body.public_key)]
            }
            None => Vec::new(),
        }
    }

    /// A full listing (after a (re)connect): records not in it are removed,
    /// the others put.
    pub fn handle_snapshot(&mut self, items: &[(String, Vec<u8>)], now_unix: u64) -> Vec<Change> {
        let live: HashSet<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
        let gone: Vec<String> = self
            .records
            .keys()
            .filter(|k| !live.contains(k.as_str()))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for k in gone {
            out.extend(self.handle_delete(&k));
        }
        for (k, v) in items {
            out.extend(self.handle_put(k, v, now_unix));
        }
        out
    }

    /// Removes records whose certificate has expired.
    pub fn handle_expiry(&mut self, now_unix: u64) -> Vec<Change> {
        let expired: Vec<String> = self
            .records
            .iter()
            .filter(|(_, a)| now_unix >= a.body.not_after_unix)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for k in expired {
            if let Some(a) = self.records.remove(&k) {
                self.reject(&k, "expired", "");
                out.push(Change::Remove(a.body.public_key));
            }
        }
        out
    }

    /// `Ok(None)`: this node's own record.
    fn check(
        &self,
        store_key: &str,
        value: &[u8],
        now_unix: u64,
    ) -> Result<Option<CertBody>, &'static str> {
        let SignedCert { body, .. } = self
            .authority
            .verify(value, &self.network_id, now_unix)
            .map_err(|r| r.reason())?;
        let addr_in_key = store_key
            .strip_prefix(&self.nodes_prefix)
            .and_then(|a| a.parse::<IpAddr>().ok());
        if addr_in_key != Some(body.tunnel_address) {
            return Err("key_mismatch");
        }
        if body.public_key == self.own_key {
            return Ok(None);
        }
        if body.tunnel_address == self.own_prefix.addr {
            return Err("address_conflict");
        }
        if !self.own_prefix.contains(body.tunnel_address) {
            return Err("outside_prefix");
        }
        let dup = self
            .records
            .iter()
            .any(|(k, a)| k != store_key && a.body.public_key == body.public_key);
        if dup {
            return Err("duplicate_key");
        }
        Ok(Some(body))
    }

    fn reject(&mut self, store_key: &str, reason: &'static str, detail: &str) {
        *self.counters.rejected.entry(reason).or_default() += 1;
        if self.logged.insert((store_key.to_string(), reason)) {
            warn!(record = %store_key, reason, detail, "fleet record rejected");
        }
    }
}

/// `<prefix>/<network_id>/nodes/`, with exactly one `/` between parts.
pub fn nodes_prefix(store_prefix: &str, network_id: &str) -> String {
    format!("{}/{network_id}/nodes/", store_prefix.trim_end_matches('/'))
}

/// The store key of a node's record.
pub fn record_key(store_prefix: &str, network_id: &str, tunnel_address: IpAddr) -> String {
    format!("{}{tunnel_address}", nodes_prefix(store_prefix, network_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::authority::Authority;
    use crate::fleet::cert::tests::sample;

    const NOW: u64 = 1_750_000_000;

    fn view(a: &Authority) -> FleetView {
        FleetView::new(
            a.public_key(),
            "/vxsec",
            "prod",
            PublicKey::from_bytes([1; 32]),
            "10.200.0.1/16".parse().expect("cidr"),
        )
    }

    fn cert(a: &Authority, key: u8, addr: &str) -> (String, Vec<u8>) {
        let mut b = sample();
        b.public_key = PublicKey::from_bytes([key; 32]);
        b.tunnel_address = addr.parse().expect("ip");
        let k = record_key("/vxsec", "prod", b.tunnel_address);
        (k, a.sign(b).expect("signs"))
    }

    #[test]
    fn valid_records_come_and_go() {
        let a = Authority::generate().expect("key");
        let mut v = view(&a);
        let (k, c) = cert(&a, 9, "10.200.0.5");
        assert!(matches!(
            v.handle_put(&k, &c, NOW).as_slice(),
            [Change::Add(_)]
        ));
        assert!(
            v.handle_put(&k, &c, NOW).is_empty(),
            "same bytes: no change"
        );
        assert_eq!(v.peer_count(), 1);
        assert_eq!(
            v.handle_delete(&k),
            vec![Change::Remove(PublicKey::from_bytes([9; 32]))]
        );
        assert_eq!(v.peer_count(), 0);
    }

    #[test]
    fn bad_records_never_become_peers_and_are_counted() {
        let a = Authority::generate().expect("key");
        let other = Authority::generate().expect("key");
        let mut v = view(&a);
        let (k, good) = cert(&a, 9, "10.200.0.5");
        assert_eq!(v.handle_put(&k, &good, NOW).len(), 1);
        // An altered, unsigned or foreign write does not replace it.
        let mut altered = good.clone();
        altered[20] ^= 1;
        let (_, forged) = cert(&other, 9, "10.200.0.5");
        for bad in [altered.as_slice(), b"garbage", forged.as_slice()] {
            assert!(v.handle_put(&k, bad, NOW).is_empty());
        }
        assert_eq!(v.peer_count(), 1);
        // Wrong key, own address, outside the prefix, duplicate key, expired.
        let (_, c6) = cert(&a, 6, "10.200.0.6");
        assert!(v.handle_put(&k.replace(".5", ".7"), &c6, NOW).is_empty());
        let (k1, c1) = cert(&a, 7, "10.200.0.1");
        assert!(v.handle_put(&k1, &c1, NOW).is_empty());
        let (k2, c2) = cert(&a, 8, "10.99.0.2");
        assert!(v.handle_put(&k2, &c2, NOW).is_empty());
        let (k3, c3) = cert(&a, 9, "10.200.0.9");
        assert!(v.handle_put(&k3, &c3, NOW).is_empty());
        assert!(v.handle_put(&k3, &c3, 1_900_000_000).is_empty());
        let r = &v.counters.rejected;
        for (reason, n) in [
            ("bad_signature", 1),
            ("malformed", 1),
            ("wrong_authority", 1),
            ("key_mismatch", 1),
            ("address_conflict", 1),
            ("outside_prefix", 1),
            ("duplicate_key", 1),
            ("expired", 1),
        ] {
            assert_eq!(r.get(reason), Some(&n), "{reason}: {r:?}");
        }
        assert_eq!(v.peer_count(), 1);
        // Own record: silently skipped.
        let (ko, co) = cert(&a, 1, "10.200.0.3");
        assert!(v.handle_put(&ko, &co, NOW).is_empty());
        assert_eq!(v.counters.rejected.values().sum::<u64>(), 8);
    }

    #[test]
    fn snapshot_removes_what_vanished_and_expiry_removes_peers() {
        let a = Authority::generate().expect("key");
        let mut v = view(&a);
        let (k5, c5) = cert(&a, 5, "10.200.0.5");
        let (k6, c6) = cert(&a, 6, "10.200.0.6");
        v.handle_put(&k5, &c5, NOW);
        v.handle_put(&k6, &c6, NOW);
        let ch = v.handle_snapshot(&[(k6.clone(), c6.clone())], NOW);
        assert_eq!(ch, vec![Change::Remove(PublicKey::from_bytes([5; 32]))]);
        assert_eq!(v.next_expiry_unix(), Some(1_800_000_000));
        assert!(v.handle_expiry(NOW).is_empty());
        assert_eq!(
            v.handle_expiry(1_800_000_000),
            vec![Change::Remove(PublicKey::from_bytes([6; 32]))]
        );
        assert_eq!(v.peer_count(), 0);
    }

    #[test]
    fn a_record_the_agent_refuses_is_forgotten_and_counted() {
        let a = Authority::generate().expect("key");
        let mut v = view(&a);
        let (k, c) = cert(&a, 5, "10.200.0.5");
        v.handle_put(&k, &c, NOW);
        // e.g. a static [[peer]] already holds 10.200.0.5.
        v.handle_refused(&PublicKey::from_bytes([5; 32]), "tunnel address taken");
        assert_eq!(v.peer_count(), 0);
        assert_eq!(v.counters.rejected.get("address_conflict"), Some(&1));
        assert_eq!(v.counters.accepted, 0);
        // The same bytes again are checked again (and may now fit).
        assert_eq!(v.handle_put(&k, &c, NOW).len(), 1);
    }

    #[test]
    fn a_new_key_at_an_address_replaces_the_old_peer() {
        let a = Authority::generate().expect("key");
        let mut v = view(&a);
        let (k, c) = cert(&a, 5, "10.200.0.5");
        let mut other = sample();
        other.name = "another-node".into();
        other.public_key = PublicKey::from_bytes([6; 32]);
        other.tunnel_address = "10.200.0.5".parse().expect("ip");
        let c2 = a.sign(other).expect("signs");
        v.handle_put(&k, &c, NOW);
        let ch = v.handle_put(&k, &c2, NOW);
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0], Change::Remove(PublicKey::from_bytes([5; 32])));
        assert!(matches!(&ch[1], Change::Add(b) if b.public_key == PublicKey::from_bytes([6; 32])));
    }

    #[test]
    fn the_same_node_with_a_new_key_is_a_rekey_not_a_new_peer() {
        let a = Authority::generate().expect("key");
        let mut v = view(&a);
        let (k, c) = cert(&a, 5, "10.200.0.5");
        let (_, c2) = cert(&a, 6, "10.200.0.5");
        v.handle_put(&k, &c, NOW);
        let ch = v.handle_put(&k, &c2, NOW);
        assert!(
            matches!(ch.as_slice(), [Change::Rekey { old, body }]
                if *old == PublicKey::from_bytes([5; 32])
                    && body.public_key == PublicKey::from_bytes([6; 32])),
            "{ch:?}"
        );
        assert_eq!(v.peer_count(), 1);
        assert!(v.counters.rejected.is_empty(), "no conflict counted");
        // This node's own rotation: its new record is its own, not a
        // conflict on its own address.
        let mut body = sample();
        body.public_key = PublicKey::from_bytes([2; 32]);
        body.tunnel_address = "10.200.0.1".parse().expect("ip");
        let kown = record_key("/vxsec", "prod", body.tunnel_address);
        let cown = a.sign(body).expect("signs");
        assert!(v.handle_put(&kown, &cown, NOW).is_empty());
        assert_eq!(v.counters.rejected.get("address_conflict"), Some(&1));
        v.set_own_key(PublicKey::from_bytes([2; 32]));
        let before = v.counters.rejected.clone();
        assert!(v.handle_put(&kown, &cown, NOW).is_empty());
        assert_eq!(v.counters.rejected, before);
    }
}
