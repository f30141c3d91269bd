//! The nftables part of transparent mode's guards: two sets of the peers'
//! underlay addresses (`peers4`, `peers6`) in `table inet vxsec`, an
//! output rule per family dropping UDP to the VXLAN port for those
//! addresses unless it leaves through the TUN, and one rule for VXLAN to
//! other underlay addresses (nodes without vxsec): counted and let through
//! (`transparent_unknown = "cleartext"`) or dropped (`"drop"`). The sets
//! are refilled in one transaction whenever the peers change; like every
//! guard they stay when the agent stops. Builds documents only; `io::nft`
//! applies them.

use std::borrow::Cow;
use std::net::IpAddr;

use nftables::expr::Expression;
use nftables::schema::{
    Element, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Set, SetType, SetTypeValue,
};
use nftables::stmt::{Counter, Operator, Statement};
use nftables::types::NfFamily;

use super::rules::{matches, meta, payload};
use super::{GuardSpec, TransparentGuard, OUTPUT_CHAIN, TABLE};
use crate::agent::config::TransparentUnknown;
use nftables::expr::MetaKey;

/// The sets of peers' underlay addresses, per family.
pub const PEERS4: &str = "peers4";
pub const PEERS6: &str = "peers6";

fn set(name: &'static str, t: SetType) -> Set<'static> {
    Set {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        set_type: SetTypeValue::Single(t),
        ..Set::default()
    }
}

impl GuardSpec {
    /// Comments of the transparent-mode output rules (empty in route mode).
    pub(super) fn transparent_comments(&self) -> Vec<String> {
        let Some(t) = &self.transparent else {
            return Vec::new();
        };
        let (port, tun) = (self.vxlan_port, &self.tun);
        let unknown = match t.unknown {
            TransparentUnknown::Cleartext => {
                format!("vxsec: UDP/{port} to non-peers leaves in cleartext (counted)")
            }
            TransparentUnknown::Drop => {
                format!("vxsec: UDP/{port} to non-peers dropped unless through {tun}")
            }
        };
        vec![
            format!("vxsec: UDP/{port} to @{PEERS4} leaves only through {tun}"),
            format!("vxsec: UDP/{port} to @{PEERS6} leaves only through {tun}"),
            unknown,
        ]
    }

    /// The sets and output rules of transparent mode, for [`GuardSpec::ruleset`].
    pub(super) fn transparent_objects(&self) -> Vec<NfObject<'static>> {
        let Some(t) = &self.transparent else {
            return Vec::new();
        };
        let comments = self.transparent_comments();
        let port = || {
            matches(
                payload("udp", "dport"),
                Operator::EQ,
                Expression::Number(u32::from(self.vxlan_port)),
            )
        };
        let not_tun = || {
            matches(
                meta(MetaKey::Oifname),
                Operator::NEQ,
                Expression::String(self.tun.clone().into()),
            )
        };
        let to_set = |l3: &'static str, name: &'static str| {
            matches(
                payload(l3, "daddr"),
                Operator::EQ,
                Expression::String(format!("@{name}").into()),
            )
        };
        let counter = || Statement::Counter(Counter::Anonymous(None));
        let mut unknown = vec![port(), not_tun(), counter()];
        if t.unknown == TransparentUnknown::Drop {
            unknown.push(Statement::Drop(None));
        }
        let rules = [
            vec![
                to_set("ip", PEERS4),
                port(),
                not_tun(),
                counter(),
                Statement::Drop(None),
            ],
            vec![
                to_set("ip6", PEERS6),
                port(),
                not_tun(),
                counter(),
                Statement::Drop(None),
            ],
            unknown,
        ];
        let add = |o| NfObject::CmdObject(NfCmd::Add(o));
        let mut out = vec![
            add(NfListObject::Set(Box::new(set(PEERS4, SetType::Ipv4Addr)))),
            add(NfListObject::Set(Box::new(set(PEERS6, SetType::Ipv6Addr)))),
        ];
        for (expr, comment) in rules.into_iter().zip(comments) {
            out.push(add(NfListObject::Rule(nftables::schema::Rule {
                family: NfFamily::INet,
                table: TABLE.into(),
                chain: OUTPUT_CHAIN.into(),
                expr: expr.into(),
                handle: None,
                index: None,
                comment: Some(comment.into()),
            })));
        }
        out
    }
}

/// One transaction making the peer sets exactly `peers` (flush, then add):
/// no moment with an empty set in between.
pub fn peer_set_doc(peers: &[IpAddr]) -> Nftables<'static> {
    let mut objects = Vec::new();
    for (name, t, v6) in [
        (PEERS4, SetType::Ipv4Addr, false),
        (PEERS6, SetType::Ipv6Addr, true),
    ] {
        objects.push(NfObject::CmdObject(NfCmd::Flush(FlushObject::Set(
            Box::new(set(name, t)),
        ))));
        let elem: Vec<Expression<'static>> = peers
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(|a| Expression::String(a.to_string().into()))
            .collect();
        if !elem.is_empty() {
            objects.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Element(
                Element {
                    family: NfFamily::INet,
                    table: TABLE.into(),
                    name: name.into(),
                    elem: Cow::Owned(elem),
                },
            ))));
        }
    }
    Nftables {
        objects: Cow::Owned(objects),
    }
}

impl TransparentGuard {
    /// Peers' underlay addresses, IPv4-mapped IPv6 as IPv4, sorted, unique.
    pub fn normalized(peers: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = peers
            .into_iter()
            .map(|a| match a {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
                v4 => v4,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
