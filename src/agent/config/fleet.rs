//! The `[fleet]` section of the agent's config: where the fleet store
//! (etcd) is, how to reach it (TLS, user), which authority to trust, and
//! this node's certificate. Checked with the rest of the config, errors
//! located the same way; files are read later, at start.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer};
use toml::Spanned;

use crate::fleet::authority::AuthorityKey;

/// Default etcd key prefix; records live under `<prefix>/<network_id>/nodes/`.
pub const DEFAULT_PREFIX: &str = "/vxsec";
/// Default lease TTL of this node's record.
/// Long enough that an agent cut off from etcd for a while stays in the
/// others' view (a clean stop withdraws the record at once; only a crashed
/// node waits for this).
pub const DEFAULT_LEASE_TTL_SECONDS: u16 = 60;
/// Default grace period of a static key rotation (`vxsec fleet rotate`):
/// how long the previous key is still answered. Peers learn the new key
/// within seconds while etcd is up; the grace covers an etcd outage too.
pub const DEFAULT_ROTATION_GRACE_SECONDS: u32 = 600;
/// Longest grace period accepted (a week).
pub const MAX_ROTATION_GRACE_SECONDS: u32 = 7 * 86_400;

/// `[fleet]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// etcd client URLs, e.g. `https://10.0.0.1:2379`.
    pub endpoints: Spanned<Vec<String>>,
    #[serde(default = "default_prefix")]
    pub prefix: Spanned<String>,
    /// The fleet authority's Ed25519 public key (`vxsec fleet init`).
    #[serde(deserialize_with = "de_authority")]
    pub authority_public_key: Spanned<AuthorityKey>,
    /// This node's certificate (`vxsec fleet sign`).
    pub certificate_file: PathBuf,
    /// Last verified records, for a start while etcd is down (0600).
    /// Default: `/var/lib/vxsec/<interface>.fleet-cache`.
    pub cache_file: Option<PathBuf>,
    #[serde(default = "default_ttl")]
    pub lease_ttl_seconds: Spanned<u16>,
    /// After `vxsec fleet rotate`, the previous static key is still
    /// answered this long, then retired.
    #[serde(default = "default_rotation_grace")]
    pub rotation_grace_seconds: Spanned<u32>,
    /// TLS: the CA that signed etcd's server certificate.
    pub ca_file: Option<Spanned<PathBuf>>,
    /// TLS client certificate and key (both or neither).
    pub cert_file: Option<Spanned<PathBuf>>,
    pub key_file: Option<Spanned<PathBuf>>,
    /// etcd user; its password is read from `password_file` (0600).
    pub user: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
}

impl PartialEq for FleetConfig {
    fn eq(&self, o: &Self) -> bool {
        let p = |x: &Option<Spanned<PathBuf>>| x.as_ref().map(|v| v.get_ref().clone());
        self.endpoints.get_ref() == o.endpoints.get_ref()
            && self.prefix.get_ref() == o.prefix.get_ref()
            && self.authority_public_key.get_ref() == o.authority_public_key.get_ref()
            && self.certificate_file == o.certificate_file
            && self.cache_file == o.cache_file
            && self.lease_ttl_seconds.get_ref() == o.lease_ttl_seconds.get_ref()
            && self.rotation_grace_seconds.get_ref() == o.rotation_grace_seconds.get_ref()
            && p(&self.ca_file) == p(&o.ca_file)
            && p(&self.cert_file) == p(&o.cert_file)
            && p(&self.key_file) == p(&o.key_file)
            && self.user.as_ref().map(|u| u.get_ref()) == o.user.as_ref().map(|u| u.get_ref())
            && p(&self.password_file) == p(&o.password_file)
    }
}

type Invalid = (Range<usize>, String, String);

impl FleetConfig {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(*self.lease_ttl_seconds.get_ref()))
    }

    /// How long the previous static key is answered after a rotation.
    pub fn rotation_grace(&self) -> Duration {
        Duration::from_secs(u64::from(*self.rotation_grace_seconds.get_ref()))
    }

    /// The cache path for interface `iface`.
    pub fn cache_path(&self, iface: &str) -> PathBuf {
        self.cache_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/var/lib/vxsec/{iface}.fleet-cache")))
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), Invalid> {
        let err = |span: Range<usize>, f: &str, m: String| Err((span, format!("fleet.{f}"), m));
        let eps = self.endpoints.get_ref();
        if eps.is_empty() {
            return err(
                self.endpoints.span(),
                "endpoints",
                "list at least one etcd URL".into(),
            );
        }
        let mut tls = false;
        for e in eps {
            let rest = e
                .strip_prefix("https://")
                .inspect(|_| tls = true)
                .or_else(|| e.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || !r.contains(':')) {
                return err(
                    self.endpoints.span(),
                    "endpoints",
                    format!("`{e}` is not http(s)://host:port"),
                );
            }
        }
        if tls && eps.iter().any(|e| e.starts_with("http://")) {
            return err(
                self.endpoints.span(),
                "endpoints",
                "mixes http:// and https://".into(),
            );
        }
        if tls && self.ca_file.is_none() {
            return err(
                self.endpoints.span(),
                "ca_file",
                "https:// endpoints need `ca_file` (the CA of etcd's server certificate)".into(),
            );
        }
        if let (Some(c), None) | (None, Some(c)) = (&self.cert_file, &self.key_file) {
            return err(
                c.span(),
                "cert_file",
                "give both `cert_file` and `key_file`, or neither".into(),
            );
        }
        if !tls {
            if let Some(c) = self.ca_file.as_ref().or(self.cert_file.as_ref()) {
                return err(
                    c.span(),
                    "ca_file",
                    "TLS files need https:// endpoints".into(),
                );
            }
        }
        if let (Some(p), None) = (&self.password_file, &self.user) {
            return err(p.span(), "password_file", "needs `user`".into());
        }
        if let (Some(u), None) = (&self.user, &self.password_file) {
            return err(u.span(), "user", "needs `password_file`".into());
        }
        let prefix = self.prefix.get_ref();
        if !prefix.starts_with('/') || prefix.len() > 128 {
            return err(
                self.prefix.span(),
                "prefix",
                "must start with `/` (at most 128 bytes)".into(),
            );
        }
        if !(2..=3600).contains(self.lease_ttl_seconds.get_ref()) {
            return err(
                self.lease_ttl_seconds.span(),
                "lease_ttl_seconds",
                "must be 2..=3600".into(),
            );
        }
        if !(1..=MAX_ROTATION_GRACE_SECONDS).contains(self.rotation_grace_seconds.get_ref()) {
            return err(
                self.rotation_grace_seconds.span(),
                "rotation_grace_seconds",
                format!("must be 1..={MAX_ROTATION_GRACE_SECONDS} (seconds)"),
            );
        }
        Ok(())
    }
}

fn default_prefix() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_PREFIX.to_string())
}

fn default_ttl() -> Spanned<u16> {
    Spanned::new(0..0, DEFAULT_LEASE_TTL_SECONDS)
}

fn default_rotation_grace() -> Spanned<u32> {
    Spanned::new(0..0, DEFAULT_ROTATION_GRACE_SECONDS)
}

fn de_authority<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<AuthorityKey>, D::Error> {
    let s: Spanned<String> = Spanned::deserialize(d)?;
    let span = s.span();
    let key = s.get_ref().parse::<AuthorityKey>().map_err(|()| {
        de::Error::custom(
            "not an authority key: expected 44 characters of base64 (`vxsec fleet init`)",
        )
    })?;
    Ok(Spanned::new(span, key))
}

#[cfg(test)]
mod tests {
    use crate::agent::config::Config;
    use std::path::Path;

    const AUTH: &str = "wl7xH81Aqal2RUI/+e/Ayq1vGEAywRJ//7c1KXjduf8=";

    fn parse(fleet: &str) -> Result<Config, crate::agent::config::ConfigFileError> {
        let text = format!(
            "[interface]\naddress = \"10.200.0.1/16\"\nprivate_key_file = \"/k\"\n\n[fleet]\n{fleet}"
        );
        Config::parse(Path::new("/etc/vxsec/vxsec.toml"), &text)
    }

    fn base() -> String {
        format!(
            "endpoints = [\"http://10.0.0.1:2379\"]\nauthority_public_key = \"{AUTH}\"\ncertificate_file = \"/etc/vxsec/node.crt\"\n"
        )
    }

    #[test]
    fn minimal_fleet_section_has_defaults() {
        let c = parse(&base()).expect("valid");
        let f = c.fleet.expect("fleet");
        assert_eq!(f.prefix.get_ref(), "/vxsec");
        assert_eq!(f.lease_ttl().as_secs(), 60);
        assert_eq!(f.rotation_grace().as_secs(), 600);
        assert_eq!(
            f.cache_path("vxsec0"),
            Path::new("/var/lib/vxsec/vxsec0.fleet-cache")
        );
    }

    #[test]
    fn fleet_errors_name_line_and_field() {
        let e = parse(&base().replace("http://10.0.0.1:2379", "10.0.0.1")).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("fleet.endpoints", 6), "{e}");
        let e = parse(&base().replace(AUTH, "nope")).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("fleet.authority_public_key", 7),
            "{e}"
        );
        let e = parse(&base().replace("http:", "https:")).unwrap_err();
        assert_eq!(e.field, "fleet.ca_file", "{e}");
        let e = parse(&format!(
            "{}ca_file = \"/ca.pem\"\n",
            base().replace("http:", "https:")
        ));
        assert!(e.is_ok(), "{e:?}");
        let e = parse(&format!("{}user = \"vx\"\n", base())).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("fleet.user", 9), "{e}");
        let e = parse(&format!("{}lease_ttl_seconds = 1\n", base())).unwrap_err();
        assert_eq!(e.field, "fleet.lease_ttl_seconds", "{e}");
        let e = parse(&format!(
            "{}ca_file = \"/ca\"\ncert_file = \"/c\"\n",
            base().replace("http:", "https:")
        ))
        .unwrap_err();
        assert_eq!(e.field, "fleet.cert_file", "{e}");
        let e = parse(&format!("{}rotation_grace_seconds = 0\n", base())).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("fleet.rotation_grace_seconds", 9),
            "{e}"
        );
        let c = parse(&format!("{}rotation_grace_seconds = 5\n", base())).expect("valid");
        assert_eq!(c.fleet.expect("fleet").rotation_grace().as_secs(), 5);
        let e = parse(&format!("{}endpont = 1\n", base())).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
