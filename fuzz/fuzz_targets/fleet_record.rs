#![no_main]
//! Fleet records from the store: arbitrary bytes never panic the
//! certificate parser or the fleet view; whatever parses re-encodes to the
//! same bytes; and nothing the fuzzer makes is accepted under an authority
//! whose private key it cannot know (generated per run).
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vxsec::fleet::authority::{Authority, AuthorityKey};
use vxsec::fleet::cert::SignedCert;
use vxsec::fleet::view::{record_key, FleetView};
use vxsec_crypto::key::PublicKey;

fn authority() -> AuthorityKey {
    static A: OnceLock<AuthorityKey> = OnceLock::new();
    *A.get_or_init(|| Authority::generate().expect("key").public_key())
}

fuzz_target!(|data: &[u8]| {
    if let Ok((cert, signed)) = SignedCert::parse(data) {
        assert_eq!(cert.encode().expect("a parsed certificate encodes"), data);
        assert_eq!(signed.len() + 64, data.len());
    }
    let now = 1_750_000_000;
    assert!(
        authority().verify(data, "prod", now).is_err(),
        "forged record accepted"
    );
    let mut view = FleetView::new(
        authority(),
        "/vxsec",
        "prod",
        PublicKey::from_bytes([1; 32]),
        "10.200.0.1/16".parse().expect("cidr"),
    );
    let key = record_key("/vxsec", "prod", "10.200.0.5".parse().expect("ip"));
    assert!(view.handle_put(&key, data, now).is_empty());
    assert_eq!(view.peer_count(), 0);
    assert_eq!(view.counters.rejected.values().sum::<u64>(), 1);
});
