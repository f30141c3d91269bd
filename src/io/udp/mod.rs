//! Batched UDP for the data plane: one socket (IPv4 or dual-stack IPv6),
//! enlarged buffers, `recvmmsg` into arena slots (message at
//! `HEADROOM - 16` so opened plaintext lands at `HEADROOM`), `sendmmsg`
//! from arena slots with per-slot destinations, UDP GSO (`UDP_SEGMENT`,
//! gathered from the slots with iovecs, no copy) and UDP GRO (super-
//! datagrams split by the `UDP_GRO` size). Both are probed at start; GSO
//! is turned off on EIO/EINVAL/ENOPROTOOPT and bypassed for one run on
//! EMSGSIZE (segment above the path MTU). No protocol logic.

use std::io;
use std::mem::zeroed;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub mod gro_split;
mod recv;
mod send;

use super::sys::{self, Readiness, Waker};
use super::{Arena, IoError};

/// Offset of a datagram in its slot: where a data message starts
/// ([`Arena::MESSAGE_OFFSET`]), so a received one opens in place.
const MSG_OFFSET: usize = Arena::MESSAGE_OFFSET;
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
    /// Copy each GSO run into one contiguous buffer and send it from one
    /// iovec, instead of gathering it from the slots with one iovec per
    /// datagram (the default: no copy). On this loaded 2-core machine
    /// neither was consistently faster (tests/udp_measure.rs).
    pub gso_copy: bool,
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
            gso_copy: false,
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
    /// Of those, dropped by [`BatchUdp::send_batch_nowait`] without waiting.
    pub tx_dropped_nowait: AtomicU64,
    /// Datagrams the kernel refused (unreachable, wrong family…).
    pub tx_errors: AtomicU64,
    /// Datagrams received into slots.
    pub rx_datagrams: AtomicU64,
    /// GRO super-datagrams split.
    pub rx_gro_splits: AtomicU64,
    /// Of those, received straight into their datagrams' slots (no copy).
    pub rx_gro_direct: AtomicU64,
    /// Datagrams dropped: larger than a slot.
    pub rx_oversize: AtomicU64,
    /// Datagrams dropped: empty (no byte of payload; nothing to parse).
    pub rx_empty: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    sock: Socket,
    v6: bool,
    gso: AtomicBool,
    gro: bool,
    stats: UdpStats,
    gso_copy: bool,
}

/// Result of a [`BatchUdp::send_batch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Slots the kernel accepted.
    pub sent: usize,
    /// Slots dropped (buffer full or refused by the kernel).
    pub dropped: usize,
}

/// Raw syscall scratch: pointers into it are set up and used within one
/// call only.
struct Scratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    /// iovecs of a scattered receive (one per slot, plus the overflow).
    scatter: Vec<libc::iovec>,
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
            scatter: Vec::new(),
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
    /// Segment size of the last GRO super-datagram: the next one is
    /// received straight into slots of that size.
    gro_seg: Option<usize>,
    /// The last message received was a GRO super-datagram: receive the
    /// next one scattered (single datagrams go many to a call instead).
    gro_last_super: bool,
    /// Group boundaries of the current send: (first slot index, count, seg).
    groups: Vec<(usize, usize, usize)>,
    /// With `gso_copy`, GSO runs are copied here and sent from one iovec.
    gso_buf: Vec<u8>,
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
            gso_copy: cfg.gso_copy,
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
            gro_seg: None,
            gro_last_super: false,
            groups: Vec::new(),
            gso_buf: Vec::new(),
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

    /// Waits up to `SEND_WAIT` for send-buffer space; false if none came.
    fn wait_writable(&self) -> io::Result<bool> {
        let r = sys::wait(
            self.shared.sock.as_fd(),
            libc::POLLOUT,
            None,
            Some(SEND_WAIT),
        )?;
        Ok(r != Readiness::Timeout)
    }

    /// Sends one datagram (handshakes, cookies); waits briefly for space.
    pub fn send_to(&self, buf: &[u8], dest: SocketAddr) -> io::Result<usize> {
        let to = self.dest(dest);
        loop {
            match self.shared.sock.send_to(buf, &to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait_writable()? {
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }
}

impl AsFd for BatchUdp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.sock.as_fd()
    }
}
