//! Captures on the underlay with tcpdump and reads the pcap back: UDP
//! datagrams with their addresses, for the no-cleartext and replay tests.
//!
//! The agent sends with UDP GSO and veth/bridge pass super-packets through
//! unsegmented, so tcpdump on the bridge sees one "datagram" carrying
//! several vxsec data messages back to back. `split_gso` cuts those into
//! the messages a real NIC would put on the wire.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use vxsec_lab::{Cmd, Proc};

/// A running tcpdump writing to a pcap file.
pub struct Capture {
    proc: Proc,
    pub path: PathBuf,
    log: PathBuf,
}

/// One captured IPv4/UDP datagram.
#[derive(Clone, Debug)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

impl Capture {
    /// Starts `tcpdump -i iface -w pcap filter` in `ns` and waits until it listens.
    pub fn start(ns: &str, iface: &str, filter: &str, dir: &Path) -> Capture {
        let tag: u32 = rand::random();
        let path = dir.join(format!("cap-{tag:08x}.pcap"));
        let log = dir.join(format!("cap-{tag:08x}.log"));
        let mut args = vec![
            "-i".to_owned(),
            iface.to_owned(),
            "-n".to_owned(),
            "-U".to_owned(),
            "--immediate-mode".to_owned(),
            "-s".to_owned(),
            "0".to_owned(),
            "-w".to_owned(),
            path.to_string_lossy().into_owned(),
        ];
        args.extend(filter.split_whitespace().map(str::to_owned));
        let proc = Cmd::in_netns(ns, "tcpdump")
            .args(args)
            .spawn(Some(&log))
            .expect("tcpdump (apt-get install tcpdump)");
        for _ in 0..100 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("listening on") {
                return Capture { proc, path, log };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "tcpdump did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops tcpdump (SIGINT flushes the file); returns the raw pcap bytes
    /// and its IPv4/UDP datagrams.
    pub fn stop(mut self) -> (Vec<u8>, Vec<Datagram>) {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.proc.signal("INT");
        let _ = self.proc.wait_timeout(Duration::from_secs(5));
        let data = std::fs::read(&self.path).expect("read pcap");
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.log);
        let datagrams = parse_pcap(&data);
        (data, datagrams)
    }
}

/// How many frames a pcap holds (any protocol, IPv4 or IPv6).
pub fn pcap_frames(data: &[u8]) -> usize {
    let le = match data.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d]) => false,
        _ => return 0,
    };
    let mut off = 24;
    let mut n = 0;
    while let Some(hdr) = data.get(off..off + 16) {
        let a: [u8; 4] = hdr[8..12].try_into().unwrap_or([0; 4]);
        let incl = if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        } as usize;
        if data.len() < off + 16 + incl {
            break;
        }
        off += 16 + incl;
        n += 1;
    }
    n
}

fn u16_be(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Every IPv4/UDP datagram in an Ethernet pcap (non-first fragments skipped).
pub fn parse_pcap(data: &[u8]) -> Vec<Datagram> {
    let mut out = Vec::new();
    let Some(magic) = data.get(..4) else {
        return out;
    };
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return out,
    };
    let rd32 = |b: &[u8]| -> usize {
        let a: [u8; 4] = b.try_into().unwrap_or([0; 4]);
        (if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }) as usize
    };
    let mut off = 24;
    while let Some(hdr) = data.get(off..off + 16) {
        let incl = rd32(&hdr[8..12]);
        let Some(frame) = data.get(off + 16..off + 16 + incl) else {
            break;
        };
        off += 16 + incl;
        if u16_be(frame, 12) != Some(0x0800) {
            continue;
        }
        let Some(ip) = frame.get(14..) else { continue };
        let ihl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
        let frag = u16_be(ip, 6).unwrap_or(0);
        if ip.get(9) != Some(&17) || ihl < 20 || frag & 0x1fff != 0 {
            continue;
        }
        let total = usize::from(u16_be(ip, 2).unwrap_or(0));
        let (Some(s), Some(d)) = (ip.get(12..16), ip.get(16..20)) else {
            continue;
        };
        let src_ip = Ipv4Addr::new(s[0], s[1], s[2], s[3]);
        let dst_ip = Ipv4Addr::new(d[0], d[1], d[2], d[3]);
        let Some(udp) = ip.get(ihl..total.min(ip.len())) else {
            continue;
        };
        let (Some(sp), Some(dp)) = (u16_be(udp, 0), u16_be(udp, 2)) else {
            continue;
        };
        for payload in split_gso(udp.get(8..).unwrap_or(&[])) {
            out.push(Datagram {
                src: SocketAddr::from((src_ip, sp)),
                dst: SocketAddr::from((dst_ip, dp)),
                payload,
            });
        }
    }
    out
}

fn data_header(b: &[u8], at: usize) -> Option<(u32, u64)> {
    let h = b.get(at..at + 16)?;
    if h[..4] != [4, 0, 0, 0] {
        return None;
    }
    let spi = u32::from_be_bytes(h[4..8].try_into().ok()?);
    let ctr = u64::from_be_bytes(h[8..16].try_into().ok()?);
    Some((spi, ctr))
}

/// Splits a GSO super-packet of vxsec data messages (same SPI, consecutive
/// counters, fixed segment size but the last) into its messages; anything
/// else comes back whole.
pub fn split_gso(payload: &[u8]) -> Vec<Vec<u8>> {
    let whole = || vec![payload.to_vec()];
    let Some((spi, c0)) = data_header(payload, 0) else {
        return whole();
    };
    // The segment size is the offset of the next header (counter c0 + 1).
    let Some(seg) = (33..payload.len()).find(|&k| data_header(payload, k) == Some((spi, c0 + 1)))
    else {
        return whole();
    };
    let parts: Vec<&[u8]> = payload.chunks(seg).collect();
    let consistent = parts
        .iter()
        .enumerate()
        .all(|(i, p)| p.len() >= 32 && data_header(p, 0) == Some((spi, c0 + i as u64)));
    if consistent {
        parts.into_iter().map(<[u8]>::to_vec).collect()
    } else {
        whole()
    }
}
