//! TUN devices: create (or attach to) `IFF_TUN | IFF_NO_PI` queues, with
//! optional `IFF_VNET_HDR` offloads and `IFF_MULTI_QUEUE`; set MTU and
//! addresses, bring the link up; batch reads into and writes from an
//! [`Arena`]. The device is removed when its last queue is dropped. GSO
//! super-packets are split by `dataplane::offload`; no protocol logic here.

use std::fs::OpenOptions;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::sys::{self, IfReq, Readiness, Waker};
use super::{Arena, IoError};
use crate::dataplane::coalesce::{self, UdpHead, MAX_HDRS_LEN, MAX_SEGMENTS};
use crate::dataplane::offload::{
    self, tun_flags, GsoKind, Segmenter, VnetHdr, VNET_HDR_LEN, VNET_HDR_TUNNEL_LEN,
};

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
/// Largest GSO super-packet the kernel hands over (64 KiB IP packet).
const MAX_SUPER_PACKET: usize = 65_536;

/// What to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name (1..=15 bytes).
    pub name: String,
    /// MTU in bytes (the tunnel MTU, `dataplane::mtu::tunnel_mtu`).
    pub mtu_bytes: u32,
    /// IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv6 address and prefix length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// Number of queues (> 1 uses IFF_MULTI_QUEUE).
    pub queues: usize,
    /// Ask for IFF_VNET_HDR (dropped silently if the kernel refuses).
    pub vnet_hdr: bool,
    /// TUN_F_* offloads to request (only with `vnet_hdr`); the accepted
    /// subset is probed and reported by [`Tun::offloads`].
    pub offloads: u32,
}

impl TunConfig {
    /// One queue, no offloads, MTU 1440, no addresses.
    pub fn new(name: &str) -> TunConfig {
        TunConfig {
            name: name.to_owned(),
            mtu_bytes: 1440,
            ipv4: None,
            ipv6: None,
            queues: 1,
            vnet_hdr: false,
            offloads: 0,
        }
    }

    /// Requests IFF_VNET_HDR with checksum, TSO4/6, USO4/6 and UDP-tunnel
    /// (VXLAN) GSO offloads; whatever the kernel refuses is dropped.
    pub fn with_offloads(mut self) -> TunConfig {
        self.vnet_hdr = true;
        self.offloads = tun_flags::CSUM
            | tun_flags::TSO4
            | tun_flags::TSO6
            | tun_flags::USO4
            | tun_flags::USO6
            | tun_flags::UDP_TUNNEL_GSO
            | tun_flags::UDP_TUNNEL_GSO_CSUM;
        self
    }
}

/// What the kernel accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunOffloads {
    /// Reads and writes carry a `virtio_net_hdr`.
    pub vnet_hdr: bool,
    /// Its size in bytes: 10, or 24 when UDP-tunnel GSO was accepted.
    pub vnet_hdr_len: usize,
    /// Accepted TUN_F_* flags.
    pub flags: u32,
}

/// Counters shared by all queues of a device.
#[derive(Debug, Default)]
pub struct TunStats {
    /// Packets placed into arena slots (after segmentation).
    pub rx_packets: AtomicU64,
    /// GSO super-packets read.
    pub rx_super_packets: AtomicU64,
    /// Reads dropped: larger than a slot.
    pub rx_oversize: AtomicU64,
    /// Reads dropped: bad vnet header or headers for segmentation.
    pub rx_bad_offload: AtomicU64,
    /// Packets written.
    pub tx_packets: AtomicU64,
    /// Writes the kernel refused.
    pub tx_errors: AtomicU64,
    /// USO super-packets written (each carries several packets).
    pub tx_super_packets: AtomicU64,
    /// Times coalesced writes were refused and turned off.
    pub tx_coalesce_fallbacks: AtomicU64,
    /// Coalescing of UDP writes into USO super-packets is on (cleared
    /// after the kernel refuses one).
    coalesce_on: AtomicBool,
}

/// A TUN device and its queues.
pub struct Tun {
    name: String,
    queues: Vec<TunQueue>,
    offloads: TunOffloads,
    stats: Arc<TunStats>,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("queues", &self.queues.len())
            .field("offloads", &self.offloads)
            .finish()
    }
}

fn open_queue(name: &str, flags: libc::c_short) -> Result<(OwnedFd, String), IoError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(IoError::os("open /dev/net/tun"))?;
    let fd = OwnedFd::from(file);
    let mut ifr = IfReq::new(name)?;
    ifr.set_short(flags);
    // SAFETY: `ifr` is a live 40-byte `struct ifreq`, as TUNSETIFF expects.
    unsafe { sys::ioctl_ptr(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut IfReq) }
        .map_err(IoError::os("TUNSETIFF"))?;
    Ok((fd, ifr.name()))
}

fn set_offload(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long).
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_vnet_hdr_len(fd: BorrowedFd<'_>, len: usize) -> Result<(), IoError> {
    let sz = libc::c_int::try_from(len).map_err(|_| IoError::Config("vnet header size"))?;
    // SAFETY: TUNSETVNETHDRSZ reads a live c_int through the pointer.
    unsafe {
        sys::ioctl_ptr(
            fd.as_raw_fd(),
            libc::TUNSETVNETHDRSZ,
            &sz as *const _ as *mut libc::c_int,
        )
    }
    .map_err(IoError::os("TUNSETVNETHDRSZ"))
}

/// Tries `requested`, then smaller sets, and returns what was accepted.
fn probe_offloads(fd: BorrowedFd<'_>, requested: u32) -> u32 {
    let tso = tun_flags::CSUM | tun_flags::TSO4 | tun_flags::TSO6 | tun_flags::TSO_ECN;
    let no_tunnel = !(tun_flags::UDP_TUNNEL_GSO | tun_flags::UDP_TUNNEL_GSO_CSUM);
    let no_tunnel_csum = !tun_flags::UDP_TUNNEL_GSO_CSUM;
    let candidates = [
        requested,
        requested & no_tunnel_csum,
        requested & no_tunnel,
        requested & tso,
        requested & tun_flags::CSUM,
        0,
    ];
    for c in candidates {
        if set_offload(fd, c).is_ok() {
            return c;
        }
    }
    0
}

/// A new IPv6 address is briefly tentative (DAD bookkeeping runs from a
/// work queue even on NOARP links): wait until it can be bound, up to 2 s.
fn wait_ipv6_usable(addr: Ipv6Addr) -> Result<(), IoError> {
    let sa = std::net::SocketAddr::from((addr, 0));
    let mut last = None;
    for _ in 0..400 {
        match std::net::UdpSocket::bind(sa) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => last = Some(e),
            Err(e) => {
                return Err(IoError::Os {
                    op: "bind (IPv6 address check)",
                    source: e,
                })
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(IoError::Os {
        op: "IPv6 address stayed tentative",
        source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable)),
    })
}

impl Tun {
    /// Creates (or attaches to) the device, probes offloads, sets MTU and
    /// addresses and brings it up.
    pub fn create(cfg: &TunConfig) -> Result<Tun, IoError> {
        if cfg.queues == 0 || cfg.queues > 256 {
            return Err(IoError::Config("queues must be 1..=256"));
        }
        let mut flags = IFF_TUN | IFF_NO_PI;
        if cfg.queues > 1 {
            flags |= IFF_MULTI_QUEUE;
        }
        let (first, name, vnet) = if cfg.vnet_hdr {
            match open_queue(&cfg.name, flags | IFF_VNET_HDR) {
                Ok((fd, name)) => (fd, name, true),
                Err(_) => {
                    let (fd, name) = open_queue(&cfg.name, flags)?;
                    (fd, name, false)
                }
            }
        } else {
            let (fd, name) = open_queue(&cfg.name, flags)?;
            (fd, name, false)
        };
        let tunnel = tun_flags::UDP_TUNNEL_GSO | tun_flags::UDP_TUNNEL_GSO_CSUM;
        let mut vnet_len = 0;
        let mut accepted = 0;
        if vnet {
            flags |= IFF_VNET_HDR;
            // UDP-tunnel GSO needs the 24-byte header (inner/outer offsets).
            vnet_len = if cfg.offloads & tunnel != 0 {
                VNET_HDR_TUNNEL_LEN
            } else {
                VNET_HDR_LEN
            };
            set_vnet_hdr_len(first.as_fd(), vnet_len)?;
            accepted = probe_offloads(first.as_fd(), cfg.offloads);
            if accepted & tunnel == 0 && vnet_len != VNET_HDR_LEN {
                vnet_len = VNET_HDR_LEN;
                set_vnet_hdr_len(first.as_fd(), vnet_len)?;
            }
        }
        let stats = Arc::new(TunStats::default());
        // A kernel that hands us USO super-packets also takes them: write
        // coalescing follows the accepted USO flags.
        let uso = accepted & (tun_flags::USO4 | tun_flags::USO6);
        stats.coalesce_on.store(uso != 0, Relaxed);
        let mut queues = vec![TunQueue::new(first, vnet_len, uso, Arc::clone(&stats))];
        for _ in 1..cfg.queues {
            let (fd, _) = open_queue(&name, flags)?;
            queues.push(TunQueue::new(fd, vnet_len, uso, Arc::clone(&stats)));
        }
        sys::set_mtu(&name, cfg.mtu_bytes)?;
        if let Some((a, p)) = cfg.ipv4 {
            sys::add_ipv4(&name, a, p)?;
        }
        sys::set_up(&name)?;
        if let Some((a, p)) = cfg.ipv6 {
            sys::add_ipv6(&name, a, p)?;
            wait_ipv6_usable(a)?;
        }
        Ok(Tun {
            name,
            queues,
            offloads: TunOffloads {
                vnet_hdr: vnet,
                vnet_hdr_len: vnet_len,
                flags: accepted,
            },
            stats,
        })
    }

    /// The interface name the kernel assigned.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn ifindex(&self) -> Result<u32, IoError> {
        sys::ifindex(&self.name)
    }

    /// What the kernel accepted.
    pub fn offloads(&self) -> TunOffloads {
        self.offloads
    }

    /// Shared counters.
    pub fn stats(&self) -> &Arc<TunStats> {
        &self.stats
    }

    /// Queue `i`.
    pub fn queue(&mut self, i: usize) -> Option<&mut TunQueue> {
        self.queues.get_mut(i)
    }

    /// Hands out the queues (one per worker thread); the device lives until
    /// the last one is dropped.
    pub fn into_queues(self) -> Vec<TunQueue> {
        self.queues
    }
}

/// A segmentation in progress, continued by the next `read_batch`.
#[derive(Debug)]
struct Pending {
    seg: Segmenter,
    len: usize,
}

/// One TUN queue: a non-blocking fd plus per-queue scratch. `Send`; use
/// one per thread ([`TunQueue::try_clone`] for a second thread on the same
/// queue, e.g. reader and writer).
#[derive(Debug)]
pub struct TunQueue {
    fd: OwnedFd,
    /// Bytes of vnet header before each packet (0: none, 10, or 24 with
    /// UDP-tunnel offloads).
    vnet_len: usize,
    /// TUN_F_USO4/6 accepted: UDP writes of that family may be coalesced.
    uso: u32,
    scratch: Vec<u8>,
    pending: Option<Pending>,
    stats: Arc<TunStats>,
}

const ZERO_VNET: [u8; VNET_HDR_TUNNEL_LEN] = [0; VNET_HDR_TUNNEL_LEN];

impl TunQueue {
    fn new(fd: OwnedFd, vnet_len: usize, uso: u32, stats: Arc<TunStats>) -> TunQueue {
        TunQueue {
            fd,
            vnet_len,
            uso,
            scratch: Vec::new(),
            pending: None,
            stats,
        }
    }

    /// A second handle on the same queue with its own scratch.
    pub fn try_clone(&self) -> io::Result<TunQueue> {
        Ok(TunQueue::new(
            self.fd.try_clone()?,
            self.vnet_len,
            self.uso,
            Arc::clone(&self.stats),
        ))
    }

    /// Whether packets carry a vnet header on this queue.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_len > 0
    }

    /// Blocks until readable, woken, or timed out.
    pub fn wait_readable(
        &self,
        waker: Option<&Waker>,
        timeout: Option<Duration>,
    ) -> io::Result<Readiness> {
        if self.pending.is_some() {
            return Ok(Readiness::Ready);
        }
        sys::wait(self.fd.as_fd(), libc::POLLIN, waker, timeout)
    }

    /// Reads up to `max` packets (never blocks) into slots `0..n`: each
    /// IP packet at `Arena::HEADROOM`, its length in `arena.len(i)`. GSO
    /// super-packets are segmented (a remainder is kept for the next call).
    pub fn read_batch(&mut self, arena: &mut Arena, max: usize) -> io::Result<usize> {
        let max = max.min(arena.slot_count());
        let mut n = 0;
        while n < max {
            if self.pending.is_some() {
                n = self.drain_pending(arena, n, max);
                continue;
            }
            let r = if self.vnet_len > 0 {
                self.read_vnet(arena, n)
            } else {
                self.read_plain(arena, n)
            };
            match r {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return if n > 0 { Ok(n) } else { Err(e) },
            }
        }
        self.stats.rx_packets.fetch_add(n as u64, Relaxed);
        Ok(n)
    }

    fn read_plain(&mut self, arena: &mut Arena, i: usize) -> io::Result<bool> {
        let cap = arena.max_payload();
        let buf = &mut arena.slot_mut(i)[Arena::HEADROOM..];
        // SAFETY: reads at most buf.len() bytes into the live slot slice.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let len = usize::try_from(r).map_err(|_| io::Error::last_os_error())?;
        if len > cap {
            self.stats.rx_oversize.fetch_add(1, Relaxed);
            return Ok(false);
        }
        arena.set_len(i, len);
        Ok(true)
    }

    /// One read with a vnet header: in place if it fits and is not GSO,
    /// otherwise assembled in scratch and handed to the segmenter.
    fn read_vnet(&mut self, arena: &mut Arena, i: usize) -> io::Result<bool> {
        let cap = arena.max_payload();
        let room = arena.stride() - Arena::HEADROOM;
        if self.scratch.len() < room + MAX_SUPER_PACKET {
            self.scratch.resize(room + MAX_SUPER_PACKET, 0);
        }
        let vl = self.vnet_len;
        let slot = &mut arena.slot_mut(i)[Arena::HEADROOM - vl..];
        let tail = &mut self.scratch[room..];
        let iov = [
            libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            },
            libc::iovec {
                iov_base: tail.as_mut_ptr().cast(),
                iov_len: tail.len(),
            },
        ];
        // SAFETY: both iovecs describe live, writable, non-overlapping
        // buffers (the slot and the scratch tail) of the stated lengths.
        let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        let total = usize::try_from(r).map_err(|_| io::Error::last_os_error())?;
        let Some(len) = total.checked_sub(vl) else {
            self.stats.rx_bad_offload.fetch_add(1, Relaxed);
            return Ok(false);
        };
        let slot = arena.slot_mut(i);
        let raw = &slot[Arena::HEADROOM - vl..];
        let parsed = if vl >= VNET_HDR_TUNNEL_LEN {
            VnetHdr::parse_tunnel(raw)
        } else {
            VnetHdr::parse(raw)
        };
        let hdr = match parsed.and_then(|h| h.gso().map(|k| (h, k))) {
            Ok(hk) => hk,
            Err(_) => {
                self.stats.rx_bad_offload.fetch_add(1, Relaxed);
                return Ok(false);
            }
        };
        match hdr {
            (h, GsoKind::None) => {
                if len > cap {
                    self.stats.rx_oversize.fetch_add(1, Relaxed);
                    return Ok(false);
                }
                let pkt = &mut slot[Arena::HEADROOM..Arena::HEADROOM + len];
                if offload::finish_plain(&h, pkt).is_err() {
                    self.stats.rx_bad_offload.fetch_add(1, Relaxed);
                    return Ok(false);
                }
                arena.set_len(i, len);
                Ok(true)
            }
            (h, _) => {
                let head = len.min(room);
                self.scratch[..head]
                    .copy_from_slice(&slot[Arena::HEADROOM..Arena::HEADROOM + head]);
                match Segmenter::new(&h, &self.scratch[..len]) {
                    Ok(seg) if seg.max_segment_len() <= cap => {
                        self.stats.rx_super_packets.fetch_add(1, Relaxed);
                        self.pending = Some(Pending { seg, len });
                    }
                    Ok(_) => {
                        self.stats.rx_oversize.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        self.stats.rx_bad_offload.fetch_add(1, Relaxed);
                    }
                }
                Ok(false)
            }
        }
    }

    /// Emits pending segments into slots `n..max`; returns the new `n`.
    fn drain_pending(&mut self, arena: &mut Arena, mut n: usize, max: usize) -> usize {
        let cap = arena.max_payload();
        if let Some(p) = self.pending.as_mut() {
            let src = &self.scratch[..p.len];
            while n < max {
                let out = &mut arena.slot_mut(n)[Arena::HEADROOM..Arena::HEADROOM + cap];
                match p.seg.next_into(src, out) {
                    Ok(Some(len)) => {
                        arena.set_len(n, len);
                        n += 1;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        self.stats.rx_bad_offload.fetch_add(1, Relaxed);
                        break;
                    }
                }
            }
            if n < max || p.seg.is_done() {
                self.pending = None;
            }
        }
        n
    }

    /// Writes the packets of `slots` (each at `Arena::HEADROOM`, length
    /// `arena.len(i)`); returns how many the kernel took. Refused packets
    /// are counted in `tx_errors` and skipped. With vnet_hdr and USO,
    /// consecutive UDP packets of one flow go out as one super-packet.
    pub fn write_batch(&mut self, arena: &Arena, slots: &[usize]) -> io::Result<usize> {
        let mut done = 0;
        let mut k = 0;
        while k < slots.len() {
            let pkt = packet(arena, slots[k]);
            if let Some((consumed, written)) = self.try_coalesced(arena, &slots[k..], pkt) {
                done += written;
                k += consumed;
                continue;
            }
            k += 1;
            if pkt.is_empty() {
                self.stats.tx_errors.fetch_add(1, Relaxed);
                continue;
            }
            match self.write_packet(pkt) {
                Ok(()) => done += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.stats.tx_errors.fetch_add(1, Relaxed);
                }
            }
        }
        self.stats.tx_packets.fetch_add(done as u64, Relaxed);
        Ok(done)
    }

    /// Writes a run of >= 2 coalescable packets starting at `slots[0]` as
    /// one USO super-packet and returns (slots consumed, packets written);
    /// `None` if there is no such run (or coalescing was refused and is now
    /// off), so the caller writes `pkt` alone.
    fn try_coalesced(&self, arena: &Arena, slots: &[usize], pkt: &[u8]) -> Option<(usize, usize)> {
        if self.vnet_len == 0 || self.uso == 0 || !self.stats.coalesce_on.load(Relaxed) {
            return None;
        }
        let head = coalesce::udp_head(pkt)?;
        let family = if head.v6 {
            tun_flags::USO6
        } else {
            tun_flags::USO4
        };
        if self.uso & family == 0 {
            return None;
        }
        let n = coalesce::run_len(&head, slots.iter().map(|&i| packet(arena, i)));
        if n < 2 {
            return None;
        }
        match self.write_super(arena, &slots[..n], &head) {
            Ok(()) => {
                self.stats.tx_super_packets.fetch_add(1, Relaxed);
                Some((n, n))
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::EIO | libc::EOPNOTSUPP)
                ) =>
            {
                self.stats.coalesce_on.store(false, Relaxed);
                self.stats.tx_coalesce_fallbacks.fetch_add(1, Relaxed);
                None
            }
            Err(_) => {
                // Refused for another reason (e.g. no buffer): skip the run.
                self.stats.tx_errors.fetch_add(n as u64, Relaxed);
                Some((n, 0))
            }
        }
    }

    /// One writev: vnet header + super headers, then each payload in place.
    fn write_super(&self, arena: &Arena, slots: &[usize], head: &UdpHead) -> io::Result<()> {
        let first = packet(arena, slots[0]);
        let total: usize = slots
            .iter()
            .map(|&i| packet(arena, i).len() - head.hdrs_len)
            .sum();
        let vl = self.vnet_len;
        let mut hdr = [0u8; VNET_HDR_TUNNEL_LEN + MAX_HDRS_LEN];
        let vh = coalesce::build_super_header(head, first, total, &mut hdr[vl..])
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        vh.emit(&mut hdr)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; MAX_SEGMENTS + 1];
        iov[0] = libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: vl + head.hdrs_len,
        };
        for (v, &i) in iov[1..].iter_mut().zip(slots) {
            let p = &packet(arena, i)[head.hdrs_len..];
            *v = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
        }
        let count = slots.len().min(MAX_SEGMENTS) + 1;
        loop {
            // SAFETY: iov[..count] describe live buffers (the local header
            // block and arena payloads) of the stated lengths; writev only
            // reads through them.
            let r =
                unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), count as libc::c_int) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Writes one IP packet (e.g. an ICMP reply); with vnet_hdr a zero
    /// header (no offload, checksums complete) precedes it.
    pub fn write_packet(&self, pkt: &[u8]) -> io::Result<()> {
        loop {
            let r = if self.vnet_len > 0 {
                let iov = [
                    libc::iovec {
                        iov_base: ZERO_VNET.as_ptr() as *mut libc::c_void,
                        iov_len: self.vnet_len,
                    },
                    libc::iovec {
                        iov_base: pkt.as_ptr() as *mut libc::c_void,
                        iov_len: pkt.len(),
                    },
                ];
                // SAFETY: both iovecs describe live buffers of the stated
                // lengths; writev only reads through them.
                unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) }
            } else {
                // SAFETY: writes pkt.len() bytes from the live slice.
                unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) }
            };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The packet in slot `i` (at HEADROOM, arena.len(i) bytes), or an empty
/// slice if the length overruns the slot.
fn packet(arena: &Arena, i: usize) -> &[u8] {
    if i >= arena.slot_count() {
        return &[];
    }
    arena
        .slot(i)
        .get(Arena::HEADROOM..Arena::HEADROOM + arena.len(i))
        .unwrap_or(&[])
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
