//! Prometheus text exposition of the agent's status, served over plain
//! HTTP on a (normally loopback) address. Off unless configured.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::status::Status;

/// Renders `status` in the Prometheus text format (version 0.0.4).
pub fn render(s: &Status) -> String {
    let mut o = String::with_capacity(4096);
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP vxsec_{name} {help}\n# TYPE vxsec_{name} {kind}");
    };
    family(&mut o, "up", "gauge", "1 while the agent runs.");
    let _ = writeln!(o, "vxsec_up{{interface=\"{}\"}} 1", s.interface);
    family(
        &mut o,
        "uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
    );
    let _ = writeln!(o, "vxsec_uptime_seconds {}", s.uptime_seconds);
    family(
        &mut o,
        "drops_total",
        "counter",
        "Packets dropped by the agent, by reason.",
    );
    for (reason, v) in s.drops.pairs() {
        let _ = writeln!(o, "vxsec_drops_total{{reason=\"{reason}\"}} {v}");
    }
    family(
        &mut o,
        "handshake_under_load",
        "gauge",
        "1 while handshake load protection is engaged (cookies required).",
    );
    let _ = writeln!(
        o,
        "vxsec_handshake_under_load {}",
        u8::from(s.handshake.under_load)
    );
    family(
        &mut o,
        "handshake_queue_depth",
        "gauge",
        "Handshake messages waiting for the handshake thread.",
    );
    let _ = writeln!(o, "vxsec_handshake_queue_depth {}", s.handshake.queue_depth);
    family(
        &mut o,
        "handshake_total",
        "counter",
        "Handshake and DoS-protection events: load engaged, messages queued and dropped at the handshake queue, initiations processed and sent, handshakes completed, cookie replies sent, capped and received, replies dropped on a full send buffer.",
    );
    for (name, v) in s.handshake.pairs() {
        if name != "queue_depth" {
            let _ = writeln!(o, "vxsec_handshake_total{{counter=\"{name}\"}} {v}");
        }
    }
    family(
        &mut o,
        "io_total",
        "counter",
        "Data-plane I/O events: TUN super-packets read and written, UDP GSO sends and GRO splits, offload fallbacks, errors.",
    );
    for (name, v) in &s.io {
        let _ = writeln!(o, "vxsec_io_total{{counter=\"{}\"}} {v}", escape(name));
    }
    let label = |p: &super::status::PeerView| {
        format!(
            "peer=\"{}\",public_key=\"{}\"",
            escape(&p.name),
            escape(&p.public_key)
        )
    };
    type Getter = fn(&super::status::PeerView) -> u64;
    let counters: [(&str, &str, Getter); 8] = [
        (
            "peer_tx_packets_total",
            "Data packets sealed and sent to the peer.",
            |p| p.tx_packets,
        ),
        (
            "peer_tx_bytes_total",
            "Plaintext bytes sent to the peer.",
            |p| p.tx_bytes,
        ),
        (
            "peer_rx_packets_total",
            "Data packets received and authenticated.",
            |p| p.rx_packets,
        ),
        (
            "peer_rx_bytes_total",
            "Plaintext bytes received from the peer.",
            |p| p.rx_bytes,
        ),
        ("peer_handshakes_total", "Completed handshakes.", |p| {
            p.handshakes
        }),
        ("peer_rekeys_total", "Completed key rotations.", |p| {
            p.rekeys
        }),
        (
            "peer_collisions_total",
            "Simultaneous rekeys resolved.",
            |p| p.collisions,
        ),
        ("peer_established", "1 when a current SA exists.", |p| {
            u64::from(p.established)
        }),
    ];
    for (name, help, get) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        family(&mut o, name, kind, help);
        for p in &s.peers {
            let _ = writeln!(o, "vxsec_{name}{{{}}} {}", label(p), get(p));
        }
    }
    family(
        &mut o,
        "peer_sa_age_seconds",
        "gauge",
        "Age of the current SA.",
    );
    for p in &s.peers {
        if let Some(a) = p.sa_age_seconds {
            let _ = writeln!(o, "vxsec_peer_sa_age_seconds{{{}}} {a:.3}", label(p));
        }
    }
    family(
        &mut o,
        "peer_next_rekey_seconds",
        "gauge",
        "Seconds until the next scheduled rekey.",
    );
    for p in &s.peers {
        if let Some(a) = p.next_rekey_seconds {
            let _ = writeln!(o, "vxsec_peer_next_rekey_seconds{{{}}} {a:.3}", label(p));
        }
    }
    family(
        &mut o,
        "peer_drops_total",
        "counter",
        "Packets from a peer dropped, by reason.",
    );
    for p in &s.peers {
        for (reason, v) in p.drops.pairs() {
            let _ = writeln!(
                o,
                "vxsec_peer_drops_total{{{},reason=\"{reason}\"}} {v}",
                label(p)
            );
        }
    }
    if let Some(f) = &s.fleet {
        f.metrics_into(&mut o);
    }
    o
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` (any path, in fact) until the listener fails.
pub async fn serve<F>(addr: SocketAddr, snapshot: Arc<F>) -> std::io::Result<()>
where
    F: Fn() -> Status + Send + Sync + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let snapshot = Arc::clone(&snapshot);
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut req))
                .await;
            let body = render(&snapshot());
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::status::{GlobalDrops, HandshakeView, PeerDrops, PeerView};

    #[test]
    fn exposition_has_peer_counters_ages_and_drop_reasons() {
        let s = Status {
            interface: "vxsec0".into(),
            public_key: "pk".into(),
            listen_port: 51830,
            tunnel_address: "10.200.0.1/16".into(),
            suite: "aes-256-gcm".into(),
            tunnel_mtu: 1440,
            vxlan_mtu: 1390,
            docker_mtu: 1440,
            mode: "route".into(),
            uptime_seconds: 7,
            offloads: vec![],
            workers: 2,
            io: [("tun_tx_tunnel_super_packets".to_string(), 9)].into(),
            fleet: None,
            peers: vec![PeerView {
                name: "node\"2".into(),
                public_key: "k2".into(),
                endpoint: None,
                tunnel_address: "10.200.0.2".into(),
                allowed_vnis: None,
                established: true,
                current_spi_local: Some(1),
                current_spi_remote: Some(2),
                previous_spi_local: None,
                next_spi_local: None,
                sa_age_seconds: Some(1.5),
                next_rekey_seconds: Some(500.0),
                last_handshake_seconds: Some(1.5),
                handshakes: 3,
                rekeys: 2,
                collisions: 0,
                tx_packets: 10,
                tx_bytes: 1000,
                rx_packets: 9,
                rx_bytes: 900,
                drops: PeerDrops {
                    replay: 4,
                    ..Default::default()
                },
            }],
            drops: GlobalDrops {
                not_vxlan: 5,
                empty: 100,
                ..Default::default()
            },
            handshake: HandshakeView {
                under_load: true,
                cookie_replies_dropped: 7,
                ..Default::default()
            },
        };
        let text = render(&s);
        assert!(
            text.contains("vxsec_io_total{counter=\"tun_tx_tunnel_super_packets\"} 9")
                && text.contains("vxsec_drops_total{reason=\"not_vxlan\"} 5")
                && text.contains("vxsec_drops_total{reason=\"empty\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("vxsec_peer_rx_packets_total{peer=\"node\\\"2\",public_key=\"k2\"} 9")
        );
        assert!(
            text.contains("vxsec_peer_sa_age_seconds{peer=\"node\\\"2\",public_key=\"k2\"} 1.500")
        );
        assert!(text.contains("reason=\"replay\"} 4"));
        assert!(text.contains("vxsec_handshake_under_load 1"), "{text}");
        assert!(text.contains("vxsec_handshake_total{counter=\"cookie_replies_dropped\"} 7"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "undeclared {name}"
            );
        }
    }
}
