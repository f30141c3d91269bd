//! The receive half of [`BatchUdp`]: `recvmmsg` straight into arena
//! slots, or with GRO into large buffers whose super-datagrams are split
//! into slots (a remainder is kept for the next call).
//!
//! Once a GRO super-datagram has shown the segment size, and while
//! super-datagrams keep coming, messages are received one per call, each
//! scattered straight into the free slots, one segment per slot, so
//! splitting copies nothing; what does not fit (past the last free slot, a
//! different segment size, a single datagram longer than a slot's share)
//! is put back together and split by copying, as without it.
//!
//! Empty datagrams are dropped here and counted (`rx_empty`): nothing
//! above could parse them, and GRO splitting would lose them uncounted.
//! The splitting arithmetic (what a message is, where its datagrams lie,
//! what a scattered receive left in place) is in [`super::gro_split`];
//! this file does the system calls and the copies it plans.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;

use socket2::SockAddr;

use super::gro_split::{self, Received, ScatterLayout, ScatterPlan};
use super::{canonical, BatchUdp, GroMsg, GRO_BUF, GRO_BUFS, MSG_OFFSET};
use crate::io::Arena;

/// At most this many slots per scattered receive.
const MAX_SCATTER: usize = 64;

impl BatchUdp {
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
            if len == 0 {
                self.shared.stats.rx_empty.fetch_add(1, Relaxed);
                continue;
            }
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
        loop {
            if self.gro_cursor.is_some() {
                n = self.split_gro(arena, n, max, from);
            }
            if n >= max {
                return Ok(n);
            }
            let (next, got, scattered) = self.recv_gro_once(arena, n, max, from)?;
            n = next;
            // A scattered receive takes one message: go on while slots
            // are free and messages come.
            if got == 0 || !scattered {
                return Ok(n);
            }
        }
    }

    /// One `recvmmsg` into slots `n..max`: with a learnt segment size, one
    /// message scattered straight into the slots; without, up to
    /// `GRO_BUFS` messages into GRO buffers, split by copying. Returns the
    /// new `n`, the messages received and whether it scattered.
    fn recv_gro_once(
        &mut self,
        arena: &mut Arena,
        mut n: usize,
        max: usize,
        from: &mut [SocketAddr],
    ) -> io::Result<(usize, usize, bool)> {
        let room = arena.stride() - MSG_OFFSET;
        let seg = self
            .gro_seg
            .filter(|&g| self.gro_last_super && g > 0 && g <= room);
        // Fill the rest; a full GRO buffer yields many slots, so few suffice.
        let want = if seg.is_some() {
            1
        } else {
            (max - n).min(GRO_BUFS)
        };
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
        // Message 0 straight into slots n.. (segment size g each), its
        // overflow into its GRO buffer at the same offset.
        let scatter = seg.and_then(|g| ScatterLayout::new(g, (max - n).min(MAX_SCATTER), GRO_BUF));
        if let Some(layout) = scatter {
            let (g, at) = (layout.seg(), layout.in_slots());
            self.rx.scatter.clear();
            for k in 0..layout.slots() {
                let part = &mut arena.slot_mut(n + k)[MSG_OFFSET..MSG_OFFSET + g];
                self.rx.scatter.push(libc::iovec {
                    iov_base: part.as_mut_ptr().cast(),
                    iov_len: part.len(),
                });
            }
            if at < GRO_BUF {
                let tail = &mut self.gro_buf[at..GRO_BUF];
                self.rx.scatter.push(libc::iovec {
                    iov_base: tail.as_mut_ptr().cast(),
                    iov_len: tail.len(),
                });
            }
            let h = &mut self.rx.hdrs[0].msg_hdr;
            h.msg_iov = self.rx.scatter.as_mut_ptr();
            h.msg_iovlen = self.rx.scatter.len() as _;
        }
        let got = self.recvmmsg(want)?;
        self.gro_msgs.clear();
        let mut first = 0;
        for m in 0..got {
            let len = self.rx.hdrs[m].msg_len as usize;
            let src = self.source(m);
            let truncated = self.rx.hdrs[m].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let gro_seg = self.gro_size(m);
            let received = gro_split::classify(len, gro_seg, truncated, room);
            if received != Received::Empty {
                // What GRO has learnt (an empty datagram changes nothing).
                let seg_m = gro_seg.filter(|&s| s > 0).unwrap_or(len);
                if seg_m < len {
                    self.shared.stats.rx_gro_splits.fetch_add(1, Relaxed);
                    self.gro_seg = Some(seg_m);
                }
                self.gro_last_super = seg_m < len;
            }
            let seg_m = match received {
                Received::Datagrams { seg } => seg,
                Received::Empty => {
                    self.shared.stats.rx_empty.fetch_add(1, Relaxed);
                    0
                }
                Received::Oversize { datagrams } => {
                    let lost = datagrams as u64;
                    self.shared.stats.rx_oversize.fetch_add(lost, Relaxed);
                    0
                }
            };
            if seg_m == 0 {
                // Counted and skipped (split_gro passes over it).
                self.gro_msgs.push(GroMsg {
                    len: 0,
                    seg: 1,
                    from: src,
                });
                continue;
            }
            if let Some(layout) = scatter.filter(|_| m == 0) {
                let (placed, resume) =
                    self.settle_scattered(arena, n, from, layout, len, seg_m, src);
                n += placed;
                first = resume;
            }
            self.gro_msgs.push(GroMsg {
                len,
                seg: seg_m,
                from: src,
            });
        }
        if got > 0 {
            self.gro_cursor = Some((0, first));
            n = self.split_gro(arena, n, max, from);
        }
        Ok((n, got, scatter.is_some()))
    }

    /// Message 0 of a scattered receive (laid out as `layout`) arrived
    /// with `len` bytes in segments of `seg`. Finishes the datagrams that
    /// lie whole in slots `n..` (or copies the slots' bytes back into GRO
    /// buffer 0), as [`gro_split::plan_scattered`] plans; returns how many
    /// datagrams it finished, and the offset from which the rest is to be
    /// split by copying out of GRO buffer 0 (`len` when nothing is left).
    #[allow(clippy::too_many_arguments)]
    fn settle_scattered(
        &mut self,
        arena: &mut Arena,
        n: usize,
        from: &mut [SocketAddr],
        layout: ScatterLayout,
        len: usize,
        seg: usize,
        src: SocketAddr,
    ) -> (usize, usize) {
        match gro_split::plan_scattered(layout, len, seg) {
            ScatterPlan::InSlots { datagrams, resume } => {
                for k in 0..datagrams {
                    let dlen = gro_split::datagram_at(len, seg, k * seg).map_or(0, |d| d.len());
                    arena.set_len(n + k, dlen);
                    from[n + k] = src;
                }
                if datagrams > 0 && seg < len {
                    self.shared.stats.rx_gro_direct.fetch_add(1, Relaxed);
                }
                (datagrams, resume)
            }
            ScatterPlan::Regather { in_slots } => {
                // Slot n + k holds bytes [k * g, (k + 1) * g).
                let g = layout.seg();
                let mut x = 0;
                while x < in_slots {
                    let take = g.min(in_slots - x);
                    self.gro_buf[x..x + take]
                        .copy_from_slice(&arena.slot(n + x / g)[MSG_OFFSET..MSG_OFFSET + take]);
                    x += take;
                }
                (0, 0)
            }
        }
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
            let Some(d) = gro_split::datagram_at(g.len, g.seg, off) else {
                m += 1;
                off = 0;
                continue;
            };
            let len = d.len();
            let src = &self.gro_buf[m * GRO_BUF + d.start..m * GRO_BUF + d.end];
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
