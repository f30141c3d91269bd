//! The batch buffer every layer shares: one allocation per batch of
//! fixed-stride, 64-byte-aligned slots with headroom, so the TUN and UDP
//! readers fill slots in place, headers are written into the headroom and
//! payloads are sealed or opened where they lie.
//!
//! The slot layout is the data message's: the message starts at
//! [`Arena::MESSAGE_OFFSET`] (the one definition of that offset), its
//! payload at [`Arena::HEADROOM`]. This module does no I/O and no
//! cryptography; it allocates once, at construction, never per packet.

use core::ops::Range;

use crate::wire::outer::{DATA_HEADER_LEN, DATA_TAG_LEN as TAG_LEN};

/// Slot and base alignment, in bytes (a cache line).
pub const ALIGN: usize = 64;

/// A batch buffer: `slot_count` slots of `stride` bytes each, in one
/// allocation whose first slot starts on a 64-byte boundary (so every slot
/// does), plus a per-slot length.
///
/// Layout of a slot: `[0, HEADROOM)` headroom, the data header of a sealed
/// message sits in `[HEADROOM - 16, HEADROOM)`, the payload starts at
/// `HEADROOM`, and at least `TAG_LEN` bytes stay free after the largest
/// payload.
pub struct Arena {
    /// `slot_count * stride + ALIGN - 1` bytes; slots start at `base`.
    buf: Vec<u8>,
    base: usize,
    slot_count: usize,
    stride: usize,
    lens: Vec<usize>,
}

impl core::fmt::Debug for Arena {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Arena")
            .field("slot_count", &self.slot_count)
            .field("stride", &self.stride)
            .finish_non_exhaustive()
    }
}

impl Arena {
    /// Where the payload starts in each slot; the data header goes in `[48, 64)`.
    pub const HEADROOM: usize = 64;
    /// Offset of a sealed or received data message within its slot: the
    /// data header sits just before the payload.
    pub const MESSAGE_OFFSET: usize = Self::HEADROOM - DATA_HEADER_LEN;

    /// An arena of `slot_count` zeroed slots of `stride` bytes.
    ///
    /// # Panics
    /// If `stride` is not a multiple of 64 or leaves no room for a payload
    /// (`stride <= HEADROOM + TAG_LEN`), or if the size overflows. These are
    /// configuration errors, never reachable from the network.
    pub fn new(slot_count: usize, stride: usize) -> Arena {
        assert!(
            stride % ALIGN == 0 && stride > Self::HEADROOM + TAG_LEN,
            "arena stride must be a multiple of 64 above HEADROOM + TAG_LEN, got {stride}"
        );
        let size = slot_count
            .checked_mul(stride)
            .and_then(|n| n.checked_add(ALIGN - 1));
        let Some(size) = size else {
            panic!("arena of {slot_count} x {stride} bytes overflows usize");
        };
        let buf = vec![0u8; size];
        // A `u8` pointer can always be aligned; the fallback only guards the
        // documented "may not be possible" case and keeps the arena usable.
        let base = match buf.as_ptr().align_offset(ALIGN) {
            off if off < ALIGN => off,
            _ => 0,
        };
        Arena {
            buf,
            base,
            slot_count,
            stride,
            lens: vec![0; slot_count],
        }
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Bytes per slot.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Largest payload a slot can seal: `stride - HEADROOM - TAG_LEN`.
    pub fn max_payload(&self) -> usize {
        self.stride - Self::HEADROOM - TAG_LEN
    }

    fn range(&self, i: usize) -> Option<Range<usize>> {
        if i >= self.slot_count {
            return None;
        }
        let start = self.base + i * self.stride;
        Some(start..start + self.stride)
    }

    /// Slot `i`, all `stride` bytes.
    ///
    /// # Panics
    /// If `i >= slot_count()`.
    pub fn slot(&self, i: usize) -> &[u8] {
        let r = self.range(i);
        match r.and_then(|r| self.buf.get(r)) {
            Some(s) => s,
            None => panic!("slot {i} out of range ({} slots)", self.slot_count),
        }
    }

    /// Slot `i`, all `stride` bytes, mutably.
    ///
    /// # Panics
    /// If `i >= slot_count()`.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let n = self.slot_count;
        let r = self.range(i);
        match r.and_then(|r| self.buf.get_mut(r)) {
            Some(s) => s,
            None => panic!("slot {i} out of range ({n} slots)"),
        }
    }

    /// Copies `len` bytes of slot `src` starting at `from` into slot `dst`
    /// at `to` (the ranges may be in the same slot and may overlap).
    ///
    /// # Panics
    /// If a slot index is out of range or a range leaves its slot.
    pub fn copy_between_slots(
        &mut self,
        src: usize,
        from: usize,
        dst: usize,
        to: usize,
        len: usize,
    ) {
        let (Some(s), Some(d)) = (self.range(src), self.range(dst)) else {
            panic!(
                "slot {src} or {dst} out of range ({} slots)",
                self.slot_count
            );
        };
        assert!(
            from + len <= self.stride && to + len <= self.stride,
            "copy of {len} bytes from {from} to {to} leaves a {}-byte slot",
            self.stride
        );
        self.buf
            .copy_within(s.start + from..s.start + from + len, d.start + to);
    }

    /// All slots at once, mutably and in order (e.g. to build `recvmmsg`
    /// iovecs), each `stride` bytes.
    pub fn slots_mut(&mut self) -> core::slice::ChunksExactMut<'_, u8> {
        let end = self.base + self.slot_count * self.stride;
        let region = self.buf.get_mut(self.base..end).unwrap_or_default();
        region.chunks_exact_mut(self.stride)
    }

    /// All slots at once, in order, each `stride` bytes.
    pub fn slots(&self) -> core::slice::ChunksExact<'_, u8> {
        let end = self.base + self.slot_count * self.stride;
        let region = self.buf.get(self.base..end).unwrap_or_default();
        region.chunks_exact(self.stride)
    }

    /// The length recorded for slot `i` (its meaning is set by the caller:
    /// payload length before sealing, message length after).
    ///
    /// # Panics
    /// If `i >= slot_count()`.
    pub fn len(&self, i: usize) -> usize {
        self.lens[i]
    }

    /// Records a length for slot `i`.
    ///
    /// # Panics
    /// If `i >= slot_count()`.
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.lens[i] = len;
    }

    /// Whether the arena has no slots.
    pub fn is_empty(&self) -> bool {
        self.slot_count == 0
    }

    /// The sealed or received message of slot `i`:
    /// `[MESSAGE_OFFSET, MESSAGE_OFFSET + len(i))`, if it fits the slot.
    pub fn message(&self, i: usize) -> Option<&[u8]> {
        let r = self.range(i)?;
        let len = *self.lens.get(i)?;
        let start = r.start + Self::MESSAGE_OFFSET;
        let msg = start..start.checked_add(len)?;
        if msg.end > r.end {
            return None;
        }
        self.buf.get(msg)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_and_sized() {
        for stride in [128, 2048, 9216] {
            let mut a = Arena::new(7, stride);
            assert_eq!(a.slot_count(), 7);
            assert_eq!(a.stride(), stride);
            assert_eq!(a.max_payload(), stride - 80);
            for i in 0..7 {
                assert_eq!(a.slot(i).as_ptr() as usize % 64, 0);
                assert_eq!(a.slot(i).len(), stride);
                assert_eq!(a.slot_mut(i).len(), stride);
            }
            assert_eq!(a.slots().count(), 7);
            assert!(a
                .slots_mut()
                .all(|s| s.as_ptr() as usize % 64 == 0 && s.len() == stride));
            assert!(!a.is_empty());
        }
        assert!(Arena::new(0, 128).is_empty());
        assert_eq!(Arena::new(0, 128).slots().count(), 0);
    }

    #[test]
    #[should_panic(expected = "multiple of 64")]
    fn stride_must_be_multiple_of_64() {
        let _ = Arena::new(1, 100);
    }

    #[test]
    #[should_panic(expected = "multiple of 64")]
    fn stride_must_leave_room() {
        let _ = Arena::new(1, 64);
    }

    #[test]
    fn message_is_the_recorded_length_at_the_offset_or_none() {
        let mut a = Arena::new(2, 256);
        assert_eq!(Arena::MESSAGE_OFFSET, 48, "the data header fills [48, 64)");
        a.slot_mut(1)[Arena::MESSAGE_OFFSET..Arena::MESSAGE_OFFSET + 4].copy_from_slice(b"vxsc");
        a.set_len(1, 4);
        assert_eq!(a.message(1), Some(&b"vxsc"[..]));
        a.set_len(1, 256 - Arena::MESSAGE_OFFSET);
        assert_eq!(
            a.message(1).map(<[u8]>::len),
            Some(208),
            "up to the slot's end"
        );
        a.set_len(1, 256 - Arena::MESSAGE_OFFSET + 1);
        assert_eq!(a.message(1), None, "one byte past the slot");
        a.set_len(1, usize::MAX);
        assert_eq!(a.message(1), None, "no overflow");
        assert_eq!(a.message(2), None, "no such slot");
    }

    #[test]
    fn max_payload_fills_slot_exactly() {
        for stride in [128, 1536, 9216] {
            let a = Arena::new(1, stride);
            let sealed = DATA_HEADER_LEN + a.max_payload() + TAG_LEN;
            assert_eq!(Arena::MESSAGE_OFFSET + sealed, a.stride());
        }
    }

    #[test]
    fn copy_between_slots_moves_exactly_the_range() {
        let mut a = Arena::new(3, 128);
        a.slot_mut(0)[10..20].copy_from_slice(&[7; 10]);
        a.copy_between_slots(0, 10, 2, 100, 10);
        assert_eq!(&a.slot(2)[100..110], &[7; 10]);
        assert_eq!(a.slot(2)[99], 0);
        assert_eq!(a.slot(2)[110], 0);
        assert!(a.slot(1).iter().all(|&b| b == 0), "other slots untouched");
        // Within one slot, overlapping.
        a.copy_between_slots(2, 100, 2, 105, 10);
        assert_eq!(&a.slot(2)[100..115], &[7; 15]);
        let r = std::panic::catch_unwind(move || a.copy_between_slots(0, 120, 1, 0, 10));
        assert!(r.is_err(), "a range past the slot's end is refused");
    }
}
