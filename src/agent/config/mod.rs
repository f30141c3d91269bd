//! The agent's TOML configuration: the [`Config`] type, loading and
//! validation, with the sections cut by concept (`interface`, `policy`,
//! `peers`) and the located errors in `error`.
//!
//! Every error names the file, line, column and field (`interface.listen_port`,
//! `peer[2].endpoint`). Parsing does no I/O beyond reading the file itself; key
//! files are read later by [`crate::agent::keys`]. The protocol limits
//! (`[rotation]`, `[timers]`) are the protocol core's own types and checks.

mod error;
mod interface;
mod peers;
mod policy;
mod validate;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::proto::{RotationLimits, TimerConfig};

pub use error::ConfigFileError;
pub use interface::{
    InterfaceConfig, LogFormat, Mode, TunnelCidr, DEFAULT_BUSY_POLL_US, MAX_BUSY_POLL_US,
    MAX_DEFAULT_WORKERS, MAX_WORKERS,
};
pub use peers::{resolve_endpoint, PeerEntry};
pub use policy::{PolicyConfig, TransparentUnknown};

use error::locate;

/// Default UDP port of the encrypted transport.
pub const DEFAULT_LISTEN_PORT: u16 = 51830;
/// IANA VXLAN port.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub interface: InterfaceConfig,
    /// `[rotation]`: SA limits (DESIGN §5); the protocol core's own type.
    #[serde(default)]
    pub rotation: RotationLimits,
    /// `[timers]`: handshake retries, keepalive, dead-peer detection.
    #[serde(default)]
    pub timers: TimerConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerEntry>,
    /// `[fleet]`: peers from etcd, signed by a fleet authority.
    #[serde(default)]
    pub fleet: Option<crate::agent::fleet::FleetConfig>,
}

impl Config {
    /// The settings that differ between `self` (running) and `new` but only
    /// take effect at start: everything outside `[[peer]]`. SIGHUP applies
    /// peer changes and reports these.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.interface, &new.interface);
        let get = |o: &Option<Spanned<u16>>| o.as_ref().map(|v| *v.get_ref());
        let checks = [
            ("interface.name", a.name.get_ref() != b.name.get_ref()),
            (
                "interface.address",
                a.address.get_ref() != b.address.get_ref(),
            ),
            ("interface.listen_port", a.listen_port != b.listen_port),
            (
                "interface.private_key_file",
                a.private_key_file.get_ref() != b.private_key_file.get_ref(),
            ),
            ("interface.suite", a.suite != b.suite),
            ("interface.network_id", a.network_id != b.network_id),
            (
                "interface.underlay_mtu",
                get(&a.underlay_mtu) != get(&b.underlay_mtu),
            ),
            ("interface.mtu", get(&a.mtu) != get(&b.mtu)),
            (
                "interface.control_socket",
                a.control_socket != b.control_socket,
            ),
            (
                "interface.metrics_address",
                a.metrics_address != b.metrics_address,
            ),
            ("interface.log_format", a.log_format != b.log_format),
            ("interface.mode", a.mode != b.mode),
            ("interface.workers", a.worker_count() != b.worker_count()),
            ("interface.busy_poll_us", a.busy_poll() != b.busy_poll()),
            ("rotation", self.rotation != new.rotation),
            ("timers", self.timers != new.timers),
            ("policy", self.policy != new.policy),
            ("fleet", self.fleet != new.fleet),
        ];
        checks
            .into_iter()
            .filter_map(|(field, changed)| changed.then_some(field))
            .collect()
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigFileError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            locate(path, text, span, e.message().to_string())
        })?;
        cfg.validate(text).map_err(|(span, field, message)| {
            let mut err = locate(path, text, span, message);
            if !field.is_empty() {
                err.field = field;
            }
            err
        })?;
        Ok(cfg)
    }

    /// The control socket path.
    pub fn control_socket(&self) -> PathBuf {
        self.interface.control_socket.clone().unwrap_or_else(|| {
            PathBuf::from(format!("/run/vxsec/{}.sock", self.interface.name.get_ref()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vxsec_crypto::suite::Suite;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn parse(text: &str) -> Result<Config, ConfigFileError> {
        Config::parse(Path::new("/etc/vxsec/vxsec.toml"), text)
    }

    fn base() -> String {
        format!(
            "[interface]\naddress = \"10.200.0.1/16\"\nprivate_key_file = \"/k\"\n\n[[peer]]\npublic_key = \"{KEY}\"\nendpoint = \"192.0.2.2:51830\"\ntunnel_address = \"10.200.0.2\"\nallowed_vnis = [42]\n"
        )
    }

    #[test]
    fn minimal_config_has_documented_defaults() {
        let c = parse(&base()).expect("valid");
        assert_eq!(c.interface.name.get_ref(), "vxsec0");
        assert_eq!(c.interface.listen_port, 51830);
        assert_eq!(c.policy.vxlan_port, 4789);
        assert!(c.policy.vxlan_only);
        assert!(c.policy.fail_closed, "guards are on by default");
        assert_eq!(c.rotation.rekey_after_seconds, 600);
        assert_eq!(c.peers.len(), 1);
        assert_eq!(
            c.peers[0]
                .allowed_vnis
                .as_ref()
                .map(|v| v.get_ref().clone()),
            Some(vec![42])
        );
        assert_eq!(c.control_socket(), PathBuf::from("/run/vxsec/vxsec0.sock"));
    }

    #[test]
    fn type_error_names_file_line_column_and_field() {
        let text = base().replace(
            "private_key_file = \"/k\"",
            "private_key_file = \"/k\"\nlisten_port = \"x\"",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!((e.line, e.column), (4, 15), "{e}");
        assert_eq!(e.field, "interface.listen_port");
        assert!(
            e.to_string()
                .starts_with("/etc/vxsec/vxsec.toml:4:15: interface.listen_port: "),
            "{e}"
        );
    }

    #[test]
    fn transparent_mode_is_chosen_checked_and_located() {
        let t = |extra: &str| {
            base().replace(
                "private_key_file = \"/k\"",
                &format!("private_key_file = \"/k\"\n{extra}"),
            )
        };
        let c = parse(&t("mode = \"transparent\"")).expect("valid");
        assert_eq!(c.interface.mode, Mode::Transparent);
        assert_eq!(parse(&base()).expect("valid").interface.mode, Mode::Route);
        assert_eq!(c.policy.transparent_unknown, TransparentUnknown::Cleartext);
        let e = parse(&t("mode = \"bridge\"")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "interface.mode"), "{e}");
        // Every peer needs the underlay address the overlay sends to.
        let no_ep = t("mode = \"transparent\"").replace("endpoint = \"192.0.2.2:51830\"\n", "");
        let e = parse(&no_ep).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "peer[0].endpoint"), "{e}");
        let drop = format!(
            "{}\n[policy]\ntransparent_unknown = \"drop\"\n",
            t("mode = \"transparent\"")
        );
        let d = parse(&drop).expect("valid");
        assert_eq!(d.policy.transparent_unknown, TransparentUnknown::Drop);
        assert_eq!(c.restart_only_changes(&d), vec!["policy"]);
        assert_eq!(
            parse(&base()).expect("valid").restart_only_changes(&c),
            vec!["interface.mode"]
        );
        let e = parse(&format!(
            "{}\n[policy]\ntransparent_unknown = \"drop\"\n",
            base()
        ))
        .unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (12, "policy.transparent_unknown"),
            "{e}"
        );
        assert!(e.message.contains("transparent"), "{e}");
    }

    #[test]
    fn fail_closed_is_a_located_policy_bool() {
        let off = parse(&format!("{}\n[policy]\nfail_closed = false\n", base())).expect("valid");
        assert!(!off.policy.fail_closed);
        let e = parse(&format!("{}\n[policy]\nfail_closed = \"no\"\n", base())).unwrap_err();
        assert_eq!(e.field, "policy.fail_closed", "{e}");
        assert_eq!(e.line, 12, "{e}");
        let on = parse(&base()).expect("valid");
        assert_eq!(on.restart_only_changes(&off), vec!["policy"]);
    }

    #[test]
    fn bad_values_in_peers_are_located() {
        let text = base().replace("10.200.0.2", "10.99.0.2");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "peer[0].tunnel_address");
        assert_eq!(e.line, 8);
        assert!(e.message.contains("outside the interface prefix"), "{e}");

        let text = base().replace(KEY, "not-a-key");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "peer[0].public_key");
        assert_eq!(e.line, 6);

        let text = base().replace("[42]", "[16777216]");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "peer[0].allowed_vnis");

        let text = base().replace("192.0.2.2:51830", "192.0.2.2");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "peer[0].endpoint");
    }

    #[test]
    fn workers_and_busy_poll_are_bounded_and_located() {
        let c = parse(&base()).expect("valid");
        assert!((1..=MAX_DEFAULT_WORKERS).contains(&c.interface.worker_count()));
        assert_eq!(
            c.interface.busy_poll(),
            std::time::Duration::from_micros(u64::from(DEFAULT_BUSY_POLL_US))
        );
        let text = base().replace("[interface]", "[interface]\nworkers = 3\nbusy_poll_us = 0");
        let c = parse(&text).expect("valid");
        assert_eq!(c.interface.worker_count(), 3);
        assert!(c.interface.busy_poll().is_zero());

        let e = parse(&base().replace("[interface]", "[interface]\nworkers = 0")).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("interface.workers", 2), "{e}");
        let text = base().replace("[interface]", "[interface]\nbusy_poll_us = 2000000");
        let e = parse(&text).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("interface.busy_poll_us", 2),
            "{e}"
        );
    }

    #[test]
    fn restart_only_changes_name_the_settings_sighup_cannot_apply() {
        let running = parse(&base()).expect("valid");
        // Peer edits and moved lines are not restart-only changes.
        let text = format!(
            "# a comment shifts every span\n{}",
            base().replace("[42]", "[42, 43]")
        );
        assert!(running
            .restart_only_changes(&parse(&text).expect("valid"))
            .is_empty());
        let text = base().replace(
            "[interface]",
            "[policy]\nvxlan_port = 8472\n\n[interface]\nlisten_port = 4000\nbusy_poll_us = 7",
        );
        let new = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            running.restart_only_changes(&new),
            vec!["interface.listen_port", "interface.busy_poll_us", "policy"]
        );
    }

    #[test]
    fn duplicate_peers_and_unknown_fields_are_refused() {
        let mut text = base();
        text.push_str(&format!(
            "\n[[peer]]\npublic_key = \"{KEY}\"\ntunnel_address = \"10.200.0.3\"\n"
        ));
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "peer[1].public_key");
        assert_eq!(e.line, 12);

        let e = parse(&base().replace("[interface]", "[interface]\nlisten_prot = 1")).unwrap_err();
        assert!(e.message.contains("unknown field `listen_prot`"), "{e}");
        assert_eq!(e.field, "interface.listen_prot");

        let e = parse(&base().replace("address = \"10.200.0.1/16\"\n", "")).unwrap_err();
        assert!(e.message.contains("missing field `address`"), "{e}");
    }

    #[test]
    fn core_validation_errors_point_at_the_field() {
        let text = base().replace(
            "[[peer]]",
            "[rotation]\nrekey_after_seconds = 0\n\n[[peer]]",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "rotation.rekey_after_seconds");
        assert_eq!((e.line, e.column), (6, 1), "{e}");
        let text = base().replace("[[peer]]", "[timers]\nhandshake_retry_ms = 1\n\n[[peer]]");
        let c = parse(&text);
        assert!(
            c.is_ok()
                || c.as_ref()
                    .err()
                    .is_some_and(|e| e.field.starts_with("timers."))
        );
    }

    #[test]
    fn suites_and_cidrs_parse() {
        let c = parse(&base().replace("[interface]", "[interface]\nsuite = \"chacha20-poly1305\""))
            .expect("valid");
        assert_eq!(c.interface.suite, Some(Suite::ChaCha20Poly1305));
        let e =
            parse(&base().replace("[interface]", "[interface]\nsuite = \"rot13\"")).unwrap_err();
        assert_eq!(e.field, "interface.suite");
        assert!("10.0.0.1/33".parse::<TunnelCidr>().is_err());
        assert!("10.0.0.1".parse::<TunnelCidr>().is_err());
        let c: TunnelCidr = "10.200.0.1/16".parse().expect("valid");
        assert!(c.contains("10.200.255.1".parse().expect("ip")));
        assert!(!c.contains("10.201.0.1".parse().expect("ip")));
        let c6: TunnelCidr = "fd00::1/64".parse().expect("valid");
        assert!(c6.contains("fd00::2".parse().expect("ip")));
        assert!(!c6.contains("10.200.0.1".parse().expect("ip")));
        assert_eq!(c.network().to_string(), "10.200.0.0");
        assert_eq!(c6.network().to_string(), "fd00::");
        let host: TunnelCidr = "fd00:1:2:3:4:5:6:7/128".parse().expect("valid");
        assert_eq!(host.network(), host.addr);
    }
}
