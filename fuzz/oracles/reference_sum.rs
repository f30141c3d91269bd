//! The one reference Internet checksum the tests hold vxsec's against: a
//! slow, independent RFC 1071 sum that shares no code with
//! `vxsec::wire::checksum`. Included with `#[path]` by the unit tests
//! (`src/wire/checksum.rs`, under `cfg(test)`) and by the kernel tests'
//! helpers (`tests/tun_common`), so both check against the same oracle.
//! Not part of the product.

/// The one's-complement sum of the concatenation of `parts` as 16-bit
/// big-endian words, with the end-around carry taken at every byte (not
/// complemented: a region that includes a correct checksum sums to
/// 0xffff).
pub fn reference_sum(parts: &[&[u8]]) -> u16 {
    let mut s: u32 = 0;
    for (i, b) in parts.iter().flat_map(|p| p.iter()).enumerate() {
        s += if i % 2 == 0 {
            u32::from(*b) << 8
        } else {
            u32::from(*b)
        };
        s = (s & 0xffff) + (s >> 16);
    }
    // The carry fold keeps s <= 0xffff.
    s as u16
}
