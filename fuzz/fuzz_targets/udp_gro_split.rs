//! Fuzzes the UDP GRO splitting arithmetic (`vxsec::io::udp::gro_split`)
//! over sizes a remote sender chooses: a batch of up to 8 received
//! messages (length, the kernel's GRO segment size, MSG_TRUNC), a slot
//! size, and for the first message a scattered receive (learnt segment
//! size, free slots). Asserts, as `recv.rs` uses the plans:
//! * every received byte of an accepted message lands in exactly one
//!   datagram (the datagrams tile `[0, len)`), bytes left in slots are
//!   taken from slots and the rest from the GRO buffer, where the kernel
//!   put them;
//! * no datagram is longer than a slot holds, none is empty, and a
//!   datagram left in slot `k` lies within that slot's bytes;
//! * empty messages are counted as empty, refused ones as at least one
//!   oversize datagram, and nothing panics.
//!
//! Input: a byte string read as little-endian fields (missing bytes are 0).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxsec::io::udp::gro_split::{
    classify, datagram_at, plan_scattered, Received, ScatterLayout, ScatterPlan,
};

/// The largest super-datagram the receive path accepts (GRO_BUF).
const GRO_BUF: usize = 65_536;
/// Where a message starts in its slot (`Arena::MESSAGE_OFFSET`).
const MESSAGE_OFFSET: usize = vxsec::io::Arena::MESSAGE_OFFSET;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> usize {
        usize::from(u16::from_le_bytes([self.byte(), self.byte()]))
    }

    fn u32(&mut self) -> usize {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()]) as usize
    }
}

/// The datagrams of an accepted message from byte `from` on, checked
/// against the slot room; returns their ranges.
fn split_from(len: usize, seg: usize, from: usize, room: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut off = from;
    while let Some(d) = datagram_at(len, seg, off) {
        assert_eq!(d.start, off, "datagrams are contiguous");
        assert!(!d.is_empty(), "no empty datagram");
        assert!(d.len() <= seg && d.len() <= room, "datagram fits a slot");
        off = d.end;
        out.push(d);
    }
    assert!(off == len || from > len, "split reaches the end");
    out
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    // A slot stride as the agent sizes it: a multiple of 64, 128..=16384.
    let stride = (usize::from(inp.byte()) % 255 + 2) * 64;
    let room = stride - MESSAGE_OFFSET;
    let count = usize::from(inp.byte()) % 8 + 1;
    for m in 0..count {
        let flags = inp.byte();
        // Lengths the kernel can report: up to the receive buffer.
        let len = inp.u32() % (GRO_BUF + 1);
        let gro_seg = (flags & 1 != 0).then(|| inp.u32());
        let truncated = flags & 2 != 0;
        let received = classify(len, gro_seg, truncated, room);
        let seg = match received {
            Received::Empty => {
                assert_eq!(len, 0, "only an empty message is empty");
                continue;
            }
            Received::Oversize { datagrams } => {
                assert!(len > 0 && datagrams >= 1, "a refused message counts");
                let seg = gro_seg.filter(|&s| s > 0).unwrap_or(len);
                assert!(
                    truncated || seg > room,
                    "refused only when truncated or too large"
                );
                assert_eq!(datagrams, len.div_ceil(seg));
                continue;
            }
            Received::Datagrams { seg } => seg,
        };
        assert!(len > 0 && !truncated && (1..=room).contains(&seg));
        let scattered = m == 0 && flags & 4 != 0;
        let ranges = if scattered {
            // The learnt segment size (one that fits a slot) and free slots.
            let g = inp.u16() % room + 1;
            let slots = usize::from(inp.byte()) % 64 + 1;
            let Some(layout) = ScatterLayout::new(g, slots, GRO_BUF) else {
                panic!("a layout within a slot and 64 slots is valid");
            };
            assert!(layout.in_slots() <= g * slots && layout.in_slots() <= GRO_BUF);
            match plan_scattered(layout, len, seg) {
                ScatterPlan::InSlots { datagrams, resume } => {
                    assert!(datagrams <= slots, "at most one datagram per slot");
                    let mut ranges = Vec::new();
                    for k in 0..datagrams {
                        let Some(d) = datagram_at(len, seg, k * seg) else {
                            panic!("datagram {k} of {datagrams} in slots exists");
                        };
                        // Slot k holds message bytes [k * g, (k + 1) * g).
                        assert!(d.start == k * g && d.end <= (k + 1) * g, "in its slot");
                        assert!(d.end <= layout.in_slots(), "taken from a slot");
                        assert!(!d.is_empty() && d.len() <= room);
                        ranges.push(d);
                    }
                    assert_eq!(resume, ranges.last().map_or(0, |d| d.end));
                    assert!(
                        resume >= layout.in_slots().min(len),
                        "the rest lies in the GRO buffer, where the kernel put it"
                    );
                    ranges.extend(split_from(len, seg, resume, room));
                    ranges
                }
                ScatterPlan::Regather { in_slots } => {
                    assert_eq!(in_slots, layout.in_slots().min(len));
                    // The copy back reads slot x / g for x < in_slots.
                    assert!(
                        in_slots == 0 || (in_slots - 1) / g < slots,
                        "copy within slots"
                    );
                    split_from(len, seg, 0, room)
                }
            }
        } else {
            split_from(len, seg, 0, room)
        };
        // Every byte exactly once: the ranges tile [0, len).
        let mut at = 0;
        for r in &ranges {
            assert_eq!(r.start, at, "no gap, no overlap");
            at = r.end;
        }
        assert_eq!(at, len, "every byte accounted for");
        assert_eq!(ranges.len(), len.div_ceil(seg));
    }
});
