//! One TUN queue's read side: non-blocking reads into arena slots, with
//! the vnet header parsed in place and GSO super-packets segmented by
//! `dataplane::offload` (a remainder is kept for the next call).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::{TunStats, MAX_SUPER_PACKET};
use crate::dataplane::offload::{self, GsoKind, Segmenter, VnetHdr, VNET_HDR_TUNNEL_LEN};
use crate::io::sys::{self, Readiness, Waker};
use crate::io::Arena;

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
    pub(super) fd: OwnedFd,
    /// Bytes of vnet header before each packet (0: none, 10, or 24 with
    /// UDP-tunnel offloads).
    pub(super) vnet_len: usize,
    /// TUN_F_USO4/6 accepted: UDP writes of that family may be coalesced.
    pub(super) uso: u32,
    scratch: Vec<u8>,
    pending: Option<Pending>,
    pub(super) stats: Arc<TunStats>,
}

pub(super) const ZERO_VNET: [u8; VNET_HDR_TUNNEL_LEN] = [0; VNET_HDR_TUNNEL_LEN];

impl TunQueue {
    pub(super) fn new(fd: OwnedFd, vnet_len: usize, uso: u32, stats: Arc<TunStats>) -> TunQueue {
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
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
