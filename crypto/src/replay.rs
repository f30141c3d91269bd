//! Anti-replay window for data-message counters: an RFC 6479 bitmap of
//! 256 × 64-bit blocks (effective window 16 320 counters), with a
//! check-before-decrypt / commit-after-authentication API.
//!
//! This module does not decrypt or authenticate anything; callers must only
//! `commit` counters of messages that authenticated.

const BLOCK_BITS: u64 = 64;
const BLOCKS: usize = 256;
const BLOCK_INDEX_MASK: u64 = BLOCKS as u64 - 1;

/// A per-SA replay window (RFC 6479).
///
/// A counter is *fresh* iff it was never committed and it is greater than
/// `max_committed - WINDOW` (every counter is fresh before the first commit).
/// The bitmap is a ring of 256 blocks; advancing clears only the blocks that
/// are skipped over, so both `check` and `commit` are O(1) amortised and
/// never allocate.
#[derive(Clone)]
pub struct ReplayWindow {
    bitmap: [u64; BLOCKS],
    /// Highest committed counter, `None` before the first commit.
    max: Option<u64>,
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("max_committed", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// How far below the highest committed counter a counter may be and still
    /// be accepted: `(256 - 1) * 64` (the current block may be partly filled).
    pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

    /// An empty window: every counter is fresh.
    pub const fn new() -> Self {
        ReplayWindow {
            bitmap: [0; BLOCKS],
            max: None,
        }
    }

    /// The highest committed counter, if any.
    pub const fn max_committed(&self) -> Option<u64> {
        self.max
    }

    /// Whether `counter` is fresh (true) or a replay / too old (false).
    /// Call before decrypting; does not change the window.
    pub fn check(&self, counter: u64) -> bool {
        let Some(max) = self.max else {
            return true;
        };
        if counter > max {
            return true;
        }
        if max - counter >= Self::WINDOW {
            return false;
        }
        let (block, bit) = locate(counter);
        self.bitmap[block] & bit == 0
    }

    /// Records `counter` as seen. Call only after the message authenticated.
    /// Committing a counter that is too old is a no-op; committing twice is
    /// harmless.
    pub fn commit(&mut self, counter: u64) {
        match self.max {
            None => {
                self.bitmap = [0; BLOCKS];
                self.max = Some(counter);
            }
            Some(max) if counter > max => {
                let old_block = max / BLOCK_BITS;
                let new_block = counter / BLOCK_BITS;
                let skipped = new_block - old_block;
                if skipped >= BLOCKS as u64 {
                    self.bitmap = [0; BLOCKS];
                } else {
                    for b in old_block + 1..=new_block {
                        self.bitmap[(b & BLOCK_INDEX_MASK) as usize] = 0;
                    }
                }
                self.max = Some(counter);
            }
            Some(max) if max - counter >= Self::WINDOW => return,
            Some(_) => {}
        }
        let (block, bit) = locate(counter);
        self.bitmap[block] |= bit;
    }
}

/// Block index (always < 256) and bit mask of `counter`.
const fn locate(counter: u64) -> (usize, u64) {
    (
        ((counter / BLOCK_BITS) & BLOCK_INDEX_MASK) as usize,
        1 << (counter % BLOCK_BITS),
    )
}

/// The executable specification the window is tested and fuzzed against:
/// every committed counter in a set. Memory grows with use; never for
/// production.
#[cfg(any(test, feature = "model"))]
pub mod model {
    use super::ReplayWindow;
    use std::collections::HashSet;

    /// Fresh iff never committed and > max - WINDOW.
    #[derive(Debug, Default)]
    pub struct Model {
        seen: HashSet<u64>,
        max: Option<u64>,
    }

    impl Model {
        /// Whether `c` would be accepted.
        pub fn check(&self, c: u64) -> bool {
            !self.seen.contains(&c)
                && self
                    .max
                    .is_none_or(|m| c > m || m - c < ReplayWindow::WINDOW)
        }

        /// Records `c` as authenticated and accepted.
        pub fn commit(&mut self, c: u64) {
            self.seen.insert(c);
            self.max = Some(self.max.map_or(c, |m| m.max(c)));
        }

        /// The largest committed counter.
        pub fn max(&self) -> Option<u64> {
            self.max
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::model::Model;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_is_at_least_8192() {
        const { assert!(ReplayWindow::WINDOW >= 8192) };
        assert_eq!(ReplayWindow::WINDOW, 16_320);
    }

    #[test]
    fn in_order_then_replay() {
        let mut w = ReplayWindow::new();
        for c in 0..20_000u64 {
            assert!(w.check(c));
            w.commit(c);
            assert!(!w.check(c));
        }
        assert_eq!(w.max_committed(), Some(19_999));
        assert!(!w.check(19_999 - ReplayWindow::WINDOW));
        assert!(!w.check(19_999 - ReplayWindow::WINDOW + 1)); // committed
    }

    #[test]
    fn check_alone_does_not_commit() {
        let mut w = ReplayWindow::new();
        assert!(w.check(5));
        assert!(w.check(5));
        w.commit(5);
        assert!(!w.check(5));
        assert!(w.check(4));
        assert!(w.check(0));
    }

    #[test]
    fn edge_of_window() {
        let mut w = ReplayWindow::new();
        let top = 100_000u64;
        w.commit(top);
        assert!(w.check(top - ReplayWindow::WINDOW + 1));
        assert!(!w.check(top - ReplayWindow::WINDOW));
        w.commit(top - ReplayWindow::WINDOW + 1);
        assert!(!w.check(top - ReplayWindow::WINDOW + 1));
        // Too old: commit is a no-op and does not disturb a live bit.
        w.commit(top - ReplayWindow::WINDOW);
        assert!(w.check(top - 1));
    }

    #[test]
    fn far_jump_clears_everything_and_bits_do_not_alias() {
        let mut w = ReplayWindow::new();
        for c in 0..64 {
            w.commit(c);
        }
        // Same ring slot as block 0, 256 blocks later.
        let c = 256 * 64 + 3;
        assert!(w.check(c));
        w.commit(c);
        assert!(!w.check(c));
        assert!(w.check(c - 1));
        assert!(w.check(c - 64));
        let far = 1u64 << 40;
        w.commit(far);
        assert!(w.check(far - 1));
        assert!(!w.check(c));
    }

    #[test]
    fn near_u64_max() {
        let mut w = ReplayWindow::new();
        w.commit(u64::MAX - 1);
        assert!(w.check(u64::MAX));
        w.commit(u64::MAX);
        assert!(!w.check(u64::MAX));
        assert!(!w.check(u64::MAX - 1));
        assert!(w.check(u64::MAX - 2));
        assert!(!w.check(0));
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A counter at `max + delta` (delta may be negative).
        Near(i64),
        /// A counter that was offered before (index modulo history length).
        Dup(usize),
        /// A jump far ahead of the current maximum.
        Jump(u64),
        /// A counter close to `u64::MAX`.
        NearMax(u16),
        /// Any counter at all.
        Any(u64),
    }

    fn op() -> impl Strategy<Value = (Op, bool)> {
        let op = prop_oneof![
            6 => (-20_000i64..200).prop_map(Op::Near),
            3 => any::<usize>().prop_map(Op::Dup),
            1 => (1u64 << 13..1u64 << 40).prop_map(Op::Jump),
            1 => any::<u16>().prop_map(Op::NearMax),
            1 => any::<u64>().prop_map(Op::Any),
        ];
        // The bool says whether the message "authenticates" (is committed).
        (op, prop::bool::weighted(0.9))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn agrees_with_hashset_model(start in any::<u64>(), ops in prop::collection::vec(op(), 1..600)) {
            let mut w = ReplayWindow::new();
            let mut model = Model::default();
            let mut history = vec![start];
            for (op, authentic) in ops {
                let base = model.max().unwrap_or(start);
                let c = match op {
                    Op::Near(d) => base.saturating_add_signed(d),
                    Op::Dup(i) => history[i % history.len()],
                    Op::Jump(j) => base.saturating_add(j),
                    Op::NearMax(k) => u64::MAX - u64::from(k),
                    Op::Any(c) => c,
                };
                history.push(c);
                let fresh = model.check(c);
                prop_assert_eq!(w.check(c), fresh, "counter {}", c);
                if fresh && authentic {
                    w.commit(c);
                    model.commit(c);
                    prop_assert!(!w.check(c));
                }
                prop_assert_eq!(w.max_committed(), model.max());
            }
        }
    }
}
