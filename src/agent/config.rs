//! The agent's TOML configuration: types, defaults and validation.
//!
//! Every error names the file, line, column and field (`interface.listen_port`,
//! `peer[2].endpoint`). Parsing does no I/O beyond reading the file itself; key
//! files are read later by [`crate::agent::keys`].

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer};
use toml::Spanned;
use vxsec_crypto::key::PublicKey;
use vxsec_crypto::suite::Suite;

use crate::proto::{RotationLimits, TimerConfig};

/// Default UDP port of the encrypted transport.
pub const DEFAULT_LISTEN_PORT: u16 = 51830;
/// IANA VXLAN port.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// A configuration error, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error has no location (unreadable file).
    pub line: usize,
    pub column: usize,
    /// Dotted field path, e.g. `peer[1].endpoint`; empty when unknown.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

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
    pub fleet: Option<super::fleet_config::FleetConfig>,
}

/// `[interface]`: this node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    #[serde(default = "default_interface_name")]
    pub name: Spanned<String>,
    /// Tunnel address and prefix, e.g. `10.200.0.1/16`.
    pub address: Spanned<TunnelCidr>,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    pub private_key_file: Spanned<PathBuf>,
    /// Defaults to the fastest suite on this CPU.
    #[serde(default, deserialize_with = "de_suite")]
    pub suite: Option<Suite>,
    #[serde(default = "default_network_id")]
    pub network_id: String,
    /// Underlay MTU; default: the MTU of the interface that routes to the
    /// first peer, or 1500.
    pub underlay_mtu: Option<Spanned<u16>>,
    /// Tunnel MTU override (normally computed from the underlay MTU).
    pub mtu: Option<Spanned<u16>>,
    pub control_socket: Option<PathBuf>,
    pub metrics_address: Option<SocketAddr>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// `route` (the overlay's VTEPs are tunnel addresses) or `transparent`
    /// (they are underlay addresses; the agent steers VXLAN to its peers'
    /// endpoints into the TUN). DESIGN §1.
    #[serde(default)]
    pub mode: Mode,
    /// Data-plane worker threads, each with its own TUN queue and UDP
    /// socket; default: one per CPU, at most [`MAX_DEFAULT_WORKERS`].
    pub workers: Option<Spanned<u16>>,
    /// How long (µs) an idle worker keeps polling before it sleeps: lower
    /// latency for more CPU. Default [`DEFAULT_BUSY_POLL_US`]; 0 = sleep at once.
    pub busy_poll_us: Option<Spanned<u32>>,
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

/// Default cap on worker threads when `workers` is not set.
pub const MAX_DEFAULT_WORKERS: usize = 4;
/// Most workers `workers` may ask for.
pub const MAX_WORKERS: u16 = 64;
/// Default busy-poll window of an idle worker, µs.
pub const DEFAULT_BUSY_POLL_US: u32 = 50;
/// Longest busy-poll window `busy_poll_us` accepts, µs.
pub const MAX_BUSY_POLL_US: u32 = 1_000_000;

impl InterfaceConfig {
    /// Worker threads to run (configured, else one per CPU up to the cap).
    pub fn worker_count(&self) -> usize {
        match &self.workers {
            Some(w) => usize::from(*w.get_ref()),
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_DEFAULT_WORKERS),
        }
    }

    /// The busy-poll window.
    pub fn busy_poll(&self) -> std::time::Duration {
        let us = self
            .busy_poll_us
            .as_ref()
            .map_or(DEFAULT_BUSY_POLL_US, |b| *b.get_ref());
        std::time::Duration::from_micros(u64::from(us))
    }
}

/// `[policy]`: what may enter the tunnel.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
    /// Only UDP to `vxlan_port` (and ICMP) enters the tunnel.
    #[serde(default = "yes")]
    pub vxlan_only: bool,
    #[serde(default = "yes")]
    pub allow_icmp: bool,
    /// Install the fail-closed guards (`agent::guard`): a blackhole route
    /// for the tunnel prefix and `table inet vxsec`. Off only for operators
    /// who keep VXLAN in their own firewall.
    #[serde(default = "yes")]
    pub fail_closed: bool,
    /// Transparent mode: what happens to VXLAN for underlay addresses that
    /// are not a peer's (nodes that run no vxsec).
    #[serde(default)]
    pub transparent_unknown: TransparentUnknown,
}

/// `interface.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The overlay daemon uses the tunnel addresses as VTEPs.
    #[default]
    Route,
    /// The overlay daemon uses the underlay addresses as VTEPs, unchanged.
    Transparent,
}

/// `policy.transparent_unknown`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransparentUnknown {
    /// Sent as before, unencrypted (so nodes can adopt vxsec one by one);
    /// the guards count these packets.
    #[default]
    Cleartext,
    /// Dropped by the guards: VXLAN leaves only through the TUN.
    Drop,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            vxlan_port: DEFAULT_VXLAN_PORT,
            vxlan_only: true,
            allow_icmp: true,
            fail_closed: true,
            transparent_unknown: TransparentUnknown::Cleartext,
        }
    }
}

/// One `[[peer]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub name: Option<String>,
    #[serde(deserialize_with = "de_public_key")]
    pub public_key: Spanned<PublicKey>,
    /// `host:port`; resolved once at load.
    #[serde(default, deserialize_with = "de_endpoint")]
    pub endpoint: Option<SocketAddr>,
    pub tunnel_address: Spanned<IpAddr>,
    /// VNIs this peer may send and receive; omitted = any.
    pub allowed_vnis: Option<Spanned<Vec<u32>>>,
    pub psk_file: Option<PathBuf>,
    pub persistent_keepalive_seconds: Option<u16>,
}

impl PeerEntry {
    /// The label used in logs and status: the name, or the key fingerprint.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.public_key.get_ref().fingerprint(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// An address with its prefix length, e.g. `10.200.0.1/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl TunnelCidr {
    /// The prefix itself: the address with its host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for TunnelCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for TunnelCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not address/prefix, e.g. 10.200.0.1/16"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("`{p}` is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix == 0 || prefix > max {
            return Err(format!("prefix length must be 1..={max}, not {prefix}"));
        }
        Ok(Self { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for TunnelCidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

fn de_suite<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Suite>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Suite>().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "unknown suite `{s}`; expected `aes-256-gcm` or `chacha20-poly1305`"
        ))
    })
}

fn de_public_key<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<PublicKey>, D::Error> {
    let s: Spanned<String> = Spanned::deserialize(d)?;
    let span = s.span();
    let key = s.get_ref().parse::<PublicKey>().map_err(|_| {
        de::Error::custom("not a public key: expected 44 characters of base64 (`vxsec pubkey`)")
    })?;
    Ok(Spanned::new(span, key))
}

fn de_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    resolve_endpoint(&s).map(Some).map_err(de::Error::custom)
}

/// Resolves `host:port` (IP literals need no resolver).
pub fn resolve_endpoint(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!("`{s}` has no port; expected host:port"));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{s}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

fn default_interface_name() -> Spanned<String> {
    Spanned::new(0..0, "vxsec0".to_string())
}
fn default_listen_port() -> u16 {
    DEFAULT_LISTEN_PORT
}
fn default_network_id() -> String {
    "default".to_string()
}
fn default_vxlan_port() -> u16 {
    DEFAULT_VXLAN_PORT
}
fn yes() -> bool {
    true
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
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

    /// Cross-field checks that serde cannot express.
    fn validate(&self, text: &str) -> Result<(), (Range<usize>, String, String)> {
        let i = &self.interface;
        let name = i.name.get_ref();
        if name.is_empty()
            || name.len() > 15
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err((
                i.name.span(),
                "interface.name".into(),
                format!("`{name}` is not a valid interface name (1-15 of [A-Za-z0-9._-])"),
            ));
        }
        let suite = i.suite.unwrap_or_else(Suite::preferred);
        if let Err(e) = self
            .rotation
            .validate(suite)
            .and_then(|()| self.timers.validate())
        {
            return Err((field_span(text, e.field), e.field.to_string(), e.reason));
        }
        if let Some(m) = &i.mtu {
            if !(576..=65_000).contains(m.get_ref()) {
                return Err((
                    m.span(),
                    "interface.mtu".into(),
                    "must be 576..=65000".into(),
                ));
            }
        }
        if let Some(m) = &i.underlay_mtu {
            if !(576..=65_535).contains(m.get_ref()) {
                return Err((
                    m.span(),
                    "interface.underlay_mtu".into(),
                    "must be 576..=65535".into(),
                ));
            }
        }
        if let Some(w) = &i.workers {
            if !(1..=MAX_WORKERS).contains(w.get_ref()) {
                return Err((
                    w.span(),
                    "interface.workers".into(),
                    format!("must be 1..={MAX_WORKERS}"),
                ));
            }
        }
        if let Some(b) = &i.busy_poll_us {
            if *b.get_ref() > MAX_BUSY_POLL_US {
                return Err((
                    b.span(),
                    "interface.busy_poll_us".into(),
                    format!("must be 0..={MAX_BUSY_POLL_US} (µs)"),
                ));
            }
        }
        let transparent = i.mode == Mode::Transparent;
        if !transparent && self.policy.transparent_unknown != TransparentUnknown::Cleartext {
            return Err((
                field_span(text, "policy.transparent_unknown"),
                "policy.transparent_unknown".into(),
                "applies only with interface.mode = \"transparent\"".into(),
            ));
        }
        if let Some(f) = &self.fleet {
            f.validate()?;
        }
        let own = i.address.get_ref();
        let mut keys = HashSet::new();
        let mut addrs = HashSet::new();
        let mut underlays = HashSet::new();
        for (n, p) in self.peers.iter().enumerate() {
            let field = |f: &str| format!("peer[{n}].{f}");
            if !keys.insert(*p.public_key.get_ref()) {
                return Err((
                    p.public_key.span(),
                    field("public_key"),
                    "the same public key is listed twice".into(),
                ));
            }
            let ta = *p.tunnel_address.get_ref();
            if ta == own.addr {
                return Err((
                    p.tunnel_address.span(),
                    field("tunnel_address"),
                    "is this node's own tunnel address".into(),
                ));
            }
            if !own.contains(ta) {
                return Err((
                    p.tunnel_address.span(),
                    field("tunnel_address"),
                    format!("{ta} is outside the interface prefix {own}"),
                ));
            }
            if !addrs.insert(ta) {
                return Err((
                    p.tunnel_address.span(),
                    field("tunnel_address"),
                    "two peers have the same tunnel address".into(),
                ));
            }
            if transparent {
                let Some(e) = p.endpoint else {
                    return Err((
                        p.public_key.span(),
                        field("endpoint"),
                        "interface.mode = \"transparent\" needs every peer's endpoint: \
                         its IP is the underlay address the overlay sends VXLAN to"
                            .into(),
                    ));
                };
                if !underlays.insert(e.ip()) {
                    return Err((
                        p.public_key.span(),
                        field("endpoint"),
                        format!("two peers have the underlay address {} (transparent mode finds peers by it)", e.ip()),
                    ));
                }
            }
            if let Some(v) = &p.allowed_vnis {
                if let Some(bad) = v.get_ref().iter().find(|&&x| x >= 1 << 24) {
                    return Err((
                        v.span(),
                        field("allowed_vnis"),
                        format!("VNI {bad} does not fit in 24 bits"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The control socket path.
    pub fn control_socket(&self) -> PathBuf {
        self.interface.control_socket.clone().unwrap_or_else(|| {
            PathBuf::from(format!("/run/vxsec/{}.sock", self.interface.name.get_ref()))
        })
    }
}

/// The span of `table.key` in `text` (the table header if the key is not
/// written, e.g. a default that conflicts with another field).
fn field_span(text: &str, field: &str) -> Range<usize> {
    let (table, key) = field.rsplit_once('.').unwrap_or(("", field));
    let mut offset = 0;
    let mut in_table = table.is_empty();
    let mut table_pos = 0..0;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim();
        if line.starts_with('[') {
            let name = line.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = name == table;
            if in_table {
                table_pos = offset..offset + raw.len();
            }
        } else if in_table {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim() == key {
                    let col = raw.len() - raw.trim_start().len();
                    return offset + col..offset + raw.len();
                }
            }
        }
        offset += raw.len();
    }
    table_pos
}

/// Turns a byte span into line/column and names the field found there.
fn locate(path: &Path, text: &str, span: Range<usize>, message: String) -> ConfigError {
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        field: field_at(text, start),
        message,
    }
}

/// The dotted field at byte `pos`: the enclosing table (with an index for
/// arrays of tables) and the key on that line, if any.
fn field_at(text: &str, pos: usize) -> String {
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    let mut offset = 0;
    let mut key = String::new();
    for raw in text.split_inclusive('\n') {
        let line = raw.trim();
        let line_end = offset + raw.len();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let c = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{c}]");
            *c += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim().to_string();
        } else if pos >= offset && pos < line_end.max(offset + 1) {
            if let Some((k, _)) = line.split_once('=') {
                key = k.trim().to_string();
            }
        }
        if pos < line_end {
            break;
        }
        offset = line_end;
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn parse(text: &str) -> Result<Config, ConfigError> {
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
