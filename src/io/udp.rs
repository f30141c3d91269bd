//! Batched UDP for the data plane: one socket (IPv4 or dual-stack IPv6),
//! enlarged buffers, `recvmmsg` into arena slots (message at
//! `HEADROOM - 16` so opened plaintext lands at `HEADROOM`), `sendmmsg`
//! from arena slots with per-slot destinations, UDP GSO (`UDP_SEGMENT`,
//! gathered from the slots with iovecs, no copy) and UDP GRO (super-
//! datagrams split by the `UDP_GRO` size). Both are probed at start and
//! turned off on the first EIO/EINVAL/ENOPROTOOPT. No protocol logic.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::sys::{self, Readiness, Waker};
use super::{Arena, IoError};

/// Offset of a data message in its slot: the 16-byte header precedes the
/// payload, which starts at `Arena::HEADROOM`.
pub const MSG_OFFSET: usize = Arena::MESSAGE_OFFSET;
/// Most segments the kernel accepts in one GSO send (UDP_MAX_SEGMENTS).
const MAX_GSO_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send (below the 64 KiB IP limit).
const MAX_GSO_BYTES: usize = 65_000;
/// Size of one GRO receive buffer (largest super-datagram).
const GRO_BUF: usize = 65_536;
/// GRO receive buffers per batch call.
const GRO_BUFS: usize = 8;
/// How long a send waits for socket buffer space before dropping.
const SEND_WAIT: Duration = Duration::from_millis(200);

/// What to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Local address; an unspecified IPv6 address gives a dual-stack socket.
    pub bind: SocketAddr,
    /// SO_RCVBUF(FORCE) in bytes.
    pub recv_buffer_bytes: usize,
    /// SO_SNDBUF(FORCE) in bytes.
    pub send_buffer_bytes: usize,
    /// Try UDP GSO on send.
    pub gso: bool,
    /// Try UDP GRO on receive.
    pub gro: bool,
    /// SO_REUSEPORT, so each worker thread can bind its own socket to the
    /// same port (the kernel spreads flows by hash).
    pub reuse_port: bool,
}

impl UdpConfig {
    /// 8 MiB buffers, GSO and GRO on (if the kernel allows).
    pub fn new(bind: SocketAddr) -> UdpConfig {
        UdpConfig {
            bind,
            recv_buffer_bytes: 8 << 20,
            send_buffer_bytes: 8 << 20,
            gso: true,
            gro: true,
            reuse_port: false,
        }
    }

    /// Forces the plain path: no GSO, no GRO.
    pub fn without_offloads(mut self) -> UdpConfig {
        self.gso = false;
        self.gro = false;
        self
    }
}

/// Counters shared by all handles of a socket.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Datagrams handed to the kernel.
    pub tx_datagrams: AtomicU64,
    /// GSO super-datagrams sent (each carries several datagrams).
    pub tx_gso_sends: AtomicU64,
    /// GSO sends the kernel refused and that were resent without GSO
    /// (EIO/EINVAL/ENOPROTOOPT also turn GSO off for good; EMSGSIZE only
    /// splits that group).
    pub gso_fallbacks: AtomicU64,
    /// Datagrams dropped: socket buffer full for too long.
    pub tx_dropped_full: AtomicU64,
    /// Datagrams the kernel refused (unreachable, wrong family…).
    pub tx_errors: AtomicU64,
    /// Datagrams received into slots.
    pub rx_datagrams: AtomicU64,
    /// GRO super-datagrams split.
    pub rx_gro_splits: AtomicU64,
    /// Datagrams dropped: larger than a slot.
    pub rx_oversize: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    sock: Socket,
    v6: bool,
    gso: AtomicBool,
    gro: bool,
    stats: UdpStats,
}

/// Result of a [`BatchUdp::send_batch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Slots the kernel accepted.
    pub sent: usize,
    /// Slots dropped (buffer full or refused by the kernel).
    pub dropped: usize,
}

/// How to continue after the kernel refused a GSO message.
enum Fallback {
    /// Everything was sent or dropped.
    None,
    /// GSO is unsupported: disable it and resend from this slot index.
    Disable(usize),
    /// Resend the group (first slot index, count) without GSO, then go on.
    Split(usize, usize),
}

/// Raw syscall scratch: pointers into it are set up and used within one
/// call only.
struct Scratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u64; 4]>,
}

// SAFETY: the raw pointers inside the vectors are only written and read
// during a single `&mut self` call and point into buffers borrowed for that
// call; between calls they are dead values, so moving Scratch to another
// thread is sound.
unsafe impl Send for Scratch {}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            hdrs: Vec::new(),
            iovs: Vec::new(),
            names: Vec::new(),
            ctrl: Vec::new(),
        }
    }

    /// Resizes every vector to exactly `msgs` / `iovs` zeroed entries
    /// (allocates only while growing).
    fn reset(&mut self, msgs: usize, iovs: usize) {
        // SAFETY: all four are plain C structs / integers for which the
        // all-zero bit pattern is valid.
        let (h, i, n) = unsafe {
            (
                zeroed::<libc::mmsghdr>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::sockaddr_storage>(),
            )
        };
        self.hdrs.clear();
        self.hdrs.resize(msgs, h);
        self.iovs.clear();
        self.iovs.resize(iovs, i);
        self.names.clear();
        self.names.resize(msgs, n);
        self.ctrl.clear();
        self.ctrl.resize(msgs, [0; 4]);
    }
}

/// Per-message bookkeeping of a GRO receive.
#[derive(Clone, Copy, Debug)]
struct GroMsg {
    len: usize,
    seg: usize,
    from: SocketAddr,
}

/// A handle on the data-plane UDP socket with its own batch scratch.
/// `Send`; give each thread its own handle ([`BatchUdp::try_clone`]).
pub struct BatchUdp {
    shared: Arc<Shared>,
    tx: Scratch,
    rx: Scratch,
    gro_buf: Vec<u8>,
    gro_msgs: Vec<GroMsg>,
    /// Next (message, offset) of a partly split GRO receive.
    gro_cursor: Option<(usize, usize)>,
    /// Group boundaries of the current send: (first slot index, count, seg).
    groups: Vec<(usize, usize, usize)>,
}

impl std::fmt::Debug for BatchUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchUdp")
            .field(
                "local",
                &self
                    .shared
                    .sock
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket()),
            )
            .field("gso", &self.gso_enabled())
            .field("gro", &self.gro_enabled())
            .finish()
    }
}

fn set_buffer(sock: &Socket, bytes: usize, force: libc::c_int, plain: libc::c_int) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    if sys::setsockopt_int(sock.as_fd(), libc::SOL_SOCKET, force, v).is_err() {
        // Not permitted (no CAP_NET_ADMIN): the plain option, capped by rmem_max.
        let _ = sys::setsockopt_int(sock.as_fd(), libc::SOL_SOCKET, plain, v);
    }
}

/// Canonical form of a received address (IPv4-mapped IPv6 becomes IPv4).
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        v4 => v4,
    }
}

impl BatchUdp {
    /// Opens, configures and binds the socket; probes GSO and GRO.
    pub fn bind(cfg: &UdpConfig) -> Result<BatchUdp, IoError> {
        let v6 = cfg.bind.is_ipv6();
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let sock = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))
            .map_err(IoError::os("socket"))?;
        if v6 {
            sock.set_only_v6(false)
                .map_err(IoError::os("IPV6_V6ONLY"))?;
        }
        sock.set_nonblocking(true)
            .map_err(IoError::os("O_NONBLOCK"))?;
        if cfg.reuse_port {
            sock.set_reuse_port(true)
                .map_err(IoError::os("SO_REUSEPORT"))?;
        }
        set_buffer(
            &sock,
            cfg.recv_buffer_bytes,
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
        );
        set_buffer(
            &sock,
            cfg.send_buffer_bytes,
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
        );
        sock.bind(&cfg.bind.into()).map_err(IoError::os("bind"))?;
        // GSO: the option exists iff the kernel can segment UDP.
        let gso = cfg.gso
            && sys::setsockopt_int(sock.as_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok();
        let gro =
            cfg.gro && sys::setsockopt_int(sock.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        Ok(BatchUdp::with_shared(Arc::new(Shared {
            sock,
            v6,
            gso: AtomicBool::new(gso),
            gro,
            stats: UdpStats::default(),
        })))
    }

    fn with_shared(shared: Arc<Shared>) -> BatchUdp {
        BatchUdp {
            shared,
            tx: Scratch::new(),
            rx: Scratch::new(),
            gro_buf: Vec::new(),
            gro_msgs: Vec::new(),
            gro_cursor: None,
            groups: Vec::new(),
        }
    }

    /// Another handle on the same socket (shared flags and counters) with
    /// its own scratch, for a second thread.
    pub fn try_clone(&self) -> BatchUdp {
        BatchUdp::with_shared(Arc::clone(&self.shared))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared
            .sock
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    /// Whether sends currently use GSO.
    pub fn gso_enabled(&self) -> bool {
        self.shared.gso.load(Relaxed)
    }

    /// Whether receives use GRO.
    pub fn gro_enabled(&self) -> bool {
        self.shared.gro
    }

    /// Effective (receive, send) buffer sizes in bytes as the kernel reports them.
    pub fn buffer_bytes(&self) -> io::Result<(usize, usize)> {
        let fd = self.shared.sock.as_fd();
        let r = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
        let s = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?;
        Ok((
            usize::try_from(r).unwrap_or(0),
            usize::try_from(s).unwrap_or(0),
        ))
    }

    /// Shared counters.
    pub fn stats(&self) -> &UdpStats {
        &self.shared.stats
    }

    /// Blocks until readable, woken, or timed out.
    pub fn wait_readable(
        &self,
        waker: Option<&Waker>,
        timeout: Option<Duration>,
    ) -> io::Result<Readiness> {
        if self.gro_cursor.is_some() {
            return Ok(Readiness::Ready);
        }
        sys::wait(self.shared.sock.as_fd(), libc::POLLIN, waker, timeout)
    }

    fn dest(&self, d: SocketAddr) -> SockAddr {
        match d {
            SocketAddr::V4(v4) if self.shared.v6 => {
                SockAddr::from(SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())))
            }
            other => SockAddr::from(other),
        }
    }

    /// Sends one datagram (handshakes, cookies); waits briefly for space.
    pub fn send_to(&self, buf: &[u8], dest: SocketAddr) -> io::Result<usize> {
        let to = self.dest(dest);
        loop {
            match self.shared.sock.send_to(buf, &to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if sys::wait(
                        self.shared.sock.as_fd(),
                        libc::POLLOUT,
                        None,
                        Some(SEND_WAIT),
                    )? == Readiness::Timeout
                    {
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// Sends the message of each slot in `slots` (at [`MSG_OFFSET`], length
    /// `arena.len(i)`) to `dests[k]`, in order, with as few system calls as
    /// the kernel allows. Blocks at most ~200 ms per stall for buffer space.
    pub fn send_batch(
        &mut self,
        arena: &Arena,
        slots: &[usize],
        dests: &[SocketAddr],
    ) -> io::Result<SendOutcome> {
        if slots.len() != dests.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "slots and dests differ in length",
            ));
        }
        let room = arena.stride() - MSG_OFFSET;
        if slots
            .iter()
            .any(|&i| i >= arena.slot_count() || arena.len(i) > room)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "slot index or length out of range",
            ));
        }
        let mut out = SendOutcome::default();
        let mut start = 0;
        while start < slots.len() {
            let gso = self.gso_enabled();
            match self.send_from(arena, &slots[start..], &dests[start..], gso, &mut out)? {
                Fallback::None => break,
                Fallback::Disable(at) => {
                    // The kernel cannot do GSO here: turn it off, resend from there.
                    self.shared.gso.store(false, Relaxed);
                    self.shared.stats.gso_fallbacks.fetch_add(1, Relaxed);
                    start += at;
                }
                Fallback::Split(at, n) => {
                    // This group only (segment above the path MTU): send
                    // its datagrams one by one, keep GSO for the rest.
                    self.shared.stats.gso_fallbacks.fetch_add(1, Relaxed);
                    let (s, d) = (
                        &slots[start + at..start + at + n],
                        &dests[start + at..start + at + n],
                    );
                    self.send_from(arena, s, d, false, &mut out)?;
                    start += at + n;
                }
            }
        }
        self.shared
            .stats
            .tx_datagrams
            .fetch_add(out.sent as u64, Relaxed);
        Ok(out)
    }

    /// Groups the slots into messages and sends them; says where and how
    /// to continue if the kernel refused a GSO message.
    fn send_from(
        &mut self,
        arena: &Arena,
        slots: &[usize],
        dests: &[SocketAddr],
        gso: bool,
        out: &mut SendOutcome,
    ) -> io::Result<Fallback> {
        // Pass 1: groups of consecutive slots, same destination, equal
        // length (the last may be shorter).
        self.groups.clear();
        let mut k = 0;
        while k < slots.len() {
            let seg = arena.len(slots[k]);
            let mut n = 1;
            let mut bytes = seg;
            if gso && seg > 0 {
                while k + n < slots.len() && n < MAX_GSO_SEGMENTS && dests[k + n] == dests[k] {
                    let l = arena.len(slots[k + n]);
                    if l > seg || l == 0 || bytes + l > MAX_GSO_BYTES {
                        break;
                    }
                    n += 1;
                    bytes += l;
                    if l < seg {
                        break;
                    }
                }
            }
            self.groups.push((k, n, seg));
            k += n;
        }
        // Pass 2: the syscall structures.
        self.tx.reset(self.groups.len(), slots.len());
        for (m, &(first, n, seg)) in self.groups.iter().enumerate() {
            for (j, &i) in slots.iter().enumerate().skip(first).take(n) {
                // Lengths were checked by send_batch: the range is in the slot.
                let msg = &arena.slot(i)[MSG_OFFSET..MSG_OFFSET + arena.len(i)];
                self.tx.iovs[j] = libc::iovec {
                    iov_base: msg.as_ptr() as *mut libc::c_void,
                    iov_len: msg.len(),
                };
            }
            let to = self.dest(dests[first]);
            let name_len = to.len();
            // SAFETY: `to` holds `name_len` (<= sizeof sockaddr_storage)
            // initialised bytes; the destination entry is a distinct,
            // live sockaddr_storage.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    to.as_ptr().cast::<u8>(),
                    (&mut self.tx.names[m] as *mut libc::sockaddr_storage).cast::<u8>(),
                    name_len as usize,
                );
            }
            let h = &mut self.tx.hdrs[m].msg_hdr;
            h.msg_name = (&mut self.tx.names[m] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = name_len;
            h.msg_iov = &mut self.tx.iovs[first] as *mut libc::iovec;
            h.msg_iovlen = n as _;
            if n > 1 {
                let c = &mut self.tx.ctrl[m];
                // SAFETY: `c` is 32 bytes, 8-aligned, enough for one cmsghdr
                // plus a u16 (CMSG_SPACE(2) = 24); the msghdr points at it
                // only for the CMSG_* macros' pointer arithmetic.
                unsafe {
                    h.msg_control = c.as_mut_ptr().cast();
                    h.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
                    let cm = libc::CMSG_FIRSTHDR(h);
                    (*cm).cmsg_level = libc::SOL_UDP;
                    (*cm).cmsg_type = libc::UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), seg as u16);
                }
            }
        }
        // Pass 3: sendmmsg until everything is sent or dropped.
        let total = self.groups.len();
        let mut m = 0;
        while m < total {
            // SAFETY: hdrs[m..total] are initialised mmsghdrs whose names,
            // iovecs and control buffers point into self.tx and into
            // `arena` slots, all alive and unmodified during the call.
            let r = unsafe {
                libc::sendmmsg(
                    self.shared.sock.as_raw_fd(),
                    self.tx.hdrs.as_mut_ptr().add(m),
                    (total - m) as libc::c_uint,
                    0,
                )
            };
            if r >= 0 {
                for g in &self.groups[m..m + r as usize] {
                    out.sent += g.1;
                    if g.1 > 1 {
                        self.shared.stats.tx_gso_sends.fetch_add(1, Relaxed);
                    }
                }
                m += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            let (first, n, _) = self.groups[m];
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    if sys::wait(
                        self.shared.sock.as_fd(),
                        libc::POLLOUT,
                        None,
                        Some(SEND_WAIT),
                    )? == Readiness::Timeout
                    {
                        let rest: usize = self.groups[m..].iter().map(|g| g.1).sum();
                        out.dropped += rest;
                        self.shared
                            .stats
                            .tx_dropped_full
                            .fetch_add(rest as u64, Relaxed);
                        return Ok(Fallback::None);
                    }
                }
                Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP) if n > 1 => {
                    return Ok(Fallback::Disable(first));
                }
                Some(libc::EMSGSIZE) if n > 1 => return Ok(Fallback::Split(first, n)),
                _ => {
                    // Refused (unreachable, wrong family, too big): skip it.
                    out.dropped += n;
                    self.shared.stats.tx_errors.fetch_add(n as u64, Relaxed);
                    m += 1;
                }
            }
        }
        Ok(Fallback::None)
    }

    /// Receives up to `max` datagrams (never blocks) into slots `0..n`:
    /// each message at [`MSG_OFFSET`] (= `HEADROOM - 16`), its length in
    /// `arena.len(i)`, its source in `from[i]`. GRO super-datagrams are
    /// split (a remainder is kept for the next call).
    pub fn recv_batch(
        &mut self,
        arena: &mut Arena,
        max: usize,
        from: &mut [SocketAddr],
    ) -> io::Result<usize> {
        let max = max.min(arena.slot_count()).min(from.len());
        if max == 0 {
            return Ok(0);
        }
        let n = if self.shared.gro {
            self.recv_gro(arena, max, from)?
        } else {
            self.recv_plain(arena, max, from)?
        };
        self.shared.stats.rx_datagrams.fetch_add(n as u64, Relaxed);
        Ok(n)
    }

    fn recvmmsg(&mut self, count: usize) -> io::Result<usize> {
        loop {
            // SAFETY: hdrs[..count] are initialised mmsghdrs whose names,
            // iovecs and control buffers point into live, writable buffers
            // (self.rx, the arena or self.gro_buf) of the stated sizes.
            let r = unsafe {
                libc::recvmmsg(
                    self.shared.sock.as_raw_fd(),
                    self.rx.hdrs.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    fn source(&self, m: usize) -> SocketAddr {
        let len = self.rx.hdrs[m].msg_hdr.msg_namelen;
        // SAFETY: the kernel wrote a sockaddr of `len` bytes (at most the
        // storage size) into this zero-initialised sockaddr_storage.
        let a = unsafe { SockAddr::new(self.rx.names[m], len) };
        a.as_socket()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), canonical)
    }

    fn set_name_and_ctrl(&mut self, m: usize, ctrl: bool) {
        let h = &mut self.rx.hdrs[m].msg_hdr;
        h.msg_name = (&mut self.rx.names[m] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if ctrl {
            h.msg_control = self.rx.ctrl[m].as_mut_ptr().cast();
            h.msg_controllen = size_of::<[u64; 4]>() as _;
        }
    }

    fn recv_plain(
        &mut self,
        arena: &mut Arena,
        max: usize,
        from: &mut [SocketAddr],
    ) -> io::Result<usize> {
        self.rx.reset(max, max);
        let room = arena.stride() - MSG_OFFSET;
        // slots_mut hands out all slots at once (disjoint), so every iovec
        // derives from a live borrow.
        for (m, slot) in arena.slots_mut().take(max).enumerate() {
            self.rx.iovs[m] = libc::iovec {
                iov_base: slot[MSG_OFFSET..].as_mut_ptr().cast(),
                iov_len: room,
            };
        }
        for m in 0..max {
            self.set_name_and_ctrl(m, false);
            self.rx.hdrs[m].msg_hdr.msg_iov = &mut self.rx.iovs[m] as *mut libc::iovec;
            self.rx.hdrs[m].msg_hdr.msg_iovlen = 1;
        }
        let got = self.recvmmsg(max)?;
        let mut n = 0;
        for m in 0..got {
            let h = &self.rx.hdrs[m];
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.shared.stats.rx_oversize.fetch_add(1, Relaxed);
                continue;
            }
            let len = h.msg_len as usize;
            if n != m {
                // Compact over a dropped datagram (rare: oversize only).
                let (src, dst) = (m, n);
                let stride = arena.stride();
                let mut tmp = std::mem::take(&mut self.gro_buf);
                tmp.resize(tmp.len().max(stride), 0);
                tmp[..len].copy_from_slice(&arena.slot(src)[MSG_OFFSET..MSG_OFFSET + len]);
                arena.slot_mut(dst)[MSG_OFFSET..MSG_OFFSET + len].copy_from_slice(&tmp[..len]);
                self.gro_buf = tmp;
            }
            from[n] = self.source(m);
            arena.set_len(n, len);
            n += 1;
        }
        Ok(n)
    }

    fn recv_gro(
        &mut self,
        arena: &mut Arena,
        max: usize,
        from: &mut [SocketAddr],
    ) -> io::Result<usize> {
        let mut n = 0;
        if self.gro_cursor.is_some() {
            n = self.split_gro(arena, n, max, from);
            if n == max {
                return Ok(n);
            }
        }
        let room = arena.stride() - MSG_OFFSET;
        // Fill the rest; a full GRO buffer yields many slots, so few suffice.
        let want = (max - n).min(GRO_BUFS);
        if self.gro_buf.len() < GRO_BUFS * GRO_BUF {
            self.gro_buf.resize(GRO_BUFS * GRO_BUF, 0);
        }
        self.rx.reset(want, want);
        for m in 0..want {
            self.rx.iovs[m] = libc::iovec {
                iov_base: self.gro_buf[m * GRO_BUF..].as_mut_ptr().cast(),
                iov_len: GRO_BUF,
            };
            self.set_name_and_ctrl(m, true);
            self.rx.hdrs[m].msg_hdr.msg_iov = &mut self.rx.iovs[m] as *mut libc::iovec;
            self.rx.hdrs[m].msg_hdr.msg_iovlen = 1;
        }
        let got = self.recvmmsg(want)?;
        self.gro_msgs.clear();
        for m in 0..got {
            let len = self.rx.hdrs[m].msg_len as usize;
            let seg = self.gro_size(m).filter(|&s| s > 0).unwrap_or(len).max(1);
            if seg < len {
                self.shared.stats.rx_gro_splits.fetch_add(1, Relaxed);
            }
            if seg > room || self.rx.hdrs[m].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.shared
                    .stats
                    .rx_oversize
                    .fetch_add(len.div_ceil(seg) as u64, Relaxed);
                self.gro_msgs.push(GroMsg {
                    len: 0,
                    seg: 1,
                    from: self.source(m),
                });
                continue;
            }
            let src = self.source(m);
            self.gro_msgs.push(GroMsg {
                len,
                seg,
                from: src,
            });
        }
        if got > 0 {
            self.gro_cursor = Some((0, 0));
            n = self.split_gro(arena, n, max, from);
        }
        Ok(n)
    }

    /// The UDP_GRO segment size of received message `m`, if any.
    fn gro_size(&self, m: usize) -> Option<usize> {
        let h = &self.rx.hdrs[m].msg_hdr;
        // SAFETY: the kernel filled msg_control/msg_controllen (pointing at
        // self.rx.ctrl[m]); CMSG_FIRSTHDR/NXTHDR stay within that buffer.
        unsafe {
            let mut cm = libc::CMSG_FIRSTHDR(h);
            while !cm.is_null() {
                if (*cm).cmsg_level == libc::SOL_UDP && (*cm).cmsg_type == libc::UDP_GRO {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(cm).cast::<libc::c_int>());
                    return usize::try_from(v).ok();
                }
                cm = libc::CMSG_NXTHDR(h, cm);
            }
        }
        None
    }

    /// Copies received datagrams from the GRO buffers into slots `n..max`.
    fn split_gro(
        &mut self,
        arena: &mut Arena,
        mut n: usize,
        max: usize,
        from: &mut [SocketAddr],
    ) -> usize {
        let Some((mut m, mut off)) = self.gro_cursor else {
            return n;
        };
        while m < self.gro_msgs.len() && n < max {
            let g = self.gro_msgs[m];
            if off >= g.len {
                m += 1;
                off = 0;
                continue;
            }
            let len = g.seg.min(g.len - off);
            let src = &self.gro_buf[m * GRO_BUF + off..m * GRO_BUF + off + len];
            arena.slot_mut(n)[MSG_OFFSET..MSG_OFFSET + len].copy_from_slice(src);
            arena.set_len(n, len);
            from[n] = g.from;
            n += 1;
            off += len;
        }
        while m < self.gro_msgs.len() && off >= self.gro_msgs[m].len {
            m += 1;
            off = 0;
        }
        self.gro_cursor = (m < self.gro_msgs.len()).then_some((m, off));
        n
    }
}

impl AsFd for BatchUdp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.sock.as_fd()
    }
}
