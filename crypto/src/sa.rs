//! Per-SA data-message sealing and opening: header layout, nonce = salt ‖
//! counter, AAD = the 16-byte header, in-place AEAD with the tag appended,
//! usage limits (ok / rekey soon / refuse) and the replay check.
//!
//! Each direction comes in two halves so the AEAD can run on any thread
//! while the stateful part stays behind its owner's `&mut`:
//! [`SealingKey::reserve`] consumes a counter and hands out a
//! [`SealTicket`] that [`SealCipher::seal`] (`&self`, `Send + Sync`) turns
//! into a message; [`OpeningKey::precheck`] checks the replay window and
//! hands out an [`OpenTicket`] that [`OpenCipher::open`] authenticates, and
//! [`OpeningKey::commit`] re-checks the window and records the counter.
//! [`SealingKey::seal`] and [`OpeningKey::open`] are the one-shot
//! combinations.
//!
//! This module does not choose SPIs, route messages or manage SA lifetimes
//! (see `src/proto/`), and reads no clock: time-based limits live there.

use core::ops::Range;
use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use zeroize::Zeroize;

use crate::kdf::{DirectionKeys, NONCE_SALT_LEN};
use crate::replay::ReplayWindow;
/// Re-exported: the limits every SA key is built with.
pub use crate::suite::SaLimits;
use crate::suite::Suite;

/// Message type of data messages (DESIGN §3).
pub const MSG_TYPE_DATA: u8 = 4;
/// Data header: type u8, 3 reserved (0), receiver SPI u32 BE, counter u64 BE.
pub const DATA_HEADER_LEN: usize = 16;
/// AEAD tag length for both suites.
pub const TAG_LEN: usize = 16;
/// Bytes a data message adds to its payload.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// Largest payload `seal` accepts (far above any datagram, far below the
/// AEADs' per-message limits).
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

/// What an SA's limits say about further use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitStatus {
    /// Below the soft limits.
    Ok,
    /// A soft (rekey) limit was reached: start a new handshake.
    RekeySoon,
    /// A hard (reject) limit was reached: the SA can seal nothing more.
    Exhausted,
}

/// The result of a successful seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Length of the whole data message (header ‖ ciphertext ‖ tag).
    pub len: usize,
    /// The counter this message used.
    pub counter: u64,
    /// The SA's status after this seal.
    pub status: LimitStatus,
}

/// Why a seal was refused. Nothing was consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The SA reached a reject limit (packets or bytes): rekey.
    #[error("SA exhausted: reject limit reached, a new handshake is needed")]
    Exhausted,
    /// The buffer cannot hold header + payload + tag, or the payload exceeds
    /// [`MAX_PAYLOAD_LEN`].
    #[error("buffer too small for header, payload and tag")]
    BufferTooSmall,
    /// A [`SealTicket`] was presented to the cipher of another key; the
    /// ticket's counter is burnt, nothing was written.
    #[error("seal ticket belongs to another key")]
    WrongKey,
}

/// Why a received data message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than header + tag.
    #[error("data message truncated")]
    Truncated,
    /// The counter was already accepted or is below the replay window.
    #[error("replayed or too old data message")]
    Replay,
    /// The tag did not verify (tampered, wrong key, or wrong header).
    #[error("data message failed authentication")]
    AuthFailed,
    /// The counter is at or past the SA's packet reject limit: no honest
    /// sender can have sealed it.
    #[error("data message counter beyond the SA's reject limit")]
    Exhausted,
    /// An [`OpenTicket`] or [`Opened`] was presented to another key than
    /// the one that issued it (a caller bug, never the peer's doing).
    #[error("open ticket belongs to another key")]
    WrongKey,
}

fn aead_key(keys: &DirectionKeys, suite: Suite) -> LessSafeKey {
    // Both suites take exactly 32-byte keys, which `DirectionKeys` holds.
    #[allow(clippy::expect_used)]
    let unbound =
        UnboundKey::new(suite.algorithm(), keys.key()).expect("32-byte key for a 256-bit AEAD");
    LessSafeKey::new(unbound)
}

fn nonce(salt: [u8; NONCE_SALT_LEN], counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    let (s, c) = n.split_at_mut(NONCE_SALT_LEN);
    s.copy_from_slice(&salt);
    c.copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A data header as one 16-byte value (built in registers: one wide store,
/// and the AEAD can read the AAD from this value rather than reloading the
/// freshly written buffer).
const fn header_bytes(spi: u32, counter: u64) -> [u8; DATA_HEADER_LEN] {
    let v = ((MSG_TYPE_DATA as u128) << 120) | ((spi as u128) << 64) | counter as u128;
    v.to_be_bytes()
}

/// The counter of a data header.
fn header_counter(h: &[u8; DATA_HEADER_LEN]) -> u64 {
    let [_, _, _, _, _, _, _, _, c @ ..] = *h;
    u64::from_be_bytes(c)
}

fn limit_status(limits: &SaLimits, packets: u64, bytes: u64) -> LimitStatus {
    if packets >= limits.reject_after_packets || bytes >= limits.reject_after_bytes {
        LimitStatus::Exhausted
    } else if packets >= limits.rekey_after_packets || bytes >= limits.rekey_after_bytes {
        LimitStatus::RekeySoon
    } else {
        LimitStatus::Ok
    }
}

fn fingerprint(keys: &DirectionKeys) -> [u8; 8] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"vxsec v1 key fingerprint");
    ctx.update(keys.key());
    ctx.update(&keys.salt());
    let mut out = [0u8; 8];
    let digest = ctx.finish();
    for (o, d) in out.iter_mut().zip(digest.as_ref()) {
        *o = *d;
    }
    out
}

/// Whether `buf_len` bytes hold a data message with `payload_len` bytes of
/// payload, and the payload is within [`MAX_PAYLOAD_LEN`].
pub const fn message_fits(buf_len: usize, payload_len: usize) -> bool {
    payload_len <= MAX_PAYLOAD_LEN && buf_len >= DATA_OVERHEAD + payload_len
}

/// What both cipher halves hold: one direction's AEAD key, its nonce
/// salt and the key's fingerprint (which tickets carry). Wipes the salt on
/// drop (ring's key schedule is opaque and not wiped by ring) and prints
/// `<redacted>`.
///
/// Aligned to a cache line: the data path shares each cipher between
/// threads as an `Arc` whose reference count is bumped for every packet
/// reserved or prechecked under the peer's lock, and the alignment keeps
/// that count out of the line holding the start of the key schedule, which
/// every AEAD call on any core reads (false sharing otherwise).
#[repr(align(64))]
struct DirectionCipher {
    key: LessSafeKey,
    salt: [u8; NONCE_SALT_LEN],
    fingerprint: [u8; 8],
}

impl DirectionCipher {
    fn new(keys: &DirectionKeys, suite: Suite) -> Self {
        DirectionCipher {
            key: aead_key(keys, suite),
            salt: keys.salt(),
            fingerprint: fingerprint(keys),
        }
    }
}

impl Drop for DirectionCipher {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

impl core::fmt::Debug for DirectionCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The stateless half of a sealing key: AEAD key, nonce salt and receiver
/// SPI, shareable between threads (`Arc<SealCipher>` is `Send + Sync`). It
/// holds no counter and seals only under a [`SealTicket`] that
/// [`SealingKey::reserve`] of the same key handed out.
pub struct SealCipher {
    c: DirectionCipher,
    peer_spi: u32,
}

impl SealCipher {
    /// Seals in place under `ticket`. `buf` = `[DATA_HEADER_LEN headroom]
    /// [ticket's payload_len plaintext][>= TAG_LEN spare]`. Writes the
    /// header (receiver SPI, the ticket's counter), encrypts the payload
    /// with AAD = header and appends the tag. The ticket is consumed either
    /// way: on error its counter is burnt, never reused, and `buf` is
    /// unchanged.
    pub fn seal(&self, ticket: SealTicket, buf: &mut [u8]) -> Result<Sealed, SealError> {
        if ticket.key != self.c.fingerprint {
            return Err(SealError::WrongKey);
        }
        let (header, rest) = buf
            .split_first_chunk_mut::<DATA_HEADER_LEN>()
            .ok_or(SealError::BufferTooSmall)?;
        let (payload, rest) = rest
            .split_at_mut_checked(ticket.payload_len)
            .ok_or(SealError::BufferTooSmall)?;
        let tag_out = rest
            .first_chunk_mut::<TAG_LEN>()
            .ok_or(SealError::BufferTooSmall)?;
        let aad = header_bytes(self.peer_spi, ticket.counter);
        *header = aad;
        let tag = self
            .c
            .key
            .seal_in_place_separate_tag(
                nonce(self.c.salt, ticket.counter),
                Aad::from(&aad),
                payload,
            )
            // Unreachable: reserve() bounded payload_len by MAX_PAYLOAD_LEN,
            // far below ring's limits.
            .map_err(|_| SealError::BufferTooSmall)?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(Sealed {
            len: DATA_OVERHEAD + ticket.payload_len,
            counter: ticket.counter,
            status: ticket.status,
        })
    }

    /// Same as [`SealingKey::key_fingerprint`].
    pub fn key_fingerprint(&self) -> [u8; 8] {
        self.c.fingerprint
    }
}

impl core::fmt::Debug for SealCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One counter reserved by [`SealingKey::reserve`] for one message of a
/// fixed payload length. Neither `Clone` nor `Copy` and only made by
/// `reserve`: [`SealCipher::seal`] consumes it, so a counter seals at most
/// one message. Holds no secret (the counter goes on the wire).
#[must_use = "a reserved counter is burnt unless it is sealed"]
#[derive(Debug, PartialEq, Eq)]
pub struct SealTicket {
    counter: u64,
    payload_len: usize,
    status: LimitStatus,
    /// Fingerprint of the issuing key: a ticket seals under that key only.
    key: [u8; 8],
}

impl SealTicket {
    /// The reserved counter.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The payload length the ticket was reserved (and counted) for.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The SA's status right after this reservation.
    pub fn status(&self) -> LimitStatus {
        self.status
    }
}

/// The sending half of an SA. Counters start at 0 and are never reused.
pub struct SealingKey {
    cipher: Arc<SealCipher>,
    suite: Suite,
    limits: SaLimits,
    /// Messages sealed so far == the next counter.
    packets: u64,
    /// Plaintext bytes sealed so far (saturating).
    bytes: u64,
}

impl SealingKey {
    /// A sealing key for messages to the peer that chose `peer_spi`.
    pub fn new(keys: DirectionKeys, suite: Suite, peer_spi: u32, limits: SaLimits) -> Self {
        SealingKey {
            cipher: Arc::new(SealCipher {
                c: DirectionCipher::new(&keys, suite),
                peer_spi,
            }),
            suite,
            limits,
            packets: 0,
            bytes: 0,
        }
    }

    /// Whether `extra_packets` more messages carrying `extra_bytes` plaintext
    /// bytes in all stay within the reject limits.
    pub(crate) fn admits(&self, extra_packets: u64, extra_bytes: u64) -> bool {
        self.status() != LimitStatus::Exhausted
            && extra_packets <= self.limits.reject_after_packets - self.packets
            && extra_bytes <= self.limits.reject_after_bytes - self.bytes
    }

    /// Reserves the next counter for one message of `payload_len` bytes,
    /// counting the packet and its bytes against the limits now (the cheap,
    /// stateful half of [`SealingKey::seal`]). Refuses at the reject limits
    /// or past [`MAX_PAYLOAD_LEN`]; a refused reservation consumes nothing.
    /// Each counter is handed out once.
    pub fn reserve(&mut self, payload_len: usize) -> Result<SealTicket, SealError> {
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(SealError::BufferTooSmall);
        }
        if !self.admits(1, payload_len as u64) {
            return Err(SealError::Exhausted);
        }
        let counter = self.packets;
        // `admits` ensured neither sum passes its limit.
        self.packets += 1;
        self.bytes += payload_len as u64;
        Ok(SealTicket {
            counter,
            payload_len,
            status: self.status(),
            key: self.cipher.c.fingerprint,
        })
    }

    /// The shareable AEAD half, for sealing tickets without `&mut self`.
    pub fn cipher(&self) -> &Arc<SealCipher> {
        &self.cipher
    }

    /// Seals in place. `buf` = `[DATA_HEADER_LEN headroom][payload_len
    /// plaintext][>= TAG_LEN spare]`. Writes the header (receiver SPI =
    /// `peer_spi`, next counter), encrypts the payload with AAD = header and
    /// appends the tag. Refuses at the reject limits (packets or bytes); a
    /// refused seal consumes nothing. [`SealingKey::reserve`] then
    /// [`SealCipher::seal`], with the buffer checked first.
    pub fn seal(&mut self, buf: &mut [u8], payload_len: usize) -> Result<Sealed, SealError> {
        if !message_fits(buf.len(), payload_len) {
            return Err(SealError::BufferTooSmall);
        }
        // The counter is consumed before the AEAD runs, so it can never be
        // used twice even if the AEAD were to fail half-way.
        let ticket = self.reserve(payload_len)?;
        self.cipher.seal(ticket, buf)
    }

    /// The SA's status, without sealing.
    pub fn status(&self) -> LimitStatus {
        limit_status(&self.limits, self.packets, self.bytes)
    }

    /// Messages sealed so far (== the next counter).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Plaintext bytes sealed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The AEAD suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The receiver SPI written into every header.
    pub fn peer_spi(&self) -> u32 {
        self.cipher.peer_spi
    }

    /// The limits this key enforces.
    pub fn limits(&self) -> SaLimits {
        self.limits
    }

    /// First 8 bytes of SHA-256("vxsec v1 key fingerprint" ‖ key ‖ salt):
    /// one-way, identifies the key in tests and harness nonce-reuse checks.
    pub fn key_fingerprint(&self) -> [u8; 8] {
        self.cipher.c.fingerprint
    }
}

impl core::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The stateless half of an opening key: AEAD key and nonce salt,
/// shareable between threads (`Arc<OpenCipher>` is `Send + Sync`). It
/// keeps no replay state: it only opens messages that passed
/// [`OpeningKey::precheck`] of the same key, and its result counts only
/// once [`OpeningKey::commit`] accepted it.
pub struct OpenCipher {
    c: DirectionCipher,
}

impl OpenCipher {
    /// Authenticates and decrypts `msg` (header ‖ ciphertext ‖ tag) in
    /// place, with the nonce built from the ticket's counter (so the
    /// counter of an authentic [`Opened`] is the authenticated one). The
    /// outcome, authentic or not, counts only once passed to
    /// [`OpeningKey::commit`] (authentication failures are counted there).
    /// If not authentic, `msg`'s body is unspecified.
    pub fn open(&self, ticket: OpenTicket, msg: &mut [u8]) -> Opened {
        let outcome = self.open_inner(&ticket, msg);
        Opened {
            counter: ticket.counter,
            key: ticket.key,
            outcome,
        }
    }

    fn open_inner(&self, ticket: &OpenTicket, msg: &mut [u8]) -> Result<usize, OpenError> {
        if ticket.key != self.c.fingerprint {
            return Err(OpenError::WrongKey);
        }
        let (header, body) = msg
            .split_first_chunk_mut::<DATA_HEADER_LEN>()
            .ok_or(OpenError::Truncated)?;
        if body.len() < TAG_LEN {
            return Err(OpenError::Truncated);
        }
        let plain = self
            .c
            .key
            .open_in_place(
                nonce(self.c.salt, ticket.counter),
                Aad::from(&header[..]),
                body,
            )
            .map_err(|_| OpenError::AuthFailed)?;
        Ok(plain.len())
    }

    /// Same as [`OpeningKey::key_fingerprint`].
    pub fn key_fingerprint(&self) -> [u8; 8] {
        self.c.fingerprint
    }
}

impl core::fmt::Debug for OpenCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A received message's counter that was fresh at [`OpeningKey::precheck`]
/// (fresh then, not necessarily at commit). Only made by `precheck`;
/// consumed by [`OpenCipher::open`].
#[must_use = "a precheck means nothing until the message is opened and committed"]
#[derive(Debug, PartialEq, Eq)]
pub struct OpenTicket {
    counter: u64,
    key: [u8; 8],
}

impl OpenTicket {
    /// The message's counter.
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

/// The outcome of [`OpenCipher::open`] for one prechecked message:
/// authentic (then proof of it: only `open` makes one) or not. Only
/// [`OpeningKey::commit`] turns it into an accepted message, a replay or a
/// counted authentication failure.
#[must_use = "an opened message is accepted (or counted) only by OpeningKey::commit"]
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    counter: u64,
    key: [u8; 8],
    /// Plaintext length, or why the message did not open.
    outcome: Result<usize, OpenError>,
}

impl Opened {
    /// The message's counter (authenticated if [`Opened::is_authentic`]).
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Whether the message authenticated.
    pub fn is_authentic(&self) -> bool {
        self.outcome.is_ok()
    }

    /// Where the plaintext is within the message, if it authenticated.
    pub fn payload(&self) -> Option<Range<usize>> {
        let len = *self.outcome.as_ref().ok()?;
        Some(DATA_HEADER_LEN..DATA_HEADER_LEN + len)
    }
}

/// The receiving half of an SA, with its replay window.
pub struct OpeningKey {
    cipher: Arc<OpenCipher>,
    suite: Suite,
    limits: SaLimits,
    window: ReplayWindow,
    packets: u64,
    bytes: u64,
    auth_failures: u64,
}

impl OpeningKey {
    /// An opening key for messages sealed under `keys`.
    pub fn new(keys: DirectionKeys, suite: Suite, limits: SaLimits) -> Self {
        OpeningKey {
            cipher: Arc::new(OpenCipher {
                c: DirectionCipher::new(&keys, suite),
            }),
            suite,
            limits,
            window: ReplayWindow::new(),
            packets: 0,
            bytes: 0,
            auth_failures: 0,
        }
    }

    /// The shareable AEAD half, for opening tickets without `&mut self`.
    pub fn cipher(&self) -> &Arc<OpenCipher> {
        &self.cipher
    }

    /// The checks before decryption, changing nothing: length, the packet
    /// reject limit, and the replay window. The caller has already matched
    /// the SPI.
    pub fn precheck(&self, msg: &[u8]) -> Result<OpenTicket, OpenError> {
        let header = msg
            .first_chunk::<DATA_HEADER_LEN>()
            .ok_or(OpenError::Truncated)?;
        if msg.len() < DATA_OVERHEAD {
            return Err(OpenError::Truncated);
        }
        let counter = header_counter(header);
        if counter >= self.limits.reject_after_packets {
            return Err(OpenError::Exhausted);
        }
        if !self.window.check(counter) {
            return Err(OpenError::Replay);
        }
        Ok(OpenTicket {
            counter,
            key: self.cipher.c.fingerprint,
        })
    }

    /// Records the outcome of [`OpenCipher::open`]. The window is checked
    /// *again* first: another message with the same counter may have been
    /// committed since the precheck, and then this one is an
    /// [`OpenError::Replay`] whatever its outcome (only the first commit of
    /// a counter succeeds, as if the messages had been opened one after
    /// the other). Otherwise an authentication failure is counted and
    /// returned, and an authentic message has its counter committed and
    /// counted. Returns the plaintext's range within the message. On error
    /// the window is unchanged.
    pub fn commit(&mut self, opened: Opened) -> Result<Range<usize>, OpenError> {
        if opened.key != self.cipher.c.fingerprint {
            return Err(OpenError::WrongKey);
        }
        if !self.window.check(opened.counter) {
            return Err(OpenError::Replay);
        }
        let plain_len = match opened.outcome {
            Ok(len) => len,
            Err(OpenError::AuthFailed) => {
                self.auth_failures = self.auth_failures.saturating_add(1);
                return Err(OpenError::AuthFailed);
            }
            Err(e) => return Err(e),
        };
        self.window.commit(opened.counter);
        self.packets = self.packets.saturating_add(1);
        self.bytes = self.bytes.saturating_add(plain_len as u64);
        Ok(DATA_HEADER_LEN..DATA_HEADER_LEN + plain_len)
    }

    /// Opens a whole data message (header ‖ ciphertext ‖ tag) in place; the
    /// caller has already matched its SPI. The replay check runs before
    /// decryption, the replay commit only after authentication. Returns the
    /// plaintext's range within `msg` (it starts at `DATA_HEADER_LEN`). On
    /// error the window is unchanged and `msg`'s body is unspecified.
    /// [`OpeningKey::precheck`], [`OpenCipher::open`], [`OpeningKey::commit`].
    pub fn open(&mut self, msg: &mut [u8]) -> Result<Range<usize>, OpenError> {
        let ticket = self.precheck(msg)?;
        let opened = self.cipher.open(ticket, msg);
        self.commit(opened)
    }

    /// Messages opened successfully.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Plaintext bytes opened successfully.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages that failed authentication (forgery attempts or corruption).
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures
    }

    /// The AEAD suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Same value as the matching [`SealingKey::key_fingerprint`].
    pub fn key_fingerprint(&self) -> [u8; 8] {
        self.cipher.c.fingerprint
    }

    /// The highest counter accepted so far.
    pub fn max_counter(&self) -> Option<u64> {
        self.window.max_committed()
    }
}

impl core::fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests;
