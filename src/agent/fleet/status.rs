//! Fleet state as `status`, `status --json` and metrics show it: whether
//! the agent is connected to etcd, how long since it last heard from it,
//! and records accepted, removed and rejected by reason. Filled by
//! the fleet task (`super::state`); this module only holds and renders it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The fleet part of the status document.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FleetStatus {
    pub endpoints: Vec<String>,
    /// The etcd key prefix this node watches.
    pub records_prefix: String,
    pub connected: bool,
    /// Seconds since etcd last answered (a watch event or a lease renewal);
    /// `None` before the first answer.
    pub last_sync_seconds: Option<f64>,
    /// Accepted fleet records now (peers from the fleet).
    pub peers: u64,
    /// Records accepted, ever (including replacements).
    pub accepted: u64,
    /// Records removed (deleted, lease expired).
    pub removed: u64,
    /// Records refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Connection attempts that failed or sessions that broke.
    pub reconnects: u64,
    /// Peers loaded from the local cache at start.
    pub loaded_from_cache: u64,
    /// The last static key rotation (`vxsec fleet rotate`), if any since
    /// start.
    #[serde(default)]
    pub rotation: Option<RotationStatus>,
}

/// Where this node's last static key rotation stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RotationStatus {
    /// The key replaced.
    pub previous_public_key: String,
    /// Seconds since the rotation.
    pub rotated_seconds_ago: f64,
    /// Whether the previous key is still answered.
    pub previous_active: bool,
    /// Seconds until the previous key is retired (`None` once it is).
    pub retires_in_seconds: Option<f64>,
    /// Whether the new certificate is published in etcd.
    pub published: bool,
}

impl FleetStatus {
    /// Lines for `vxsec status`.
    pub fn render_into(&self, o: &mut String) {
        let age = self
            .last_sync_seconds
            .map_or_else(|| "never".to_string(), |s| format!("{s:.1}s ago"));
        let _ = writeln!(
            o,
            "  fleet: {} ({}), last sync {age}, {} peers, {} from cache, {} reconnects",
            if self.connected {
                "connected"
            } else {
                "DISCONNECTED"
            },
            self.endpoints.join(","),
            self.peers,
            self.loaded_from_cache,
            self.reconnects,
        );
        if let Some(r) = &self.rotation {
            let state = match r.retires_in_seconds {
                Some(s) if r.previous_active => format!("still answered, retires in {s:.0}s"),
                _ => "retired".to_string(),
            };
            let _ = writeln!(
                o,
                "  fleet rotation: {:.0}s ago, {}; previous key {} {state}",
                r.rotated_seconds_ago,
                if r.published {
                    "published"
                } else {
                    "NOT YET PUBLISHED"
                },
                r.previous_public_key,
            );
        }
        let rejected: Vec<String> = self
            .rejected
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            o,
            "  fleet records: accepted {}, removed {}, rejected {}",
            self.accepted,
            self.removed,
            if rejected.is_empty() {
                "none".to_string()
            } else {
                rejected.join(" ")
            }
        );
    }

    /// Prometheus families.
    pub fn metrics_into(&self, o: &mut String) {
        let fam = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP vxsec_{name} {help}\n# TYPE vxsec_{name} {kind}");
        };
        fam(
            o,
            "fleet_connected",
            "gauge",
            "1 while connected to the fleet store (etcd).",
        );
        let _ = writeln!(o, "vxsec_fleet_connected {}", u8::from(self.connected));
        if let Some(s) = self.last_sync_seconds {
            fam(
                o,
                "fleet_last_sync_seconds",
                "gauge",
                "Seconds since etcd last answered.",
            );
            let _ = writeln!(o, "vxsec_fleet_last_sync_seconds {s:.3}");
        }
        fam(
            o,
            "fleet_peers",
            "gauge",
            "Peers from accepted fleet records.",
        );
        let _ = writeln!(o, "vxsec_fleet_peers {}", self.peers);
        fam(
            o,
            "fleet_records_accepted_total",
            "counter",
            "Fleet records accepted.",
        );
        let _ = writeln!(o, "vxsec_fleet_records_accepted_total {}", self.accepted);
        fam(
            o,
            "fleet_records_removed_total",
            "counter",
            "Fleet records removed.",
        );
        let _ = writeln!(o, "vxsec_fleet_records_removed_total {}", self.removed);
        fam(
            o,
            "fleet_records_rejected_total",
            "counter",
            "Fleet records refused, by reason.",
        );
        for (reason, v) in &self.rejected {
            let _ = writeln!(
                o,
                "vxsec_fleet_records_rejected_total{{reason=\"{reason}\"}} {v}"
            );
        }
        fam(
            o,
            "fleet_reconnects_total",
            "counter",
            "Failed or broken etcd sessions.",
        );
        let _ = writeln!(o, "vxsec_fleet_reconnects_total {}", self.reconnects);
        fam(
            o,
            "fleet_previous_key_active",
            "gauge",
            "1 while a rotated-out static key is still answered.",
        );
        let active = self.rotation.as_ref().is_some_and(|r| r.previous_active);
        let _ = writeln!(o, "vxsec_fleet_previous_key_active {}", u8::from(active));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_state_and_reasons() {
        let mut f = FleetStatus {
            endpoints: vec!["http://10.0.0.1:2379".into()],
            connected: true,
            last_sync_seconds: Some(1.5),
            peers: 2,
            accepted: 3,
            ..FleetStatus::default()
        };
        f.rejected.insert("bad_signature".into(), 4);
        let mut o = String::new();
        f.render_into(&mut o);
        assert!(
            o.contains("fleet: connected") && o.contains("last sync 1.5s ago"),
            "{o}"
        );
        assert!(o.contains("rejected bad_signature=4"), "{o}");
        let mut m = String::new();
        f.metrics_into(&mut m);
        assert!(m.contains("vxsec_fleet_records_rejected_total{reason=\"bad_signature\"} 4"));
        assert!(m.contains("vxsec_fleet_connected 1"));
        assert!(m.contains("vxsec_fleet_previous_key_active 0"));
        f.rotation = Some(RotationStatus {
            previous_public_key: "old".into(),
            rotated_seconds_ago: 3.0,
            previous_active: true,
            retires_in_seconds: Some(597.0),
            published: true,
        });
        let mut o = String::new();
        f.render_into(&mut o);
        assert!(
            o.contains("previous key old still answered, retires in 597s"),
            "{o}"
        );
        let mut m = String::new();
        f.metrics_into(&mut m);
        assert!(m.contains("vxsec_fleet_previous_key_active 1"));
    }
}
