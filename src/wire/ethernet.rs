//! Zero-copy Ethernet II frame view and emitter with at most one 802.1Q tag
//! (the frame VXLAN carries). It does not handle stacked tags (QinQ: the
//! inner tag is left in the payload and reported as the ethertype 0x8100),
//! frame check sequences or 802.3 length fields.

use super::WireError;

pub const HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A view of an Ethernet frame whose header (and tag, if any) fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn word(d: &[u8], at: usize) -> u16 {
    match d.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Checks: 14 bytes, or 18 if the outer ethertype is 802.1Q.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN
            || (word(b, 12) == ETHERTYPE_VLAN && b.len() < HEADER_LEN + VLAN_TAG_LEN)
        {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    #[inline]
    fn data(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    fn mac(&self, at: usize) -> [u8; 6] {
        match self.data().get(at..at + 6) {
            Some(&[a, b, c, d, e, f]) => [a, b, c, d, e, f],
            _ => [0; 6],
        }
    }
    #[inline]
    pub fn dst_mac(&self) -> [u8; 6] {
        self.mac(0)
    }
    #[inline]
    pub fn src_mac(&self) -> [u8; 6] {
        self.mac(6)
    }
    #[inline]
    fn tagged(&self) -> bool {
        word(self.data(), 12) == ETHERTYPE_VLAN
    }
    /// The 12-bit VLAN id of the 802.1Q tag, if there is one.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        self.tagged().then(|| word(self.data(), 14) & 0x0fff)
    }
    /// The 3-bit priority code point of the tag, if there is one.
    #[inline]
    pub fn vlan_pcp(&self) -> Option<u8> {
        self.tagged().then(|| (word(self.data(), 14) >> 13) as u8)
    }
    /// The ethertype of the payload (after the tag, if there is one).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        word(self.data(), self.header_len() - 2)
    }
    /// 14, or 18 with a tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.tagged() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.data()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_mac(&mut self, m: [u8; 6]) {
        self.buffer.as_mut()[0..6].copy_from_slice(&m);
    }
    #[inline]
    pub fn set_src_mac(&mut self, m: [u8; 6]) {
        self.buffer.as_mut()[6..12].copy_from_slice(&m);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

/// The fields of an Ethernet header, for emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// `(pcp, vlan id)` of one 802.1Q tag, or none.
    pub vlan: Option<(u8, u16)>,
    pub ethertype: u16,
}

impl EthernetRepr {
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + if self.vlan.is_some() { VLAN_TAG_LEN } else { 0 }
    }

    /// Writes the header and returns its length. VLAN ids above 4095 or a
    /// PCP above 7 are refused ([`WireError::TooLong`]).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let n = self.header_len();
        let h = out.get_mut(..n).ok_or(WireError::BufferTooSmall)?;
        h[0..6].copy_from_slice(&self.dst);
        h[6..12].copy_from_slice(&self.src);
        if let Some((pcp, vid)) = self.vlan {
            if pcp > 7 || vid > 0x0fff {
                return Err(WireError::TooLong);
            }
            h[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            h[14..16].copy_from_slice(&(u16::from(pcp) << 13 | vid).to_be_bytes());
        }
        h[n - 2..n].copy_from_slice(&self.ethertype.to_be_bytes());
        Ok(n)
    }

    #[inline]
    pub fn parse<T: AsRef<[u8]>>(f: &EthernetFrame<T>) -> Self {
        Self {
            dst: f.dst_mac(),
            src: f.src_mac(),
            vlan: f.vlan_pcp().zip(f.vlan_id()),
            ethertype: f.ethertype(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn repr(vlan: Option<(u8, u16)>) -> EthernetRepr {
        EthernetRepr {
            dst: [0x02, 0, 0, 0, 0, 1],
            src: [0x02, 0, 0, 0, 0, 2],
            vlan,
            ethertype: ETHERTYPE_IPV4,
        }
    }

    #[test]
    fn round_trip_untagged_and_tagged() {
        for vlan in [None, Some((5, 100)), Some((0, 0x0fff))] {
            let r = repr(vlan);
            let mut buf = [0u8; 30];
            let n = r.emit(&mut buf).unwrap();
            assert_eq!(n, r.header_len());
            let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
            assert_eq!(EthernetRepr::parse(&f), r);
            assert_eq!(f.vlan_id(), vlan.map(|v| v.1));
            assert_eq!(f.payload().len(), 30 - n);
            f.set_dst_mac([1; 6]);
            f.set_src_mac([2; 6]);
            f.payload_mut().fill(9);
            assert_eq!(
                (f.dst_mac(), f.src_mac(), f.ethertype()),
                ([1; 6], [2; 6], ETHERTYPE_IPV4)
            );
        }
    }

    #[test]
    fn rejects_truncated_and_bad_tags() {
        let mut buf = [0u8; 18];
        repr(Some((1, 2))).emit(&mut buf).unwrap();
        for cut in 0..18 {
            assert_eq!(
                EthernetFrame::new_checked(&buf[..cut]).err(),
                Some(WireError::Truncated)
            );
        }
        assert_eq!(repr(Some((8, 1))).emit(&mut buf), Err(WireError::TooLong));
        assert_eq!(
            repr(Some((0, 4096))).emit(&mut buf),
            Err(WireError::TooLong)
        );
        assert_eq!(
            repr(None).emit(&mut buf[..13]),
            Err(WireError::BufferTooSmall)
        );
    }
}
