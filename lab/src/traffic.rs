//! Test traffic for the lab and the netns tests: a TCP sender/receiver with
//! a SHA-256 check and a sequenced UDP stream that counts loss, duplicates
//! and reordering. The same code runs on both sides: `helper_main` is the
//! entry point of the `vxsec-lab-helper` binary started inside namespaces
//! (`ip netns exec`), and the `start_*` functions drive it from the outside.
//! It does not build topologies or start agents.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::cmd::{Cmd, LabError, Proc};

const UDP_MAGIC: u32 = 0x5658_5351; // "VXSQ"
const KIND_DATA: u8 = 0;
const KIND_END: u8 = 1;
const CHUNK: usize = 64 * 1024;

/// Deterministic filler (xorshift64*), so both sides can agree on content.
struct Filler(u64);

impl Filler {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> Result<&'a str, String> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| format!("missing argument: {what}"))
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad {what}: {s:?}"))
}

/// Entry point of `vxsec-lab-helper MODE ARGS…`; returns the exit code.
///
/// Modes: `probe`; `tcp-recv BIND`; `tcp-send ADDR BYTES [MARKER]`;
/// `udp-recv BIND`; `udp-send ADDR INTERVAL_US PAYLOAD_BYTES [MAX_COUNT]`
/// (stops at stdin EOF or MAX_COUNT). Each prints `READY` once listening or
/// started, then one `RESULT key=value…` line.
pub fn helper_main(args: &[String]) -> i32 {
    let mode = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or(&[]);
    let res = match mode {
        "probe" => {
            println!("vxsec-lab-helper ok");
            Ok(())
        }
        "tcp-recv" => tcp_recv(rest),
        "tcp-send" => tcp_send(rest),
        "udp-recv" => udp_recv(rest),
        "udp-send" => udp_send(rest),
        "udp-inject" => udp_inject(rest),
        "guard-install" | "guard-state" => crate::guards::helper_mode(mode, rest),
        "hs-flood" => crate::flood::hs_flood(rest),
        _ => Err(format!("unknown mode {mode:?}")),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vxsec-lab-helper {mode}: {e}");
            println!("RESULT error={}", e.replace(' ', "_"));
            1
        }
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

fn tcp_recv(args: &[String]) -> Result<(), String> {
    let bind: SocketAddr = parse(arg(args, 0, "BIND")?, "bind address")?;
    let listener = TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    println!("READY");
    flush();
    let (mut stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let data = buf.get(..n).unwrap_or(&[]);
                ctx.update(data);
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read after {total} bytes: {e}")),
        }
    }
    println!("RESULT bytes={total} sha256={}", hex(ctx.finish().as_ref()));
    Ok(())
}

fn connect_retrying(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut last = String::new();
    for _ in 0..100 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = e.to_string();
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Err(format!("connect {addr}: {last}"))
}

fn tcp_send(args: &[String]) -> Result<(), String> {
    let addr: SocketAddr = parse(arg(args, 0, "ADDR")?, "address")?;
    let bytes: u64 = parse(arg(args, 1, "BYTES")?, "byte count")?;
    let marker = args.get(2).map(String::as_bytes);
    let mut stream = connect_retrying(addr)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    println!("READY");
    flush();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut filler = Filler(0x9E37_79B9_7F4A_7C15);
    let mut buf = vec![0u8; CHUNK];
    let mut sent: u64 = 0;
    while sent < bytes {
        let n = usize::try_from((bytes - sent).min(CHUNK as u64)).unwrap_or(CHUNK);
        let chunk = buf.get_mut(..n).ok_or("chunk")?;
        match marker {
            Some(m) if !m.is_empty() => {
                for (i, b) in chunk.iter_mut().enumerate() {
                    *b = m
                        .get((sent as usize + i) % m.len())
                        .copied()
                        .unwrap_or(b'.');
                }
            }
            _ => filler.fill(chunk),
        }
        stream
            .write_all(chunk)
            .map_err(|e| format!("write after {sent} bytes: {e}"))?;
        ctx.update(chunk);
        sent += n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| e.to_string())?;
    // Wait for the receiver to close, so "done" means "delivered".
    let mut sink = [0u8; 16];
    let _ = stream.read(&mut sink);
    println!("RESULT bytes={sent} sha256={}", hex(ctx.finish().as_ref()));
    Ok(())
}

fn udp_header(buf: &mut [u8], kind: u8, value: u64) {
    if let Some(h) = buf.get_mut(..13) {
        h[..4].copy_from_slice(&UDP_MAGIC.to_be_bytes());
        h[4] = kind;
        h[5..13].copy_from_slice(&value.to_be_bytes());
    }
}

fn udp_parse(buf: &[u8]) -> Option<(u8, u64)> {
    let magic = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?);
    if magic != UDP_MAGIC {
        return None;
    }
    let kind = *buf.get(4)?;
    let value = u64::from_be_bytes(buf.get(5..13)?.try_into().ok()?);
    Some((kind, value))
}

fn udp_recv(args: &[String]) -> Result<(), String> {
    let bind: SocketAddr = parse(arg(args, 0, "BIND")?, "bind address")?;
    let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    println!("READY");
    flush();
    let mut seen: Vec<bool> = Vec::new();
    let (mut unique, mut dup, mut reordered, mut highest) = (0u64, 0u64, 0u64, None::<u64>);
    let mut total = None::<u64>;
    let mut idle = 0u32;
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                idle = 0;
                match udp_parse(buf.get(..n).unwrap_or(&[])) {
                    Some((KIND_DATA, seq)) => {
                        let i = usize::try_from(seq).map_err(|_| "seq too large")?;
                        if i >= seen.len() {
                            seen.resize(i + 1, false);
                        }
                        if seen.get(i).copied().unwrap_or(false) {
                            dup += 1;
                        } else {
                            if let Some(s) = seen.get_mut(i) {
                                *s = true;
                            }
                            unique += 1;
                        }
                        if highest.is_some_and(|h| seq < h) {
                            reordered += 1;
                        }
                        highest = Some(highest.map_or(seq, |h| h.max(seq)));
                    }
                    Some((KIND_END, t)) => total = Some(t),
                    _ => {}
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                idle += 1;
                // After END, one quiet half second ends the stream; without
                // END, 60 s of silence does.
                if total.is_some() || idle >= 120 {
                    break;
                }
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    let sent = total.ok_or("no END marker received (sender silent for 60 s)")?;
    let lost = sent.saturating_sub(unique);
    println!(
        "RESULT sent={sent} received={unique} lost={lost} duplicated={dup} reordered={reordered}"
    );
    Ok(())
}

fn udp_send(args: &[String]) -> Result<(), String> {
    let addr: SocketAddr = parse(arg(args, 0, "ADDR")?, "address")?;
    let interval_us: u64 = parse(arg(args, 1, "INTERVAL_US")?, "interval")?;
    let size: usize = parse(arg(args, 2, "PAYLOAD_BYTES")?, "payload size")?;
    let max: u64 = match args.get(3) {
        Some(s) => parse(s, "max count")?,
        None => u64::MAX,
    };
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.connect(addr)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    thread::spawn(move || {
        // Any line or EOF on stdin means stop.
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        stop2.store(true, Ordering::SeqCst);
    });
    println!("READY");
    flush();
    let mut buf = vec![0u8; size.max(13)];
    let mut seq = 0u64;
    let mut errors = 0u64;
    while seq < max && !stop.load(Ordering::SeqCst) {
        udp_header(&mut buf, KIND_DATA, seq);
        // ECONNREFUSED/ENETUNREACH can show up transiently (ICMP from a
        // restarting peer); the packet still counts as sent and lost.
        if sock.send(&buf).is_err() {
            errors += 1;
        }
        seq += 1;
        if interval_us > 0 {
            thread::sleep(Duration::from_micros(interval_us));
        }
    }
    for _ in 0..5 {
        udp_header(&mut buf, KIND_END, seq);
        let _ = sock.send(&buf);
        thread::sleep(Duration::from_millis(100));
    }
    println!("RESULT sent={seq} send_errors={errors}");
    Ok(())
}

/// Writes datagrams as the `udp-inject` file format: u32 BE length + bytes.
pub fn encode_datagrams(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        out.extend_from_slice(&u32::try_from(d.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

fn decode_datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some(d) = rest.get(..len) else { break };
        out.push(d);
        data = rest.get(len..).unwrap_or(&[]);
    }
    out
}

/// `udp-inject DST FILE [SRC]`: sends every datagram of FILE to DST. With
/// SRC (`ip:port`, any address: IP_TRANSPARENT), the source is spoofed, as
/// an on-path attacker would.
fn udp_inject(args: &[String]) -> Result<(), String> {
    let dst: SocketAddr = parse(arg(args, 0, "DST")?, "destination")?;
    let data = std::fs::read(arg(args, 1, "FILE")?).map_err(|e| e.to_string())?;
    let src: SocketAddr = match args.get(2) {
        Some(p) => parse(p, "source address")?,
        None if dst.is_ipv6() => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        None => SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let raw = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::DGRAM,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    if !src.ip().is_unspecified() {
        raw.set_ip_transparent(true)
            .map_err(|e| format!("IP_TRANSPARENT: {e}"))?;
        raw.set_freebind(true)
            .map_err(|e| format!("IP_FREEBIND: {e}"))?;
    }
    raw.bind(&src.into())
        .map_err(|e| format!("bind {src}: {e}"))?;
    let sock: UdpSocket = raw.into();
    let mut sent = 0u64;
    for d in decode_datagrams(&data) {
        if sock.send_to(d, dst).is_ok() {
            sent += 1;
        }
        thread::sleep(Duration::from_millis(1));
    }
    println!("RESULT sent={sent}");
    Ok(())
}

/// `key=value` pairs of a `RESULT …` line.
pub fn parse_result(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn field_u64(map: &HashMap<String, String>, key: &str) -> Result<u64, LabError> {
    map.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| LabError::Check(format!("helper result has no {key}: {map:?}")))
}

/// Finds the helper binary: `$VXSEC_LAB_HELPER`, else `vxsec-lab-helper`
/// next to the vxsec binary.
pub fn locate_helper(vxsec_binary: &Path) -> Result<PathBuf, LabError> {
    if let Some(p) = std::env::var_os("VXSEC_LAB_HELPER") {
        return Ok(PathBuf::from(p));
    }
    let sibling = vxsec_binary.with_file_name("vxsec-lab-helper");
    if sibling.exists() {
        Ok(sibling)
    } else {
        Err(LabError::Check(format!(
            "{} not found (build it with `cargo build --bins`, or set VXSEC_LAB_HELPER)",
            sibling.display()
        )))
    }
}

/// Outcome of a TCP transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpReport {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sha256_sent: String,
    pub sha256_received: String,
}

impl TcpReport {
    pub fn intact(&self) -> bool {
        self.bytes_sent == self.bytes_received && self.sha256_sent == self.sha256_received
    }
}

/// A TCP transfer in flight.
pub struct TcpTransfer {
    recv: Proc,
    send: Proc,
}

/// Starts a TCP transfer of `bytes` from namespace `from_ns` to `to_ip:port`
/// in `to_ns` (content: pseudo-random, or `marker` repeated).
pub fn start_tcp(
    helper: &Path,
    from_ns: &str,
    to_ns: &str,
    to: SocketAddr,
    bytes: u64,
    marker: Option<&str>,
) -> Result<TcpTransfer, LabError> {
    let h = helper.to_string_lossy().into_owned();
    let mut recv = Cmd::in_netns(to_ns, h.clone())
        .args(["tcp-recv".to_owned(), format!("0.0.0.0:{}", to.port())])
        .spawn(None)?;
    recv.wait_for_line("READY", Duration::from_secs(10))?;
    let mut send_cmd =
        Cmd::in_netns(from_ns, h).args(["tcp-send".to_owned(), to.to_string(), bytes.to_string()]);
    if let Some(m) = marker {
        send_cmd = send_cmd.arg(m);
    }
    let mut send = send_cmd.spawn(None)?;
    send.wait_for_line("READY", Duration::from_secs(15))?;
    Ok(TcpTransfer { recv, send })
}

impl TcpTransfer {
    /// Waits (up to `timeout`) for both ends and compares them.
    pub fn finish(mut self, timeout: Duration) -> Result<TcpReport, LabError> {
        let s = parse_result(&self.send.wait_for_line("RESULT", timeout)?);
        let r = parse_result(&self.recv.wait_for_line("RESULT", timeout)?);
        let get = |m: &HashMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
        Ok(TcpReport {
            bytes_sent: field_u64(&s, "bytes")?,
            bytes_received: field_u64(&r, "bytes")?,
            sha256_sent: get(&s, "sha256"),
            sha256_received: get(&r, "sha256"),
        })
    }
}

/// Outcome of a sequenced UDP stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpReport {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// A sequenced UDP stream in flight; `stop` ends it and collects counts.
pub struct UdpStream {
    recv: Proc,
    send: Proc,
}

/// Starts a stream of `payload` -byte datagrams, one every `interval_us`.
pub fn start_udp(
    helper: &Path,
    from_ns: &str,
    to_ns: &str,
    to: SocketAddr,
    interval_us: u64,
    payload: usize,
) -> Result<UdpStream, LabError> {
    let h = helper.to_string_lossy().into_owned();
    let mut recv = Cmd::in_netns(to_ns, h.clone())
        .args(["udp-recv".to_owned(), format!("0.0.0.0:{}", to.port())])
        .spawn(None)?;
    recv.wait_for_line("READY", Duration::from_secs(10))?;
    let mut send = Cmd::in_netns(from_ns, h)
        .args([
            "udp-send".to_owned(),
            to.to_string(),
            interval_us.to_string(),
            payload.to_string(),
        ])
        .spawn(None)?;
    send.wait_for_line("READY", Duration::from_secs(10))?;
    Ok(UdpStream { recv, send })
}

impl UdpStream {
    pub fn stop(mut self) -> Result<UdpReport, LabError> {
        self.send.close_stdin();
        let s = parse_result(&self.send.wait_for_line("RESULT", Duration::from_secs(10))?);
        let r = parse_result(&self.recv.wait_for_line("RESULT", Duration::from_secs(10))?);
        let sent = field_u64(&s, "sent")?;
        let received = field_u64(&r, "received")?;
        if field_u64(&r, "sent")? != sent {
            return Err(LabError::Check(format!(
                "receiver saw END for {} packets, sender sent {sent}",
                field_u64(&r, "sent")?
            )));
        }
        Ok(UdpReport {
            sent,
            received,
            lost: sent.saturating_sub(received),
            duplicated: field_u64(&r, "duplicated")?,
            reordered: field_u64(&r, "reordered")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_is_deterministic_and_not_constant() {
        let (mut a, mut b) = (Filler(7), Filler(7));
        let (mut x, mut y) = ([0u8; 37], [0u8; 37]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert!(x.iter().any(|&v| v != x[0]));
    }

    #[test]
    fn udp_header_round_trips_and_rejects_foreign() {
        let mut buf = [0u8; 20];
        udp_header(&mut buf, KIND_DATA, 123_456);
        assert_eq!(udp_parse(&buf), Some((KIND_DATA, 123_456)));
        assert_eq!(udp_parse(&[0u8; 20]), None);
        assert_eq!(udp_parse(&buf[..5]), None);
    }

    #[test]
    fn inject_file_format_round_trips() {
        let d = vec![vec![1u8, 2, 3], vec![], vec![9u8; 300]];
        let enc = encode_datagrams(&d);
        let dec: Vec<Vec<u8>> = decode_datagrams(&enc)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(dec, d);
        assert_eq!(decode_datagrams(&enc[..enc.len() - 1]).len(), 2);
    }

    #[test]
    fn result_lines_parse() {
        let m = parse_result("RESULT sent=10 received=9 lost=1");
        assert_eq!(m.get("lost").map(String::as_str), Some("1"));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn loopback_tcp_and_udp_through_helper_modes() {
        // Exercise the helper modes in-process on loopback.
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string());
        let port = listener
            .and_then(|l| l.local_addr().map_err(|e| e.to_string()))
            .map(|a| a.port());
        let Ok(port) = port else {
            panic!("no free port")
        };
        let addr = format!("127.0.0.1:{port}");
        let a2 = addr.clone();
        let recv = thread::spawn(move || tcp_recv(&s(&[&a2])));
        thread::sleep(Duration::from_millis(200));
        assert_eq!(tcp_send(&s(&[&addr, "300000"])), Ok(()));
        assert_eq!(recv.join().ok(), Some(Ok(())));
    }
}
