//! The status document from the live state: the [`crate::dataplane::Node`]'s
//! snapshot (peers with routes, endpoint and data-plane counters), the
//! TUN's and sockets' I/O counters, the handshake queue's counters and the
//! fleet's state, as one [`Status`] for `vxsec status` and metrics.
//!
//! It only reads; the document's types live in `agent::status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::clock;
use super::shared::Shared;
use super::status::{GlobalDrops, HandshakeView, PeerDrops, PeerView, Status};
use crate::dataplane::{mtu, PeerSnapshot};

/// The status document, from the live state.
pub(super) fn snapshot(s: &Shared) -> Status {
    let now = clock::now();
    let node = s.node.status(now);
    let peers = node.peers.iter().map(|p| peer_view(p, now)).collect();
    let es = node.endpoint;
    let core = es.drops;
    let d = node.drops;
    let vxlan_mtu = mtu::vxlan_mtu(s.info.tunnel_mtu, s.info.vtep_v6).unwrap_or(0);
    let io = io_counters(s);
    let empty = io.get("udp_rx_empty").copied().unwrap_or(0);
    let handshake = HandshakeView {
        under_load: node.under_load,
        load_engaged: es.load_engaged,
        queue_depth: s.hs.depth() as u64,
        queued: s.hs.queued.load(Ordering::Relaxed),
        queue_drops: s.hs.dropped.load(Ordering::Relaxed),
        initiations_processed: es.initiations_processed,
        initiations_sent: es.initiations_sent,
        completed: es.handshakes,
        cookie_replies_sent: es.cookie_replies_sent,
        cookie_replies_dropped: es.cookie_replies_dropped,
        cookies_received: es.cookies_received,
        replies_dropped_send_buffer_full: io.get("udp_tx_dropped_nowait").copied().unwrap_or(0),
    };
    Status {
        interface: s.info.interface.clone(),
        public_key: s.node.public_key().to_string(),
        listen_port: s.info.listen_port,
        tunnel_address: s.info.tunnel_address.clone(),
        suite: s.info.suite.to_string(),
        tunnel_mtu: u16::try_from(s.info.tunnel_mtu).unwrap_or(u16::MAX),
        vxlan_mtu: u16::try_from(vxlan_mtu).unwrap_or(u16::MAX),
        docker_mtu: u16::try_from(mtu::docker_mtu(vxlan_mtu)).unwrap_or(u16::MAX),
        mode: s.info.mode.to_owned(),
        uptime_seconds: now.saturating_duration_since(s.started).as_secs(),
        offloads: s.info.offloads.clone(),
        workers: u16::try_from(s.workers).unwrap_or(u16::MAX),
        io,
        peers,
        drops: GlobalDrops {
            empty,
            malformed: core.malformed,
            unknown_spi: core.unknown_spi,
            replay: core.replay,
            auth: core.auth,
            expired: core.expired,
            rate_limited: core.rate_limited,
            handshake: es.handshake_drops,
            not_vxlan: d.not_vxlan,
            fragment: d.fragment,
            vni_not_allowed: d.vni_not_allowed,
            no_route: d.no_route,
            too_big: d.too_big,
            malformed_inner: d.malformed_inner,
            spoofed_source: d.spoofed_source,
            no_session: d.no_session,
        },
        fleet: s.fleet.as_ref().map(|f| f.snapshot()),
        handshake,
    }
}

/// One peer of the node's snapshot as `status` shows it.
fn peer_view(p: &PeerSnapshot, now: Instant) -> PeerView {
    let secs = |t: Instant| now.saturating_duration_since(t).as_secs_f64();
    let ps = &p.status;
    let route = p.route.as_ref();
    let cur = ps.current.as_ref();
    PeerView {
        name: ps
            .name
            .clone()
            .unwrap_or_else(|| ps.public_key.fingerprint()),
        public_key: ps.public_key.to_string(),
        endpoint: ps.endpoint.map(|e| e.to_string()),
        tunnel_address: route.map_or_else(String::new, |r| r.tunnel_addr.to_string()),
        allowed_vnis: route.and_then(|r| r.vnis.as_slice().map(<[u32]>::to_vec)),
        established: ps.established,
        current_spi_local: cur.map(|c| c.local_spi),
        current_spi_remote: cur.map(|c| c.remote_spi),
        previous_spi_local: ps.previous.as_ref().map(|c| c.local_spi),
        next_spi_local: ps.next.as_ref().map(|c| c.local_spi),
        sa_age_seconds: cur.map(|c| secs(c.created)),
        next_rekey_seconds: ps
            .next_rekey
            .map(|t| t.saturating_duration_since(now).as_secs_f64()),
        last_handshake_seconds: cur.map(|c| secs(c.created)),
        handshakes: ps.stats.handshakes,
        rekeys: ps.stats.rekeys,
        collisions: ps.stats.collisions,
        tx_packets: ps.stats.traffic.tx_packets,
        tx_bytes: ps.stats.traffic.tx_bytes,
        rx_packets: ps.stats.traffic.rx_packets,
        rx_bytes: ps.stats.traffic.rx_bytes,
        drops: PeerDrops {
            replay: ps.stats.drops.replay,
            auth: ps.stats.drops.auth,
            unknown_spi: ps.stats.drops.unknown_spi,
            expired: ps.stats.drops.expired,
            rate_limited: ps.stats.drops.rate_limited,
            policy: ps.stats.drops.policy + p.policy_drops,
        },
    }
}

/// The TUN device's and the UDP sockets' counters, by name.
fn io_counters(s: &Shared) -> BTreeMap<String, u64> {
    let t = &s.tun_stats;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut m: BTreeMap<String, u64> = [
        ("tun_rx_packets", get(&t.rx_packets)),
        ("tun_rx_super_packets", get(&t.rx_super_packets)),
        (
            "tun_rx_super_packets_direct",
            get(&t.rx_direct_super_packets),
        ),
        ("tun_rx_oversize", get(&t.rx_oversize)),
        ("tun_rx_bad_offload", get(&t.rx_bad_offload)),
        ("tun_tx_packets", get(&t.tx_packets)),
        ("tun_tx_errors", get(&t.tx_errors)),
        ("tun_tx_uso_super_packets", get(&t.tx_super_packets)),
        ("tun_tx_uso_fallbacks", get(&t.tx_coalesce_fallbacks)),
        ("tun_tx_tunnel_super_packets", get(&t.tx_tnl_super_packets)),
        ("tun_tx_tunnel_coalesced", get(&t.tx_tnl_coalesced)),
        ("tun_tx_tunnel_fallbacks", get(&t.tx_tnl_fallbacks)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let sockets = s.io_sockets.lock().unwrap_or_else(|e| e.into_inner());
    for u in sockets.iter() {
        let st = u.stats();
        for (k, v) in [
            ("udp_tx_datagrams", get(&st.tx_datagrams)),
            ("udp_tx_gso_sends", get(&st.tx_gso_sends)),
            ("udp_tx_gso_fallbacks", get(&st.gso_fallbacks)),
            ("udp_tx_dropped_full", get(&st.tx_dropped_full)),
            ("udp_tx_dropped_nowait", get(&st.tx_dropped_nowait)),
            ("udp_tx_errors", get(&st.tx_errors)),
            ("udp_rx_datagrams", get(&st.rx_datagrams)),
            ("udp_rx_gro_splits", get(&st.rx_gro_splits)),
            ("udp_rx_gro_direct", get(&st.rx_gro_direct)),
            ("udp_rx_oversize", get(&st.rx_oversize)),
            ("udp_rx_empty", get(&st.rx_empty)),
        ] {
            *m.entry(k.to_string()).or_default() += v;
        }
    }
    m
}
