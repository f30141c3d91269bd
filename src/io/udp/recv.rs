//! The receive half of [`BatchUdp`]: `recvmmsg` straight into arena
//! slots, or with GRO into large buffers whose super-datagrams are split
//! into slots (a remainder is kept for the next call).

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;

use socket2::SockAddr;

use super::{canonical, BatchUdp, GroMsg, GRO_BUF, GRO_BUFS, MSG_OFFSET};
use crate::io::Arena;

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
