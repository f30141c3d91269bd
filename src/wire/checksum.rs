//! The Internet checksum: RFC 1071 one's-complement sums, RFC 1624
//! incremental updates, and the IPv4/IPv6 pseudo-header sums for UDP.
//! Pure arithmetic over byte slices; it knows no packet layout.
//!
//! A running sum is a `u64` accumulator of big-endian words; [`fold`] reduces
//! it to a 16-bit one's-complement sum and [`finish`] complements it into the
//! value that goes on the wire. Summing 32-bit words is congruent to summing
//! 16-bit words modulo 0xffff, so the fast path adds four bytes at a time.

/// Adds `data` (as big-endian 16-bit words, an odd last byte padded with
/// zero) to the running sum `acc`.
#[inline]
pub fn accumulate(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        if let &[a, b, c, d] = w {
            acc += u64::from(u32::from_be_bytes([a, b, c, d]));
        }
    }
    match *words.remainder() {
        [a] => acc + u64::from(u16::from_be_bytes([a, 0])),
        [a, b] => acc + u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => {
            acc + u64::from(u16::from_be_bytes([a, b])) + u64::from(u16::from_be_bytes([c, 0]))
        }
        _ => acc,
    }
}

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
