//! `[policy]`: what may enter the tunnel (VXLAN port, ICMP, the fail-closed
//! guards, transparent mode's unknown underlay addresses). Installing the
//! guards is `agent::guard`'s work, not this module's.

use serde::Deserialize;

use super::DEFAULT_VXLAN_PORT;

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

fn default_vxlan_port() -> u16 {
    DEFAULT_VXLAN_PORT
}
fn yes() -> bool {
    true
}
