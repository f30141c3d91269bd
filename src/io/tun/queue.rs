//! One TUN queue's read side: non-blocking reads into arena slots, with
//! the vnet header parsed in place and GSO super-packets segmented by
//! `io::tun::offload` (a remainder is kept for the next call).
//!
//! After a super-packet, a queue expects the next read to be another with
//! the same header length and segment size, and reads it scattered:
//! the first segment (headers included) into one slot and each further
//! `gso_size` bytes of payload straight into the next slot, behind room
//! for the headers. Segmenting then copies only the headers. A read that
//! does not match the expectation is gathered and segmented by copying,
//! as without it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::offload::{self, GsoKind, Segmenter, VnetHdr, VNET_HDR_TUNNEL_LEN};
use super::{TunStats, MAX_SUPER_PACKET};
use crate::io::sys::{self, Readiness, Waker};
use crate::io::Arena;

/// Header length and segment size of the last super-packet read: where
/// the next one's segments most likely start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    hdrs_len: usize,
    mss: usize,
}

impl Layout {
    /// Where a read laid out for this layout puts part `k` (of the free
    /// slots, counted from the first): (offset in its slot, offset in the
    /// packet, length). Part 0 is the first segment with its headers; each
    /// further part is `mss` bytes of payload behind room for the headers.
    fn piece(&self, k: usize) -> (usize, usize, usize) {
        if k == 0 {
            (Arena::HEADROOM, 0, self.hdrs_len + self.mss)
        } else {
            (
                Arena::HEADROOM + self.hdrs_len,
                self.hdrs_len + k * self.mss,
                self.mss,
            )
        }
    }

    /// Slots the largest possible super-packet of this layout needs.
    fn slots_for_largest(&self) -> usize {
        MAX_SUPER_PACKET
            .saturating_sub(self.hdrs_len)
            .div_ceil(self.mss)
    }
}

/// What one read placed into slots.
enum Read {
    /// Plain packets (0 or 1), or none yet because a super-packet was
    /// copied aside for segmentation.
    Packets(usize),
    /// Segments of a super-packet read straight into their slots.
    Super(usize),
}

impl From<bool> for Read {
    fn from(placed: bool) -> Read {
        Read::Packets(usize::from(placed))
    }
}

/// Largest header block a scattered read expects (outer IPv6 + UDP +
/// VXLAN + Ethernet/VLAN + inner IPv6 + TCP with options).
const MAX_SCATTER_HDRS: usize = 40 + 8 + 8 + 18 + 40 + 60;

/// At most this many slots per scattered read (one iovec each, plus one
/// for the overflow).
const MAX_SCATTER_SLOTS: usize = 64;

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
    layout: Option<Layout>,
    /// The last read was a super-packet: read the next one scattered (a
    /// plain packet needs one slot, not an iovec per slot).
    last_super: bool,
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
            layout: None,
            last_super: false,
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
        let mut last_was_super = false;
        while n < max {
            if self.pending.is_some() {
                n = self.drain_pending(arena, n, max);
                continue;
            }
            let r = match self.scatter_layout(arena) {
                // Too few slots left for a whole super-packet after one:
                // end the batch rather than copy the next one.
                Some(l) if last_was_super && max - n < l.slots_for_largest() => break,
                Some(l) => self.read_scatter(arena, n, max, l),
                None if self.vnet_len > 0 => self.read_vnet(arena, n).map(Read::from),
                None => self.read_plain(arena, n).map(Read::from),
            };
            match r {
                Ok(Read::Super(k)) => {
                    n += k;
                    last_was_super = true;
                }
                Ok(Read::Packets(k)) => n += k,
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
        let Some((len, hdr)) = (unsafe { self.readv_vnet(&iov, arena, i) })? else {
            return Ok(false);
        };
        let slot = arena.slot_mut(i);
        match hdr {
            (h, GsoKind::None) => {
                self.last_super = false;
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
                self.last_super = true;
                let head = len.min(room);
                self.scratch[..head]
                    .copy_from_slice(&slot[Arena::HEADROOM..Arena::HEADROOM + head]);
                match Segmenter::new(&h, &self.scratch[..len]) {
                    Ok(seg) if seg.max_segment_len() <= cap => {
                        self.stats.rx_super_packets.fetch_add(1, Relaxed);
                        self.layout = Some(Layout {
                            hdrs_len: seg.headers_len(),
                            mss: seg.mss(),
                        });
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

    /// One `readv` of a packet with its vnet header into `iov`, whose first
    /// buffer starts `vnet_len` bytes before `HEADROOM` of slot `i`.
    /// Returns the packet's length and its parsed vnet header, or `None`
    /// for a read too short or a header that does not parse (counted).
    ///
    /// # Safety
    /// Every iovec must describe a live, writable buffer of its stated
    /// length, the buffers pairwise disjoint, not otherwise accessed until
    /// this returns.
    unsafe fn readv_vnet(
        &self,
        iov: &[libc::iovec],
        arena: &Arena,
        i: usize,
    ) -> io::Result<Option<(usize, (VnetHdr, GsoKind))>> {
        let count = libc::c_int::try_from(iov.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the caller guarantees the iovecs (see above); `count`
        // does not exceed the slice.
        let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), count) };
        let total = usize::try_from(r).map_err(|_| io::Error::last_os_error())?;
        let vl = self.vnet_len;
        let raw = &arena.slot(i)[Arena::HEADROOM - vl..];
        let parsed = if vl >= VNET_HDR_TUNNEL_LEN {
            VnetHdr::parse_tunnel(raw)
        } else {
            VnetHdr::parse(raw)
        };
        match (
            total.checked_sub(vl),
            parsed.and_then(|h| h.gso().map(|k| (h, k))),
        ) {
            (Some(len), Ok(hk)) => Ok(Some((len, hk))),
            _ => {
                self.stats.rx_bad_offload.fetch_add(1, Relaxed);
                Ok(None)
            }
        }
    }

    /// The layout to read the next packet scattered with, if this queue
    /// has one that fits `arena`'s slots.
    fn scatter_layout(&self, arena: &Arena) -> Option<Layout> {
        let l = self.layout?;
        let fits = self.last_super
            && self.vnet_len > 0
            && l.mss > 0
            && l.hdrs_len <= MAX_SCATTER_HDRS
            && l.hdrs_len + l.mss <= arena.max_payload();
        fits.then_some(l)
    }

    /// One read laid out for a super-packet of layout `l`: the vnet header
    /// and the first `hdrs_len + mss` bytes into slot `n`, each further
    /// `mss` bytes into the next slot at `HEADROOM + hdrs_len`, anything
    /// past the last free slot into scratch at its offset in the packet.
    /// A plain packet that spills past slot `n` is gathered back; a
    /// super-packet of another layout is gathered into scratch and
    /// segmented by copying.
    fn read_scatter(
        &mut self,
        arena: &mut Arena,
        n: usize,
        max: usize,
        l: Layout,
    ) -> io::Result<Read> {
        let vl = self.vnet_len;
        let room = arena.stride() - Arena::HEADROOM;
        if self.scratch.len() < room + MAX_SUPER_PACKET {
            self.scratch.resize(room + MAX_SUPER_PACKET, 0);
        }
        let avail = (max - n).min(MAX_SCATTER_SLOTS);
        // Packet bytes the free slots take; the rest goes to scratch.
        let in_slots = l.hdrs_len + l.mss * avail;
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; MAX_SCATTER_SLOTS + 1];
        for (k, v) in iov.iter_mut().enumerate().take(avail) {
            // Part 0 also takes the vnet header in front of it.
            let (at, _, len) = l.piece(k);
            let (at, len) = if k == 0 {
                (at - vl, len + vl)
            } else {
                (at, len)
            };
            let part = &mut arena.slot_mut(n + k)[at..at + len];
            *v = libc::iovec {
                iov_base: part.as_mut_ptr().cast(),
                iov_len: part.len(),
            };
        }
        let mut count = avail;
        if let Some(tail) = self.scratch.get_mut(in_slots..) {
            if !tail.is_empty() {
                iov[count] = libc::iovec {
                    iov_base: tail.as_mut_ptr().cast(),
                    iov_len: tail.len(),
                };
                count += 1;
            }
        }
        // SAFETY: the first `count` iovecs describe live, writable,
        // pairwise disjoint buffers of the stated lengths: parts of
        // distinct arena slots (within `stride`, checked by the slicing
        // above) and the tail of `scratch`.
        let Some((len, (h, kind))) = (unsafe { self.readv_vnet(&iov[..count], arena, n) })? else {
            return Ok(Read::Packets(0));
        };
        let cap = arena.max_payload();
        self.last_super = kind != GsoKind::None;
        if kind == GsoKind::None {
            if len > cap {
                self.stats.rx_oversize.fetch_add(1, Relaxed);
                return Ok(Read::Packets(0));
            }
            // A plain packet longer than part 0 spilled into the next
            // parts and maybe scratch: move it back behind its start.
            let first = l.piece(0).2;
            for k in 1..avail {
                let (from, at, part) = l.piece(k);
                let part = part.min(len.saturating_sub(at));
                if part == 0 {
                    break;
                }
                arena.copy_between_slots(n + k, from, n, Arena::HEADROOM + at, part);
            }
            let in_slots_end = len.min(in_slots).max(first);
            if len > in_slots_end {
                let to = Arena::HEADROOM + in_slots_end;
                arena.slot_mut(n)[to..to + (len - in_slots_end)]
                    .copy_from_slice(&self.scratch[in_slots_end..len]);
            }
            let pkt = &mut arena.slot_mut(n)[Arena::HEADROOM..Arena::HEADROOM + len];
            if offload::finish_plain(&h, pkt).is_err() {
                self.stats.rx_bad_offload.fetch_add(1, Relaxed);
                return Ok(Read::Packets(0));
            }
            arena.set_len(n, len);
            return Ok(Read::Packets(1));
        }
        if len > self.scratch.len() {
            // Longer than any packet the scratch path could hold: refuse
            // it here too (the kernel's GSO packets stay below 64 KiB).
            self.stats.rx_oversize.fetch_add(1, Relaxed);
            return Ok(Read::Packets(0));
        }
        let head_end = Arena::HEADROOM + len.min(l.hdrs_len + l.mss);
        let mut seg =
            match Segmenter::new_from_head(&h, &arena.slot(n)[Arena::HEADROOM..head_end], len) {
                Ok(seg) if seg.max_segment_len() <= cap => seg,
                Ok(_) => {
                    self.stats.rx_oversize.fetch_add(1, Relaxed);
                    return Ok(Read::Packets(0));
                }
                Err(_) => {
                    self.stats.rx_bad_offload.fetch_add(1, Relaxed);
                    return Ok(Read::Packets(0));
                }
            };
        self.stats.rx_super_packets.fetch_add(1, Relaxed);
        let actual = Layout {
            hdrs_len: seg.headers_len(),
            mss: seg.mss(),
        };
        if actual != l {
            // Not where we guessed: put the packet together in scratch and
            // segment it by copying.
            self.layout = Some(actual);
            for k in 0..avail {
                let (from, at, part) = l.piece(k);
                let part = part.min(len.saturating_sub(at));
                if part == 0 {
                    break;
                }
                self.scratch[at..at + part].copy_from_slice(&arena.slot(n + k)[from..from + part]);
            }
            let seg = match Segmenter::new(&h, &self.scratch[..len]) {
                Ok(s) => s,
                Err(_) => {
                    self.stats.rx_bad_offload.fetch_add(1, Relaxed);
                    return Ok(Read::Packets(0));
                }
            };
            self.pending = Some(Pending { seg, len });
            return Ok(Read::Packets(0));
        }
        self.stats.rx_direct_super_packets.fetch_add(1, Relaxed);
        let mut hdrs = [0u8; MAX_SCATTER_HDRS];
        let hl = l.hdrs_len;
        hdrs[..hl].copy_from_slice(&arena.slot(n)[Arena::HEADROOM..Arena::HEADROOM + hl]);
        let mut placed = 0;
        while placed < avail && !seg.is_done() {
            let slot = &mut arena.slot_mut(n + placed)[Arena::HEADROOM..Arena::HEADROOM + cap];
            if placed > 0 {
                slot[..hl].copy_from_slice(&hdrs[..hl]);
            }
            match seg.next_in_place(slot) {
                Ok(Some(seg_len)) => {
                    arena.set_len(n + placed, seg_len);
                    placed += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    self.stats.rx_bad_offload.fetch_add(1, Relaxed);
                    return Ok(Read::Super(placed));
                }
            }
        }
        if !seg.is_done() {
            // The rest lies in scratch at its own offsets: give it the
            // headers and continue by copying.
            self.scratch[..hl].copy_from_slice(&hdrs[..hl]);
            self.pending = Some(Pending { seg, len });
        }
        Ok(Read::Super(placed))
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
