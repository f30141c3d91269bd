//! TUN devices: create (or attach to) `IFF_TUN | IFF_NO_PI` queues, with
//! optional `IFF_VNET_HDR` offloads (checksum, TSO4/6, USO4/6, UDP-tunnel
//! GSO, probed and reduced to what the kernel accepts) and
//! `IFF_MULTI_QUEUE`; set MTU and addresses, bring the link up. The device
//! is removed when its last queue is dropped. Reading and writing batches
//! live in `queue` and `write`; no protocol logic here.

use std::fs::OpenOptions;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::sys::{self, IfReq};
use super::IoError;
use offload::{tun_flags, VNET_HDR_LEN, VNET_HDR_TUNNEL_LEN};

pub mod offload;
mod queue;
mod write;

pub use queue::TunQueue;
pub use write::is_refusal;

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
    /// Of those, read straight into their segments' slots (segmenting
    /// copied only the headers).
    pub rx_direct_super_packets: AtomicU64,
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
    /// UDP-tunnel GSO super-packets written (VXLAN TCP runs).
    pub tx_tnl_super_packets: AtomicU64,
    /// Packets carried inside those super-packets.
    pub tx_tnl_coalesced: AtomicU64,
    /// Times a UDP-tunnel super-packet was refused and tunnel coalescing
    /// turned off.
    pub tx_tnl_fallbacks: AtomicU64,
    /// Coalescing of UDP writes into USO super-packets is on (cleared
    /// after the kernel refuses one).
    coalesce_on: AtomicBool,
    /// Coalescing of VXLAN TCP writes into UDP-tunnel GSO super-packets
    /// is on (cleared after the kernel refuses one).
    tnl_coalesce_on: AtomicBool,
}

impl TunStats {
    /// Whether VXLAN TCP writes are coalesced into UDP-tunnel GSO
    /// super-packets (needs the 24-byte vnet header).
    pub fn tnl_coalescing(&self) -> bool {
        self.tnl_coalesce_on.load(Relaxed)
    }

    /// Turns UDP-tunnel coalescing off for every queue of the device
    /// (VXLAN TCP then goes out as USO super-packets or one by one).
    pub fn disable_tnl_coalescing(&self) {
        self.tnl_coalesce_on.store(false, Relaxed);
    }
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

/// Keeps the kernel from giving the device an IPv6 link-local address
/// when it comes up (`addr_gen_mode` = none): otherwise, on a host with
/// IPv6 on, the kernel itself sends router solicitations and MLD reports
/// into the tunnel, which no peer can take (dropped and counted as
/// `no_route`). Addresses the config gives are added as before. On a host
/// without IPv6 the setting does not exist and nothing is needed.
fn no_ipv6_autoconf(name: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode");
    let _ = std::fs::write(path, "1");
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
        // Tunnel super-packets need the 24-byte header (kept only when the
        // tunnel offloads were accepted).
        stats
            .tnl_coalesce_on
            .store(vnet_len == VNET_HDR_TUNNEL_LEN, Relaxed);
        let mut queues = vec![TunQueue::new(first, vnet_len, uso, Arc::clone(&stats))];
        for _ in 1..cfg.queues {
            let (fd, _) = open_queue(&name, flags)?;
            queues.push(TunQueue::new(fd, vnet_len, uso, Arc::clone(&stats)));
        }
        sys::set_mtu(&name, cfg.mtu_bytes)?;
        if let Some((a, p)) = cfg.ipv4 {
            sys::add_ipv4(&name, a, p)?;
        }
        no_ipv6_autoconf(&name);
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
