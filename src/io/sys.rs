//! Thin, safe wrappers over the system calls the I/O layer needs: poll(2)
//! readiness with an eventfd wake-up, and the interface ioctls (flags, MTU,
//! addresses, index). No packet handling here.

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::IoError;

/// Why a wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The watched descriptor is readable (or writable, for a write wait).
    Ready,
    /// Another thread called [`Waker::wake`].
    Woken,
    /// The timeout passed.
    Timeout,
}

/// A cross-thread wake-up (an eventfd): `wake` from any thread interrupts a
/// [`wait_readable`] on another.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// Creates a non-blocking eventfd.
    pub fn new() -> Result<Waker, IoError> {
        // SAFETY: eventfd takes no pointers; the returned descriptor is
        // checked and then owned exclusively by the OwnedFd.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(IoError::last_os("eventfd"));
        }
        // SAFETY: `fd` is a fresh, valid descriptor nobody else owns.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wakes every current and the next waiter (until drained).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local u64 to our eventfd. A
        // failure (EAGAIN at counter overflow) still leaves it readable.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Clears a pending wake-up.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live local u64; non-blocking.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Restricts the calling thread to CPU `cpu` (`sched_setaffinity`). Used
/// by the wake-up latency bench to place threads on the same or on
/// different CPUs.
pub fn pin_current_thread(cpu: usize) -> Result<(), IoError> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(IoError::Config("CPU index beyond CPU_SETSIZE"));
    }
    // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of `set`; `cpu` was bounds-checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the pointer and size describe
    // the live local `set`.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(IoError::last_os("sched_setaffinity"));
    }
    Ok(())
}

/// Blocks until `a` or `b` is readable, `waker` fires (drained), or
/// `timeout` passes; returns which of `a` and `b` are ready (errors and
/// hang-ups count as ready: the next read reports them). EINTR is retried.
pub fn wait_either_readable(
    a: BorrowedFd<'_>,
    b: BorrowedFd<'_>,
    waker: &Waker,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let pfd = |fd: libc::c_int| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [
        pfd(a.as_raw_fd()),
        pfd(b.as_raw_fd()),
        pfd(waker.fd.as_raw_fd()),
    ];
    loop {
        // SAFETY: `fds` is a live array of 3 pollfd structs.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout_ms(timeout)) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[2].revents != 0 {
            waker.drain();
        }
        return Ok((fds[0].revents != 0, fds[1].revents != 0));
    }
}

fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_millis();
            // Round a sub-millisecond wait up so it is not a busy poll.
            let ms = if ms == 0 && !d.is_zero() { 1 } else { ms };
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    }
}

/// Blocks until `fd` has `events` ready, `waker` fires (the wake-up is
/// drained), or `timeout` passes. EINTR is retried.
pub fn wait(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    waker: Option<&Waker>,
    timeout: Option<Duration>,
) -> io::Result<Readiness> {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: waker.map_or(-1, |w| w.fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let nfds: libc::nfds_t = if waker.is_some() { 2 } else { 1 };
    loop {
        // SAFETY: `fds` is a live array of `nfds` (<= 2) pollfd structs.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms(timeout)) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(Readiness::Timeout);
        }
        if let Some(w) = waker {
            if fds[1].revents != 0 {
                w.drain();
                return Ok(Readiness::Woken);
            }
        }
        // Errors and hang-ups count as ready: the next read reports them.
        return Ok(Readiness::Ready);
    }
}

/// `struct ifreq`: a 16-byte name and a 24-byte union, handled as bytes.
#[repr(C, align(8))]
pub(crate) struct IfReq {
    pub name: [u8; libc::IFNAMSIZ],
    pub data: [u8; 24],
}

impl IfReq {
    pub(crate) fn new(name: &str) -> Result<IfReq, IoError> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(IoError::BadName(name.to_owned()));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }

    pub(crate) fn name(&self) -> String {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    pub(crate) fn set_short(&mut self, v: libc::c_short) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }

    pub(crate) fn short(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }

    pub(crate) fn set_int(&mut self, v: libc::c_int) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }

    pub(crate) fn int(&self) -> libc::c_int {
        libc::c_int::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }

    /// Stores a `sockaddr_in` for `addr` in the union.
    pub(crate) fn set_ipv4(&mut self, addr: Ipv4Addr) {
        self.data = [0; 24];
        self.data[..2].copy_from_slice(&(libc::AF_INET as libc::sa_family_t).to_ne_bytes());
        self.data[4..8].copy_from_slice(&addr.octets());
    }
}

/// ioctl with a pointer argument; returns the OS error on failure.
///
/// # Safety
/// `arg` must point to a live object of the size and layout `req` expects.
pub(crate) unsafe fn ioctl_ptr<T>(fd: RawFd, req: libc::Ioctl, arg: *mut T) -> io::Result<()> {
    // SAFETY: upheld by the caller.
    let r = unsafe { libc::ioctl(fd, req, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn control_socket(family: libc::c_int) -> Result<OwnedFd, IoError> {
    // SAFETY: socket takes no pointers; the result is checked and owned.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(IoError::last_os("socket (interface control)"));
    }
    // SAFETY: fresh descriptor, owned exclusively from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn if_ioctl(req: libc::Ioctl, ifr: &mut IfReq, op: &'static str) -> Result<(), IoError> {
    let sock = control_socket(libc::AF_INET)?;
    // SAFETY: `ifr` is a live, correctly sized `struct ifreq` (40 bytes).
    unsafe { ioctl_ptr(sock.as_raw_fd(), req, ifr as *mut IfReq) }.map_err(IoError::os(op))
}

/// Sets the interface MTU in bytes.
pub(crate) fn set_mtu(name: &str, mtu: u32) -> Result<(), IoError> {
    let mut ifr = IfReq::new(name)?;
    ifr.set_int(libc::c_int::try_from(mtu).map_err(|_| IoError::Config("MTU too large"))?);
    if_ioctl(libc::SIOCSIFMTU, &mut ifr, "SIOCSIFMTU")
}

/// Reads the interface MTU in bytes.
pub fn mtu(name: &str) -> Result<u32, IoError> {
    let mut ifr = IfReq::new(name)?;
    if_ioctl(libc::SIOCGIFMTU, &mut ifr, "SIOCGIFMTU")?;
    u32::try_from(ifr.int()).map_err(|_| IoError::Config("negative MTU"))
}

/// Brings the interface up (IFF_UP | IFF_RUNNING).
pub(crate) fn set_up(name: &str) -> Result<(), IoError> {
    let mut ifr = IfReq::new(name)?;
    if_ioctl(libc::SIOCGIFFLAGS, &mut ifr, "SIOCGIFFLAGS")?;
    let flags = ifr.short() | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ifr.set_short(flags);
    if_ioctl(libc::SIOCSIFFLAGS, &mut ifr, "SIOCSIFFLAGS")
}

/// The interface index.
pub fn ifindex(name: &str) -> Result<u32, IoError> {
    let c = CString::new(name).map_err(|_| IoError::BadName(name.to_owned()))?;
    // SAFETY: `c` is a live NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(IoError::last_os("if_nametoindex"));
    }
    Ok(idx)
}

/// MTU of the route the kernel would use to reach `dest` (IP_MTU of a
/// connected UDP socket; no packet is sent). Use it as the underlay MTU.
pub fn route_mtu(dest: std::net::IpAddr) -> Result<u32, IoError> {
    let sock = std::net::UdpSocket::bind(match dest {
        std::net::IpAddr::V4(_) => std::net::SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        std::net::IpAddr::V6(_) => std::net::SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    })
    .map_err(IoError::os("bind (route MTU)"))?;
    sock.connect((dest, 9))
        .map_err(IoError::os("connect (route MTU)"))?;
    let (level, name) = match dest {
        std::net::IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
        std::net::IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
    };
    let mtu = getsockopt_int(sock.as_fd(), level, name).map_err(IoError::os("IP_MTU"))?;
    u32::try_from(mtu).map_err(|_| IoError::Config("negative MTU"))
}

/// Adds `addr/prefix` to the interface (with its prefix route).
pub(crate) fn add_ipv4(name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), IoError> {
    if prefix > 32 {
        return Err(IoError::Config("IPv4 prefix length > 32"));
    }
    let mut ifr = IfReq::new(name)?;
    ifr.set_ipv4(addr);
    if_ioctl(libc::SIOCSIFADDR, &mut ifr, "SIOCSIFADDR")?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    ifr.set_ipv4(Ipv4Addr::from(mask));
    if_ioctl(libc::SIOCSIFNETMASK, &mut ifr, "SIOCSIFNETMASK")
}

/// Adds `addr/prefix` to the interface.
pub(crate) fn add_ipv6(name: &str, addr: Ipv6Addr, prefix: u8) -> Result<(), IoError> {
    if prefix > 128 {
        return Err(IoError::Config("IPv6 prefix length > 128"));
    }
    let index = ifindex(name)?;
    let sock = control_socket(libc::AF_INET6)?;
    let mut req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: u32::from(prefix),
        ifr6_ifindex: libc::c_int::try_from(index).map_err(|_| IoError::Config("ifindex"))?,
    };
    // SAFETY: `req` is a live `struct in6_ifreq`, what SIOCSIFADDR expects
    // on an AF_INET6 socket.
    unsafe { ioctl_ptr(sock.as_raw_fd(), libc::SIOCSIFADDR, &mut req as *mut _) }
        .map_err(IoError::os("SIOCSIFADDR (IPv6)"))
}

/// Sets an integer socket option.
pub fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads an integer socket option.
pub fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a pointer to a live c_int and its size, updated in place.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_either_readable_reports_which_side_is_ready() {
        let new = || Waker::new().unwrap_or_else(|e| panic!("eventfd: {e}"));
        let (a, b, w) = (new(), new(), new());
        let ms = Some(Duration::from_millis(1));
        let r = wait_either_readable(a.as_fd(), b.as_fd(), &w, ms);
        assert_eq!(r.ok(), Some((false, false)));
        b.wake();
        let r = wait_either_readable(a.as_fd(), b.as_fd(), &w, None);
        assert_eq!(r.ok(), Some((false, true)));
        a.wake();
        let r = wait_either_readable(a.as_fd(), b.as_fd(), &w, None);
        assert_eq!(r.ok(), Some((true, true)));
        a.drain();
        b.drain();
        w.wake();
        let r = wait_either_readable(a.as_fd(), b.as_fd(), &w, None);
        assert_eq!(r.ok(), Some((false, false)));
        // The wake-up was consumed: the next wait times out.
        let r = wait_either_readable(a.as_fd(), b.as_fd(), &w, ms);
        assert_eq!(r.ok(), Some((false, false)));
    }

    #[test]
    fn waker_interrupts_wait() {
        let w = match Waker::new() {
            Ok(w) => w,
            Err(e) => panic!("eventfd: {e}"),
        };
        let other = match Waker::new() {
            Ok(w) => w,
            Err(e) => panic!("eventfd: {e}"),
        };
        // `other` is never written: only the wake-up can end this wait early.
        let r = wait(
            other.as_fd(),
            libc::POLLIN,
            Some(&w),
            Some(Duration::from_millis(1)),
        );
        assert_eq!(r.ok(), Some(Readiness::Timeout));
        std::thread::scope(|s| {
            s.spawn(|| w.wake());
        });
        let r = wait(
            other.as_fd(),
            libc::POLLIN,
            Some(&w),
            Some(Duration::from_secs(5)),
        );
        assert_eq!(r.ok(), Some(Readiness::Woken));
        // Drained: waiting again times out.
        let r = wait(
            other.as_fd(),
            libc::POLLIN,
            Some(&w),
            Some(Duration::from_millis(1)),
        );
        assert_eq!(r.ok(), Some(Readiness::Timeout));
    }

    #[test]
    fn route_mtu_of_loopback() {
        // Loopback's MTU is 65536 by default; any positive value proves the
        // lookup works without depending on the host's configuration.
        let route = route_mtu(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(matches!(route, Ok(m) if m >= 1280), "{route:?}");
        // The route MTU is the device MTU capped at IP_MAX_MTU (65535).
        assert_eq!(mtu("lo").ok().map(|m| m.min(65_535)), route.ok());
    }

    #[test]
    fn ifreq_rejects_bad_names() {
        assert!(IfReq::new("").is_err());
        assert!(IfReq::new("0123456789abcdef").is_err());
        assert!(IfReq::new("a\0b").is_err());
        assert!(IfReq::new("vxsec0").is_ok());
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
