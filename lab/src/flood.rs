//! A handshake flood generator for the netns tests and the e2e bench:
//! type-1 datagrams at a fixed rate, as an attacker on the underlay sends
//! them. Kinds: `garbage` (bad mac1), `mac1` (valid mac1 for the target's
//! public key, random bodies, from the attacker's own address), `spoofed`
//! (the same from 150 source addresses nobody owns, so the target's
//! replies wait on ARP), `replay` (one captured datagram over and over).
//! Runs as `vxsec-lab-helper hs-flood …` inside a namespace and reports the
//! datagrams sent and the CPU time it used.
//!
//! It does not capture traffic or judge the target (the caller does).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::thread;
use std::time::Duration;

use vxsec_crypto::cookie::Mac1Key;
use vxsec_crypto::key::PublicKey;

use crate::cmd::{Cmd, LabError, Proc};
use crate::traffic::parse_result;

/// Initiation length the generator sends (header, a Noise-sized body, MACs).
const INIT_LEN: usize = 8 + 116 + 32;
/// Distinct bodies precomputed per kind (cycled).
const POOL: usize = 4096;
/// Spoofed sources: x.y.z.SPOOF_FIRST ..= x.y.z.SPOOF_LAST of the target's /24.
const SPOOF_FIRST: u8 = 100;
const SPOOF_LAST: u8 = 249;

/// xorshift64*: cheap deterministic filler.
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// `POOL` type-1 messages; with `key`, each has a valid mac1 for it.
fn pool(key: Option<&PublicKey>) -> Vec<Vec<u8>> {
    let mac1 = key.map(Mac1Key::new);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    (0..POOL)
        .map(|_| {
            let mut m = vec![0u8; INIT_LEN];
            m[0] = 1;
            for c in m[4..INIT_LEN - 32].chunks_mut(8) {
                let v = next(&mut seed).to_le_bytes();
                c.copy_from_slice(&v[..c.len()]);
            }
            let (m1, m2) = (INIT_LEN - 32, INIT_LEN - 16);
            let mac = match &mac1 {
                Some(k) => k.compute(&m[..m1]),
                None => {
                    let mut g = [0u8; 16];
                    g[..8].copy_from_slice(&next(&mut seed).to_le_bytes());
                    g
                }
            };
            m[m1..m2].copy_from_slice(&mac);
            m
        })
        .collect()
}

/// A UDP socket bound to `src` (any address, with IP_TRANSPARENT).
fn socket_from(src: SocketAddr, transparent: bool) -> Result<UdpSocket, String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    if transparent {
        s.set_ip_transparent(true)
            .map_err(|e| format!("IP_TRANSPARENT: {e}"))?;
        s.set_freebind(true)
            .map_err(|e| format!("IP_FREEBIND: {e}"))?;
    }
    s.bind(&src.into())
        .map_err(|e| format!("bind {src}: {e}"))?;
    Ok(s.into())
}

/// This process's user + system CPU seconds (from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime, stime are 14, 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// `hs-flood DST KIND RATE SECS [PUBKEY|FILE]`.
pub(super) fn hs_flood(args: &[String]) -> Result<(), String> {
    let get = |i: usize, what: &str| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing argument: {what}"))
    };
    let dst: SocketAddr = get(0, "DST")?.parse().map_err(|_| "bad DST")?;
    let kind = get(1, "KIND")?;
    let rate: u64 = get(2, "RATE")?.parse().map_err(|_| "bad RATE")?;
    let secs: f64 = get(3, "SECS")?.parse().map_err(|_| "bad SECS")?;
    let key = || -> Result<PublicKey, String> {
        get(4, "PUBKEY")?
            .parse()
            .map_err(|_| "bad PUBKEY".to_string())
    };
    let msgs = match kind {
        "garbage" => pool(None),
        "mac1" | "spoofed" => pool(Some(&key()?)),
        "replay" => {
            let d = std::fs::read(get(4, "FILE")?).map_err(|e| e.to_string())?;
            vec![d]
        }
        _ => return Err(format!("unknown kind {kind:?}")),
    };
    let socks = match (kind, dst.ip()) {
        ("spoofed", IpAddr::V4(d)) => {
            let [a, b, c, _] = d.octets();
            (SPOOF_FIRST..=SPOOF_LAST)
                .map(|h| {
                    let src = SocketAddr::from((Ipv4Addr::new(a, b, c, h), 40_000 + u16::from(h)));
                    socket_from(src, true)
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        ("spoofed", _) => return Err("spoofed floods are IPv4 only".into()),
        _ => vec![socket_from(SocketAddr::from(([0, 0, 0, 0], 0)), false)?],
    };
    println!("READY");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let clock = vxsec::agent::clock::now;
    let start = clock();
    let cpu0 = cpu_seconds();
    let total = (rate as f64 * secs) as u64;
    let (mut sent, mut errors, mut k) = (0u64, 0u64, 0usize);
    while sent + errors < total {
        // Pace by the clock: send what is due, then sleep a millisecond.
        let due = ((clock() - start).as_secs_f64() * rate as f64) as u64;
        while sent + errors < due.min(total) {
            let m = &msgs[k % msgs.len()];
            let s = &socks[k % socks.len()];
            k = k.wrapping_add(1);
            match s.send_to(m, dst) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        if clock() - start > Duration::from_secs_f64(secs + 5.0) {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    let wall = (clock() - start).as_secs_f64();
    println!(
        "RESULT sent={sent} errors={errors} secs={wall:.2} cpu_s={:.2} rate={:.0}",
        cpu_seconds() - cpu0,
        sent as f64 / wall.max(1e-9)
    );
    Ok(())
}

/// A running flood.
pub struct Flood {
    proc: Proc,
}

/// What a flood did.
#[derive(Clone, Debug, PartialEq)]
pub struct FloodReport {
    pub sent: u64,
    pub secs: f64,
    pub cpu_seconds: f64,
}

/// Starts `hs-flood` in `ns` against `dst`; `arg` is the target's public
/// key (`mac1`, `spoofed`) or a datagram file (`replay`).
pub fn start_flood(
    helper: &Path,
    ns: &str,
    dst: SocketAddr,
    kind: &str,
    rate: u64,
    secs: f64,
    arg: &str,
) -> Result<Flood, LabError> {
    let mut proc = Cmd::in_netns(ns, helper.to_string_lossy())
        .args([
            "hs-flood".to_owned(),
            dst.to_string(),
            kind.to_owned(),
            rate.to_string(),
            secs.to_string(),
            arg.to_owned(),
        ])
        .spawn(None)?;
    proc.wait_for_line("READY", Duration::from_secs(10))?;
    Ok(Flood { proc })
}

impl Flood {
    /// Waits for the flood to end and returns its report.
    pub fn finish(mut self, timeout: Duration) -> Result<FloodReport, LabError> {
        let r = parse_result(&self.proc.wait_for_line("RESULT", timeout)?);
        let f = |k: &str| r.get(k).and_then(|v| v.parse::<f64>().ok());
        match (f("sent"), f("secs"), f("cpu_s")) {
            (Some(sent), Some(secs), Some(cpu_seconds)) => Ok(FloodReport {
                sent: sent as u64,
                secs,
                cpu_seconds,
            }),
            _ => Err(LabError::Check(format!("hs-flood result: {r:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vxsec_crypto::key::PrivateKey;

    #[test]
    fn mac1_pool_verifies_and_garbage_does_not() {
        let k = PrivateKey::generate().public_key();
        let m1 = Mac1Key::new(&k);
        let good = pool(Some(&k));
        assert_eq!(good.len(), POOL);
        assert!(good.iter().all(|m| {
            let mac: [u8; 16] = m[INIT_LEN - 32..INIT_LEN - 16].try_into().unwrap();
            m.len() == INIT_LEN && m[0] == 1 && m1.verify(&m[..INIT_LEN - 32], &mac)
        }));
        assert!(vxsec::wire::outer::parse_message(&good[0]).is_ok());
        assert!(pool(None).iter().all(|m| {
            let mac: [u8; 16] = m[INIT_LEN - 32..INIT_LEN - 16].try_into().unwrap();
            !m1.verify(&m[..INIT_LEN - 32], &mac)
        }));
    }
}
