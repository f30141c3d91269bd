//! The arithmetic of UDP GRO splitting, as pure functions: what a received
//! message is (empty, too large, or datagrams of one segment size), where
//! each datagram of a super-datagram lies, and, for a message scattered
//! straight into arena slots, which datagrams are already whole in their
//! slots and from which offset the rest must be copied.
//!
//! [`super::BatchUdp`]'s receive path (`recv.rs`) does the system calls and
//! the copies by these plans; this module does no I/O, touches no buffer
//! and cannot panic (every sum is checked). The `udp_gro_split` fuzz
//! target holds the plans to their invariants: every received byte lands
//! in exactly one datagram, taken from where the kernel put it, no
//! datagram overflows its slot, and empty datagrams are counted.

use core::ops::Range;

/// What one received message holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Zero bytes: dropped and counted (`rx_empty`); nothing above could
    /// parse it, and splitting would lose it uncounted.
    Empty,
    /// The kernel truncated it, or its segments are larger than a slot:
    /// dropped and counted (`rx_oversize`) as this many datagrams.
    Oversize {
        /// Datagrams lost (at least one).
        datagrams: usize,
    },
    /// Datagrams of `seg` bytes each (the last may be shorter); one
    /// datagram when `seg >= len`.
    Datagrams {
        /// Segment size, at least 1.
        seg: usize,
    },
}

/// Classifies a received message of `len` bytes: `gro_seg` is the
/// `UDP_GRO` control message's segment size (if any), `truncated` the
/// kernel's `MSG_TRUNC`, `room` the bytes a slot holds from the message
/// offset on.
pub fn classify(len: usize, gro_seg: Option<usize>, truncated: bool, room: usize) -> Received {
    if len == 0 {
        return Received::Empty;
    }
    let seg = gro_seg.filter(|&s| s > 0).unwrap_or(len).max(1);
    if seg > room || truncated {
        return Received::Oversize {
            datagrams: len.div_ceil(seg),
        };
    }
    Received::Datagrams { seg }
}

/// The datagram of a message of `len` bytes in segments of `seg` that
/// starts at `off`: its byte range, or `None` past the end (or for a zero
/// segment size).
pub fn datagram_at(len: usize, seg: usize, off: usize) -> Option<Range<usize>> {
    if seg == 0 || off >= len {
        return None;
    }
    Some(off..off + seg.min(len - off))
}

/// How a scattered receive was laid out: bytes `[0, in_slots)` of the
/// message went to `slots` consecutive slots, `seg` bytes each (slot `k`
/// holds `[k * seg, (k + 1) * seg)`); bytes from `in_slots` on went to the
/// GRO buffer at the same offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScatterLayout {
    seg: usize,
    slots: usize,
    in_slots: usize,
}

impl ScatterLayout {
    /// Bytes per slot (the learnt segment size), at least 1.
    pub fn seg(&self) -> usize {
        self.seg
    }

    /// Slots offered, at least 1.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Message bytes that go to slots: at most `seg * slots`.
    pub fn in_slots(&self) -> usize {
        self.in_slots
    }

    /// The layout for segment size `seg` over `slots` slots and a GRO
    /// buffer of `buf_len` bytes; `None` for a zero segment size or slot
    /// count, or when the sizes overflow.
    pub fn new(seg: usize, slots: usize, buf_len: usize) -> Option<ScatterLayout> {
        if seg == 0 || slots == 0 {
            return None;
        }
        let in_slots = seg.checked_mul(slots)?.min(buf_len);
        Some(ScatterLayout {
            seg,
            slots,
            in_slots,
        })
    }
}

/// What to do with a message that arrived scattered into slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScatterPlan {
    /// The first `datagrams` datagrams lie whole in their slots (slot `k`
    /// holds datagram `k`); the rest, from byte `resume` on, lies in the
    /// GRO buffer and is split by copying.
    InSlots {
        /// Datagrams already in slots.
        datagrams: usize,
        /// First byte still to split (`len` when nothing is left).
        resume: usize,
    },
    /// The datagrams do not line up with the slots (another segment size,
    /// or one datagram longer than a slot's share): copy bytes
    /// `[0, in_slots)` from the slots back into the GRO buffer (slot `k`
    /// holds `[k * seg, ..)`), then split the whole message by copying.
    Regather {
        /// Bytes to copy back (`min(layout.in_slots, len)`).
        in_slots: usize,
    },
}

/// The plan for a message of `len` bytes in segments of `seg` (from
/// [`classify`]) that arrived scattered as `layout` says.
pub fn plan_scattered(layout: ScatterLayout, len: usize, seg: usize) -> ScatterPlan {
    let g = layout.seg;
    if seg >= len && len <= g {
        // A single datagram, whole in the first slot.
        return ScatterPlan::InSlots {
            datagrams: 1,
            resume: len,
        };
    }
    if seg == g {
        // One datagram per slot, as laid out, while it lies wholly in the
        // bytes that went to slots.
        let mut datagrams = 0;
        while datagrams < layout.slots {
            let Some(d) = datagram_at(len, seg, datagrams.saturating_mul(seg)) else {
                break;
            };
            if d.end > layout.in_slots {
                break;
            }
            datagrams += 1;
        }
        return ScatterPlan::InSlots {
            datagrams,
            resume: datagrams.saturating_mul(seg).min(len),
        };
    }
    ScatterPlan::Regather {
        in_slots: layout.in_slots.min(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: usize = 2048 - 48;

    #[test]
    fn classify_counts_empty_and_oversize() {
        assert_eq!(classify(0, Some(1400), false, ROOM), Received::Empty);
        assert_eq!(classify(0, None, true, ROOM), Received::Empty);
        assert_eq!(
            classify(3000, Some(1500), true, ROOM),
            Received::Oversize { datagrams: 2 }
        );
        assert_eq!(
            classify(6000, Some(ROOM + 1), false, ROOM),
            Received::Oversize { datagrams: 3 }
        );
        assert_eq!(
            classify(5000, None, false, ROOM),
            Received::Oversize { datagrams: 1 },
            "a single datagram larger than a slot"
        );
        assert_eq!(
            classify(100, Some(0), false, ROOM),
            Received::Datagrams { seg: 100 },
            "a zero segment size means one datagram"
        );
        assert_eq!(
            classify(4200, Some(1400), false, ROOM),
            Received::Datagrams { seg: 1400 }
        );
    }

    #[test]
    fn datagrams_tile_the_message() {
        let mut off = 0;
        let mut lens = Vec::new();
        while let Some(d) = datagram_at(3500, 1400, off) {
            assert_eq!(d.start, off);
            lens.push(d.len());
            off = d.end;
        }
        assert_eq!(lens, [1400, 1400, 700]);
        assert_eq!(datagram_at(10, 0, 0), None);
        assert_eq!(datagram_at(0, 5, 0), None);
    }

    #[test]
    fn scattered_plans() {
        let Some(l) = ScatterLayout::new(1400, 4, 65_536) else {
            panic!("valid layout")
        };
        assert_eq!(l.in_slots(), 5600);
        // Same segment size, fewer datagrams than slots: all in place.
        assert_eq!(
            plan_scattered(l, 3500, 1400),
            ScatterPlan::InSlots {
                datagrams: 3,
                resume: 3500
            }
        );
        // More datagrams than slots: the rest is copied from 5600 on.
        assert_eq!(
            plan_scattered(l, 9000, 1400),
            ScatterPlan::InSlots {
                datagrams: 4,
                resume: 5600
            }
        );
        // A single short datagram.
        assert_eq!(
            plan_scattered(l, 900, 900),
            ScatterPlan::InSlots {
                datagrams: 1,
                resume: 900
            }
        );
        // Another segment size, or one datagram longer than a slot.
        assert_eq!(
            plan_scattered(l, 3000, 1000),
            ScatterPlan::Regather { in_slots: 3000 }
        );
        assert_eq!(
            plan_scattered(l, 1401, 1401),
            ScatterPlan::Regather { in_slots: 1401 }
        );
        assert_eq!(ScatterLayout::new(0, 4, 10), None);
        assert_eq!(ScatterLayout::new(4, 0, 10), None);
        assert_eq!(ScatterLayout::new(usize::MAX, 2, 10), None);
    }
}
