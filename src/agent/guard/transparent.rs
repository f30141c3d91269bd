//! The nftables part of transparent mode's guards: two sets of the peers'
//! underlay addresses (`peers4`, `peers6`) in `table inet vxsec`, an
//! output rule per family dropping UDP to the VXLAN port for those
//! addresses unless it leaves through the TUN, and one rule for VXLAN to
//! other underlay addresses (nodes without vxsec): counted and let through
//! (`transparent_unknown = "cleartext"`) or dropped (`"drop"`). With
//! `"cleartext"` the input side is the mirror image (VXLAN *from* a peer's
//! address is accepted only from the TUN, from other nodes it is counted
//! and accepted) instead of the route-mode rule that accepts VXLAN only
//! from the TUN, which stays with `"drop"`. The sets
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

use super::rules::{matches, meta, payload, rule};
use super::spec::{GuardSpec, TransparentGuard, INPUT_CHAIN, OUTPUT_CHAIN, TABLE};
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
    /// Whether transparent mode replaces the route-mode input rule (with
    /// `transparent_unknown = "cleartext"`: VXLAN from nodes without vxsec
    /// must get in).
    pub(super) fn transparent_input(&self) -> bool {
        self.transparent
            .as_ref()
            .is_some_and(|t| t.unknown == TransparentUnknown::Cleartext)
    }

    /// (chain, comment) of the transparent-mode rules (empty in route mode).
    pub(super) fn transparent_comments(&self) -> Vec<(&'static str, String)> {
        let Some(t) = &self.transparent else {
            return Vec::new();
        };
        let (port, tun) = (self.vxlan_port, &self.tun);
        let mut v = vec![
            (
                OUTPUT_CHAIN,
                format!("vxsec: UDP/{port} to @{PEERS4} leaves only through {tun}"),
            ),
            (
                OUTPUT_CHAIN,
                format!("vxsec: UDP/{port} to @{PEERS6} leaves only through {tun}"),
            ),
        ];
        match t.unknown {
            TransparentUnknown::Cleartext => v.extend([
                (
                    OUTPUT_CHAIN,
                    format!("vxsec: UDP/{port} to non-peers leaves in cleartext (counted)"),
                ),
                (
                    INPUT_CHAIN,
                    format!("vxsec: UDP/{port} from @{PEERS4} accepted only from {tun}"),
                ),
                (
                    INPUT_CHAIN,
                    format!("vxsec: UDP/{port} from @{PEERS6} accepted only from {tun}"),
                ),
                (
                    INPUT_CHAIN,
                    format!("vxsec: UDP/{port} from non-peers accepted in cleartext (counted)"),
                ),
            ]),
            TransparentUnknown::Drop => v.push((
                OUTPUT_CHAIN,
                format!("vxsec: UDP/{port} to non-peers dropped unless through {tun}"),
            )),
        }
        v
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
        let not_tun = |key: MetaKey| {
            matches(
                meta(key),
                Operator::NEQ,
                Expression::String(self.tun.clone().into()),
            )
        };
        let in_set = |l3: &'static str, field: &'static str, name: &'static str| {
            matches(
                payload(l3, field),
                Operator::EQ,
                Expression::String(format!("@{name}").into()),
            )
        };
        let counter = || Statement::Counter(Counter::Anonymous(None));
        let drop = || Statement::Drop(None);
        let (oif, iif) = (MetaKey::Oifname, MetaKey::Iifname);
        let mut rules = vec![
            vec![
                in_set("ip", "daddr", PEERS4),
                port(),
                not_tun(oif),
                counter(),
                drop(),
            ],
            vec![
                in_set("ip6", "daddr", PEERS6),
                port(),
                not_tun(oif),
                counter(),
                drop(),
            ],
        ];
        match t.unknown {
            TransparentUnknown::Cleartext => rules.extend([
                vec![port(), not_tun(oif), counter()],
                vec![
                    in_set("ip", "saddr", PEERS4),
                    port(),
                    not_tun(iif),
                    counter(),
                    drop(),
                ],
                vec![
                    in_set("ip6", "saddr", PEERS6),
                    port(),
                    not_tun(iif),
                    counter(),
                    drop(),
                ],
                vec![port(), not_tun(iif), counter()],
            ]),
            TransparentUnknown::Drop => rules.push(vec![port(), not_tun(oif), counter(), drop()]),
        }
        let add = |o| NfObject::CmdObject(NfCmd::Add(o));
        let mut out = vec![
            add(NfListObject::Set(Box::new(set(PEERS4, SetType::Ipv4Addr)))),
            add(NfListObject::Set(Box::new(set(PEERS6, SetType::Ipv6Addr)))),
        ];
        for (expr, (chain, comment)) in rules.into_iter().zip(comments) {
            out.push(add(NfListObject::Rule(rule(chain, expr, comment))));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::TunnelCidr;
    use crate::agent::guard::{GuardState, RuleState};

    fn spec(unknown: Option<TransparentUnknown>) -> GuardSpec {
        GuardSpec {
            tun: "vxsec0".into(),
            prefix: TunnelCidr {
                addr: "10.200.0.0".parse().expect("ip"),
                prefix: 16,
            },
            vxlan_port: 4789,
            transparent: unknown.map(|unknown| TransparentGuard {
                peers: vec!["192.0.2.2".parse().expect("ip")],
                unknown,
            }),
        }
    }

    #[test]
    fn transparent_adds_peer_sets_and_one_drop_rule_per_family() {
        let route = serde_json::to_string(&spec(None).ruleset()).expect("json");
        assert!(!route.contains("peers4"), "{route}");
        let doc = serde_json::to_value(spec(Some(TransparentUnknown::Cleartext)).ruleset())
            .expect("json");
        let text = doc.to_string();
        assert!(text.contains(r#""right":"@peers4""#), "{text}");
        assert!(text.contains(r#""right":"@peers6""#), "{text}");
        let cmds = doc["nftables"].as_array().expect("array");
        let rules = |chain: &str| -> Vec<serde_json::Value> {
            cmds.iter()
                .filter_map(|c| c["add"].get("rule"))
                .filter(|r| r["chain"] == chain)
                .cloned()
                .collect()
        };
        let out = rules(OUTPUT_CHAIN);
        assert_eq!(out.len(), 4, "prefix, peers4, peers6, non-peers: {text}");
        let drops = |r: &serde_json::Value| r["expr"].to_string().contains(r#""drop""#);
        assert!(out[..3].iter().all(drops), "{text}");
        assert!(!drops(&out[3]), "cleartext to non-peers is only counted");
        let inp = rules(INPUT_CHAIN);
        assert_eq!(inp.len(), 3, "from peers4, peers6, non-peers: {text}");
        assert!(inp[0]["expr"].to_string().contains(r#""saddr""#), "{text}");
        assert!(inp[..2].iter().all(drops) && !drops(&inp[2]), "{text}");
        let strict =
            serde_json::to_value(spec(Some(TransparentUnknown::Drop)).ruleset()).expect("json");
        let strict_rules: Vec<&serde_json::Value> = strict["nftables"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .collect();
        assert_eq!(strict_rules.len(), 5, "{strict}");
        assert!(strict_rules.iter().all(|r| drops(r)), "{strict}");
        let input: Vec<_> = strict_rules
            .iter()
            .filter(|r| r["chain"] == INPUT_CHAIN)
            .collect();
        assert_eq!(input.len(), 1, "route mode's input rule: {strict}");
    }

    #[test]
    fn a_route_mode_table_is_not_adopted_in_transparent_mode() {
        let (route, tp) = (spec(None), spec(Some(TransparentUnknown::Cleartext)));
        let state = |s: &GuardSpec| GuardState {
            routes: vec![],
            table: true,
            chains: vec![
                "output hook output prio 0".into(),
                "input hook input prio -10".into(),
            ],
            rules: s
                .rule_comments()
                .into_iter()
                .map(|(chain, comment)| RuleState {
                    chain: chain.into(),
                    comment,
                    packets: 0,
                })
                .collect(),
        };
        assert!(route.table_matches(&state(&route)));
        assert!(tp.table_matches(&state(&tp)));
        assert!(
            !tp.table_matches(&state(&route)),
            "switching mode replaces the table"
        );
        assert!(!route.table_matches(&state(&tp)));
        let strict = spec(Some(TransparentUnknown::Drop));
        assert!(!strict.table_matches(&state(&tp)));
    }

    #[test]
    fn peer_sets_are_refilled_in_one_transaction() {
        let peers = TransparentGuard::normalized([
            "::ffff:192.0.2.9".parse().expect("ip"),
            "fd00:77::2".parse().expect("ip"),
            "192.0.2.9".parse().expect("ip"),
        ]);
        assert_eq!(peers.len(), 2, "mapped IPv4 is IPv4: {peers:?}");
        let doc = serde_json::to_value(peer_set_doc(&peers)).expect("json");
        let cmds = doc["nftables"].as_array().expect("array");
        assert_eq!(cmds.len(), 4, "{doc}");
        assert_eq!(cmds[0]["flush"]["set"]["name"], PEERS4);
        assert_eq!(cmds[1]["add"]["element"]["elem"][0], "192.0.2.9");
        assert_eq!(cmds[2]["flush"]["set"]["name"], PEERS6);
        assert_eq!(cmds[3]["add"]["element"]["elem"][0], "fd00:77::2");
        let empty = serde_json::to_value(peer_set_doc(&[])).expect("json");
        assert_eq!(
            empty["nftables"].as_array().map(Vec::len),
            Some(2),
            "flush only"
        );
    }
}
