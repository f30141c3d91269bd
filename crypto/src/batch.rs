//! Batch seal/open over an [`Arena`]: one allocation per batch of
//! fixed-stride, 64-byte-aligned slots with headroom, so headers are written
//! and payloads sealed or opened in place.
//!
//! This module does no I/O: the I/O layer fills and drains the slots (e.g.
//! with `recvmmsg`/`sendmmsg`). Nothing here allocates or copies per packet.

use core::ops::Range;

use crate::sa::{LimitStatus, OpeningKey, SealError, SealingKey, DATA_HEADER_LEN, TAG_LEN};

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
    /// Offset of a sealed or received data message within its slot.
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
    /// payload length before `seal_slots`, message length after).
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

impl SealingKey {
    /// Seals every listed slot in place. Slot `i` holds a payload of
    /// `arena.len(i)` bytes at `HEADROOM`; afterwards its message is
    /// `slot[HEADROOM - 16 .. HEADROOM + len + 16]` and `arena.len(i)` is the
    /// message length. Returns the SA's status after the batch.
    ///
    /// All or nothing: every index and length, and the SA's reject limits
    /// for the whole batch, are checked before anything is sealed, so on
    /// error no slot changed and no counter was used. `slots` must not repeat
    /// an index (a repeated slot would be sealed twice and be garbage).
    pub fn seal_slots(
        &mut self,
        arena: &mut Arena,
        slots: &[usize],
    ) -> Result<LimitStatus, SealError> {
        let max_payload = arena.max_payload();
        let mut total: u64 = 0;
        for &i in slots {
            match arena.lens.get(i) {
                Some(&len) if len <= max_payload => total = total.saturating_add(len as u64),
                _ => return Err(SealError::BufferTooSmall),
            }
        }
        if !self.admits(slots.len() as u64, total) {
            return Err(SealError::Exhausted);
        }
        for &i in slots {
            let (Some(r), Some(&len)) = (arena.range(i), arena.lens.get(i)) else {
                return Err(SealError::BufferTooSmall);
            };
            let msg = arena
                .buf
                .get_mut(r.start + Arena::MESSAGE_OFFSET..r.end)
                .ok_or(SealError::BufferTooSmall)?;
            let sealed = self.seal(msg, len)?;
            if let Some(l) = arena.lens.get_mut(i) {
                *l = sealed.len;
            }
        }
        Ok(self.status())
    }
}

impl OpeningKey {
    /// Opens slot `i` in place. The slot holds a received message at
    /// `[HEADROOM - 16, HEADROOM - 16 + arena.len(i))`. On success the
    /// plaintext is at `[HEADROOM, HEADROOM + n)`, that slot range is
    /// returned and `arena.len(i)` becomes `n`. On error `arena.len(i)` is
    /// unchanged. A length that does not fit the slot (or a bad index) is
    /// [`crate::sa::OpenError::Truncated`].
    pub fn open_slot(
        &mut self,
        arena: &mut Arena,
        i: usize,
    ) -> Result<Range<usize>, crate::sa::OpenError> {
        use crate::sa::OpenError;
        let (Some(r), Some(&len)) = (arena.range(i), arena.lens.get(i)) else {
            return Err(OpenError::Truncated);
        };
        let start = r.start + Arena::MESSAGE_OFFSET;
        let end = start.checked_add(len).ok_or(OpenError::Truncated)?;
        if end > r.end {
            return Err(OpenError::Truncated);
        }
        let msg = arena.buf.get_mut(start..end).ok_or(OpenError::Truncated)?;
        let plain = self.open(msg)?;
        if let Some(l) = arena.lens.get_mut(i) {
            *l = plain.len();
        }
        Ok(Arena::MESSAGE_OFFSET + plain.start..Arena::MESSAGE_OFFSET + plain.end)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::kdf::{derive_data_keys, Direction};
    use crate::key::SymmetricKey;
    use crate::sa::{OpenError, DATA_OVERHEAD};
    use crate::suite::{SaLimits, Suite};

    fn keys(suite: Suite, limits: SaLimits) -> (SealingKey, SealingKey, OpeningKey) {
        let secret = SymmetricKey::from_bytes([0x24; 32]);
        let d = Direction::ResponderToInitiator;
        let k = || derive_data_keys(&secret, suite, d);
        (
            SealingKey::new(k(), suite, 77, limits),
            SealingKey::new(k(), suite, 77, limits),
            OpeningKey::new(k(), suite, limits),
        )
    }

    fn fill(arena: &mut Arena, i: usize, len: usize) -> Vec<u8> {
        let p: Vec<u8> = (0..len)
            .map(|b| (b as u8) ^ (i as u8).wrapping_mul(13))
            .collect();
        arena.slot_mut(i)[Arena::HEADROOM..Arena::HEADROOM + len].copy_from_slice(&p);
        arena.set_len(i, len);
        p
    }

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
    fn batch_seal_matches_single_seal_and_opens() {
        for suite in Suite::ALL {
            let (mut batch_tx, mut single_tx, mut rx) = keys(suite, suite.default_limits());
            let mut a = Arena::new(8, 2048);
            let sizes = [0usize, 1, 64, 512, 1450, 1968, 17, 100];
            let plains: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| fill(&mut a, i, n))
                .collect();
            // Seal a subset, out of slot order.
            let order = [3usize, 0, 7, 5, 1];
            assert_eq!(batch_tx.seal_slots(&mut a, &order), Ok(LimitStatus::Ok));
            assert_eq!(batch_tx.packets(), 5);
            for (counter, &i) in order.iter().enumerate() {
                assert_eq!(a.len(i), sizes[i] + DATA_OVERHEAD);
                // Same key, same counter: byte-identical to the single-packet API.
                let mut buf = vec![0u8; sizes[i] + DATA_OVERHEAD];
                buf[16..16 + sizes[i]].copy_from_slice(&plains[i]);
                let s = single_tx.seal(&mut buf, sizes[i]).unwrap();
                assert_eq!(s.counter, counter as u64);
                assert_eq!(a.message(i).unwrap(), &buf[..]);
            }
            // Unlisted slots are untouched.
            assert_eq!(a.len(2), sizes[2]);
            assert_eq!(&a.slot(2)[64..64 + sizes[2]], &plains[2][..]);
            for &i in &order {
                let r = rx.open_slot(&mut a, i).unwrap();
                assert_eq!(r, Arena::HEADROOM..Arena::HEADROOM + sizes[i]);
                assert_eq!(&a.slot(i)[r], &plains[i][..]);
                assert_eq!(a.len(i), sizes[i]);
            }
        }
    }

    #[test]
    fn open_slot_refuses_replay_tamper_and_bad_lengths() {
        let suite = Suite::Aes256Gcm;
        let (mut tx, _, mut rx) = keys(suite, suite.default_limits());
        let mut a = Arena::new(4, 256);
        for i in 0..4 {
            fill(&mut a, i, 100);
        }
        tx.seal_slots(&mut a, &[0, 1, 2, 3]).unwrap();
        let sealed_len = a.len(0);
        // Tamper slot 1.
        a.slot_mut(1)[Arena::HEADROOM + 5] ^= 1;
        assert_eq!(rx.open_slot(&mut a, 1), Err(OpenError::AuthFailed));
        assert_eq!(a.len(1), sealed_len);
        // Replay of slot 0's message through slot 2's place.
        let msg0 = a.message(0).unwrap().to_vec();
        assert!(rx.open_slot(&mut a, 0).is_ok());
        a.slot_mut(2)[48..48 + msg0.len()].copy_from_slice(&msg0);
        assert_eq!(rx.open_slot(&mut a, 2), Err(OpenError::Replay));
        // Lengths that do not fit the slot, and bad indices.
        a.set_len(3, 256 - 48 + 1);
        assert_eq!(rx.open_slot(&mut a, 3), Err(OpenError::Truncated));
        a.set_len(3, usize::MAX);
        assert_eq!(rx.open_slot(&mut a, 3), Err(OpenError::Truncated));
        assert_eq!(a.message(3), None);
        a.set_len(3, 10);
        assert_eq!(rx.open_slot(&mut a, 3), Err(OpenError::Truncated));
        assert_eq!(rx.open_slot(&mut a, 4), Err(OpenError::Truncated));
        a.set_len(3, sealed_len);
        assert!(rx.open_slot(&mut a, 3).is_ok());
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

    #[test]
    fn seal_slots_is_all_or_nothing() {
        let limits = SaLimits {
            rekey_after_packets: 2,
            reject_after_packets: 4,
            rekey_after_bytes: u64::MAX - 1,
            reject_after_bytes: u64::MAX,
        };
        let (mut tx, _, _) = keys(Suite::ChaCha20Poly1305, limits);
        let mut a = Arena::new(6, 128);
        for i in 0..6 {
            fill(&mut a, i, 10);
        }
        let before = a.slot(0).to_vec();
        // Bad index or oversize payload: nothing sealed.
        assert_eq!(
            tx.seal_slots(&mut a, &[0, 6]),
            Err(SealError::BufferTooSmall)
        );
        a.set_len(1, a.max_payload() + 1);
        assert_eq!(
            tx.seal_slots(&mut a, &[0, 1]),
            Err(SealError::BufferTooSmall)
        );
        a.set_len(1, a.max_payload());
        assert_eq!(tx.packets(), 0);
        assert_eq!(a.slot(0), &before[..]);
        // Five packets would pass the reject limit of four: nothing sealed.
        assert_eq!(
            tx.seal_slots(&mut a, &[0, 1, 2, 3, 4]),
            Err(SealError::Exhausted)
        );
        assert_eq!((tx.packets(), a.len(0)), (0, 10));
        assert_eq!(tx.seal_slots(&mut a, &[0, 1]), Ok(LimitStatus::RekeySoon));
        assert_eq!(tx.seal_slots(&mut a, &[]), Ok(LimitStatus::RekeySoon));
        assert_eq!(tx.seal_slots(&mut a, &[2, 3]), Ok(LimitStatus::Exhausted));
        assert_eq!(tx.seal_slots(&mut a, &[]), Err(SealError::Exhausted));
        assert_eq!(tx.seal_slots(&mut a, &[4]), Err(SealError::Exhausted));
        assert_eq!(a.len(4), 10);
    }

    #[test]
    fn max_payload_fills_slot_exactly() {
        let (mut tx, _, mut rx) = keys(Suite::Aes256Gcm, Suite::Aes256Gcm.default_limits());
        let mut a = Arena::new(1, 1536);
        let n = a.max_payload();
        let p = fill(&mut a, 0, n);
        tx.seal_slots(&mut a, &[0]).unwrap();
        assert_eq!(Arena::MESSAGE_OFFSET + a.len(0), a.stride());
        let r = rx.open_slot(&mut a, 0).unwrap();
        assert_eq!(&a.slot(0)[r], &p[..]);
    }
}
