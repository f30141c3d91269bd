//! One TUN queue's write side: packets from arena slots, one `write` each,
//! or gathered with `writev` as one super-packet (headers rebuilt once,
//! payloads in place): with the 24-byte vnet header, runs of VXLAN TCP
//! packets of one inner flow as a UDP-tunnel GSO packet; with USO, runs of
//! same-flow UDP packets (VXLAN) as a USO packet. Each kind is turned off
//! for good the first time the kernel refuses it.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

use super::offload::tunnel_coalesce;
use super::offload::udp_coalesce::{self, UdpHead, MAX_HDRS_LEN, MAX_SEGMENTS};
use super::offload::{tun_flags, VNET_HDR_TUNNEL_LEN};
use super::queue::ZERO_VNET;
use super::{TunQueue, TunStats};
use crate::io::Arena;

impl TunQueue {
    /// Writes the packets of `slots` (each at `Arena::HEADROOM`, length
    /// `arena.len(i)`); returns how many the kernel took. Refused packets
    /// are counted in `tx_errors` and skipped. With vnet_hdr, runs of
    /// consecutive packets go out as one super-packet (order kept).
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
    /// one super-packet — UDP-tunnel GSO for VXLAN TCP, else USO for
    /// same-flow UDP — and returns (slots consumed, packets written);
    /// `None` if there is no such run (or coalescing was refused and is
    /// now off), so the caller writes `pkt` alone.
    fn try_coalesced(&self, arena: &Arena, slots: &[usize], pkt: &[u8]) -> Option<(usize, usize)> {
        if self.vnet_len == 0 {
            return None;
        }
        if self.tnl_on() {
            if let Some(done) = self.try_tnl(arena, slots, pkt) {
                return Some(done);
            }
        }
        self.try_uso(arena, slots, pkt)
    }

    /// UDP-tunnel coalescing is possible and on: it needs the 24-byte
    /// vnet header, which the device keeps only with the tunnel offloads.
    fn tnl_on(&self) -> bool {
        self.vnet_len == VNET_HDR_TUNNEL_LEN && self.stats.tnl_coalesce_on.load(Relaxed)
    }

    /// A run of VXLAN TCP packets of one inner flow as one UDP-tunnel GSO
    /// super-packet (see `io::tun::offload::tunnel_coalesce`).
    fn try_tnl(&self, arena: &Arena, slots: &[usize], pkt: &[u8]) -> Option<(usize, usize)> {
        let head = tunnel_coalesce::tnl_head(pkt)?;
        let run = tunnel_coalesce::run_len(&head, slots.iter().map(|&i| packet(arena, i)));
        if run.count < 2 {
            return None;
        }
        let n = run.count;
        let mut hdr = [0u8; VNET_HDR_TUNNEL_LEN + tunnel_coalesce::MAX_HDRS_LEN];
        let (vh, block_len) = tunnel_coalesce::build_super_header(
            &head,
            pkt,
            &run,
            // An L3 TUN needs the padded outer header (see there).
            true,
            &mut hdr[VNET_HDR_TUNNEL_LEN..],
        )
        .ok()?;
        vh.emit_tunnel(&mut hdr).ok()?;
        let block = &hdr[..VNET_HDR_TUNNEL_LEN + block_len];
        let r = self.gather(block, arena, &slots[..n], head.hdrs_len);
        let s = &self.stats;
        let done = settle(
            s,
            r,
            n,
            &s.tx_tnl_super_packets,
            &s.tnl_coalesce_on,
            &s.tx_tnl_fallbacks,
        );
        if done == Some((n, n)) {
            s.tx_tnl_coalesced.fetch_add(n as u64, Relaxed);
        }
        done
    }

    /// A run of same-flow UDP packets as one USO super-packet. With tunnel
    /// coalescing on, the run ends before a packet that starts a tunnel run.
    fn try_uso(&self, arena: &Arena, slots: &[usize], pkt: &[u8]) -> Option<(usize, usize)> {
        if self.uso == 0 || !self.stats.coalesce_on.load(Relaxed) {
            return None;
        }
        let head = udp_coalesce::udp_head(pkt)?;
        let family = if head.v6 {
            tun_flags::USO6
        } else {
            tun_flags::USO4
        };
        if self.uso & family == 0 {
            return None;
        }
        let mut n = udp_coalesce::run_len(&head, slots.iter().map(|&i| packet(arena, i)));
        if n >= 2 && self.tnl_on() {
            let starts = |j: usize| {
                slots.get(j + 1).is_some_and(|&b| {
                    tunnel_coalesce::starts_run(packet(arena, slots[j]), packet(arena, b))
                })
            };
            if let Some(j) = (1..n).find(|&j| starts(j)) {
                n = j;
            }
        }
        if n < 2 {
            return None;
        }
        let r = self.write_super(arena, &slots[..n], &head);
        let s = &self.stats;
        settle(
            s,
            r,
            n,
            &s.tx_super_packets,
            &s.coalesce_on,
            &s.tx_coalesce_fallbacks,
        )
    }

    /// One USO writev: vnet header + super headers, then each payload in place.
    fn write_super(&self, arena: &Arena, slots: &[usize], head: &UdpHead) -> io::Result<()> {
        let first = packet(arena, slots[0]);
        let total: usize = slots
            .iter()
            .map(|&i| packet(arena, i).len() - head.hdrs_len)
            .sum();
        let vl = self.vnet_len;
        let mut hdr = [0u8; VNET_HDR_TUNNEL_LEN + MAX_HDRS_LEN];
        let vh = udp_coalesce::build_super_header(head, first, total, &mut hdr[vl..])
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        vh.emit(&mut hdr)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        self.gather(&hdr[..vl + head.hdrs_len], arena, slots, head.hdrs_len)
    }

    /// One writev of `block` (vnet header + super-packet headers) followed
    /// by the packets of `slots` without their first `skip` bytes, in
    /// place (at most `MAX_SEGMENTS` of them).
    fn gather(&self, block: &[u8], arena: &Arena, slots: &[usize], skip: usize) -> io::Result<()> {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; MAX_SEGMENTS + 1];
        iov[0] = libc::iovec {
            iov_base: block.as_ptr() as *mut libc::c_void,
            iov_len: block.len(),
        };
        for (v, &i) in iov[1..].iter_mut().zip(slots) {
            let p = packet(arena, i).get(skip..).unwrap_or(&[]);
            *v = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
        }
        let count = slots.len().min(MAX_SEGMENTS) + 1;
        loop {
            // SAFETY: iov[..count] describe live buffers (the caller's
            // header block and arena payloads) of the stated lengths;
            // writev only reads through them.
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

/// The outcome of writing `n` packets as one super-packet: counted in
/// `supers` when written; when the kernel refuses the kind, coalescing
/// of that kind turns off (`on`), the refusal is counted in
/// `fallbacks`, and `None` sends the same packets by the other paths,
/// never lost; any other error drops the run (counted).
fn settle(
    stats: &TunStats,
    r: io::Result<()>,
    n: usize,
    supers: &AtomicU64,
    on: &AtomicBool,
    fallbacks: &AtomicU64,
) -> Option<(usize, usize)> {
    match r {
        Ok(()) => {
            supers.fetch_add(1, Relaxed);
            Some((n, n))
        }
        Err(e) if is_refusal(&e) => {
            on.store(false, Relaxed);
            fallbacks.fetch_add(1, Relaxed);
            None
        }
        Err(_) => {
            stats.tx_errors.fetch_add(n as u64, Relaxed);
            Some((n, 0))
        }
    }
}

/// Whether the kernel's answer to a super-packet write refuses that kind
/// of super-packet (not this one packet): coalescing of that kind is then
/// turned off and the packets go out by the other paths.
pub fn is_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::EOPNOTSUPP)
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn os(errno: i32) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn a_written_super_packet_is_counted_and_coalescing_stays_on() {
        let s = TunStats::default();
        s.tnl_coalesce_on.store(true, Relaxed);
        let r = settle(
            &s,
            Ok(()),
            7,
            &s.tx_tnl_super_packets,
            &s.tnl_coalesce_on,
            &s.tx_tnl_fallbacks,
        );
        assert_eq!(r, Some((7, 7)));
        assert_eq!(s.tx_tnl_super_packets.load(Relaxed), 1);
        assert!(s.tnl_coalescing());
        assert_eq!(s.tx_tnl_fallbacks.load(Relaxed), 0);
    }

    /// The kernel refusing the kind (the errnos `tests/tun_tnl.rs` sees a
    /// real TUN answer with) turns that kind off once, counts it, and
    /// hands the same packets back (`None`) to be written by the other
    /// paths: nothing is dropped or counted as an error.
    #[test]
    fn a_refused_super_packet_turns_its_kind_off_and_loses_nothing() {
        for errno in [libc::EINVAL, libc::EIO, libc::EOPNOTSUPP] {
            let s = TunStats::default();
            s.tnl_coalesce_on.store(true, Relaxed);
            s.coalesce_on.store(true, Relaxed);
            let r = settle(
                &s,
                os(errno),
                5,
                &s.tx_tnl_super_packets,
                &s.tnl_coalesce_on,
                &s.tx_tnl_fallbacks,
            );
            assert_eq!(r, None, "errno {errno}: the packets go out another way");
            assert!(!s.tnl_coalescing(), "errno {errno}: tunnel coalescing off");
            assert!(s.coalesce_on.load(Relaxed), "USO coalescing untouched");
            assert_eq!(s.tx_tnl_fallbacks.load(Relaxed), 1);
            assert_eq!(s.tx_tnl_super_packets.load(Relaxed), 0);
            assert_eq!(s.tx_errors.load(Relaxed), 0, "nothing counted lost");
        }
    }

    #[test]
    fn any_other_error_drops_the_run_counted_and_keeps_coalescing() {
        let s = TunStats::default();
        s.coalesce_on.store(true, Relaxed);
        let r = settle(
            &s,
            os(libc::ENOBUFS),
            4,
            &s.tx_super_packets,
            &s.coalesce_on,
            &s.tx_coalesce_fallbacks,
        );
        assert_eq!(r, Some((4, 0)), "consumed, none written");
        assert_eq!(s.tx_errors.load(Relaxed), 4);
        assert!(s.coalesce_on.load(Relaxed));
        assert_eq!(s.tx_coalesce_fallbacks.load(Relaxed), 0);
        assert!(!is_refusal(&io::Error::from(io::ErrorKind::WouldBlock)));
    }
}
