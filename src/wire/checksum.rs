//! The Internet checksum: RFC 1071 one's-complement sums, RFC 1624
//! incremental updates, and the IPv4/IPv6 pseudo-header sums for UDP.
//! Pure arithmetic over byte slices; it knows no packet layout.
//!
//! A running sum is a `u64` accumulator *congruent modulo 0xffff* to the sum
//! of the data's big-endian 16-bit words; only its [`fold`] (the 16-bit
//! one's-complement sum) is meaningful, and [`finish`] complements that into
//! the value that goes on the wire.
//!
//! [`accumulate`] is the hot loop of segmentation and coalescing. It sums
//! the data as *native-endian* 32-bit words into eight independent `u64`
//! lanes (a shape the compiler vectorises), and converts once at the end:
//! a 16-bit word with its bytes swapped is the word times 256 modulo 0xffff
//! (RFC 1071 §2(B), byte-order independence), so on a little-endian host
//! the big-endian sum is 256 × the native sum, modulo 0xffff.

/// 32-bit words summed per loop iteration, one per lane.
const LANES: usize = 8;

/// Adds `data` (as big-endian 16-bit words, an odd last byte padded with
/// zero) to the running sum `acc`. The result stays congruent modulo
/// 0xffff to that sum; it grows by less than 2^42 per call, so a `u64`
/// accumulator takes any realistic number of calls without overflow.
#[inline]
pub fn accumulate(acc: u64, data: &[u8]) -> u64 {
    let mut lanes = [0u64; LANES];
    let mut blocks = data.chunks_exact(4 * LANES);
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            if let &[a, b, c, d] = w {
                *lane += u64::from(u32::from_ne_bytes([a, b, c, d]));
            }
        }
    }
    // Each lane holds at most len/32 words of < 2^32: no overflow below
    // 2^37 bytes, and the lane sum below 2^40 bytes.
    let mut native: u64 = lanes.iter().sum();
    let mut words = blocks.remainder().chunks_exact(4);
    for w in &mut words {
        if let &[a, b, c, d] = w {
            native += u64::from(u32::from_ne_bytes([a, b, c, d]));
        }
    }
    let mut tail = [0u8; 4];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    native += u64::from(u32::from_ne_bytes(tail));
    // Fold to < 2^33 (keeps the value modulo 0xffff), then undo the byte
    // order: x256 on little-endian hosts (< 2^41), nothing on big-endian.
    let native = (native & 0xffff_ffff) + (native >> 32);
    if cfg!(target_endian = "little") {
        acc + (native << 8)
    } else {
        acc + native
    }
}

/// The reference sum the unit tests hold [`accumulate`] against (one copy,
/// shared with the integration tests; see the file).
#[cfg(test)]
#[path = "../../fuzz/oracles/reference_sum.rs"]
mod reference;
#[cfg(test)]
pub(crate) use reference::reference_sum;

/// Folds a running sum into a 16-bit one's-complement sum (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves acc <= 0xffff, so the cast is lossless.
    acc as u16
}

/// The checksum field value for a running sum: `!fold(acc)`.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The RFC 1071 checksum of `data` alone (e.g. an IPv4 header with its
/// checksum field zeroed). Verifying: the checksum of data that includes a
/// correct checksum field is 0.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// Running sum of the IPv4 pseudo-header (src, dst, zero, protocol, length).
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u64 {
    let acc = accumulate(0, &src);
    let acc = accumulate(acc, &dst);
    acc + u64::from(protocol) + u64::from(l4_len)
}

/// Running sum of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u64 {
    let acc = accumulate(0, src);
    let acc = accumulate(acc, dst);
    acc + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff) + u64::from(next_header)
}

/// RFC 1624 eqn. 3: the new checksum field after one 16-bit word of the
/// covered data changes from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!check) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

/// [`update_u16`] for a 32-bit field (e.g. an IPv4 address), as two words.
#[inline]
pub fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let c = update_u16(check, (old >> 16) as u16, (new >> 16) as u16);
    update_u16(c, old as u16, new as u16)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straight RFC 1071: 16-bit words, end-around carry each step.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            let w = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
            sum += w;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header (Wikipedia "IPv4 header checksum"): b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    /// Naive RFC 1071 with a starting accumulator: big-endian 16-bit words
    /// (odd last byte padded), end-around carry at every step.
    fn reference_fold(acc: u64, data: &[u8]) -> u16 {
        let mut sum = fold(acc);
        for pair in data.chunks(2) {
            let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            let (s, carry) = sum.overflowing_add(w);
            sum = s + u16::from(carry);
        }
        // `fold` maps a non-zero sum to 1..=0xffff; the end-around adds
        // above can leave 0 only when everything was zero.
        sum
    }

    #[test]
    fn extreme_inputs_match_reference() {
        let ones = vec![0xffu8; 70_000];
        let zeros = vec![0u8; 9001];
        for len in [
            0, 1, 2, 3, 31, 32, 33, 63, 64, 65, 1450, 9000, 9001, 65_535, 70_000,
        ] {
            for acc in [0, 1, 0xffff, 0x1_0000, u64::from(u32::MAX), 1 << 48] {
                assert_eq!(
                    fold(accumulate(acc, &ones[..len])),
                    reference_fold(acc, &ones[..len])
                );
                let z = &zeros[..len.min(9001)];
                assert_eq!(fold(accumulate(acc, z)), reference_fold(acc, z));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The lane sum equals naive RFC 1071 for every length, starting
        /// offset (alignment) and running sum.
        #[test]
        fn accumulate_matches_rfc1071(
            data in proptest::collection::vec(any::<u8>(), 0..9000),
            skip in 0usize..8,
            acc in 0u64..(1 << 48),
        ) {
            let d = &data[skip.min(data.len())..];
            prop_assert_eq!(fold(accumulate(acc, d)), reference_fold(acc, d));
        }

        /// Summing in two pieces split at an even offset equals one pass.
        #[test]
        fn accumulate_chains(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cut in 0usize..1500,
        ) {
            let cut = (cut * 2).min(data.len() & !1);
            let (a, b) = data.split_at(cut);
            prop_assert_eq!(fold(accumulate(accumulate(0, a), b)), fold(accumulate(0, &data)));
        }
    }

    proptest! {
        #[test]
        fn matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300), start in 0usize..4) {
            let d = &data[start.min(data.len())..];
            prop_assert_eq!(checksum(d), reference(d));
        }

        #[test]
        fn incremental_matches_full(mut data in proptest::collection::vec(any::<u8>(), 4..64), idx in 0usize..30, new in any::<u16>()) {
            let i = (idx % (data.len() / 2)) * 2;
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            // One's complement has two zeros; compare as sums modulo 0xffff.
            let inc = update_u16(before, old, new);
            prop_assert_eq!(u32::from(!inc) % 0xffff, u32::from(!after) % 0xffff);
        }
    }

    #[test]
    fn update_u32_and_pseudo_headers() {
        let mut data = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let c0 = checksum(&data);
        data[4..8].copy_from_slice(&0x0a0b_0c0du32.to_be_bytes());
        assert_eq!(update_u32(c0, 0x0506_0708, 0x0a0b_0c0d), checksum(&data));
        // The pseudo-header sums equal summing the explicit byte layouts.
        let v4 = [10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0x05, 0xdc];
        assert_eq!(
            fold(pseudo_header_v4([10, 0, 0, 1], [10, 0, 0, 2], 17, 1500)),
            fold(accumulate(0, &v4))
        );
        let (s, d) = ([0x20; 16], [0xfe; 16]);
        let mut v6 = Vec::new();
        v6.extend_from_slice(&s);
        v6.extend_from_slice(&d);
        v6.extend_from_slice(&70_000u32.to_be_bytes());
        v6.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(
            fold(pseudo_header_v6(&s, &d, 17, 70_000)),
            fold(accumulate(0, &v6))
        );
    }
}
