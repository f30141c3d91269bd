#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use proptest::prelude::*;

/// A deterministic snow RNG (tests only).
struct CountingRng(u8);
impl Random for CountingRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        for b in dest {
            self.0 = self.0.wrapping_mul(31).wrapping_add(7);
            *b = self.0;
        }
        Ok(())
    }
}

fn dh_obj(resolver: &NoiseResolver) -> Box<dyn Dh> {
    resolver.resolve_dh(&DHChoice::Curve25519).unwrap()
}

/// Our Dh with `scalar` loaded, applied to `u`.
fn ours(scalar: [u8; 32], u: [u8; 32]) -> Result<[u8; 32], snow::Error> {
    let mut dh = dh_obj(&NoiseResolver::new());
    dh.set(&scalar);
    // snow passes its whole key buffer: longer than 32 bytes.
    let mut peer = [0xa5u8; 56];
    peer[..32].copy_from_slice(&u);
    let mut out = [0u8; 56];
    dh.dh(&peer, &mut out)?;
    assert_eq!(out[32..], [0u8; 24], "wrote past the DH length");
    Ok(out[..32].try_into().unwrap())
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// p = 2^255 - 19, little-endian, plus `k` (k < 19 keeps it below 2^255).
fn p_plus(k: u8) -> [u8; 32] {
    let mut u = [0xffu8; 32];
    u[0] = 0xed + k;
    u[31] = 0x7f;
    u
}

/// The u-coordinates whose X25519 result is zero for every scalar
/// (RFC 7748 §6.1; the list WireGuard and libsodium refuse).
fn low_order_points() -> Vec<[u8; 32]> {
    let mut v = vec![
        [0u8; 32],
        {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        },
        hex32("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        hex32("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        {
            let mut pm1 = p_plus(0);
            pm1[0] = 0xec;
            pm1
        },
        p_plus(0),
        p_plus(1),
    ];
    // The same points with the (ignored) top bit set.
    let high: Vec<_> = v
        .iter()
        .map(|u| {
            let mut h = *u;
            h[31] |= 0x80;
            h
        })
        .collect();
    v.extend(high);
    v
}

/// Random u, the non-canonical encodings p..p+18 and values with the top bit set.
fn any_u() -> impl Strategy<Value = [u8; 32]> {
    prop_oneof![
        any::<[u8; 32]>(),
        (0u8..19).prop_map(p_plus),
        (0u8..19).prop_map(|k| {
            let mut u = p_plus(k);
            u[31] |= 0x80;
            u
        }),
        any::<[u8; 32]>().prop_map(|mut u| {
            u[31] |= 0x80;
            u
        }),
    ]
}

proptest! {
    #[test]
    fn dh_equals_x25519_dalek(scalar in any::<[u8; 32]>(), u in any_u()) {
        let want = x25519_dalek::x25519(scalar, u);
        match ours(scalar, u) {
            Ok(got) => prop_assert_eq!(got, want),
            Err(_) => prop_assert_eq!(want, [0u8; 32], "refused a valid point"),
        }
    }

    #[test]
    fn set_derives_the_dalek_public_key(scalar in any::<[u8; 32]>()) {
        let mut dh = dh_obj(&NoiseResolver::new());
        dh.set(&scalar);
        let want = x25519_dalek::x25519(scalar, x25519_dalek::X25519_BASEPOINT_BYTES);
        prop_assert_eq!(dh.pubkey(), &want[..]);
        prop_assert_eq!(dh.privkey(), &scalar[..]);
    }
}

#[test]
fn rfc7748_vector() {
    // RFC 7748 §5.2, first vector.
    let k = hex32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
    let u = hex32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
    let r = hex32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
    assert_eq!(ours(k, u).unwrap(), r);
}

#[test]
fn generate_uses_snow_rng_and_matches_dalek() {
    let mut dh = dh_obj(&NoiseResolver::new());
    dh.generate(&mut CountingRng(3)).unwrap();
    let mut expect = [0u8; 32];
    CountingRng(3).try_fill_bytes(&mut expect).unwrap();
    assert_eq!(dh.privkey(), &expect[..]);
    let want = x25519_dalek::x25519(expect, x25519_dalek::X25519_BASEPOINT_BYTES);
    assert_eq!(dh.pubkey(), &want[..]);
}

#[test]
fn low_order_points_are_refused() {
    let scalar = [0x42u8; 32];
    let sk = PrivateKey::from_bytes(scalar);
    let local = StaticKeyPair::new(&sk).unwrap();
    for u in low_order_points() {
        assert_eq!(x25519_dalek::x25519(scalar, u), [0u8; 32], "{u:02x?}");
        // aws-lc itself refuses them (our zero check is a second line).
        let lc = agreement::PrivateKey::from_private_key(&agreement::X25519, &scalar).unwrap();
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, &u);
        assert!(
            agreement::agree(&lc, peer, (), |_| Ok(())).is_err(),
            "{u:02x?}"
        );
        assert_eq!(ours(scalar, u), Err(snow::Error::Dh), "{u:02x?}");
        let remote = PublicKey::from_bytes(u);
        assert_eq!(local.precompute_ss(&remote).unwrap_err(), DhError::LowOrder);
    }
}

#[test]
fn static_key_is_shared_not_reloaded_and_other_keys_still_work() {
    let sk = PrivateKey::from_bytes([9u8; 32]);
    let local = StaticKeyPair::new(&sk).unwrap();
    assert_eq!(local.public_key(), sk.public_key());
    let resolver = NoiseResolver::with_static(&local);
    let mut dh = dh_obj(&resolver);
    dh.set(sk.dangerous_as_bytes());
    assert_eq!(dh.pubkey(), sk.public_key().as_bytes());
    // The Dh holds the loaded key, not a copy.
    assert_eq!(Arc::strong_count(&local.0), 3, "identity, resolver, Dh");
    // Different bytes through the same resolver: loaded afresh and correct.
    let other = [0x11u8; 32];
    dh.set(&other);
    let want = x25519_dalek::x25519(other, x25519_dalek::X25519_BASEPOINT_BYTES);
    assert_eq!(dh.pubkey(), &want[..]);
    assert_eq!(Arc::strong_count(&local.0), 2, "identity, resolver");
}

#[test]
fn precompute_equals_the_dh_it_replaces() {
    let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
    let la = StaticKeyPair::new(&a).unwrap();
    let lb = StaticKeyPair::new(&b).unwrap();
    let ab = la.precompute_ss(&b.public_key()).unwrap();
    let ba = lb.precompute_ss(&a.public_key()).unwrap();
    assert_eq!(*ab.shared, *ba.shared);
    assert_eq!(
        *ab.shared,
        x25519_dalek::x25519(*a.dangerous_as_bytes(), *b.public_key().as_bytes())
    );
    assert_eq!(ab.remote(), &b.public_key());
}

#[test]
fn cache_answers_only_the_ss_call_for_the_exact_keys() {
    let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
    let la = StaticKeyPair::new(&a).unwrap();
    let (pa, pb) = (*a.public_key().as_bytes(), *b.public_key().as_bytes());
    let ss = la.precompute_ss(&b.public_key()).unwrap();
    let init = SsSource::Initiator(ss.duplicate());
    assert!(init.cached(1, &pa, &pb).is_some());
    assert!(init.cached(2, &pa, &pb).is_none(), "se is not ss");
    assert!(init.cached(1, &pa, &pa).is_none(), "other peer key");
    assert!(init.cached(1, &pb, &pb).is_none(), "other local key");
    let mut table = SsTable::default();
    table.insert(ss);
    let resp = SsSource::Responder(Arc::clone(&table.0));
    assert!(resp.cached(1, &pa, &pb).is_none(), "es takes the ephemeral");
    assert!(resp.cached(2, &pa, &pb).is_some());
    assert!(resp.cached(3, &pa, &pb).is_none());
    assert!(resp.cached(2, &pa, &pa).is_none());
    assert!(SsSource::None.cached(1, &pa, &pb).is_none());
}

#[test]
fn table_insert_remove_and_snapshots() {
    let local = StaticKeyPair::new(&PrivateKey::generate()).unwrap();
    let (b, c) = (
        PrivateKey::generate().public_key(),
        PrivateKey::generate().public_key(),
    );
    let mut t = SsTable::default();
    assert!(t.is_empty());
    t.insert(local.precompute_ss(&b).unwrap());
    let snapshot = Arc::clone(&t.0);
    t.insert(local.precompute_ss(&c).unwrap());
    assert_eq!(
        (t.len(), snapshot.len()),
        (2, 1),
        "a snapshot is not changed"
    );
    assert!(t.remove(&b));
    assert!(!t.remove(&b));
    assert!(t.get(&b).is_none() && t.get(&c).is_some());
    assert!(snapshot.contains_key(&b));
}

#[test]
fn debug_is_redacted() {
    let sk = PrivateKey::from_bytes([0xabu8; 32]);
    let local = StaticKeyPair::new(&sk).unwrap();
    let ss = local
        .precompute_ss(&PrivateKey::generate().public_key())
        .unwrap();
    let secret_hex = format!("{:02x?}", *ss.shared);
    let mut t = SsTable::default();
    let s_dbg = format!("{ss:?}");
    t.insert(ss);
    for s in [
        s_dbg,
        format!("{local:?}"),
        format!("{t:?}"),
        format!("{:?}", NoiseResolver::with_static(&local)),
    ] {
        assert!(s.contains("<redacted>"), "{s}");
        assert!(!s.contains("ab, ab") && !s.contains(&secret_hex), "{s}");
    }
}
