//! Local stand-in for `vxsec_crypto::batch::Arena` (THE CRYPTO CONTRACT),
//! used until H-crypto's arena lands on main; same names and semantics.
//! It does no sealing; it only owns fixed-stride, 64-byte-aligned slots.

/// Fixed-stride, 64-byte-aligned packet slots with a per-slot length.
pub struct Arena {
    buf: Vec<u8>,
    offset: usize,
    stride: usize,
    count: usize,
    lens: Vec<usize>,
}

impl Arena {
    /// Payload starts at slot offset 64; the data header goes in [48, 64).
    pub const HEADROOM: usize = 64;
    const TAG_LEN: usize = 16;

    /// `slot_count` slots of `stride` bytes (stride a positive multiple of 64).
    pub fn new(slot_count: usize, stride: usize) -> Arena {
        let stride = stride.max(128).div_ceil(64) * 64;
        let buf = vec![0u8; slot_count * stride + 63];
        let offset = buf.as_ptr().align_offset(64).min(63);
        Arena {
            buf,
            offset,
            stride,
            count: slot_count,
            lens: vec![0; slot_count],
        }
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.count
    }

    /// Bytes per slot.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Largest plaintext payload a slot can hold (leaves room for the tag).
    pub fn max_payload(&self) -> usize {
        self.stride - Self::HEADROOM - Self::TAG_LEN
    }

    /// The whole slot `i` (stride bytes). Panics if `i` is out of range.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let start = self.offset + i * self.stride;
        &mut self.buf[start..start + self.stride]
    }

    /// The whole slot `i` (stride bytes). Panics if `i` is out of range.
    pub fn slot(&self, i: usize) -> &[u8] {
        let start = self.offset + i * self.stride;
        &self.buf[start..start + self.stride]
    }

    /// Per-slot length; its meaning is set by the caller.
    pub fn len(&self, i: usize) -> usize {
        self.lens[i]
    }

    /// Sets the per-slot length.
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.lens[i] = len;
    }
}
