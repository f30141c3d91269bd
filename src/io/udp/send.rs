//! The send half of [`BatchUdp`]: groups arena slots into `sendmmsg`
//! messages (UDP GSO for runs to one destination), waits briefly for
//! buffer space (or, for control replies, never), and falls back from GSO
//! when the kernel refuses it.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;

use super::{BatchUdp, SendOutcome, MAX_GSO_BYTES, MAX_GSO_SEGMENTS, MSG_OFFSET};
use crate::io::Arena;

/// How to continue after the kernel refused a GSO message.
enum Fallback {
    /// Everything was sent or dropped.
    None,
    /// GSO is unsupported: disable it and resend from this slot index.
    Disable(usize),
    /// Resend the group (first slot index, count) without GSO, then go on.
    Split(usize, usize),
}

impl BatchUdp {
    /// Sends the message of each slot in `slots` (at [`MSG_OFFSET`], length
    /// `arena.len(i)`) to `dests[k]`, in order, with as few system calls as
    /// the kernel allows. Blocks at most ~200 ms per stall for buffer space.
    pub fn send_batch(
        &mut self,
        arena: &Arena,
        slots: &[usize],
        dests: &[SocketAddr],
    ) -> io::Result<SendOutcome> {
        self.send_batch_with(arena, slots, dests, true)
    }

    /// [`BatchUdp::send_batch`] that never waits: with the send buffer
    /// full, the rest of the batch is dropped and counted
    /// (`tx_dropped_full` and `tx_dropped_nowait`). For control replies,
    /// which must never stall the thread that sends them.
    pub fn send_batch_nowait(
        &mut self,
        arena: &Arena,
        slots: &[usize],
        dests: &[SocketAddr],
    ) -> io::Result<SendOutcome> {
        self.send_batch_with(arena, slots, dests, false)
    }

    fn send_batch_with(
        &mut self,
        arena: &Arena,
        slots: &[usize],
        dests: &[SocketAddr],
        wait: bool,
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
            match self.send_from(arena, &slots[start..], &dests[start..], gso, wait, &mut out)? {
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
                    self.send_from(arena, s, d, false, wait, &mut out)?;
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
        wait: bool,
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
        // Pass 2: the syscall structures. GSO runs are gathered from the
        // slots (one iovec per datagram), or copied into one contiguous
        // buffer (one iovec) with `gso_copy`.
        let copy = self.shared.gso_copy;
        if copy {
            let bytes: usize = self
                .groups
                .iter()
                .filter(|g| g.1 > 1)
                .map(|&(first, n, _)| {
                    slots[first..first + n]
                        .iter()
                        .map(|&i| arena.len(i))
                        .sum::<usize>()
                })
                .sum();
            if self.gso_buf.len() < bytes {
                self.gso_buf.resize(bytes, 0);
            }
            let mut at = 0;
            for &(first, n, _) in self.groups.iter().filter(|g| g.1 > 1) {
                for &i in &slots[first..first + n] {
                    // Lengths were checked by send_batch: the range is in the slot.
                    let msg = &arena.slot(i)[MSG_OFFSET..MSG_OFFSET + arena.len(i)];
                    self.gso_buf[at..at + msg.len()].copy_from_slice(msg);
                    at += msg.len();
                }
            }
        }
        // One borrow of the copy buffer for every iovec that points into it.
        let base = self.gso_buf.as_mut_ptr();
        self.tx.reset(self.groups.len(), slots.len());
        let mut at = 0;
        for (m, &(first, n, seg)) in self.groups.iter().enumerate() {
            let mut iovlen = n;
            if copy && n > 1 {
                let len: usize = slots[first..first + n].iter().map(|&i| arena.len(i)).sum();
                self.tx.iovs[first] = libc::iovec {
                    // `at + len` <= gso_buf.len(): the buffer was sized to
                    // the sum of these lengths above.
                    iov_base: base.wrapping_add(at).cast(),
                    iov_len: len,
                };
                at += len;
                iovlen = 1;
            } else {
                for (j, &i) in slots.iter().enumerate().skip(first).take(n) {
                    // Lengths were checked by send_batch: the range is in the slot.
                    let msg = &arena.slot(i)[MSG_OFFSET..MSG_OFFSET + arena.len(i)];
                    self.tx.iovs[j] = libc::iovec {
                        iov_base: msg.as_ptr() as *mut libc::c_void,
                        iov_len: msg.len(),
                    };
                }
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
            h.msg_iovlen = iovlen as _;
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
            // iovecs and control buffers point into self.tx, self.gso_buf
            // and `arena` slots, all alive and unmodified during the call.
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
                    if !wait || !self.wait_writable()? {
                        let rest: usize = self.groups[m..].iter().map(|g| g.1).sum();
                        out.dropped += rest;
                        let st = &self.shared.stats;
                        st.tx_dropped_full.fetch_add(rest as u64, Relaxed);
                        if !wait {
                            st.tx_dropped_nowait.fetch_add(rest as u64, Relaxed);
                        }
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
}
