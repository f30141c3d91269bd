#![no_main]
//! Placeholder until its owner lands it.
use libfuzzer_sys::fuzz_target;
fuzz_target!(|_data: &[u8]| {});
