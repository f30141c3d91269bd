//! The Internet checksum (RFC 1071) over byte slices, with IPv4/IPv6
//! pseudo-headers, for the ICMP replies and the offload segmenter. It does
//! not parse packets. (Stand-in until H-wire's `wire::checksum` is on main.)

/// Adds `data` (big-endian 16-bit words, an odd last byte padded with zero)
/// to the running, unfolded sum `acc`. A slice must start at an even offset
/// of the checksummed region for sums of several slices to be correct.
pub fn add(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_be_bytes(w);
        acc += (v >> 32) + (v & 0xffff_ffff);
        // Keep headroom: fold the upper half back in now and then.
        if acc > (1u64 << 62) {
            acc = (acc >> 32) + (acc & 0xffff_ffff);
        }
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc >> 16) + (acc & 0xffff);
    }
    acc as u16
}

/// The checksum field value for a running sum: `!fold(acc)`.
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The checksum of one slice.
pub fn checksum(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// Running sum of the IPv4 pseudo-header.
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u64 {
    let acc = add(add(0, &src), &dst);
    acc + u64::from(proto) + u64::from(l4_len)
}

/// Running sum of the IPv6 pseudo-header.
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, l4_len: u32) -> u64 {
    let acc = add(add(0, src), dst);
    acc + u64::from(proto) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent reference: 16-bit word sum with end-around carry.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for (i, b) in data.iter().enumerate() {
            let v = if i % 2 == 0 {
                u32::from(*b) << 8
            } else {
                u32::from(*b)
            };
            s += v;
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &d)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn matches_reference_on_many_lengths() {
        let data: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in [
            0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1499, 1500, 2999,
        ] {
            assert_eq!(checksum(&data[..len]), reference(&data[..len]), "len {len}");
        }
        let ones = vec![0xffu8; 4096];
        assert_eq!(checksum(&ones), reference(&ones));
    }

    #[test]
    fn split_sums_equal_whole() {
        let data: Vec<u8> = (0..200u8).collect();
        let whole = checksum(&data);
        let split = finish(add(add(0, &data[..64]), &data[64..]));
        assert_eq!(whole, split);
    }
}
