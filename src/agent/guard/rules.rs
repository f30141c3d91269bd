//! The nftables side of the guards: the one-transaction document that
//! (re)creates `table inet vxsec` with its two rules, and the check that a
//! table found in the kernel is exactly that (so a restart adopts it). It
//! talks to nothing; `io::nft` applies and lists.

use std::borrow::Cow;
use std::net::IpAddr;

use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::spec::{GuardSpec, GuardState, INPUT_CHAIN, OUTPUT_CHAIN, TABLE};

/// Input chain priority: before the usual `filter` (0) chains.
pub(super) const INPUT_PRIORITY: i32 = -10;
/// Output chain priority: `filter`.
pub(super) const OUTPUT_PRIORITY: i32 = 0;

/// One rule of `table inet vxsec` in `chain`, with its comment (the
/// comments are how a found table is recognised as ours).
pub(super) fn rule(
    chain: &'static str,
    expr: Vec<Statement<'static>>,
    comment: String,
) -> Rule<'static> {
    Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: chain.into(),
        expr: expr.into(),
        handle: None,
        index: None,
        comment: Some(comment.into()),
    }
}

impl GuardSpec {
    /// One transaction replacing `table inet vxsec` with exactly the guard
    /// rules (`add; delete; add` so that it works whether or not the table
    /// exists, with no moment without rules).
    pub fn ruleset(&self) -> Nftables<'static> {
        let table = || Table {
            family: NfFamily::INet,
            name: TABLE.into(),
            handle: None,
        };
        let chain = |name: &'static str, hook, prio| Chain {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: name.into(),
            _type: Some(NfChainType::Filter),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        };
        let (l3, prefix_addr) = match self.prefix.addr {
            IpAddr::V4(a) => ("ip", a.to_string()),
            IpAddr::V6(a) => ("ip6", a.to_string()),
        };
        let output = vec![
            matches(
                payload(l3, "daddr"),
                Operator::EQ,
                Expression::Named(NamedExpression::Prefix(Prefix {
                    addr: Box::new(Expression::String(prefix_addr.into())),
                    len: u32::from(self.prefix.prefix),
                })),
            ),
            matches(
                payload("udp", "dport"),
                Operator::EQ,
                Expression::Number(u32::from(self.vxlan_port)),
            ),
            matches(
                meta(MetaKey::Oifname),
                Operator::NEQ,
                Expression::String(self.tun.clone().into()),
            ),
            Statement::Counter(Counter::Anonymous(None)),
            Statement::Drop(None),
        ];
        let input = vec![
            matches(
                payload("udp", "dport"),
                Operator::EQ,
                Expression::Number(u32::from(self.vxlan_port)),
            ),
            matches(
                meta(MetaKey::Iifname),
                Operator::NEQ,
                Expression::String(self.tun.clone().into()),
            ),
            Statement::Counter(Counter::Anonymous(None)),
            Statement::Drop(None),
        ];
        let add = |o| NfObject::CmdObject(NfCmd::Add(o));
        let mut objects = vec![
            add(NfListObject::Table(table())),
            NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table()))),
            add(NfListObject::Table(table())),
            add(NfListObject::Chain(chain(
                OUTPUT_CHAIN,
                NfHook::Output,
                OUTPUT_PRIORITY,
            ))),
            add(NfListObject::Chain(chain(
                INPUT_CHAIN,
                NfHook::Input,
                INPUT_PRIORITY,
            ))),
            add(NfListObject::Rule(rule(
                OUTPUT_CHAIN,
                output,
                self.output_comment(),
            ))),
        ];
        if !self.transparent_input() {
            objects.push(add(NfListObject::Rule(rule(
                INPUT_CHAIN,
                input,
                self.input_comment(),
            ))));
        }
        objects.extend(self.transparent_objects());
        Nftables {
            objects: Cow::Owned(objects),
        }
    }

    /// Every rule of this spec's table, as (chain, comment).
    pub(super) fn rule_comments(&self) -> Vec<(&'static str, String)> {
        let mut want = vec![(OUTPUT_CHAIN, self.output_comment())];
        if !self.transparent_input() {
            want.push((INPUT_CHAIN, self.input_comment()));
        }
        want.extend(self.transparent_comments());
        want
    }

    /// Whether `state` is exactly this spec's guards (so a restart adopts
    /// it instead of replacing it, keeping its counters).
    pub(super) fn table_matches(&self, state: &GuardState) -> bool {
        let want_rules = self.rule_comments();
        let want_chains = [
            format!("{OUTPUT_CHAIN} hook output prio {OUTPUT_PRIORITY}"),
            format!("{INPUT_CHAIN} hook input prio {INPUT_PRIORITY}"),
        ];
        state.table
            && state.chains.len() == want_chains.len()
            && want_chains.iter().all(|c| state.chains.contains(c))
            && state.rules.len() == want_rules.len()
            && want_rules
                .iter()
                .all(|(c, m)| state.rules.iter().any(|r| r.chain == *c && r.comment == *m))
    }
}

pub(super) fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

pub(super) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

pub(super) fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::TunnelCidr;
    use crate::agent::guard::{RuleState, BLACKHOLE_METRIC};

    fn spec(addr: &str) -> GuardSpec {
        let cidr: TunnelCidr = addr.parse().expect("cidr");
        GuardSpec {
            tun: "vxsec0".into(),
            prefix: TunnelCidr {
                addr: cidr.network(),
                prefix: cidr.prefix,
            },
            vxlan_port: 4789,
            transparent: None,
        }
    }

    #[test]
    fn ruleset_is_an_atomic_replace_of_our_table_only() {
        let doc = serde_json::to_value(spec("10.200.0.1/16").ruleset()).expect("json");
        let text = doc.to_string();
        let cmds = doc["nftables"].as_array().expect("array");
        assert_eq!(cmds.len(), 7, "{text}");
        assert!(cmds[1]["delete"]["table"]["name"] == "vxsec", "{text}");
        assert!(
            text.contains(r#""daddr""#) && text.contains(r#""10.200.0.0""#),
            "{text}"
        );
        assert!(
            text.contains(r#""oifname""#) && text.contains(r#""iifname""#),
            "{text}"
        );
        assert!(text.contains("4789"), "{text}");
        for c in cmds {
            if let Some(t) = c["add"]["table"].as_object() {
                assert_eq!(t["name"], "vxsec");
            }
        }
    }

    #[test]
    fn ipv6_prefix_uses_ip6_daddr_and_the_network_address() {
        let s = spec("fd00:200::1/64");
        assert_eq!(s.blackhole().dst.to_string(), "fd00:200::");
        assert_eq!(s.blackhole().metric, BLACKHOLE_METRIC);
        let text = serde_json::to_string(&s.ruleset()).expect("json");
        assert!(text.contains(r#""protocol":"ip6""#), "{text}");
        assert!(s.output_comment().contains("fd00:200::/64"));
    }

    #[test]
    fn only_the_exact_table_is_adopted() {
        let s = spec("10.200.0.1/16");
        let good = GuardState {
            routes: vec![],
            table: true,
            chains: vec![
                "output hook output prio 0".into(),
                "input hook input prio -10".into(),
            ],
            rules: vec![
                RuleState {
                    chain: "output".into(),
                    comment: s.output_comment(),
                    packets: 3,
                },
                RuleState {
                    chain: "input".into(),
                    comment: s.input_comment(),
                    packets: 0,
                },
            ],
        };
        assert!(s.table_matches(&good));
        let mut dup = good.clone();
        dup.rules.push(dup.rules[0].clone());
        assert!(!s.table_matches(&dup), "a duplicate rule must be replaced");
        let other_port = GuardSpec {
            vxlan_port: 8472,
            ..s.clone()
        };
        assert!(!other_port.table_matches(&good));
        assert!(!s.table_matches(&GuardState::default()));
    }
}
