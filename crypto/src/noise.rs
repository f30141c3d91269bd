//! The Noise `IKpsk2_25519_ChaChaPoly_BLAKE2s` handshake wrapper over `snow`:
//! builds initiator/responder states with the vxsec prologue, encodes the
//! handshake payloads (TAI64N timestamp, suite negotiation) and turns the
//! Noise split into zeroizing [`SymmetricKey`]s for `kdf::derive_data_keys`.
//! X25519 runs in aws-lc-rs through [`NoiseResolver`]; the static-static
//! DH of each configured peer can be computed once ([`PrecomputedSs`]).
//!
//! It does not frame messages (see `vxsec::wire::outer`), compute MACs
//! (see [`crate::cookie`]), read a clock (timestamps are arguments) or decide
//! whether a timestamp is fresh (the protocol core compares them).

use core::fmt;
use core::time::Duration;

use zeroize::{Zeroize, Zeroizing};

use crate::key::{PrivateKey, Psk, PublicKey, SymmetricKey};
use crate::suite::Suite;
use crate::x25519::{DhError, NoiseResolver, PrecomputedSs, SsTable, StaticKeyPair};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Prologue prefix; the network id follows it.
pub const PROLOGUE_PREFIX: &[u8] = b"vxsec v1";
/// Longest network id the configuration accepts.
pub const MAX_NETWORK_ID_LEN: usize = 64;
/// TAI64N timestamp length.
pub const TIMESTAMP_LEN: usize = 12;
/// Initiation payload: timestamp ‖ suite wire id.
pub const INITIATION_PAYLOAD_LEN: usize = TIMESTAMP_LEN + 1;
/// Response payload: accepted suite id (or [`SUITE_MISMATCH`]) ‖ responder's suite id.
pub const RESPONSE_PAYLOAD_LEN: usize = 2;
/// Response payload code meaning "your suite is not mine".
pub const SUITE_MISMATCH: u8 = 0;
/// Noise IK message 1 length with our payload: e 32, s 32+16, payload 13+16.
pub const INITIATION_NOISE_LEN: usize = 32 + 48 + INITIATION_PAYLOAD_LEN + 16;
/// Noise IK message 2 length with our payload: e 32, payload 2+16.
pub const RESPONSE_NOISE_LEN: usize = 32 + RESPONSE_PAYLOAD_LEN + 16;
/// Largest Noise message this wrapper reads.
pub const MAX_NOISE_LEN: usize = 256;

const PSK_LOCATION: usize = 2;
const ZERO_PSK: [u8; 32] = [0; 32];
/// 2^62 + 10 (TAI − UTC offset used by WireGuard's TAI64N labels).
const TAI64_BASE: u64 = 0x4000_0000_0000_000a;

/// Handshake failures. None of them says which check failed beyond what a
/// peer could learn anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// The Noise message failed to authenticate or decrypt.
    #[error("handshake message failed authentication")]
    Auth,
    /// The message or payload has the wrong length or layout.
    #[error("malformed handshake message")]
    Malformed,
    /// The output buffer is too small.
    #[error("buffer too small for handshake message")]
    BufferTooSmall,
    /// snow refused to build a handshake state (bad key material).
    #[error("handshake state could not be built")]
    Setup,
}

/// A TAI64N label: 8-byte big-endian TAI seconds ‖ 4-byte big-endian
/// nanoseconds. Byte order equals time order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Tai64N([u8; TIMESTAMP_LEN]);

impl Tai64N {
    /// The label for a wall-clock time given as time since the Unix epoch.
    pub fn from_unix(since_epoch: Duration) -> Self {
        let mut out = [0u8; TIMESTAMP_LEN];
        let secs = TAI64_BASE.wrapping_add(since_epoch.as_secs());
        out[..8].copy_from_slice(&secs.to_be_bytes());
        out[8..].copy_from_slice(&since_epoch.subsec_nanos().to_be_bytes());
        Tai64N(out)
    }
    /// From the 12 wire bytes.
    pub const fn from_bytes(bytes: [u8; TIMESTAMP_LEN]) -> Self {
        Tai64N(bytes)
    }
    /// The 12 wire bytes.
    pub const fn as_bytes(&self) -> &[u8; TIMESTAMP_LEN] {
        &self.0
    }
}

/// What the initiator says in message 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitiationPayload {
    /// Its wall clock at sending time.
    pub timestamp: Tai64N,
    /// Its suite's wire id (may be unknown to us).
    pub suite_id: u8,
}

/// What the responder says in message 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponsePayload {
    /// The responder accepted this suite.
    Accepted(Suite),
    /// The responder uses another suite (wire id given, may be unknown).
    Mismatch {
        /// The responder's own suite id.
        theirs: u8,
    },
}

impl ResponsePayload {
    fn encode(self) -> [u8; RESPONSE_PAYLOAD_LEN] {
        match self {
            ResponsePayload::Accepted(s) => [s.wire_id(), s.wire_id()],
            ResponsePayload::Mismatch { theirs } => [SUITE_MISMATCH, theirs],
        }
    }
    fn decode(b: &[u8]) -> Result<Self, NoiseError> {
        match *b {
            [SUITE_MISMATCH, theirs] => Ok(ResponsePayload::Mismatch { theirs }),
            [id, again] if id == again => Suite::from_wire_id(id)
                .map(ResponsePayload::Accepted)
                .ok_or(NoiseError::Malformed),
            _ => Err(NoiseError::Malformed),
        }
    }
}

/// The two directional secrets of a completed handshake (the Noise split).
pub struct SessionSecrets {
    /// Initiator → responder (the first half of the split).
    pub initiator_to_responder: SymmetricKey,
    /// Responder → initiator (the second half).
    pub responder_to_initiator: SymmetricKey,
}

impl fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecrets(<redacted>)")
    }
}

fn split(state: &mut snow::HandshakeState) -> SessionSecrets {
    let (mut a, mut b) = state.dangerously_get_raw_split();
    let out = SessionSecrets {
        initiator_to_responder: SymmetricKey::from_bytes(a),
        responder_to_initiator: SymmetricKey::from_bytes(b),
    };
    a.zeroize();
    b.zeroize();
    out
}

/// The static identity and prologue shared by all handshakes of one endpoint.
pub struct NoiseIdentity {
    private: PrivateKey,
    public: PublicKey,
    prologue: Vec<u8>,
    /// `private` loaded into aws-lc once. `None` only if aws-lc refused it
    /// (out of memory); handshakes then load the key each time.
    local: Option<StaticKeyPair>,
}

impl fmt::Debug for NoiseIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoiseIdentity({}, <redacted>)", self.public)
    }
}

impl NoiseIdentity {
    /// `network_id` goes into the prologue: peers on different networks
    /// cannot complete a handshake. (Configuration bounds it to
    /// [`MAX_NETWORK_ID_LEN`]; any length works here.)
    pub fn new(private: PrivateKey, network_id: &[u8]) -> Self {
        let mut prologue = Vec::with_capacity(PROLOGUE_PREFIX.len() + network_id.len());
        prologue.extend_from_slice(PROLOGUE_PREFIX);
        prologue.extend_from_slice(network_id);
        let public = private.public_key();
        let local = StaticKeyPair::new(&private).ok();
        NoiseIdentity {
            private,
            public,
            prologue,
            local,
        }
    }

    /// Our static public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// DH(our static key, `remote`): the `ss` of every handshake with that
    /// peer. Compute it once when the peer is configured and pass it to
    /// [`Self::initiate`] / keep it in the [`SsTable`] given to
    /// [`Self::read_initiation`]. Fails for a low-order `remote` (no
    /// handshake with it could succeed).
    pub fn precompute_ss(&self, remote: &PublicKey) -> Result<PrecomputedSs, DhError> {
        self.local
            .as_ref()
            .ok_or(DhError::Refused)?
            .precompute_ss(remote)
    }

    fn builder(&self, resolver: NoiseResolver) -> Result<snow::Builder<'_>, NoiseError> {
        let params = NOISE_PARAMS.parse().map_err(|_| NoiseError::Setup)?;
        snow::Builder::with_resolver(params, Box::new(resolver))
            .local_private_key(self.private.dangerous_as_bytes())
            .and_then(|b| b.prologue(&self.prologue))
            .map_err(|_| NoiseError::Setup)
    }

    /// Starts a handshake towards `remote` and writes Noise message 1 into
    /// `out`. `ss` is [`Self::precompute_ss`] of `remote`, if known (a value
    /// for another key is ignored).
    pub fn initiate(
        &self,
        remote: &PublicKey,
        ss: Option<&PrecomputedSs>,
        psk: Option<&Psk>,
        payload: InitiationPayload,
        out: &mut [u8],
    ) -> Result<(InitiatorHandshake, usize), NoiseError> {
        let psk = psk.map_or(&ZERO_PSK, Psk::dangerous_as_bytes);
        let resolver = match &self.local {
            Some(local) => NoiseResolver::initiator(local, ss),
            None => NoiseResolver::new(),
        };
        let mut state = self
            .builder(resolver)?
            .remote_public_key(remote.as_bytes())
            .and_then(|b| b.psk(PSK_LOCATION as u8, psk))
            .and_then(|b| b.build_initiator())
            .map_err(|_| NoiseError::Setup)?;
        let mut body = [0u8; INITIATION_PAYLOAD_LEN];
        body[..TIMESTAMP_LEN].copy_from_slice(payload.timestamp.as_bytes());
        body[TIMESTAMP_LEN] = payload.suite_id;
        if out.len() < INITIATION_NOISE_LEN {
            return Err(NoiseError::BufferTooSmall);
        }
        let n = state
            .write_message(&body, out)
            .map_err(|_| NoiseError::Setup)?;
        Ok((InitiatorHandshake { state }, n))
    }

    /// Reads Noise message 1 (one DH-heavy step: es, ss; `ss` comes from
    /// `ss_table` when the initiator's static key is in it). On success the
    /// initiator's static key is authenticated; the caller must still check
    /// that it is a configured peer and that the timestamp is fresh.
    pub fn read_initiation(
        &self,
        msg: &[u8],
        ss_table: &SsTable,
    ) -> Result<(ResponderHandshake, PublicKey, InitiationPayload), NoiseError> {
        if msg.len() != INITIATION_NOISE_LEN {
            return Err(NoiseError::Malformed);
        }
        let resolver = match &self.local {
            Some(local) => NoiseResolver::responder(local, ss_table),
            None => NoiseResolver::new(),
        };
        let mut state = self
            .builder(resolver)?
            .build_responder()
            .map_err(|_| NoiseError::Setup)?;
        let mut body = Zeroizing::new([0u8; MAX_NOISE_LEN]);
        let n = state
            .read_message(msg, &mut body[..])
            .map_err(|_| NoiseError::Auth)?;
        let body = body.get(..n).ok_or(NoiseError::Malformed)?;
        if body.len() != INITIATION_PAYLOAD_LEN {
            return Err(NoiseError::Malformed);
        }
        let mut ts = [0u8; TIMESTAMP_LEN];
        ts.copy_from_slice(&body[..TIMESTAMP_LEN]);
        let payload = InitiationPayload {
            timestamp: Tai64N(ts),
            suite_id: body[TIMESTAMP_LEN],
        };
        let remote = state
            .get_remote_static()
            .and_then(|rs| <[u8; 32]>::try_from(rs).ok())
            .map(PublicKey::from_bytes)
            .ok_or(NoiseError::Auth)?;
        Ok((ResponderHandshake { state }, remote, payload))
    }
}

/// An initiator waiting for message 2.
pub struct InitiatorHandshake {
    state: snow::HandshakeState,
}

impl fmt::Debug for InitiatorHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InitiatorHandshake(<redacted>)")
    }
}

impl InitiatorHandshake {
    /// Reads message 2. A failure leaves the state usable for a genuine
    /// response that arrives later (snow restores its checkpoint).
    pub fn read_response(
        &mut self,
        msg: &[u8],
    ) -> Result<(ResponsePayload, SessionSecrets), NoiseError> {
        if msg.len() != RESPONSE_NOISE_LEN {
            return Err(NoiseError::Malformed);
        }
        let mut body = [0u8; MAX_NOISE_LEN];
        let n = self
            .state
            .read_message(msg, &mut body)
            .map_err(|_| NoiseError::Auth)?;
        let payload = ResponsePayload::decode(body.get(..n).ok_or(NoiseError::Malformed)?)?;
        Ok((payload, split(&mut self.state)))
    }
}

/// A responder that has read message 1 and may answer it.
pub struct ResponderHandshake {
    state: snow::HandshakeState,
}

impl fmt::Debug for ResponderHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponderHandshake(<redacted>)")
    }
}

impl ResponderHandshake {
    /// Writes message 2 (ee, se, psk) into `out` and returns its length and
    /// the session secrets. With a mismatch payload the secrets are still
    /// returned; the caller must not install them.
    pub fn write_response(
        mut self,
        psk: Option<&Psk>,
        payload: ResponsePayload,
        out: &mut [u8],
    ) -> Result<(usize, SessionSecrets), NoiseError> {
        if out.len() < RESPONSE_NOISE_LEN {
            return Err(NoiseError::BufferTooSmall);
        }
        let psk = psk.map_or(&ZERO_PSK[..], |p| &p.dangerous_as_bytes()[..]);
        self.state
            .set_psk(PSK_LOCATION, psk)
            .map_err(|_| NoiseError::Setup)?;
        let n = self
            .state
            .write_message(&payload.encode(), out)
            .map_err(|_| NoiseError::Setup)?;
        Ok((n, split(&mut self.state)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ids(net_a: &[u8], net_b: &[u8]) -> (NoiseIdentity, NoiseIdentity) {
        (
            NoiseIdentity::new(PrivateKey::generate(), net_a),
            NoiseIdentity::new(PrivateKey::generate(), net_b),
        )
    }

    fn payload(secs: u64) -> InitiationPayload {
        InitiationPayload {
            timestamp: Tai64N::from_unix(Duration::from_secs(secs)),
            suite_id: Suite::ChaCha20Poly1305.wire_id(),
        }
    }

    #[test]
    fn handshake_agrees_on_split() {
        let (a, b) = ids(b"lab", b"lab");
        let psk = Psk::from_bytes([7; 32]);
        let mut m1 = [0u8; 256];
        let (mut hs, n1) = a
            .initiate(b.public_key(), None, Some(&psk), payload(5), &mut m1)
            .unwrap();
        assert_eq!(n1, INITIATION_NOISE_LEN);
        let (resp, who, p) = b.read_initiation(&m1[..n1], &SsTable::default()).unwrap();
        assert_eq!(&who, a.public_key());
        assert_eq!(p, payload(5));
        let mut m2 = [0u8; 256];
        let accepted = ResponsePayload::Accepted(Suite::ChaCha20Poly1305);
        let (n2, rs) = resp.write_response(Some(&psk), accepted, &mut m2).unwrap();
        assert_eq!(n2, RESPONSE_NOISE_LEN);
        let (got, is) = hs.read_response(&m2[..n2]).unwrap();
        assert_eq!(got, accepted);
        assert_eq!(
            is.initiator_to_responder.dangerous_as_bytes(),
            rs.initiator_to_responder.dangerous_as_bytes()
        );
        assert_eq!(
            is.responder_to_initiator.dangerous_as_bytes(),
            rs.responder_to_initiator.dangerous_as_bytes()
        );
        assert_ne!(
            is.initiator_to_responder.dangerous_as_bytes(),
            is.responder_to_initiator.dangerous_as_bytes()
        );
    }

    #[test]
    fn psk_mismatch_fails_at_response() {
        let (a, b) = ids(b"lab", b"lab");
        let mut m1 = [0u8; 256];
        let (mut hs, n1) = a
            .initiate(
                b.public_key(),
                None,
                Some(&Psk::from_bytes([1; 32])),
                payload(1),
                &mut m1,
            )
            .unwrap();
        let (resp, _, _) = b.read_initiation(&m1[..n1], &SsTable::default()).unwrap();
        let mut m2 = [0u8; 256];
        let (n2, _) = resp
            .write_response(None, ResponsePayload::Mismatch { theirs: 9 }, &mut m2)
            .unwrap();
        assert_eq!(hs.read_response(&m2[..n2]).unwrap_err(), NoiseError::Auth);
    }

    #[test]
    fn network_id_is_bound() {
        let (a, b) = ids(b"lab", b"prod");
        let mut m1 = [0u8; 256];
        let (_, n1) = a
            .initiate(b.public_key(), None, None, payload(1), &mut m1)
            .unwrap();
        assert_eq!(
            b.read_initiation(&m1[..n1], &SsTable::default())
                .unwrap_err(),
            NoiseError::Auth
        );
    }

    #[test]
    fn tampered_initiation_and_response_refused_then_genuine_ok() {
        let (a, b) = ids(b"n", b"n");
        let mut m1 = [0u8; 256];
        let (mut hs, n1) = a
            .initiate(b.public_key(), None, None, payload(1), &mut m1)
            .unwrap();
        for i in 0..n1 * 8 {
            let mut t = m1;
            t[i / 8] ^= 1 << (i % 8);
            assert!(
                b.read_initiation(&t[..n1], &SsTable::default()).is_err(),
                "bit {i}"
            );
        }
        let (resp, _, _) = b.read_initiation(&m1[..n1], &SsTable::default()).unwrap();
        let mut m2 = [0u8; 256];
        let (n2, _) = resp
            .write_response(None, ResponsePayload::Accepted(Suite::Aes256Gcm), &mut m2)
            .unwrap();
        let mut t = m2;
        t[40] ^= 0x10;
        assert!(hs.read_response(&t[..n2]).is_err());
        assert!(hs.read_response(&m2[..n2]).is_ok());
    }

    #[test]
    fn tai64n_orders_like_time() {
        let a = Tai64N::from_unix(Duration::new(100, 999_999_999));
        let b = Tai64N::from_unix(Duration::new(101, 0));
        assert!(a < b);
        assert!(Tai64N::from_unix(Duration::new(101, 1)) > b);
    }

    #[test]
    fn response_payload_codec() {
        for p in [
            ResponsePayload::Accepted(Suite::Aes256Gcm),
            ResponsePayload::Mismatch { theirs: 2 },
        ] {
            assert_eq!(ResponsePayload::decode(&p.encode()).unwrap(), p);
        }
        assert!(ResponsePayload::decode(&[1, 2]).is_err());
        assert!(ResponsePayload::decode(&[7, 7]).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let (a, _) = ids(b"n", b"n");
        assert!(format!("{a:?}").contains("<redacted>"));
    }

    fn same_split(x: &SessionSecrets, y: &SessionSecrets) -> bool {
        x.initiator_to_responder.dangerous_as_bytes()
            == y.initiator_to_responder.dangerous_as_bytes()
            && x.responder_to_initiator.dangerous_as_bytes()
                == y.responder_to_initiator.dangerous_as_bytes()
    }

    /// A full handshake a → b; each side uses its precomputed `ss` or not.
    fn run(
        a: &NoiseIdentity,
        b: &NoiseIdentity,
        a_ss: Option<&PrecomputedSs>,
        b_table: &SsTable,
    ) -> Result<(SessionSecrets, SessionSecrets), NoiseError> {
        let psk = Psk::from_bytes([3; 32]);
        let mut m1 = [0u8; 256];
        let (mut hs, n1) = a.initiate(b.public_key(), a_ss, Some(&psk), payload(9), &mut m1)?;
        let (resp, who, _) = b.read_initiation(&m1[..n1], b_table)?;
        assert_eq!(&who, a.public_key());
        let mut m2 = [0u8; 256];
        let accepted = ResponsePayload::Accepted(Suite::Aes256Gcm);
        let (n2, rs) = resp.write_response(Some(&psk), accepted, &mut m2)?;
        let (_, is) = hs.read_response(&m2[..n2])?;
        Ok((is, rs))
    }

    #[test]
    fn precomputed_and_computed_ss_interoperate() {
        let (a, b) = ids(b"n", b"n");
        let a_ss = a.precompute_ss(b.public_key()).unwrap();
        let mut b_table = SsTable::default();
        b_table.insert(b.precompute_ss(a.public_key()).unwrap());
        let empty = SsTable::default();
        // Every mix completes and both sides derive the same keys: the
        // cached value equals the DH it replaces on either side.
        for (ss, table) in [
            (Some(&a_ss), &b_table),
            (Some(&a_ss), &empty),
            (None, &b_table),
            (None, &empty),
        ] {
            let (is, rs) = run(&a, &b, ss, table).unwrap();
            assert!(same_split(&is, &rs));
        }
        // A value for another peer is ignored, not misused.
        let (c, _) = ids(b"n", b"n");
        let c_ss = a.precompute_ss(c.public_key()).unwrap();
        let (is, rs) = run(&a, &b, Some(&c_ss), &empty).unwrap();
        assert!(same_split(&is, &rs));
    }

    #[test]
    fn wrong_precomputed_value_breaks_the_handshake() {
        let (a, b) = ids(b"n", b"n");
        // Initiator side: its cached ss is really used.
        let wrong = PrecomputedSs::dangerous_from_parts(a.public_key(), b.public_key(), [7; 32]);
        assert_eq!(
            run(&a, &b, Some(&wrong), &SsTable::default()).err(),
            Some(NoiseError::Auth)
        );
        // Responder side: the table's value is really used.
        let mut table = SsTable::default();
        table.insert(PrecomputedSs::dangerous_from_parts(
            b.public_key(),
            a.public_key(),
            [7; 32],
        ));
        assert_eq!(run(&a, &b, None, &table).err(), Some(NoiseError::Auth));
    }

    /// A raw snow state with snow's default resolver (x25519-dalek).
    fn default_snow(
        private: &PrivateKey,
        remote: Option<&PublicKey>,
        prologue: &[u8],
        psk: &[u8; 32],
        fixed_ephemeral: Option<&[u8; 32]>,
    ) -> snow::HandshakeState {
        let mut b = snow::Builder::new(NOISE_PARAMS.parse().unwrap())
            .local_private_key(private.dangerous_as_bytes())
            .unwrap()
            .prologue(prologue)
            .unwrap();
        if let Some(e) = fixed_ephemeral {
            b = b.fixed_ephemeral_key_for_testing_only(e);
        }
        match remote {
            Some(r) => b
                .remote_public_key(r.as_bytes())
                .unwrap()
                .psk(PSK_LOCATION as u8, psk)
                .unwrap()
                .build_initiator()
                .unwrap(),
            None => b.build_responder().unwrap(),
        }
    }

    #[test]
    fn wire_compatible_with_snows_default_resolver_both_ways() {
        let net = b"n";
        let prologue = [PROLOGUE_PREFIX, &net[..]].concat();
        let psk = Psk::from_bytes([5; 32]);
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let (pa, pb) = (ka.public_key(), kb.public_key());
        let ours_a = NoiseIdentity::new(PrivateKey::from_bytes(*ka.dangerous_as_bytes()), net);
        let ours_b = NoiseIdentity::new(PrivateKey::from_bytes(*kb.dangerous_as_bytes()), net);
        let accepted = ResponsePayload::Accepted(Suite::ChaCha20Poly1305);

        // vxsec (aws-lc, precomputed ss) initiates, default snow responds.
        let ss = ours_a.precompute_ss(&pb).unwrap();
        let mut m1 = [0u8; 256];
        let (mut hs, n1) = ours_a
            .initiate(&pb, Some(&ss), Some(&psk), payload(4), &mut m1)
            .unwrap();
        let mut r = default_snow(&kb, None, &prologue, psk.dangerous_as_bytes(), None);
        let mut body = [0u8; 256];
        let n = r.read_message(&m1[..n1], &mut body).unwrap();
        assert_eq!(&body[..TIMESTAMP_LEN], payload(4).timestamp.as_bytes());
        assert_eq!(n, INITIATION_PAYLOAD_LEN);
        r.set_psk(PSK_LOCATION, psk.dangerous_as_bytes()).unwrap();
        let mut m2 = [0u8; 256];
        let n2 = r.write_message(&accepted.encode(), &mut m2).unwrap();
        let (got, is) = hs.read_response(&m2[..n2]).unwrap();
        assert_eq!(got, accepted);
        assert!(same_split(&is, &split(&mut r)));

        // Default snow initiates, vxsec (aws-lc, precomputed ss) responds.
        let mut table = SsTable::default();
        table.insert(ours_b.precompute_ss(&pa).unwrap());
        let mut i = default_snow(&ka, Some(&pb), &prologue, psk.dangerous_as_bytes(), None);
        let mut body = [0u8; INITIATION_PAYLOAD_LEN];
        body[..TIMESTAMP_LEN].copy_from_slice(payload(6).timestamp.as_bytes());
        body[TIMESTAMP_LEN] = payload(6).suite_id;
        let n1 = i.write_message(&body, &mut m1).unwrap();
        let (resp, who, p) = ours_b.read_initiation(&m1[..n1], &table).unwrap();
        assert_eq!((who, p), (pa, payload(6)));
        let (n2, rs) = resp.write_response(Some(&psk), accepted, &mut m2).unwrap();
        let mut out = [0u8; 256];
        let n = i.read_message(&m2[..n2], &mut out).unwrap();
        assert_eq!(ResponsePayload::decode(&out[..n]).unwrap(), accepted);
        assert!(same_split(&split(&mut i), &rs));
    }

    /// An initiator whose ephemeral public key equals a configured peer's
    /// static key must get the honest `es`: the responder consults its
    /// cache only at `ss`. (Were it consulted at `es`, the wrong cached
    /// value below would break the handshake.)
    #[test]
    fn cache_is_not_consulted_for_an_ephemeral_equal_to_a_peer_static() {
        let net = b"n";
        let prologue = [PROLOGUE_PREFIX, &net[..]].concat();
        let (kp, km) = (PrivateKey::generate(), PrivateKey::generate());
        let responder = NoiseIdentity::new(PrivateKey::generate(), net);
        let mut table = SsTable::default();
        table.insert(PrecomputedSs::dangerous_from_parts(
            responder.public_key(),
            &kp.public_key(),
            [9; 32],
        ));
        // M uses P's static private key as its ephemeral: e = P's public key.
        let mut m = default_snow(
            &km,
            Some(responder.public_key()),
            &prologue,
            &ZERO_PSK,
            Some(kp.dangerous_as_bytes()),
        );
        let mut m1 = [0u8; 256];
        let n1 = m
            .write_message(&[0u8; INITIATION_PAYLOAD_LEN], &mut m1)
            .unwrap();
        assert_eq!(&m1[..32], kp.public_key().as_bytes());
        let (_, who, _) = responder.read_initiation(&m1[..n1], &table).unwrap();
        assert_eq!(who, km.public_key());
    }
}
