//! Emitters for the outer messages (see the parent module for the layout):
//! write into caller buffers, return the total length, never panic. MAC
//! fields are written zeroed; the caller fills them at `mac_offsets`.

use super::*;

impl Message<'_> {
    /// Re-emits the whole message, MACs and ciphertext included, into `out`.
    /// `parse_message(&out[..n]) == Ok(self)` for the returned `n`.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let (n, macs) = match self {
            Message::Initiation(m) => (
                emit_initiation(out, m.sender_spi, m.noise)?,
                Some((m.mac1, m.mac2)),
            ),
            Message::Response(m) => (
                emit_response(out, m.sender_spi, m.receiver_spi, m.noise)?,
                Some((m.mac1, m.mac2)),
            ),
            Message::CookieReply(m) => (
                emit_cookie_reply(out, m.receiver_spi, m.nonce, m.encrypted_cookie)?,
                None,
            ),
            Message::Data(m) => {
                let n = DATA_HEADER_LEN + m.ciphertext_and_tag.len();
                let out = out.get_mut(..n).ok_or(WireError::BufferTooSmall)?;
                let (hdr, body) = out
                    .split_first_chunk_mut::<DATA_HEADER_LEN>()
                    .ok_or(WireError::BufferTooSmall)?;
                *hdr = *m.header;
                body.copy_from_slice(m.ciphertext_and_tag);
                (n, None)
            }
        };
        if let Some((mac1, mac2)) = macs {
            let msg = out.get_mut(..n).ok_or(WireError::BufferTooSmall)?;
            let (rest, m2) = msg
                .split_last_chunk_mut::<MAC_LEN>()
                .ok_or(WireError::BufferTooSmall)?;
            *m2 = *mac2;
            let (_, m1) = rest
                .split_last_chunk_mut::<MAC_LEN>()
                .ok_or(WireError::BufferTooSmall)?;
            *m1 = *mac1;
        }
        Ok(n)
    }
}

/// Writes the common 4-byte prefix (type, zero reserved) and an SPI.
fn write_prefix(hdr: &mut [u8; 8], ty: u8, spi: u32) {
    hdr[..4].copy_from_slice(&[ty, 0, 0, 0]);
    hdr[4..].copy_from_slice(&spi.to_be_bytes());
}

/// Writes a handshake message `header ‖ noise ‖ zeroed mac1 ‖ zeroed mac2`.
fn emit_handshake<const H: usize>(
    out: &mut [u8],
    header: [u8; H],
    noise: &[u8],
    noise_min: usize,
) -> Result<usize, WireError> {
    check_noise_len(noise.len(), noise_min).map_err(|e| match e {
        WireError::Truncated => WireError::BadLength,
        e => e,
    })?;
    let n = H + noise.len() + MACS_LEN;
    let out = out.get_mut(..n).ok_or(WireError::BufferTooSmall)?;
    let (hdr, rest) = out
        .split_first_chunk_mut::<H>()
        .ok_or(WireError::BufferTooSmall)?;
    *hdr = header;
    let (body, macs) = rest
        .split_at_mut_checked(noise.len())
        .ok_or(WireError::BufferTooSmall)?;
    body.copy_from_slice(noise);
    macs.fill(0);
    Ok(n)
}

/// Emits an initiation with zeroed MACs; returns its total length. The caller
/// fills mac1/mac2 at [`mac_offsets`] afterwards.
pub fn emit_initiation(out: &mut [u8], sender_spi: u32, noise: &[u8]) -> Result<usize, WireError> {
    let mut hdr = [0u8; INITIATION_HEADER_LEN];
    write_prefix(&mut hdr, MSG_INITIATION, sender_spi);
    emit_handshake(out, hdr, noise, INITIATION_NOISE_MIN)
}

/// Emits a response with zeroed MACs; returns its total length.
pub fn emit_response(
    out: &mut [u8],
    sender_spi: u32,
    receiver_spi: u32,
    noise: &[u8],
) -> Result<usize, WireError> {
    let mut hdr = [0u8; RESPONSE_HEADER_LEN];
    let (prefix, rx) = hdr.split_at_mut(8);
    let mut p = [0u8; 8];
    write_prefix(&mut p, MSG_RESPONSE, sender_spi);
    prefix.copy_from_slice(&p);
    rx.copy_from_slice(&receiver_spi.to_be_bytes());
    emit_handshake(out, hdr, noise, RESPONSE_NOISE_MIN)
}

/// Emits a cookie reply (always [`COOKIE_REPLY_LEN`] bytes).
pub fn emit_cookie_reply(
    out: &mut [u8],
    receiver_spi: u32,
    nonce: &[u8; COOKIE_NONCE_LEN],
    encrypted_cookie: &[u8; ENCRYPTED_COOKIE_LEN],
) -> Result<usize, WireError> {
    let out: &mut [u8; COOKIE_REPLY_LEN] = out
        .get_mut(..COOKIE_REPLY_LEN)
        .and_then(|o| o.try_into().ok())
        .ok_or(WireError::BufferTooSmall)?;
    let mut hdr = [0u8; 8];
    write_prefix(&mut hdr, MSG_COOKIE_REPLY, receiver_spi);
    out[..8].copy_from_slice(&hdr);
    out[8..32].copy_from_slice(nonce);
    out[32..].copy_from_slice(encrypted_cookie);
    Ok(COOKIE_REPLY_LEN)
}

/// Writes the 16-byte data header (type 4, receiver SPI, counter) into
/// `out[..16]`. `vxsec_crypto::sa::SealingKey::seal` writes the same bytes;
/// this is for tests, benches and tools.
pub fn emit_data_header(
    out: &mut [u8],
    receiver_spi: u32,
    counter: u64,
) -> Result<usize, WireError> {
    let hdr = out
        .first_chunk_mut::<DATA_HEADER_LEN>()
        .ok_or(WireError::BufferTooSmall)?;
    let mut p = [0u8; 8];
    write_prefix(&mut p, MSG_DATA, receiver_spi);
    hdr[..8].copy_from_slice(&p);
    hdr[8..].copy_from_slice(&counter.to_be_bytes());
    Ok(DATA_HEADER_LEN)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn noise(n: usize) -> Vec<u8> {
        vec![0x5a; n]
    }

    #[test]
    fn emit_bounds() {
        let mut b = vec![0u8; 4096];
        let long = noise(NOISE_MAX_LEN + 1);
        assert_eq!(emit_initiation(&mut b, 1, &long), Err(WireError::TooLong));
        assert_eq!(
            emit_initiation(&mut b, 1, &noise(95)),
            Err(WireError::BadLength)
        );
        assert_eq!(
            emit_initiation(&mut b[..135], 1, &noise(96)),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(emit_initiation(&mut b[..136], 1, &noise(96)), Ok(136));
        assert_eq!(
            emit_response(&mut b, 1, 2, &noise(47)),
            Err(WireError::BadLength)
        );
        assert_eq!(
            emit_cookie_reply(&mut b[..63], 1, &[0; 24], &[0; 32]),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(
            emit_data_header(&mut b[..15], 1, 1),
            Err(WireError::BufferTooSmall)
        );
        // A parsed handshake message with a Noise part over the maximum is refused.
        let mut big = vec![0u8; 8 + NOISE_MAX_LEN + 1 + 32];
        big[0] = MSG_INITIATION;
        assert_eq!(parse_message(&big), Err(WireError::TooLong));
        assert_eq!(mac_offsets(10), (0, 0));
        assert_eq!(mac_offsets(200), (168, 184));
    }
}
