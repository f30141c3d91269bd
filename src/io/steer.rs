//! Policy routing for transparent mode over rtnetlink: `ip rule`s that send
//! UDP to one destination port to a routing table, and host routes through
//! a device in that table, each marked with a route protocol so that only
//! the agent's own are listed and removed. Blocking, like `io::route`
//! (whose private runtime it shares). It decides nothing: which rules and
//! routes the agent wants is `agent::guard::steer`'s business.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use rtnetlink::packet_route::{AddressFamily, IpProtocol};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use super::route::{kernel, link_index, with_handle, with_handle_raw};
use super::IoError;

/// `ip rule add priority P iif lo ipproto udp dport PORT lookup TABLE proto X`
/// (`iif lo`: only packets this host sends, not ones it forwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRule {
    pub v6: bool,
    /// `iif lo`: only locally sent packets.
    pub local_only: bool,
    pub dport: u16,
    pub table: u8,
    pub priority: u32,
}

impl std::fmt::Display for PortRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}rule {}: {}ipproto udp dport {} lookup {}",
            if self.v6 { "-6 " } else { "" },
            self.priority,
            if self.local_only { "iif lo " } else { "" },
            self.dport,
            self.table
        )
    }
}

fn as_port_rule(m: &RuleMessage, protocol: u8) -> Option<PortRule> {
    let (mut ours, mut lo) = (false, false);
    let (mut udp, mut dport, mut priority, mut table) = (false, None, 0, m.header.table as u32);
    for a in &m.attributes {
        match a {
            RuleAttribute::Protocol(p) => ours = *p == RouteProtocol::from(protocol),
            RuleAttribute::Iifname(n) => lo = n == "lo",
            RuleAttribute::IpProtocol(p) => udp = *p == IpProtocol::Udp,
            RuleAttribute::DestinationPortRange(r) if r.start == r.end => dport = Some(r.start),
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if !ours || !udp || m.header.action != RuleAction::ToTable {
        return None;
    }
    Some(PortRule {
        v6: m.header.family == AddressFamily::Inet6,
        local_only: lo,
        dport: dport?,
        table: u8::try_from(table).ok()?,
        priority,
    })
}

async fn dump_rules(
    h: &Handle,
    protocol: u8,
) -> Result<Vec<(PortRule, RuleMessage)>, rtnetlink::Error> {
    let mut out = Vec::new();
    for v in [IpVersion::V4, IpVersion::V6] {
        let mut dump = h.rule().get(v).execute();
        while let Some(m) = dump.try_next().await? {
            if let Some(r) = as_port_rule(&m, protocol) {
                out.push((r, m));
            }
        }
    }
    Ok(out)
}

/// The rules (both families) added with route protocol `protocol`.
pub fn port_rules(protocol: u8) -> Result<Vec<PortRule>, IoError> {
    with_handle("list rules", |h| async move {
        Ok(dump_rules(&h, protocol)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    })
}

/// Adds `r` marked with `protocol` (the caller lists first: no duplicates).
pub fn add_port_rule(r: &PortRule, protocol: u8) -> Result<(), IoError> {
    let r = *r;
    with_handle("add rule", |h| async move {
        let mut req = h
            .rule()
            .add()
            .table_id(u32::from(r.table))
            .priority(r.priority);
        req = req.action(RuleAction::ToTable);
        let msg = req.message_mut();
        msg.header.family = if r.v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        if r.local_only {
            msg.attributes.push(RuleAttribute::Iifname("lo".to_owned()));
        }
        msg.attributes.extend([
            RuleAttribute::IpProtocol(IpProtocol::Udp),
            RuleAttribute::DestinationPortRange(RulePortRange {
                start: r.dport,
                end: r.dport,
            }),
            RuleAttribute::Protocol(RouteProtocol::from(protocol)),
        ]);
        req.execute().await
    })
}

/// Deletes our rule equal to `r`; Ok(false) when there is none.
pub fn delete_port_rule(r: &PortRule, protocol: u8) -> Result<bool, IoError> {
    let r = *r;
    with_handle("delete rule", |h| async move {
        let found = dump_rules(&h, protocol).await?;
        let mut any = false;
        for (_, m) in found.into_iter().filter(|(x, _)| *x == r) {
            h.rule().del(m).execute().await?;
            any = true;
        }
        Ok(any)
    })
}

/// A host or prefix route in table `table` through a device.
fn dev_route(dst: IpAddr, len: u8, table: u8, protocol: u8) -> Result<RouteMessage, IoError> {
    let m = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, len)
        .map_err(|e| IoError::Netlink {
            op: "device route",
            message: e.to_string(),
        })?
        .table_id(u32::from(table))
        .protocol(RouteProtocol::from(protocol))
        .scope(RouteScope::Link)
        .build();
    Ok(m)
}

/// Adds or replaces `dst/len dev DEV [src SRC] table TABLE proto PROTOCOL`.
pub fn replace_dev_route(
    dst: IpAddr,
    len: u8,
    table: u8,
    dev: &str,
    src: Option<IpAddr>,
    protocol: u8,
) -> Result<(), IoError> {
    let mut msg = dev_route(dst, len, table, protocol)?;
    match src {
        Some(IpAddr::V4(a)) => msg
            .attributes
            .push(RouteAttribute::PrefSource(RouteAddress::Inet(a))),
        Some(IpAddr::V6(a)) => msg
            .attributes
            .push(RouteAttribute::PrefSource(RouteAddress::Inet6(a))),
        None => {}
    }
    let name = dev.to_owned();
    let found = with_handle("add device route", |h| async move {
        let Some(index) = link_index(&h, &name).await? else {
            return Ok(false);
        };
        msg.attributes.push(RouteAttribute::Oif(index));
        h.route().add(msg).replace().execute().await?;
        Ok(true)
    })?;
    if found {
        Ok(())
    } else {
        Err(IoError::Netlink {
            op: "add device route",
            message: format!("no device `{dev}`"),
        })
    }
}

/// Deletes our route `dst/len` in `table`; Ok(false) when it was not there.
pub fn delete_dev_route(dst: IpAddr, len: u8, table: u8, protocol: u8) -> Result<bool, IoError> {
    let msg = dev_route(dst, len, table, protocol)?;
    let op = "delete device route";
    match with_handle_raw(op, |h| async move { h.route().del(msg).execute().await })? {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ESRCH => Ok(false),
        Err(e) => Err(kernel(op, &e)),
    }
}

/// The destinations (`dst`, `len`) of our routes in `table`, both families.
pub fn dev_routes(table: u8, protocol: u8) -> Result<Vec<(IpAddr, u8)>, IoError> {
    with_handle("list routes", |h| async move {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            req.header.table = table;
            req.header.protocol = RouteProtocol::from(protocol);
            let mut dump = h.route().get(req).execute();
            while let Some(m) = dump.try_next().await? {
                if m.header.table != table || m.header.protocol != RouteProtocol::from(protocol) {
                    continue;
                }
                let dst = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                });
                out.extend(dst.map(|d| (d, m.header.destination_prefix_length)));
            }
        }
        Ok(out)
    })
}
