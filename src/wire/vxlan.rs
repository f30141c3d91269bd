//! Zero-copy VXLAN header view and emitter (RFC 7348 §5): 8 bytes, flags
//! with the I bit, 24-bit VNI. It does not parse the inner Ethernet frame
//! (see `ethernet`).
//!
//! Reserved bits follow RFC 7348: they MUST be zero on send (the emitter
//! writes zeros) and MUST be ignored on receive (the parser accepts any
//! value). The I flag MUST be set for a valid VNI, so a header without it is
//! refused ([`WireError::VxlanNoVni`]): vxsec enforces VNI allow lists and a
//! packet without a valid VNI cannot be checked against one.

use super::WireError;

pub const HEADER_LEN: usize = 8;
/// The IANA VXLAN port; vxsec's is configurable (`policy.vxlan_port`).
pub const DEFAULT_PORT: u16 = 4789;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// A view of a VXLAN header (followed by the inner Ethernet frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Checks: at least 8 bytes and the I flag set. Reserved bits are ignored.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let Some(&[flags, ..]) = buffer.as_ref().first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if flags & FLAG_I == 0 {
            return Err(WireError::VxlanNoVni);
        }
        Ok(Self { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The flags byte as received (reserved bits included, for diagnostics).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    /// The 24-bit VXLAN Network Identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([0, d[4], d[5], d[6]])
    }
    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Rewrites the VNI (values above [`MAX_VNI`] are refused).
    #[inline]
    pub fn set_vni(&mut self, vni: u32) -> Result<(), WireError> {
        let [_, a, b, c] = checked_vni(vni)?.to_be_bytes();
        self.buffer.as_mut()[4..7].copy_from_slice(&[a, b, c]);
        Ok(())
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[inline]
fn checked_vni(vni: u32) -> Result<u32, WireError> {
    if vni > MAX_VNI {
        Err(WireError::TooLong)
    } else {
        Ok(vni)
    }
}

/// Writes an 8-byte VXLAN header (I flag, reserved zero) and returns 8.
pub fn emit(out: &mut [u8], vni: u32) -> Result<usize, WireError> {
    let [_, a, b, c] = checked_vni(vni)?.to_be_bytes();
    let h = out
        .first_chunk_mut::<HEADER_LEN>()
        .ok_or(WireError::BufferTooSmall)?;
    *h = [FLAG_I, 0, 0, 0, a, b, c, 0];
    Ok(HEADER_LEN)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0xffu8; 20];
        assert_eq!(emit(&mut buf, 0x00ab_cdef), Ok(8));
        assert_eq!(&buf[..8], &[0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        let mut v = VxlanPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(
            (v.vni(), v.flags(), v.payload().len()),
            (0x00ab_cdef, 0x08, 12)
        );
        v.set_vni(42).unwrap();
        assert_eq!(v.vni(), 42);
        assert_eq!(v.set_vni(MAX_VNI + 1), Err(WireError::TooLong));
        v.payload_mut().fill(0);
        assert_eq!(emit(&mut [0u8; 8], 1 << 24), Err(WireError::TooLong));
        assert_eq!(emit(&mut [0u8; 7], 1), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn reserved_ignored_i_flag_required() {
        // All reserved bits set: accepted on receive, VNI unaffected (RFC 7348).
        let buf = [0xff, 0xff, 0xff, 0xff, 0, 0, 42, 0xff];
        let v = VxlanPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(v.vni(), 42);
        let no_i = [0xf7, 0, 0, 0, 0, 0, 42, 0];
        assert_eq!(
            VxlanPacket::new_checked(&no_i[..]).err(),
            Some(WireError::VxlanNoVni)
        );
        for cut in 0..8 {
            assert_eq!(
                VxlanPacket::new_checked(&buf[..cut]).err(),
                Some(WireError::Truncated)
            );
        }
    }
}
