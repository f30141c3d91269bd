#![no_main]
//! Drives `ReplayWindow` and its `HashSet` model (`replay::model`) with arbitrary operations and
//! asserts that they agree on every check. Does not involve any AEAD.
//!
//! Input: 9-byte records `[op, u64 LE]`. `op & 3` picks the counter (absolute,
//! ahead of the maximum, behind it, or near `u64::MAX`); `op & 0x80` skips the
//! commit of a fresh counter (authentication failed); `op & 0x40` commits the
//! counter even if stale (must be harmless).

use libfuzzer_sys::fuzz_target;
use vxsec_crypto::replay::model::Model;
use vxsec_crypto::replay::ReplayWindow;

fuzz_target!(|data: &[u8]| {
    let mut window = ReplayWindow::new();
    let mut model = Model::default();
    for record in data.chunks_exact(9).take(8192) {
        let Some((&op, value)) = record.split_first() else {
            return;
        };
        let mut v = [0u8; 8];
        v.copy_from_slice(value);
        let v = u64::from_le_bytes(v);
        let base = model.max().unwrap_or(0);
        let counter = match op & 3 {
            0 => v,
            1 => base.saturating_add(v % (3 * ReplayWindow::WINDOW)),
            2 => base.saturating_sub(v % (2 * ReplayWindow::WINDOW)),
            _ => u64::MAX - (v % 70_000),
        };
        let fresh = model.check(counter);
        assert_eq!(window.check(counter), fresh, "counter {counter}");
        if (fresh && op & 0x80 == 0) || op & 0x40 != 0 {
            window.commit(counter);
            model.commit(counter);
            assert!(!window.check(counter));
        }
        assert_eq!(window.max_committed(), model.max());
    }
});
