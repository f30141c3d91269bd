//! The one error type of the wire layer: why a buffer was refused by a parser
//! or an emitter. It says nothing about what the caller should do next.

/// Why a parser refused its input or an emitter refused its output buffer.
///
/// All variants describe *peer-supplied* (or locally captured) bytes, except
/// [`WireError::BufferTooSmall`] and [`WireError::TooLong`] on emit, which are
/// caller mistakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// The input is shorter than its fixed header or its own length field.
    #[error("truncated packet")]
    Truncated,
    /// Unknown outer message type.
    #[error("unknown message type {0}")]
    BadType(u8),
    /// A reserved field that must be zero is not.
    #[error("reserved bits set")]
    ReservedNonZero,
    /// A variable-length part exceeds its maximum (or a value does not fit its field).
    #[error("field or packet too long")]
    TooLong,
    /// A length field is inconsistent (below its minimum or beyond the buffer).
    #[error("inconsistent length field")]
    BadLength,
    /// The IP version nibble is not the one expected.
    #[error("unexpected IP version {0}")]
    BadVersion(u8),
    /// The VXLAN header's I flag (valid VNI) is not set.
    #[error("VXLAN I flag not set")]
    VxlanNoVni,
    /// An emitter's output buffer cannot hold what it must write.
    #[error("output buffer too small")]
    BufferTooSmall,
}
