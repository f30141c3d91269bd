//! Cross-field checks of a parsed [`Config`] that serde cannot express:
//! interface name, MTU and worker bounds, mode-dependent fields, unique peer
//! keys and addresses. Each failure returns the byte span, dotted field and
//! message that `error` turns into a located error.

use std::collections::HashSet;
use std::ops::Range;

use vxsec_crypto::suite::Suite;

use super::error::field_span;
use super::{Config, Mode, TransparentUnknown, MAX_BUSY_POLL_US, MAX_WORKERS};

impl Config {
    /// Cross-field checks that serde cannot express.
    pub(super) fn validate(&self, text: &str) -> Result<(), (Range<usize>, String, String)> {
        let i = &self.interface;
        let name = i.name.get_ref();
        if name.is_empty()
            || name.len() > 15
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err((
                i.name.span(),
                "interface.name".into(),
                format!("`{name}` is not a valid interface name (1-15 of [A-Za-z0-9._-])"),
            ));
        }
        let suite = i.suite.unwrap_or_else(Suite::preferred);
        if let Err(e) = self
            .rotation
            .validate(suite)
            .and_then(|()| self.timers.validate())
        {
            return Err((field_span(text, e.field), e.field.to_string(), e.reason));
        }
        if let Some(m) = &i.mtu {
            if !(576..=65_000).contains(m.get_ref()) {
                return Err((
                    m.span(),
                    "interface.mtu".into(),
                    "must be 576..=65000".into(),
                ));
            }
        }
        if let Some(m) = &i.underlay_mtu {
            if !(576..=65_535).contains(m.get_ref()) {
                return Err((
                    m.span(),
                    "interface.underlay_mtu".into(),
                    "must be 576..=65535".into(),
                ));
            }
        }
        if let Some(w) = &i.workers {
            if !(1..=MAX_WORKERS).contains(w.get_ref()) {
                return Err((
                    w.span(),
                    "interface.workers".into(),
                    format!("must be 1..={MAX_WORKERS}"),
                ));
            }
        }
        if let Some(b) = &i.busy_poll_us {
            if *b.get_ref() > MAX_BUSY_POLL_US {
                return Err((
                    b.span(),
                    "interface.busy_poll_us".into(),
                    format!("must be 0..={MAX_BUSY_POLL_US} (µs)"),
                ));
            }
        }
        let transparent = i.mode == Mode::Transparent;
        if !transparent && self.policy.transparent_unknown != TransparentUnknown::Cleartext {
            return Err((
                field_span(text, "policy.transparent_unknown"),
                "policy.transparent_unknown".into(),
                "applies only with interface.mode = \"transparent\"".into(),
            ));
        }
        if let Some(f) = &self.fleet {
            f.validate()?;
        }
        let own = i.address.get_ref();
        let mut keys = HashSet::new();
        let mut addrs = HashSet::new();
        let mut underlays = HashSet::new();
        for (n, p) in self.peers.iter().enumerate() {
            let field = |f: &str| format!("peer[{n}].{f}");
            if !keys.insert(*p.public_key.get_ref()) {
                return Err((
                    p.public_key.span(),
                    field("public_key"),
                    "the same public key is listed twice".into(),
                ));
            }
            let ta = *p.tunnel_address.get_ref();
            if ta == own.addr {
                return Err((
                    p.tunnel_address.span(),
                    field("tunnel_address"),
                    "is this node's own tunnel address".into(),
                ));
            }
            if !own.contains(ta) {
                return Err((
                    p.tunnel_address.span(),
                    field("tunnel_address"),
                    format!("{ta} is outside the interface prefix {own}"),
                ));
            }
            if !addrs.insert(ta) {
                return Err((
                    p.tunnel_address.span(),
                    field("tunnel_address"),
                    "two peers have the same tunnel address".into(),
                ));
            }
            if transparent {
                let Some(e) = p.endpoint else {
                    return Err((
                        p.public_key.span(),
                        field("endpoint"),
                        "interface.mode = \"transparent\" needs every peer's endpoint: \
                         its IP is the underlay address the overlay sends VXLAN to"
                            .into(),
                    ));
                };
                if !underlays.insert(e.ip()) {
                    return Err((
                        p.public_key.span(),
                        field("endpoint"),
                        format!("two peers have the underlay address {} (transparent mode finds peers by it)", e.ip()),
                    ));
                }
            }
            if let Some(v) = &p.allowed_vnis {
                if let Some(bad) = v.get_ref().iter().find(|&&x| x >= 1 << 24) {
                    return Err((
                        v.span(),
                        field("allowed_vnis"),
                        format!("VNI {bad} does not fit in 24 bits"),
                    ));
                }
            }
        }
        Ok(())
    }
}
