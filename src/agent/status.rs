//! The status document: what `vxsec status` prints and what the control
//! socket returns (`status --json` follows these types exactly).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub interface: String,
    pub public_key: String,
    pub listen_port: u16,
    pub tunnel_address: String,
    pub suite: String,
    pub tunnel_mtu: u16,
    /// The MTU to give a VXLAN device whose `local` is this node's tunnel
    /// address: tunnel MTU − 50 (IPv4) or − 70 (IPv6).
    pub vxlan_mtu: u16,
    /// The value for Docker's `com.docker.network.driver.mtu` that gives
    /// its VXLAN device `vxlan_mtu` (Docker subtracts 50 itself).
    #[serde(default)]
    pub docker_mtu: u16,
    /// `route` or `transparent` (`interface.mode`); in transparent mode
    /// `vxlan_mtu` is for VTEPs on underlay addresses.
    #[serde(default)]
    pub mode: String,
    pub uptime_seconds: u64,
    /// Offloads in use on this host (`udp_gso`, `udp_gro`, `tun_vnet_hdr`, …).
    pub offloads: Vec<String>,
    /// Data-plane worker threads.
    #[serde(default)]
    pub workers: u16,
    /// Data-plane I/O counters since start (TUN super-packets read and
    /// written, UDP GSO sends and GRO splits, offload fallbacks, errors).
    #[serde(default)]
    pub io: BTreeMap<String, u64>,
    pub peers: Vec<PeerView>,
    pub drops: GlobalDrops,
    /// Fleet mode (`[fleet]`): etcd connection and record counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<super::fleet::FleetStatus>,
    /// Handshake and DoS-protection counters.
    #[serde(default)]
    pub handshake: HandshakeView,
}

/// Handshake and DoS-protection counters, over the whole agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandshakeView {
    /// 1 while load protection is engaged (cookies required).
    pub under_load: bool,
    /// Times load protection engaged.
    pub load_engaged: u64,
    /// Handshake messages waiting for the handshake thread now.
    pub queue_depth: u64,
    /// Handshake messages handed to the handshake thread.
    pub queued: u64,
    /// Handshake messages dropped: the handshake queue was full.
    pub queue_drops: u64,
    /// Initiations that reached the Noise DH step.
    pub initiations_processed: u64,
    /// Initiations sent (first attempts and retries).
    pub initiations_sent: u64,
    /// Handshakes completed.
    pub completed: u64,
    /// Cookie replies sent.
    pub cookie_replies_sent: u64,
    /// Cookie replies not sent: global or per-source cap reached.
    pub cookie_replies_dropped: u64,
    /// Cookie replies received and accepted.
    pub cookies_received: u64,
    /// Control replies (responses, cookie replies, ...) dropped because the
    /// socket's send buffer was full (the handshake thread never waits).
    pub replies_dropped_send_buffer_full: u64,
}

impl HandshakeView {
    /// (name, value) pairs of the counters, for metrics and the human status.
    pub fn pairs(&self) -> [(&'static str, u64); 11] {
        [
            ("load_engaged", self.load_engaged),
            ("queued", self.queued),
            ("queue_drops", self.queue_drops),
            ("initiations_processed", self.initiations_processed),
            ("initiations_sent", self.initiations_sent),
            ("completed", self.completed),
            ("cookie_replies_sent", self.cookie_replies_sent),
            ("cookie_replies_dropped", self.cookie_replies_dropped),
            ("cookies_received", self.cookies_received),
            (
                "replies_dropped_send_buffer_full",
                self.replies_dropped_send_buffer_full,
            ),
            ("queue_depth", self.queue_depth),
        ]
    }
}

/// One peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerView {
    pub name: String,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub tunnel_address: String,
    /// `None` = any VNI.
    pub allowed_vnis: Option<Vec<u32>>,
    pub established: bool,
    pub current_spi_local: Option<u32>,
    pub current_spi_remote: Option<u32>,
    pub previous_spi_local: Option<u32>,
    pub next_spi_local: Option<u32>,
    pub sa_age_seconds: Option<f64>,
    pub next_rekey_seconds: Option<f64>,
    pub last_handshake_seconds: Option<f64>,
    pub handshakes: u64,
    pub rekeys: u64,
    pub collisions: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub drops: PeerDrops,
}

/// Drops attributed to one peer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerDrops {
    pub replay: u64,
    pub auth: u64,
    pub unknown_spi: u64,
    pub expired: u64,
    pub rate_limited: u64,
    pub policy: u64,
}

/// Drops by reason, over the whole agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GlobalDrops {
    /// Empty UDP datagram to the listen port (nothing to parse).
    #[serde(default)]
    pub empty: u64,
    /// Unparseable datagram from the network.
    pub malformed: u64,
    pub unknown_spi: u64,
    pub replay: u64,
    pub auth: u64,
    pub expired: u64,
    pub rate_limited: u64,
    /// Handshake messages (initiations, responses, cookie replies) refused,
    /// whatever the reason: bad mac1, unknown static key, stale or replayed
    /// timestamp, cookie required or rate limit under load, … Each is also
    /// counted under its reason (`auth`, `replay`, `rate_limited`, …), so
    /// this bucket overlaps those and is not to be added to them.
    pub handshake: u64,
    /// TUN: not UDP to the VXLAN port (nor ICMP).
    pub not_vxlan: u64,
    /// IPv4 fragments (from TUN: the VXLAN device's MTU is too large).
    #[serde(default)]
    pub fragment: u64,
    /// A VNI the peer may not use, in either direction.
    pub vni_not_allowed: u64,
    /// TUN: no peer owns the destination tunnel address.
    pub no_route: u64,
    /// TUN: over the tunnel MTU (answered with ICMP too-big when DF is set).
    pub too_big: u64,
    /// TUN: unparseable inner packet.
    pub malformed_inner: u64,
    /// Received from a peer with a source address that is not its tunnel address.
    pub spoofed_source: u64,
    /// No SA and the handshake queue was full.
    pub no_session: u64,
}

impl GlobalDrops {
    /// (name, value) pairs, for metrics and the human status.
    pub fn pairs(&self) -> [(&'static str, u64); 16] {
        [
            ("empty", self.empty),
            ("malformed", self.malformed),
            ("unknown_spi", self.unknown_spi),
            ("replay", self.replay),
            ("auth", self.auth),
            ("expired", self.expired),
            ("rate_limited", self.rate_limited),
            ("handshake", self.handshake),
            ("not_vxlan", self.not_vxlan),
            ("fragment", self.fragment),
            ("vni_not_allowed", self.vni_not_allowed),
            ("no_route", self.no_route),
            ("too_big", self.too_big),
            ("malformed_inner", self.malformed_inner),
            ("spoofed_source", self.spoofed_source),
            ("no_session", self.no_session),
        ]
    }
}

impl PeerDrops {
    /// (name, value) pairs, for metrics and the human status.
    pub fn pairs(&self) -> [(&'static str, u64); 6] {
        [
            ("replay", self.replay),
            ("auth", self.auth),
            ("unknown_spi", self.unknown_spi),
            ("expired", self.expired),
            ("rate_limited", self.rate_limited),
            ("policy", self.policy),
        ]
    }
}

/// `reason=count` for the non-zero counters, or `none`.
fn nonzero(pairs: &[(&str, u64)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(" ")
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{s:.1}s"))
}

impl Status {
    /// This node's tunnel address without its prefix length.
    fn vtep(&self) -> Option<std::net::IpAddr> {
        let addr = self.tunnel_address.split('/').next()?;
        addr.parse().ok()
    }

    /// The human-readable form `vxsec status` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(o, "interface: {}", self.interface);
        let _ = writeln!(o, "  public key: {}", self.public_key);
        let _ = writeln!(o, "  listening port: {}", self.listen_port);
        let _ = writeln!(o, "  tunnel address: {}", self.tunnel_address);
        let _ = writeln!(o, "  suite: {}", self.suite);
        let _ = writeln!(o, "  tunnel MTU: {}", self.tunnel_mtu);
        let transparent = self.mode == "transparent";
        if transparent {
            let _ = writeln!(
                o,
                "  mode: transparent (the overlay's VTEPs are underlay addresses; \
                 VXLAN to peers is steered into {})",
                self.interface
            );
            let _ = writeln!(
                o,
                "  VXLAN device MTU: {} (VTEPs on the underlay; lower an overlay built \
                 for more on every node: ip link set <vxlan device> mtu {})",
                self.vxlan_mtu, self.vxlan_mtu
            );
        } else {
            let _ = writeln!(o, "  VXLAN device MTU: {}", self.vxlan_mtu);
        }
        if let Some(local) = self.vtep().filter(|_| !transparent) {
            let _ = writeln!(
                o,
                "    {}",
                super::netinfo::ip_link_add_vxlan(
                    super::netinfo::EXAMPLE_VNI,
                    local,
                    u32::from(self.vxlan_mtu)
                )
            );
        }
        let _ = writeln!(
            o,
            "  Docker overlay networks: --opt com.docker.network.driver.mtu={} \
             (Docker subtracts VXLAN's 50 bytes itself)",
            self.docker_mtu
        );
        let _ = writeln!(o, "  uptime: {}s", self.uptime_seconds);
        if !self.offloads.is_empty() {
            let _ = writeln!(o, "  offloads: {}", self.offloads.join(", "));
        }
        if self.workers > 0 {
            let _ = writeln!(o, "  workers: {}", self.workers);
        }
        let io: Vec<(&str, u64)> = self.io.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let _ = writeln!(o, "  io: {}", nonzero(&io));
        let _ = writeln!(o, "  drops: {}", nonzero(&self.drops.pairs()));
        if let Some(f) = &self.fleet {
            f.render_into(&mut o);
        }
        let _ = writeln!(
            o,
            "  handshakes: load protection {}; {}",
            if self.handshake.under_load {
                "ENGAGED"
            } else {
                "off"
            },
            nonzero(&self.handshake.pairs())
        );
        for p in &self.peers {
            let _ = writeln!(o, "\npeer: {} ({})", p.name, p.public_key);
            let _ = writeln!(
                o,
                "  endpoint: {}",
                p.endpoint.as_deref().unwrap_or("(none)")
            );
            let _ = writeln!(o, "  tunnel address: {}", p.tunnel_address);
            let vnis = p.allowed_vnis.as_ref().map_or_else(
                || "any".to_string(),
                |v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            );
            let _ = writeln!(o, "  allowed VNIs: {vnis}");
            if p.established {
                let _ = writeln!(
                    o,
                    "  SA: spi in {:#010x} out {:#010x}, age {}, next rekey in {}",
                    p.current_spi_local.unwrap_or(0),
                    p.current_spi_remote.unwrap_or(0),
                    secs(p.sa_age_seconds),
                    secs(p.next_rekey_seconds)
                );
            } else {
                let _ = writeln!(o, "  SA: none (handshaking)");
            }
            let _ = writeln!(
                o,
                "  handshakes: {}, rekeys: {}, collisions: {}, last handshake: {} ago",
                p.handshakes,
                p.rekeys,
                p.collisions,
                secs(p.last_handshake_seconds)
            );
            let _ = writeln!(
                o,
                "  transfer: {} packets / {} B received, {} packets / {} B sent",
                p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes
            );
            let _ = writeln!(o, "  drops: {}", nonzero(&p.drops.pairs()));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(tunnel_address: &str, tunnel_mtu: u16, vxlan_mtu: u16) -> Status {
        Status {
            interface: "vxsec0".into(),
            public_key: "pk".into(),
            listen_port: 51830,
            tunnel_address: tunnel_address.into(),
            suite: "aes-256-gcm".into(),
            tunnel_mtu,
            vxlan_mtu,
            docker_mtu: vxlan_mtu + 50,
            mode: "route".into(),
            uptime_seconds: 1,
            offloads: vec![],
            workers: 1,
            io: BTreeMap::new(),
            peers: vec![],
            fleet: None,
            handshake: HandshakeView::default(),
            drops: GlobalDrops {
                empty: 3,
                ..GlobalDrops::default()
            },
        }
    }

    /// The MTU advice names the VXLAN device MTU with a command that runs
    /// as printed (mtu before type), and Docker's value apart from it.
    #[test]
    fn human_status_gives_vxlan_and_docker_mtu_apart() {
        let text = status("10.200.0.1/16", 1440, 1390).render();
        assert!(text.contains("  tunnel MTU: 1440\n"), "{text}");
        assert!(text.contains("  VXLAN device MTU: 1390\n"), "{text}");
        assert!(
            text.contains(
                "    ip link add vxlan42 mtu 1390 type vxlan id 42 local 10.200.0.1 dstport 4789 nolearning\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Docker overlay networks: --opt com.docker.network.driver.mtu=1440 "),
            "{text}"
        );
        assert!(text.contains("drops: empty=3"), "{text}");
        let text = status("fd00:200::1/64", 1420, 1350).render();
        assert!(text.contains("local fd00:200::1 dstport"), "{text}");
        assert!(text.contains("driver.mtu=1400 "), "{text}");
    }

    /// Transparent mode: the advice is for underlay VTEPs, says to lower
    /// a running overlay, and prints no command with the tunnel address.
    #[test]
    fn transparent_status_advises_the_underlay_vtep_mtu() {
        let mut st = status("10.200.0.1/16", 1420, 1350);
        st.mode = "transparent".into();
        let text = st.render();
        assert!(text.contains("  mode: transparent "), "{text}");
        assert!(
            text.contains("VXLAN device MTU: 1350 (VTEPs on the underlay;"),
            "{text}"
        );
        assert!(
            text.contains("ip link set <vxlan device> mtu 1350)"),
            "{text}"
        );
        assert!(!text.contains("local 10.200.0.1"), "{text}");
    }
}
